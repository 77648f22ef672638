//! A bounded queue with many senders and one receiver: an object's inbox
//! (a sender waits while it is full: the backpressure that slows a
//! flooding room connection's reading), and what an object sends its users
//! (a room owner only `try_send`s to its members: a full queue drops the
//! slow member).
//!
//! Bounded twice: in items, and in bytes (what each item `weigh`s: a
//! frame's length). A count alone let a member that stops reading hold a
//! thousand replies of a megabyte each; a byte bound alone, a million
//! empty ones. An item heavier than the whole byte bound still fits, alone,
//! in an empty queue (a large document's sync answer must reach its
//! client).
//!
//! Not a tokio `mpsc` channel, whose block of 32 slots and cache-padded
//! state take about 2 KB per queue before anything is sent, in every open
//! object and every room connection: here a `VecDeque` is allocated when items
//! wait and given back when they are taken, and the bounds are two
//! semaphores' permits.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, Semaphore};

use spike_storage::util::unpoisoned;

/// What an item costs against a mailbox's byte bound.
pub trait Weigh {
    fn weight(&self) -> usize;
}

/// A sending end; the mailbox is open while one exists.
pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

/// A sending end that does not keep the mailbox open.
pub struct WeakSender<T> {
    shared: Arc<Shared<T>>,
}

/// The receiving end.
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

/// The receiver is gone: the command comes back.
#[derive(Debug)]
pub struct SendError<T>(pub T);

#[derive(Debug)]
pub enum TrySendError<T> {
    Full(T),
    Closed(T),
}

struct Shared<T> {
    queue: Mutex<Queue<T>>,
    /// One permit per free place.
    space: Semaphore,
    /// One permit per free byte.
    bytes: Semaphore,
    max_bytes: usize,
    /// Wakes the receiver (a permit is kept if it is not waiting).
    ready: Notify,
    senders: AtomicUsize,
}

struct Queue<T> {
    /// Each item with the bytes it holds of the bound.
    items: VecDeque<(T, u32)>,
    closed: bool,
}

/// A mailbox of at most `capacity` items weighing at most `max_bytes`
/// together (at most 4 GiB).
pub fn channel<T: Weigh>(capacity: usize, max_bytes: usize) -> (Sender<T>, Receiver<T>) {
    let max_bytes = max_bytes.clamp(1, u32::MAX as usize);
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            items: VecDeque::new(),
            closed: false,
        }),
        space: Semaphore::new(capacity),
        bytes: Semaphore::new(max_bytes),
        max_bytes,
        ready: Notify::new(),
        senders: AtomicUsize::new(1),
    });
    let receiver = Receiver {
        shared: shared.clone(),
    };
    (Sender { shared }, receiver)
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, Queue<T>> {
        unpoisoned(self.queue.lock())
    }
}

impl<T: Weigh> Shared<T> {
    /// What `item` holds of the byte bound: its weight, or the whole bound
    /// for a heavier one (which then waits alone).
    fn weight_of(&self, item: &T) -> u32 {
        item.weight().min(self.max_bytes) as u32
    }

    /// Queues `item` in a place and bytes already taken from `space` and
    /// `bytes`.
    fn put(&self, item: T, weight: u32) -> Result<(), T> {
        {
            let mut queue = self.lock();
            if queue.closed {
                return Err(item);
            }
            queue.items.push_back((item, weight));
        }
        self.ready.notify_one();
        Ok(())
    }
}

impl<T: Weigh> Sender<T> {
    /// Queues `item`, waiting for a place and its bytes while the mailbox
    /// is full.
    pub async fn send(&self, item: T) -> Result<(), SendError<T>> {
        let shared = &self.shared;
        let weight = shared.weight_of(&item);
        match shared.space.acquire().await {
            Ok(place) => place.forget(),
            Err(_closed) => return Err(SendError(item)),
        }
        match shared.bytes.acquire_many(weight).await {
            Ok(bytes) => bytes.forget(),
            Err(_closed) => return Err(SendError(item)),
        }
        shared.put(item, weight).map_err(SendError)
    }

    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        use tokio::sync::TryAcquireError;
        let shared = &self.shared;
        let weight = shared.weight_of(&item);
        match shared.space.try_acquire() {
            Ok(place) => place.forget(),
            Err(TryAcquireError::NoPermits) => return Err(TrySendError::Full(item)),
            Err(TryAcquireError::Closed) => return Err(TrySendError::Closed(item)),
        }
        match shared.bytes.try_acquire_many(weight) {
            Ok(bytes) => bytes.forget(),
            Err(e) => {
                shared.space.add_permits(1);
                return Err(match e {
                    TryAcquireError::NoPermits => TrySendError::Full(item),
                    TryAcquireError::Closed => TrySendError::Closed(item),
                });
            }
        }
        shared.put(item, weight).map_err(TrySendError::Closed)
    }

    /// Whether the receiver is gone (or closed the mailbox).
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }

    pub fn same_channel(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    pub fn downgrade(&self) -> WeakSender<T> {
        WeakSender {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.ready.notify_one();
        }
    }
}

impl<T: Weigh> WeakSender<T> {
    /// A sender, if one still keeps the mailbox open.
    pub fn upgrade(&self) -> Option<Sender<T>> {
        let senders = &self.shared.senders;
        let mut n = senders.load(Ordering::Acquire);
        loop {
            if n == 0 {
                return None;
            }
            match senders.compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    return Some(Sender {
                        shared: self.shared.clone(),
                    });
                }
                Err(now) => n = now,
            }
        }
    }
}

