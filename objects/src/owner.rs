//! An object's owner task: its one loop of batches, idle time, lease
//! renewal and ending, the same for every kind of object.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::lease::{Lease, Renewal};
use super::{Directory, mailbox};

/// Commands taken as one batch at most.
const MAX_BATCH: usize = 512;

/// Why an owner ends its object while it has users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Another node owns it now (its lease went, or its log has another
    /// owner's writes): users reconnect, and reach the new owner.
    Moved,
    /// The host is stopping.
    Stopping,
}

/// What a kind of object does with its commands; its owner task (`spawn`)
/// does the rest.
pub trait Object: Send + 'static {
    type Command: mailbox::Weigh + Send + 'static;

    /// How long the object waits for a command before it is idle: with no
    /// users it ends, else it hibernates.
    fn idle(&self) -> Duration;

    /// Whether anyone uses it (a room's members).
    fn in_use(&self) -> bool;

    /// Handles one batch: the commands that were waiting, in order
    /// (`MAX_BATCH` at most). Left empty, or with the commands to hand
    /// back if it ended.
    fn handle(&mut self, batch: &mut Vec<Self::Command>) -> impl Future<Output = ()> + Send;

    /// Drops what it can reload from its durable log (no command for its
    /// idle time, with users).
    fn hibernate(&mut self);

    /// Whether its own writes found another owner's (its log's fencing):
    /// it has moved, and ends.
    fn moved(&self) -> bool;

    /// Closes every user, for `why`.
    fn end(&mut self, why: Ending);

    /// A command that reached it as it ended, for the caller to try again
    /// (a join goes to the object's next owner).
    fn hand_back(command: Self::Command);

    /// After the owner task's last batch.
    fn ended(self) -> impl Future<Output = ()> + Send
    where
        Self: Sized,
    {
        async {}
    }
}

/// Starts the owner task of the object `name` (boxed, and its batches
/// boxed when they run: an open object's task then holds a small future
/// while it waits).
pub fn spawn<O: Object>(
    directory: Arc<Directory<O::Command>>,
    name: Arc<str>,
    object: O,
    inbox: mailbox::Receiver<O::Command>,
    lease: Option<Lease>,
) {
    let owner = Owner {
        directory,
        name,
        object,
        lease,
    };
    tokio::spawn(Box::new(owner).run(inbox));
}

struct Owner<O: Object> {
    directory: Arc<Directory<O::Command>>,
    name: Arc<str>,
    object: O,
    lease: Option<Lease>,
}

/// What woke an owner; acted on once its select is over (the stop
/// signal's guard must not be held across an await).
enum Woke<T> {
    Inbox(T),
    Renew,
    Stopping,
}

impl<O: Object> Owner<O> {
    async fn run(mut self: Box<Self>, mut inbox: mailbox::Receiver<O::Command>) {
        let mut stopping = self.directory.stop_signal();
        let renew_every =
            (self.lease.as_ref()).map_or(Duration::from_secs(86_400), Lease::renew_every);
        let mut renew =
            tokio::time::interval_at(tokio::time::Instant::now() + renew_every, renew_every);
        let mut active_at = tokio::time::Instant::now();
        loop {
            // A batch's own vector: one kept across batches would keep the
            // largest batch's size in every open object.
            let mut batch = Vec::new();
            let idle = self.object.idle();
            let woke = tokio::select! {
                next = tokio::time::timeout_at(active_at + idle, inbox.recv()) => Woke::Inbox(next),
                _ = renew.tick(), if self.lease.is_some() => Woke::Renew,
                _ = stopping.wait_for(|stop| *stop) => Woke::Stopping,
            };
            let next = match woke {
                Woke::Inbox(next) => next,
                Woke::Renew => {
                    if self.renew().await == Renewal::Lost {
                        self.end(Ending::Moved);
                        break;
                    }
                    continue;
                }
                Woke::Stopping => {
                    self.end(Ending::Stopping);
                    break;
                }
            };
            active_at = tokio::time::Instant::now();
            match next {
                Ok(Some(command)) => batch.push(command),
                Ok(None) => break,
                Err(_idle) if !self.object.in_use() => {
                    if self.directory.retire(&self.name, &inbox) {
                        break;
                    }
                    continue;
                }
                Err(_idle) => {
                    self.object.hibernate();
                    continue;
                }
            }
            while batch.len() < MAX_BATCH
                && let Some(command) = inbox.try_recv()
            {
                batch.push(command);
            }
            if self.lease.as_ref().is_some_and(Lease::may_have_lapsed)
                && self.renew().await == Renewal::Lost
            {
                batch.drain(..).for_each(O::hand_back);
                self.end(Ending::Moved);
                break;
            }
            Box::pin(self.object.handle(&mut batch)).await;
            if self.object.moved() {
                batch.drain(..).for_each(O::hand_back);
                self.end(Ending::Moved);
                break;
            }
        }
        // Commands that reached the inbox as it closed go to a new owner.
        inbox.close();
        std::iter::from_fn(|| inbox.try_recv()).for_each(O::hand_back);
        self.object.ended().await;
    }

    async fn renew(&mut self) -> Renewal {
        match &mut self.lease {
            Some(lease) => lease.renew().await,
            None => Renewal::Held,
        }
    }

    /// Closes every user and leaves the directory.
    fn end(&mut self, why: Ending) {
        self.object.end(why);
        self.directory.retire_now(&self.name);
    }
}
