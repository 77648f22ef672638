//! SQL databases: SQLite files, each an owned object (`spike-objects`)
//! whose one owner task holds its connection and runs its statements in
//! order, under the host's limits (`SqlLimits`, enforced by `guard`).
//!
//! - `Databases`: every database of the host, by name; `run` hands work to
//!   the database's owner (opening it if it is not open) and waits for the
//!   answer.
//! - `owner`: the owner task's side: batches of work run on a blocking
//!   thread, the connection kept between them, closed when idle.
//! - `guard`: the connection as the host opens it: durable at commit,
//!   bounded, timed, and kept inside its file.
//! - `run`: statements, batches (one transaction) and scripts.
//!
//! On one node only, for now: a cluster's databases need their writes in
//! the shared store (issue 36's third part), and `Databases::new` is given
//! no cluster.

mod error;
mod guard;
mod owner;
mod run;
#[cfg(test)]
mod tests;
mod value;

pub use error::SqlError;
pub use owner::Answer;
pub use run::{Counts, Done, Work};
pub use value::{Results, Statement, Value};

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use spike_objects::{Directory, InboxBounds, OpenError};
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

/// Every database of the host.
pub struct Databases {
    directory: Arc<Directory<Command>>,
    /// Where their files are (`<name>.sqlite`, with SQLite's `-wal` and
    /// `-shm` beside each).
    dir: PathBuf,
    limits: SqlLimits,
}

impl Databases {
    /// The databases in `dir` (made if missing), under `limits`.
    pub fn new(dir: PathBuf, limits: SqlLimits) -> std::io::Result<Arc<Self>> {
        spike_storage::util::private_dir(&dir)?;
        Ok(Arc::new(Self {
            directory: Directory::new("sql", None, Duration::from_secs(2), INBOX),
            dir,
            limits,
        }))
    }

    pub fn limits(&self) -> &SqlLimits {
        &self.limits
    }

    /// Runs `work` on the database `name`, opening it if it is not open.
    pub async fn run(&self, name: &str, work: Work) -> Answer {
        let failed = |e: SqlError| Answer {
            result: Err(e),
            counts: Counts::default(),
            time: Duration::ZERO,
        };
        if !valid_name(name) {
            return failed(SqlError::Internal(format!(
                "'{name}' cannot name a database"
            )));
        }
        let name: Arc<str> = name.into();
        let mut work = work;
        // An owner that is ending hands work back: try a new one.
        for _ in 0..8 {
            let start = |inbox, _: &_, lease| {
                let owner = owner::new_owner(&self.dir, &name, &self.limits);
                spike_objects::spawn(self.directory.clone(), name.clone(), owner, inbox, lease);
            };
            let sender = match self.directory.open(&name, start).await {
                Ok(sender) => sender,
                Err(OpenError::Elsewhere(why) | OpenError::Unavailable(why)) => {
                    return failed(SqlError::Internal(format!(
                        "the database is unavailable: {why}"
                    )));
                }
            };
            let (reply, answer) = oneshot::channel();
            work = match sender.send(Command { work, reply }).await {
                Err(spike_objects::mailbox::SendError(command)) => {
                    self.directory.forget(&name, &sender);
                    command.work
                }
                Ok(()) => match answer.await {
                    Ok(Outcome::Done(answer)) => return answer,
                    Ok(Outcome::Closing(work)) => work,
                    Err(_) => return failed(SqlError::Internal("the database stopped".into())),
                },
            };
        }
        failed(SqlError::Internal("the database kept closing".into()))
    }

    /// Closes every database, waiting up to `deadline` for their work.
    pub async fn stop(&self, deadline: Duration) {
        self.directory.stop(deadline).await;
    }
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
