//! Owned objects: state that has exactly one owner at a time across the
//! nodes of a cluster, and one task on that node that owns it. A room is
//! one kind (`rooms`); anything that must see every change in one
//! order (a database taking queries, say) is another.
//!
//! What the core gives every kind, and knows nothing of WebSockets or of a
//! room's protocol:
//!
//! - `Directory`: the objects of one kind open on this node, by name; an
//!   object is opened once however many callers ask at the same time (one
//!   opening at a time per object, not per node), and on a cluster only
//!   once this node holds its lease (`Lease`), else the caller learns
//!   which node owns it.
//! - `owner`: the owner task's loop. It takes the commands waiting in the
//!   object's inbox (`mailbox`: bounded in count and bytes) as one batch,
//!   renews the lease and makes sure it did not lapse before it handles
//!   one, ends the object when it has no users for its idle time, drops its
//!   state when it has users but no commands (hibernation: an object
//!   reloads from its durable log), and ends it when its lease or its log
//!   shows another node owns it now, or when the host stops.
//! - `Object`: what a kind implements to be owned so.
//!
//! An object's durable log and its fencing are the storage's (`RoomLog`
//! appends at an expected head, `fence` before the first read); forwarding
//! a user to the owning node is the kind's, over the cluster's calls and
//! links (`rooms::forward` for room connections).

mod lease;
pub mod mailbox;
mod owner;

pub use lease::Lease;
pub use owner::{Ending, Object, spawn};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use spike_storage::util::unpoisoned;
use spike_storage::{Cluster, LeaseClaim};

/// How much may wait in each object's inbox of a kind: commands, and
/// their bytes (what each `mailbox::Weigh`s).
#[derive(Debug, Clone, Copy)]
pub struct InboxBounds {
    pub items: usize,
    pub bytes: usize,
}

/// Why an object could not be opened on this node.
#[derive(Debug)]
pub enum OpenError {
    /// Another node of the cluster holds its lease.
    Elsewhere(String),
    /// Its lease could not be claimed (the store is out of reach).
    Unavailable(String),
}

/// The objects of one kind open on this node, each by its owner's inbox.
pub struct Directory<C> {
    /// The kind, which prefixes the names of its leases.
    kind: &'static str,
    open: Mutex<HashMap<Arc<str>, mailbox::Sender<C>>>,
    /// Objects being opened, each with its turn: callers of one object
    /// take turns (it is opened, and its lease claimed, once), callers of
    /// others do not wait for them.
    opening: Mutex<HashMap<Arc<str>, Arc<tokio::sync::Mutex<()>>>>,
    /// The other nodes, when the storage is shared: an owner needs the
    /// object's lease first.
    cluster: Option<Arc<dyn Cluster>>,
    lease_ttl: Duration,
    inbox: InboxBounds,
    /// Raised once, when the host stops: every owner ends.
    stopping: tokio::sync::watch::Sender<bool>,
    /// Told whenever an object leaves `open`.
    closed: tokio::sync::Notify,
}

impl<C: mailbox::Weigh> Directory<C> {
    /// The objects of `kind`: on a cluster, each owned under a lease of
    /// `lease_ttl`; each with an inbox of `inbox`.
    pub fn new(
        kind: &'static str,
        cluster: Option<Arc<dyn Cluster>>,
        lease_ttl: Duration,
        inbox: InboxBounds,
    ) -> Arc<Self> {
        Arc::new(Self {
            kind,
            open: Mutex::default(),
            opening: Mutex::default(),
            cluster,
            lease_ttl,
            inbox,
            stopping: tokio::sync::watch::Sender::new(false),
            closed: tokio::sync::Notify::new(),
        })
    }

    pub fn cluster(&self) -> Option<&Arc<dyn Cluster>> {
        self.cluster.as_ref()
    }

    /// Whether the host is stopping.
    pub fn stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// A receiver of the stop signal (for tasks of the kind that end with
    /// the host, such as serving other nodes).
    pub fn stop_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// The owner of `name`, if it is open here.
    pub fn get(&self, name: &str) -> Option<mailbox::Sender<C>> {
        let open = unpoisoned(self.open.lock());
        open.get(name).filter(|owner| !owner.is_closed()).cloned()
    }

    /// The owner of `name`, opening it here if it is not open: on a
    /// cluster, once this node holds its lease. `start` starts the owner
    /// (`spawn`) with its inbox and lease.
    pub async fn open(
        &self,
        name: &Arc<str>,
        start: impl FnOnce(mailbox::Receiver<C>, &mailbox::Sender<C>, Option<Lease>),
    ) -> Result<mailbox::Sender<C>, OpenError> {
        if let Some(owner) = self.get(name) {
            return Ok(owner);
        }
        let opening = Opening::of(&self.opening, name);
        let _turn = opening.turn.lock().await;
        if let Some(owner) = self.get(name) {
            return Ok(owner);
        }
        let lease = match &self.cluster {
            None => None,
            Some(cluster) => {
                let key = self.lease_key(name);
                match cluster.claim_lease(&key, self.lease_ttl).await {
                    Ok(LeaseClaim::Ours(revision)) => {
                        Some(Lease::new(cluster.clone(), key, revision, self.lease_ttl))
                    }
                    Ok(LeaseClaim::Theirs(node)) => return Err(OpenError::Elsewhere(node)),
                    Err(e) => return Err(OpenError::Unavailable(e.to_string())),
                }
            }
        };
        let (tx, rx) = mailbox::channel(self.inbox.items, self.inbox.bytes);
        unpoisoned(self.open.lock()).insert(name.clone(), tx.clone());
        start(rx, &tx, lease);
        Ok(tx)
    }