/// A drained queue keeps at most this many places allocated (a busy
/// member's queue refills at once; a burst's size is given back).
const KEEP_PLACES: usize = 4;

impl<T: Weigh> Receiver<T> {
    /// The next command; `None` when every sender is gone (or the mailbox
    /// was closed) and nothing waits.
    pub async fn recv(&mut self) -> Option<T> {
        loop {
            {
                let mut queue = self.shared.lock();
                if let Some(item) = self.take(&mut queue) {
                    return Some(item);
                }
                if queue.closed || self.shared.senders.load(Ordering::Acquire) == 0 {
                    return None;
                }
            }
            self.shared.ready.notified().await;
        }
    }

    /// The next command if one waits.
    pub fn try_recv(&mut self) -> Option<T> {
        let mut queue = self.shared.lock();
        self.take(&mut queue)
    }

    pub fn is_empty(&self) -> bool {
        self.shared.lock().items.is_empty()
    }

    fn take(&self, queue: &mut Queue<T>) -> Option<T> {
        let (item, weight) = queue.items.pop_front()?;
        if queue.items.is_empty() && queue.items.capacity() > KEEP_PLACES {
            queue.items = VecDeque::new();
        }
        self.shared.space.add_permits(1);
        self.shared.bytes.add_permits(weight as usize);
        Some(item)
    }
}

impl<T> Receiver<T> {
    /// No more commands are taken: senders get theirs back.
    pub fn close(&mut self) {
        self.shared.lock().closed = true;
        self.shared.space.close();
        self.shared.bytes.close();
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Numbers weigh nothing: the count bounds them.
    impl Weigh for u32 {
        fn weight(&self) -> usize {
            0
        }
    }

    impl Weigh for Vec<u8> {
        fn weight(&self) -> usize {
            self.len()
        }
    }

    #[tokio::test]
    async fn bounded_in_order_with_waiting_senders() {
        let (tx, mut rx) = channel::<u32>(2, 1 << 20);
        tx.send(1).await.unwrap();
        tx.try_send(2).unwrap();
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        let waiting = {
            let tx = tx.clone();
            tokio::spawn(async move { tx.send(3).await.is_ok() })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "a full mailbox holds its sender");
        assert_eq!(rx.recv().await, Some(1));
        assert!(waiting.await.unwrap());
        assert_eq!(rx.try_recv(), Some(2));
        assert_eq!(rx.recv().await, Some(3));
        assert!(rx.is_empty());
    }

    #[tokio::test]
    async fn ends_when_the_senders_go_and_refuses_once_closed() {
        let (tx, mut rx) = channel::<u32>(4, 1 << 20);
        let weak = tx.downgrade();
        let other = weak.upgrade().expect("a sender is alive");
        assert!(tx.same_channel(&other));
        tx.send(7).await.unwrap();
        drop((tx, other));
        assert!(weak.upgrade().is_none());
        assert_eq!(rx.recv().await, Some(7), "what waits is still taken");
        assert_eq!(rx.recv().await, None);

        let (tx, mut rx) = channel::<u32>(1, 1 << 20);
        tx.send(1).await.unwrap();
        let blocked = {
            let tx = tx.clone();
            tokio::spawn(async move { tx.send(2).await.map_err(|SendError(n)| n) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        rx.close();
        assert_eq!(blocked.await.unwrap(), Err(2));
        assert!(tx.is_closed());
        assert!(matches!(tx.try_send(3), Err(TrySendError::Closed(3))));
    }

    #[tokio::test]
    async fn a_drained_burst_gives_its_memory_back() {
        let (tx, mut rx) = channel::<u32>(1000, 1 << 20);
        for n in 0..100 {
            tx.try_send(n).unwrap();
        }
        for _ in 0..100 {
            rx.recv().await.unwrap();
        }
        assert_eq!(rx.shared.lock().items.capacity(), 0);
    }

    #[tokio::test]
    async fn bounded_in_bytes_with_a_heavy_item_alone() {
        let (tx, mut rx) = channel::<Vec<u8>>(100, 10);
        tx.try_send(vec![0; 6]).unwrap();
        let Err(TrySendError::Full(back)) = tx.try_send(vec![1; 6]) else {
            panic!("6 + 6 bytes are past 10");
        };
        assert_eq!(back, [1; 6]);
        tx.try_send(vec![2; 4]).unwrap();
        let waiting = {
            let tx = tx.clone();
            tokio::spawn(async move { tx.send(vec![3; 3]).await.is_ok() })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !waiting.is_finished(),
            "a mailbox full of bytes holds its sender"
        );
        assert_eq!(rx.recv().await.unwrap().len(), 6);
        assert!(waiting.await.unwrap());
        assert_eq!(rx.recv().await.unwrap().len(), 4);
        assert_eq!(rx.recv().await.unwrap().len(), 3);
        // Heavier than the bound: it fits an empty mailbox, alone.
        tx.try_send(vec![4; 50]).unwrap();
        assert!(matches!(tx.try_send(vec![5]), Err(TrySendError::Full(_))));
        assert_eq!(rx.recv().await.unwrap().len(), 50);
        tx.try_send(vec![5]).unwrap();
        // A failed byte reservation gives its place back.
        let (tx, _rx) = channel::<Vec<u8>>(1, 10);
        assert!(tx.try_send(vec![0; 11]).is_ok());
        let (tx, _rx) = channel::<Vec<u8>>(2, 10);
        tx.try_send(vec![0; 10]).unwrap();
        assert!(tx.try_send(vec![0; 1]).is_err());
        tx.shared.bytes.add_permits(1);
        tx.try_send(vec![0; 1]).expect("its place was given back");
    }
}
