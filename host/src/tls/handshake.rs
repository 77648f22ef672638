//! A TLS handshake under bounds: a timeout, and a cap on handshakes in
//! progress where a new one pushes out the oldest. A client that opens
//! connections and never finishes its handshake (a TLS slowloris) thus
//! holds a slot only until newer clients need it: a real handshake takes
//! milliseconds, so the one pushed out is nearly always the stalled one.
//! (Refusing new handshakes at the cap instead would let the stalled ones
//! lock everyone out for the timeout.)

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::util::unpoisoned;

/// The handshakes in progress.
pub struct Handshakes {
    cap: usize,
    slots: Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    next: u64,
    /// Ids oldest first (some already ended: `live` says which are not).
    order: VecDeque<u64>,
    live: HashMap<u64, oneshot::Sender<()>>,
}

/// One handshake's place; given back when dropped.
pub struct Slot {
    id: u64,
    handshakes: Arc<Handshakes>,
    /// Fires if a newer handshake pushed this one out.
    pushed_out: oneshot::Receiver<()>,
}

impl Handshakes {
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            cap: cap.max(1),
            slots: Mutex::default(),
        })
    }

    /// A place for one more handshake, pushing out the oldest at the cap.
    pub fn enter(self: &Arc<Self>) -> Slot {
        let (tx, pushed_out) = oneshot::channel();
        let mut slots = unpoisoned(self.slots.lock());
        if slots.live.len() >= self.cap {
            while let Some(oldest) = slots.order.pop_front() {
                if let Some(out) = slots.live.remove(&oldest) {
                    let _ = out.send(());
                    break;
                }
            }
        }
        let id = slots.next;
        slots.next += 1;
        slots.live.insert(id, tx);
        slots.order.push_back(id);
        // Ended handshakes leave their ids in `order`: sweep them now and
        // then, so it stays within twice the cap.
        if slots.order.len() > 2 * self.cap {
            let Slots { order, live, .. } = &mut *slots;
            order.retain(|id| live.contains_key(id));
        }
        Slot {
            id,
            handshakes: self.clone(),
            pushed_out,
        }
    }

    pub fn in_progress(&self) -> usize {
        unpoisoned(self.slots.lock()).live.len()
    }
}

impl Slot {
    /// Resolves when a newer handshake pushed this one out.
    pub async fn pushed_out(&mut self) {
        // A dropped sender (the slot was given back) never fires.
        if (&mut self.pushed_out).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        unpoisoned(self.handshakes.slots.lock())
            .live
            .remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_oldest_handshake_makes_way_at_the_cap() {
        let handshakes = Handshakes::new(2);
        let mut first = handshakes.enter();
        let second = handshakes.enter();
        assert_eq!(handshakes.in_progress(), 2);
        let mut third = handshakes.enter();
        let pushed = tokio::time::timeout(std::time::Duration::from_secs(1), first.pushed_out());
        assert!(pushed.await.is_ok(), "the oldest is pushed out");
        assert_eq!(handshakes.in_progress(), 2);
        // An ended handshake frees its place without pushing anyone out.
        drop(second);
        let _fourth = handshakes.enter();
        let waiting =
            tokio::time::timeout(std::time::Duration::from_millis(50), third.pushed_out());
        assert!(waiting.await.is_err(), "room was made by the ended one");
        // Many short handshakes keep `order` bounded.
        for _ in 0..100 {
            drop(handshakes.enter());
        }
        assert!(unpoisoned(handshakes.slots.lock()).order.len() <= 4);
    }
}