    /// The name of `name`'s lease: its kind's names are its own.
    fn lease_key(&self, name: &str) -> String {
        format!("{}:{name}", self.kind)
    }

    /// Removes `name`'s entry if it is still `owner` (whose inbox closed).
    pub fn forget(&self, name: &str, owner: &mailbox::Sender<C>) {
        let mut open = unpoisoned(self.open.lock());
        if open.get(name).is_some_and(|o| o.same_channel(owner)) {
            open.remove(name);
            self.closed.notify_waiters();
        }
    }

    /// An owner with no users asks to end: yes if no command waits for
    /// it, and then no new one can reach it (it leaves the table under the
    /// lock that callers take it from).
    fn retire(&self, name: &str, inbox: &mailbox::Receiver<C>) -> bool {
        let mut open = unpoisoned(self.open.lock());
        if !inbox.is_empty() {
            return false;
        }
        open.remove(name);
        self.closed.notify_waiters();
        true
    }

    /// Removes `name` whatever waits for it (it moved, or the host is
    /// stopping).
    fn retire_now(&self, name: &str) {
        unpoisoned(self.open.lock()).remove(name);
        self.closed.notify_waiters();
    }

    /// Objects open now.
    pub fn len(&self) -> usize {
        unpoisoned(self.open.lock()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ends every object (each closes its users) and waits, up to
    /// `deadline`, until none is open.
    pub async fn stop(&self, deadline: Duration) {
        self.stopping.send_replace(true);
        let all_closed = async {
            loop {
                // Registered before the count is read: a close between
                // the two still wakes it.
                let closed = self.closed.notified();
                tokio::pin!(closed);
                closed.as_mut().enable();
                if self.is_empty() {
                    return;
                }
                closed.await;
            }
        };
        let _ = tokio::time::timeout(deadline, all_closed).await;
    }
}

/// A caller's place in the line to open one object; the line is forgotten
/// when its last caller is done (or gave up).
struct Opening<'a> {
    table: &'a Mutex<HashMap<Arc<str>, Arc<tokio::sync::Mutex<()>>>>,
    name: Arc<str>,
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl<'a> Opening<'a> {
    fn of(
        table: &'a Mutex<HashMap<Arc<str>, Arc<tokio::sync::Mutex<()>>>>,
        name: &Arc<str>,
    ) -> Self {
        let turn = unpoisoned(table.lock())
            .entry(name.clone())
            .or_default()
            .clone();
        Self {
            table,
            name: name.clone(),
            turn,
        }
    }
}

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        let mut table = unpoisoned(self.table.lock());
        // The table's and this caller's: nobody else waits in this line
        // (counts only grow under the table's lock).
        if Arc::strong_count(&self.turn) == 2 {
            table.remove(&self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nothing;

    const LEASE: Duration = Duration::from_secs(2);
    const INBOX: InboxBounds = InboxBounds {
        items: 4,
        bytes: 1024,
    };

    impl mailbox::Weigh for Nothing {
        fn weight(&self) -> usize {
            0
        }
    }

    #[tokio::test]
    async fn an_object_opens_once_and_its_line_is_forgotten() {
        let directory = Directory::<Nothing>::new("test", None, LEASE, INBOX);
        let name: Arc<str> = "a".into();
        let starts = std::sync::atomic::AtomicUsize::new(0);
        let mut inboxes = Vec::new();
        for _ in 0..3 {
            let owner = directory
                .open(&name, |inbox, _, lease| {
                    assert!(lease.is_none(), "no cluster, no lease");
                    starts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    inboxes.push(inbox);
                })
                .await
                .unwrap();
            assert!(!owner.is_closed());
        }
        assert_eq!(starts.into_inner(), 1);
        assert_eq!(directory.len(), 1);
        assert!(unpoisoned(directory.opening.lock()).is_empty());
        // Asked to end with nothing waiting, it leaves the directory.
        assert!(directory.retire(&name, &inboxes[0]));
        assert!(directory.get(&name).is_none());
    }

    #[tokio::test]
    async fn stopping_waits_for_the_last_object_to_leave() {
        let directory = Directory::<Nothing>::new("test", None, LEASE, INBOX);
        let name: Arc<str> = "a".into();
        let mut inbox = None;
        let _owner = directory
            .open(&name, |rx, _, _| inbox = Some(rx))
            .await
            .unwrap();
        let leaving = directory.clone();
        let mut signal = directory.stop_signal();
        tokio::spawn(async move {
            let _ = signal.wait_for(|stop| *stop).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            leaving.retire_now("a");
        });
        let started = std::time::Instant::now();
        directory.stop(Duration::from_secs(10)).await;
        assert!(directory.is_empty());
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
