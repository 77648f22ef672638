//! One thread that enforces the deadlines of requests and connections:
//! response headers within `timeout_ms`, the whole request within
//! `max_duration_ms`, a response the client stops reading, a connection
//! that sends no request head in time.
//!
//! Each request or connection registers what it watches; every `TICK` the
//! thread asks each one to check itself. A deadline is then enforced within
//! a tick of when it passes, and no request pays for a timer of its own
//! (arming and dropping a tokio timer per request cost more CPU than the
//! rest of the limits together). A plain thread, like the epoch ticker: it
//! must run when every async worker is busy.
//!
//! The thread also keeps a clock that costs one atomic load to read
//! (`now_ms`), precise to a tick: what requests and connections stamp their
//! progress with, many times a second.

use crate::util::unpoisoned;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

/// How often deadlines are checked: how late past its deadline a request or
/// connection may be ended.
pub const TICK: Duration = Duration::from_millis(50);

/// Something with deadlines.
pub trait Watched: Send + Sync {
    /// Ends what passed its deadline at `now_ms` (see `now_ms`). Runs under
    /// the watchdog's lock, so it must be quick and must not block.
    fn check(&self, now_ms: u64);
}

/// Milliseconds since the first watchdog started, as of its last tick.
pub fn now_ms() -> u64 {
    CLOCK.load(Ordering::Relaxed)
}

static EPOCH: OnceLock<Instant> = OnceLock::new();
static CLOCK: AtomicU64 = AtomicU64::new(0);

/// Moves the clock to now; returns it.
fn tick_clock() -> u64 {
    let ms = EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64;
    CLOCK.fetch_max(ms, Ordering::Relaxed).max(ms)
}

/// The watchdog: register with `watch`. The thread ends when the last
/// handle and registration are gone.
#[derive(Clone)]
pub struct Watchdog {
    watched: Arc<Mutex<Slots>>,
}

/// Registered entries; freed slots are reused, so a registration is an
/// index, and removing one is O(1).
#[derive(Default)]
struct Slots {
    entries: Vec<Option<Arc<dyn Watched>>>,
    free: Vec<usize>,
}

/// A registration; dropping it stops the watching.
pub struct Watching {
    watched: Arc<Mutex<Slots>>,
    slot: usize,
}

impl Watchdog {
    pub fn start() -> Self {
        let watched = Arc::new(Mutex::new(Slots::default()));
        let weak: Weak<Mutex<Slots>> = Arc::downgrade(&watched);
        tick_clock();
        std::thread::Builder::new()
            .name("spike-watchdog".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(TICK);
                    let Some(watched) = weak.upgrade() else {
                        return;
                    };
                    let now = tick_clock();
                    let slots = unpoisoned(watched.lock());
                    for entry in slots.entries.iter().flatten() {
                        entry.check(now);
                    }
                }
            })
            .expect("spawning the watchdog thread");
        Self { watched }
    }

    /// Checks `entry` every tick until the returned registration drops.
    pub fn watch(&self, entry: Arc<dyn Watched>) -> Watching {
        let mut slots = unpoisoned(self.watched.lock());
        let slot = match slots.free.pop() {
            Some(slot) => {
                slots.entries[slot] = Some(entry);
                slot
            }
            None => {
                slots.entries.push(Some(entry));
                slots.entries.len() - 1
            }
        };
        Watching {
            watched: self.watched.clone(),
            slot,
        }
    }

    /// How many entries are watched now.
    pub fn len(&self) -> usize {
        let slots = unpoisoned(self.watched.lock());
        slots.entries.len() - slots.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let mut slots = unpoisoned(self.watched.lock());
        slots.entries[self.slot] = None;
        slots.free.push(self.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counter(AtomicUsize);

    impl Watched for Counter {
        fn check(&self, _: u64) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn checks_what_is_watched_until_it_is_dropped() {
        let dog = Watchdog::start();
        let a = Arc::new(Counter(AtomicUsize::new(0)));
        let b = Arc::new(Counter(AtomicUsize::new(0)));
        let watching_a = dog.watch(a.clone());
        let watching_b = dog.watch(b.clone());
        assert_eq!(dog.len(), 2);
        std::thread::sleep(TICK * 4);
        assert!(a.0.load(Ordering::Relaxed) >= 2);
        drop(watching_a);
        let seen = a.0.load(Ordering::Relaxed);
        std::thread::sleep(TICK * 3);
        assert_eq!(
            a.0.load(Ordering::Relaxed),
            seen,
            "checked after it was dropped"
        );
        assert!(b.0.load(Ordering::Relaxed) > seen);
        // The freed slot is reused.
        let c = dog.watch(Arc::new(Counter(AtomicUsize::new(0))));
        assert_eq!(c.slot, 0);
        drop((watching_b, c));
        assert!(dog.is_empty());
    }

    #[test]
    fn the_clock_moves_with_the_ticks() {
        let _dog = Watchdog::start();
        let before = now_ms();
        std::thread::sleep(TICK * 4);
        let after = now_ms();
        assert!(
            after >= before + 2 * TICK.as_millis() as u64,
            "{before} -> {after}"
        );
    }
}
