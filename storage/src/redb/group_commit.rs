//! Group commit: one writer thread per kind of write (room appends, KV
//! writes) that commits every write waiting at that moment in one redb
//! transaction, so one fsync covers many writes of many callers. Each
//! caller still waits for the commit that holds its write: nothing is
//! acknowledged before it is durable. Under load the batches grow and the
//! commits per second stay what one disk can do; alone, a write costs one
//! commit as before.

use std::sync::{Weak, mpsc};

use super::Inner;
use crate::{Result, StorageError};

/// At most this many writes go into one transaction, so that one commit
/// cannot grow without bound under a flood.
const MAX_BATCH: usize = 1024;

/// Commits a batch in one transaction: `Ok` holds each write's own outcome
/// (a write may be refused alone, having changed nothing); `Err` means the
/// transaction failed and none was written.
pub(super) type CommitFn<J, O> = fn(&Inner, &[J]) -> Result<Vec<Result<O>>>;

type Waiting<J, O> = (J, tokio::sync::oneshot::Sender<Result<O>>);

/// The handle to a writer thread; the thread ends when it drops.
pub(super) struct GroupCommit<J, O> {
    tx: mpsc::Sender<Waiting<J, O>>,
    what: &'static str,
}

impl<J: Send + 'static, O: Send + 'static> GroupCommit<J, O> {
    /// Starts the thread `name`. It holds the database only while it
    /// commits, so that dropping the backend closes it at once.
    pub(super) fn start(
        name: &str,
        what: &'static str,
        inner: Weak<Inner>,
        commit: CommitFn<J, O>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || write_batches(&inner, &rx, commit))?;
        Ok(Self { tx, what })
    }

    /// Queues `job` and waits for the commit that holds it.
    pub(super) async fn submit(&self, job: J) -> Result<O> {
        let gone = || StorageError::Backend(format!("the {} writer has stopped", self.what));
        let (done, outcome) = tokio::sync::oneshot::channel();
        self.tx.send((job, done)).map_err(|_| gone())?;
        outcome.await.map_err(|_| gone())?
    }
}

/// The writer thread: takes whatever writes are waiting, commits them
/// together, tells each how it went.
fn write_batches<J, O>(
    inner: &Weak<Inner>,
    rx: &mpsc::Receiver<Waiting<J, O>>,
    commit: CommitFn<J, O>,
) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first.0];
        let mut waiting = vec![first.1];
        while jobs.len() < MAX_BATCH
            && let Ok((job, done)) = rx.try_recv()
        {
            jobs.push(job);
            waiting.push(done);
        }
        let committed = match inner.upgrade() {
            Some(inner) => commit(&inner, &jobs),
            None => Err(StorageError::Backend("the database has closed".into())),
        };
        match committed {
            Ok(outcomes) => {
                for (done, outcome) in waiting.into_iter().zip(outcomes) {
                    let _ = done.send(outcome);
                }
            }
            Err(e) => {
                let message = e.to_string();
                for done in waiting {
                    let _ = done.send(Err(StorageError::Backend(message.clone())));
                }
            }
        }
    }
}
