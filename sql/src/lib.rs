//! SQL databases: SQLite files, each an owned object (`spike-objects`)
//! whose one owner task holds its connection and runs its statements in
//! order, under the host's limits (`SqlLimits`, enforced by `guard`).
//!
//! - `Databases`: every database of the host, by name; `run` hands work to
//!   the database's owner (opening it if no node owns it, forwarding it to
//!   the node that does on a cluster) and waits for the answer.
//! - `owner`: the owner task's side: batches of work run on a blocking
//!   thread, what they committed appended to the change log before they
//!   are answered, the connection kept between them, closed when idle.
//! - `wal` and `log`: a database's change log, its committed pages read
//!   from SQLite's WAL; snapshots; rebuilding a database at any entry
//!   (a new owner's start on a cluster, a point-in-time restore).
//! - `forward`: work sent to the owning node, and answered there.
//! - `guard`: the connection as the host opens it: durable at commit,
//!   bounded, timed, and kept inside its file.
//! - `run`: statements, batches (one transaction) and scripts.

mod error;
mod forward;
mod group;
mod guard;
mod log;
mod operator;
mod owner;
mod run;
#[cfg(test)]
mod tests;
mod value;
mod wal;

pub use error::SqlError;
pub use log::{SNAPSHOT_EVERY, SqlStorage};
pub use owner::Answer;
pub use run::{Counts, Done, RestoreTo, Work};
pub use value::{Results, Statement, Value};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spike_objects::{Directory, InboxBounds, OpenError};
use spike_storage::StorageError;
use spike_storage::util::unpoisoned;
use tokio::sync::oneshot;

use owner::{Command, Outcome};

/// The limits every statement and database runs under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlLimits {
    /// How long one statement may run (a batch's each).
    pub statement_time: Duration,
    /// The most rows a statement may return.
    pub max_rows: usize,
    /// The most bytes of values a statement may return.
    pub max_result_bytes: usize,
    /// The longest string or blob a value may be (SQLite's
    /// `SQLITE_LIMIT_LENGTH`: `randomblob(2e9)` fails at once).
    pub max_value_bytes: usize,
    /// The longest statement or script.
    pub max_statement_bytes: usize,
    /// The most parameters of one statement.
    pub max_params: usize,
    /// The most a database's file may hold.
    pub max_database_bytes: u64,
}

impl Default for SqlLimits {
    /// D1's where it has one (statement length 100 KB, 100 parameters).
    fn default() -> Self {
        Self {
            statement_time: Duration::from_secs(2),
            max_rows: 100_000,
            max_result_bytes: 32 << 20,
            max_value_bytes: 16 << 20,
            max_statement_bytes: 100_000,
            max_params: 100,
            max_database_bytes: 1 << 30,
        }
    }
}

/// Work queued for one database's owner: at most this many calls, and
/// their bytes.
const INBOX: InboxBounds = InboxBounds {
    items: 1024,
    bytes: 64 << 20,
};

/// A database's lease on a cluster: a paused or cut-off owner loses it
/// (and its database moves) this long after its last renewal.
const LEASE: Duration = Duration::from_secs(3);
/// How long an entry node trusts what it learnt of a database's owner
/// before it asks the lease again.
const OWNER_HINT: Duration = Duration::from_secs(2);
/// How often an entry node waiting for a forwarded call looks whether the
/// owner still holds the database's lease.
const OWNER_LOOK: Duration = Duration::from_secs(1);
/// Tries to reach a database's owner (an owner ending, a lease moving).
const TRIES: u32 = 20;

/// Every database of the host.
pub struct Databases {
    directory: Arc<Directory<Command>>,
    /// Where their files are (`<name>.sqlite`, with SQLite's `-wal` and
    /// `-shm` beside each).
    dir: PathBuf,
    limits: SqlLimits,
    storage: SqlStorage,
    /// The node that owns each database another node owns, as last seen.
    owners: Mutex<HashMap<Arc<str>, (String, Instant)>>,
    /// How forwarded work carries the caller's trace (the host's).
    tracing: std::sync::OnceLock<Tracing>,
}

/// How work forwarded to another node continues the caller's trace: the
/// host's telemetry, which this crate does not depend on.
#[derive(Clone, Copy)]
pub struct Tracing {
    /// The current trace context, as a `traceparent` value, if traced.
    pub current: fn() -> Option<String>,
    /// The span of work another node forwarded with a `traceparent`.
    pub continued: fn(Option<&str>) -> tracing::Span,
}

