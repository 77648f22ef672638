//! A member's queue: what the owner sends one connection, in order,
//! bounded, never waited on by the owner.
//!
//! Not a tokio `mpsc` channel: one of those allocates a block of 32 slots
//! and cache-padded state up front, about 2 KB per connection, most of an
//! idle connection's memory in a room of thousands. This queue holds a
//! `VecDeque` that is empty until something is queued and is given back
//! once a burst is drained.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::Delivery;

/// The owner's end.
pub struct Outbox {
    shared: Arc<Shared>,
}

/// The connection's end.
pub struct Inbox {
    shared: Arc<Shared>,
}

/// The queue was full: the member cannot keep up.
#[derive(Debug)]
pub struct Full;

struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the connection (a permit is kept if it is not waiting).
    ready: Notify,
    capacity: usize,
}

struct Queue {
    items: VecDeque<Delivery>,
    /// The owner let go: what is queued is the last.
    closed: bool,
}

/// A queue of at most `capacity` deliveries.
pub fn outbox(capacity: usize) -> (Outbox, Inbox) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            items: VecDeque::new(),
            closed: false,
        }),
        ready: Notify::new(),
        capacity,
    });
    let inbox = Inbox {
        shared: shared.clone(),
    };
    (Outbox { shared }, inbox)
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Outbox {
    pub fn try_send(&self, delivery: Delivery) -> Result<(), Full> {
        {
            let mut queue = self.shared.lock();
            if queue.items.len() >= self.shared.capacity {
                return Err(Full);
            }
            queue.items.push_back(delivery);
        }
        self.shared.ready.notify_one();
        Ok(())
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_one();
    }
}

/// A drained queue keeps at most this many slots.
const KEEP_SLOTS: usize = 4;

impl Inbox {
    /// The next delivery; `None` once the owner let go and all is read.
    pub async fn recv(&mut self) -> Option<Delivery> {
        loop {
            {
                let mut queue = self.shared.lock();
                if let Some(delivery) = take(&mut queue) {
                    return Some(delivery);
                }
                if queue.closed {
                    return None;
                }
            }
            self.shared.ready.notified().await;
        }
    }

    /// The next delivery if one is queued.
    pub fn try_recv(&mut self) -> Option<Delivery> {
        take(&mut self.shared.lock())
    }
}

fn take(queue: &mut Queue) -> Option<Delivery> {
    let delivery = queue.items.pop_front();
    if queue.items.is_empty() && queue.items.capacity() > KEEP_SLOTS {
        queue.items = VecDeque::new();
    }
    delivery
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::rooms::Frame;

    fn frame(n: u8) -> Delivery {
        Delivery::Frame(Frame::Binary(bytes::Bytes::from(vec![n])))
    }

    fn byte(d: Option<Delivery>) -> u8 {
        match d {
            Some(Delivery::Frame(Frame::Binary(b))) => b[0],
            _ => panic!("a frame"),
        }
    }

    #[tokio::test]
    async fn in_order_bounded_and_closed_by_the_owner() {
        let (outbox, mut inbox) = outbox(2);
        outbox.try_send(frame(1)).unwrap();
        outbox.try_send(frame(2)).unwrap();
        assert!(outbox.try_send(frame(3)).is_err());
        assert_eq!(byte(inbox.recv().await), 1);
        assert_eq!(byte(inbox.try_recv()), 2);
        assert!(inbox.try_recv().is_none());
        let waiting = tokio::spawn(async move {
            let got = byte(inbox.recv().await);
            (got, inbox.recv().await.is_none())
        });
        tokio::task::yield_now().await;
        outbox.try_send(frame(4)).unwrap();
        drop(outbox);
        assert_eq!(waiting.await.unwrap(), (4, true));
    }

    #[tokio::test]
    async fn a_drained_burst_gives_its_memory_back() {
        let (outbox, mut inbox) = outbox(1000);
        for n in 0..100 {
            outbox.try_send(frame(n)).unwrap();
        }
        for _ in 0..100 {
            inbox.recv().await.unwrap();
        }
        assert_eq!(inbox.shared.lock().items.capacity(), 0);
    }
}