/// What became of work offered to this node.
pub(crate) enum Here {
    Done(Answer),
    /// Another node owns the database: the work, to forward to it.
    Elsewhere(String, Work),
}

impl Databases {
    /// The databases in `dir` (made if missing), under `limits`, their
    /// logs and snapshots in `storage`. On a cluster, serves the work
    /// other nodes forward to databases this one owns.
    pub fn new(dir: PathBuf, limits: SqlLimits, storage: SqlStorage) -> std::io::Result<Arc<Self>> {
        spike_storage::util::private_dir(&dir)?;
        let cluster = storage.cluster.clone();
        let databases = Arc::new(Self {
            directory: Directory::new("sql", cluster.clone(), LEASE, INBOX),
            dir,
            limits,
            storage,
            owners: Mutex::default(),
            tracing: std::sync::OnceLock::new(),
        });
        if let Some(cluster) = cluster {
            tokio::spawn(forward::serve(databases.clone(), cluster));
        }
        Ok(databases)
    }

    /// Has forwarded work carry the caller's trace (once, at start).
    pub fn set_tracing(&self, tracing: Tracing) {
        let _ = self.tracing.set(tracing);
    }

    pub fn limits(&self) -> &SqlLimits {
        &self.limits
    }

    /// Runs `work` on the database `name`: here if this node owns it or
    /// can, else on the node that does.
    pub async fn run(&self, name: &str, work: Work) -> Answer {
        if !valid_name(name) {
            return Answer::failed(SqlError::Internal(format!(
                "'{name}' cannot name a database"
            )));
        }
        let mut work = work;
        for attempt in 0..TRIES {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt.min(6)))).await;
            }
            let node = match self.owner_hint(name) {
                Some(node) => node,
                None => match self.run_here(name, work).await {
                    Here::Done(answer) => return answer,
                    Here::Elsewhere(node, back) => {
                        work = back;
                        node
                    }
                },
            };
            match self.forward(&node, name, &work).await {
                Ok(forward::Reply::Answer(answer)) => return answer,
                Ok(forward::Reply::Malformed(why)) => {
                    return Answer::failed(SqlError::Internal(format!(
                        "node {node} could not read the work: {why}"
                    )));
                }
                // Moved on, ending, or gone (the work never reached it):
                // ask the lease again.
                Ok(forward::Reply::NotOwner) | Err(StorageError::NoResponder(_)) => {
                    self.forget_owner(name)
                }
                // It may have run: not tried again.
                Err(e) => {
                    self.forget_owner(name);
                    return Answer::failed(SqlError::Internal(format!(
                        "the node owning the database did not answer ({e}): the work may or may not have run"
                    )));
                }
            }
        }
        Answer::failed(SqlError::Internal(
            "the database's owner could not be reached".into(),
        ))
    }

    /// Runs `work` here if this node owns the database or can (it opens
    /// it); never forwards it.
    pub(crate) async fn run_here(&self, name: &str, work: Work) -> Here {
        if !valid_name(name) {
            return Here::Done(Answer::failed(SqlError::Internal(format!(
                "'{name}' cannot name a database"
            ))));
        }
        let name: Arc<str> = name.into();
        let mut work = work;
        // An owner that is ending hands work back: try a new one.
        for _ in 0..8 {
            let sender = match self.open(&name).await {
                Ok(sender) => sender,
                Err(OpenError::Elsewhere(node)) => {
                    let at = Instant::now();
                    unpoisoned(self.owners.lock()).insert(name.clone(), (node.clone(), at));
                    return Here::Elsewhere(node, work);
                }
                Err(OpenError::Unavailable(why)) => {
                    return Here::Done(Answer::failed(SqlError::Internal(format!(
                        "the database is unavailable: {why}"
                    ))));
                }
            };
            let (reply, answer) = oneshot::channel();
            work = match sender.send(Command { work, reply }).await {
                Err(spike_objects::mailbox::SendError(command)) => {
                    self.directory.forget(&name, &sender);
                    command.work
                }
                Ok(()) => match answer.await {
                    Ok(Outcome::Done(answer)) => return Here::Done(answer),
                    Ok(Outcome::Closing(work)) => work,
                    Err(_) => {
                        return Here::Done(Answer::failed(SqlError::Internal(
                            "the database stopped".into(),
                        )));
                    }
                },
            };
        }
        Here::Done(Answer::failed(SqlError::Internal(
            "the database kept closing".into(),
        )))
    }

    /// The owner of `name`, opened here if no node owns it.
    async fn open(
        &self,
        name: &Arc<str>,
    ) -> Result<spike_objects::mailbox::Sender<Command>, OpenError> {
        let start = |inbox, _: &_, lease| {
            let owner = owner::new_owner(&self.dir, name, &self.limits, &self.storage);
            spike_objects::spawn(self.directory.clone(), name.clone(), owner, inbox, lease);
        };
        self.directory.open(name, start).await
    }

    /// Whether `node` no longer owns `name`: its lease lapsed (this node
    /// took it) or another node holds it.
    async fn owner_gone(&self, name: &str, node: &str) -> bool {
        match self.open(&name.into()).await {
            Ok(_) => true,
            Err(OpenError::Elsewhere(holder)) => holder != node,
            Err(OpenError::Unavailable(_)) => false,
        }
    }

    /// The node known to own `name`, lately.
    fn owner_hint(&self, name: &str) -> Option<String> {
        let owners = unpoisoned(self.owners.lock());
        let (node, at) = owners.get(name)?;
        (at.elapsed() < OWNER_HINT).then(|| node.clone())
    }

    fn forget_owner(&self, name: &str) {
        unpoisoned(self.owners.lock()).remove(name);
    }

    async fn forward(
        &self,
        node: &str,
        name: &str,
        work: &Work,
    ) -> Result<forward::Reply, StorageError> {
        let Some(cluster) = self.storage.cluster.as_ref() else {
            return Err(StorageError::NoResponder("no cluster".into()));
        };
        let request = forward::Request {
            database: name.to_string(),
            work: work.clone(),
            trace: self.tracing.get().and_then(|t| (t.current)()),
        };
        let body = forward::wrap(&*self.storage.blobs, forward::encode(&request)).await?;
        let call = cluster.call(node, forward::SERVICE, body, forward::CALL_TIMEOUT);
        tokio::pin!(call);
        // A call the owner took and died with is never answered: past a
        // moment, the lease tells whether the owner is still there.
        let mut look =
            tokio::time::interval_at(tokio::time::Instant::now() + OWNER_LOOK, OWNER_LOOK);
        let answer = loop {
            tokio::select! {
                answer = &mut call => break answer?,
                _ = look.tick() => if self.owner_gone(name, node).await {
                    return Err(StorageError::Backend(format!("node {node} stopped owning the database")));
                },
            }
        };
        let answer = forward::unwrap(&*self.storage.blobs, answer).await?;
        forward::decode(&answer).map_err(StorageError::Corrupt)
    }

    /// Where `name`'s log stands: its last entry (0: none yet), and the
    /// time of the oldest snapshot a restore can start from, if any.
    pub async fn describe(&self, name: &str) -> Result<Described, String> {
        if !valid_name(name) {
            return Err(format!("'{name}' cannot name a database"));
        }
        let log = log::ChangeLog::new(self.storage.clone(), name.into());
        let head = log.head().await.map_err(|e| e.to_string())?;
        let file = self.dir.join(format!("{name}.sqlite"));
        Ok(Described {
            bookmark: head.head,
            compacted_through: head.compacted_through,
            local_bytes: database_bytes(&file),
        })
    }

    /// The databases with a file on this node.
    pub fn on_disk(&self) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut names: Vec<String> = dir
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                Some(name.strip_suffix(".sqlite")?.to_string())
            })
            .filter(|name| valid_name(name))
            .collect();
        names.sort();
        names
    }

    /// Closes every database, waiting up to `deadline` for their work.
    pub async fn stop(&self, deadline: Duration) {
        self.directory.stop(deadline).await;
    }
}

/// Where a database stands (`Databases::describe`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    /// Its log's last entry.
    pub bookmark: u64,
    /// Entries up to this one are gone from the log (retention).
    pub compacted_through: u64,
    /// Its file and WAL on this node (on a cluster, the owner's copy).
    pub local_bytes: u64,
}

/// What a database's files take on disk: the file and its WAL.
pub fn database_bytes(file: &std::path::Path) -> u64 {
    let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
    size(file) + size(&wal::wal_path(file))
}

/// A log entry's number as the bookmark callers see: fixed width, so
/// bookmarks sort as they follow each other.
pub fn bookmark(seq: u64) -> String {
    format!("{seq:016x}")
}

/// The entry a bookmark names.
pub fn parse_bookmark(text: &str) -> Option<u64> {
    (text.len() == 16)
        .then(|| u64::from_str_radix(text, 16).ok())
        .flatten()
}

/// Whether `name` can name a database file: the manifest's grant names
/// are checked the same way.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}
