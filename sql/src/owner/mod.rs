//! A database's owner: the one task that holds its connection. It takes
//! the work waiting in its inbox as one batch and runs it on a blocking
//! thread, the connection handed over and back (SQLite blocks; the async
//! workers must not). What the batch committed goes to the change log
//! (`log`) as one entry before any of its answers does, so an answer
//! never tells of a write the log could lose. A database idle for `IDLE`
//! closes its connection and ends; the next call opens it again.
//!
//! Opening: alone, the file is the database and the log catches up with
//! any commit its WAL holds past the log's last entry (a crash between a
//! commit and its append); a file that is gone while its log is not is
//! rebuilt from the log. On a cluster, the owner fences the log and
//! rebuilds the file from the latest snapshot and the entries after it,
//! whatever its disk held.

mod restore;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use spike_objects::{Ending, Object, mailbox};
use tokio::sync::oneshot;

use crate::SqlLimits;
use crate::error::SqlError;
use crate::guard::Guarded;
use crate::log::{Block, ChangeLog, Entry, LogError};
use crate::run::{Counts, Done, Work};
use crate::wal::{self, Frames, Position};

/// How long a database keeps its connection open with no work.
const IDLE: Duration = Duration::from_secs(30);
/// A WAL past this is checkpointed (the log holds its frames already).
const CHECKPOINT_BYTES: u64 = 4 << 20;
/// Bytes of entries after which a snapshot is taken, at least this and
/// the file's size (or `SqlStorage::snapshot_every` entries).
const SNAPSHOT_BYTES: u64 = 64 << 20;

/// Work for the owner, and where its answer goes.
pub struct Command {
    pub work: Work,
    pub reply: oneshot::Sender<Outcome>,
}

impl mailbox::Weigh for Command {
    fn weight(&self) -> usize {
        let statement = |s: &crate::Statement| {
            s.sql.len() + s.params.iter().map(crate::Value::weight).sum::<usize>()
        };
        match &self.work {
            Work::Query(s) => statement(s),
            Work::Batch(all) => all.iter().map(statement).sum(),
            Work::Exec(script) | Work::Script(script) => script.len(),
            Work::Restore(_) | Work::Export => 0,
        }
    }
}

/// The owner's answer.
pub enum Outcome {
    Done(Answer),
    /// The owner was ending: the work, for a new owner.
    Closing(Work),
}

/// What the work did, and what it cost.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Answer {
    pub result: Result<Done, SqlError>,
    pub counts: Counts,
    /// How long it ran (not how long it waited).
    pub time: Duration,
    /// The log entry the database stood at once the work was done (its
    /// write's, if it wrote): a point to restore to.
    pub bookmark: u64,
    /// What the database's files took on disk after its batch (0: not
    /// known).
    pub bytes: u64,
}

impl Answer {
    pub fn failed(e: SqlError) -> Self {
        Answer {
            result: Err(e),
            counts: Counts::default(),
            time: Duration::ZERO,
            bookmark: 0,
            bytes: 0,
        }
    }
}

pub struct Owner {
    path: PathBuf,
    limits: SqlLimits,
    log: ChangeLog,
    /// The open connection, between batches (`None` until the first).
    db: Option<Box<Guarded>>,
    /// The log's last entry, as this owner knows it.
    head: u64,
    /// How far into the WAL the log holds the frames (`None`: none of the
    /// WAL's frames, or no WAL).
    shipped: Option<Position>,
    /// Entries and their bytes since the last snapshot.
    since_snapshot: (u64, u64),
    /// The WAL holds commits the log does not (an append failed): they
    /// go with the next entry, and nothing is checkpointed until then.
    behind: bool,
    /// Another node's fence or entries met: this node no longer owns it.
    moved: bool,
}

impl Object for Owner {
    type Command = Command;

    fn idle(&self) -> Duration {
        IDLE
    }

    /// A database has no users between calls: idle, it ends.
    fn in_use(&self) -> bool {
        false
    }

    async fn handle(&mut self, batch: &mut Vec<Command>) {
        let commands = std::mem::take(batch);
        if self.db.is_none()
            && let Err(e) = self.open().await
        {
            tracing::error!(path = %self.path.display(), "a database did not open: {e}");
            let why = format!("the database did not open: {e}");
            for command in commands {
                let answer = Answer::failed(SqlError::Internal(why.clone()));
                let _ = command.reply.send(Outcome::Done(answer));
            }
            return;
        }
        let (restores, work): (Vec<_>, Vec<_>) = commands
            .into_iter()
            .partition(|c| matches!(c.work, Work::Restore(_)));
        if !work.is_empty() {
            self.run(work).await;
        }
        for command in restores {
            let Work::Restore(to) = command.work else {
                unreachable!("partitioned")
            };
            let answer = self.restore(to).await;
            let _ = command.reply.send(Outcome::Done(answer));
        }
        if let Err(e) = self.tend().await {
            tracing::warn!(path = %self.path.display(), "keeping the database's log: {e}");
        }
    }

    fn hibernate(&mut self) {
        self.db = None;
    }

    fn moved(&self) -> bool {
        self.moved
    }

    fn end(&mut self, _why: Ending) {}

    fn hand_back(command: Command) {
        let _ = command.reply.send(Outcome::Closing(command.work));
    }
}

impl Owner {
    /// Opens the connection (see the module's comment).
    async fn open(&mut self) -> Result<(), LogError> {
        let clustered = self.log.storage().cluster.is_some();
        if clustered {
            self.log.fence().await?;
        }
        let head = self.log.head().await?;
        self.head = head.head;
        self.since_snapshot = (head.head - head.snapshot.map_or(0, |s| s.seq), 0);
        let found = std::fs::metadata(&self.path).is_ok_and(|m| m.len() > 0);
        let last = match clustered {
            true => None,
            false => self.log.entry(head.head).await?,
        };
        // Rebuilt from the log: on a cluster always (whatever this disk
        // held); alone, a file that is gone, or one a restore's entry may
        // not have reached yet (`restore`).
        let restored = matches!(last, Some(Entry::Restored { .. }));
        if clustered || (head.head > 0 && !found) || restored {
            if !clustered && !found {
                tracing::warn!(path = %self.path.display(), "a database's file is gone: rebuilt from its log");
            }
            self.log.rebuild(head.head, &self.path).await?;
            self.shipped = None;
        } else if let Some(Entry::Pages { end, .. }) = last {
            self.shipped = Some(end);
        }
        let (path, limits) = (self.path.clone(), self.limits.clone());
        let db = blocking(move || Guarded::open(&path, &limits).map_err(storage)).await?;
        self.db = Some(Box::new(db));
        if !clustered && head.head == 0 && found {
            // A database from before its log: its file is where the log
            // starts.
            self.snapshot(true).await?;
        }
        // Commits the WAL holds past the log (a crash came between).
        let (path, since) = (self.path.clone(), self.shipped);
        if let Some((frames, block)) = blocking(move || committed(&path, since)).await? {
            self.ship(&frames, block).await?;
        }
        Ok(())
    }

    /// Runs `commands` in order on the connection, ships what they
    /// committed, then answers them.
    async fn run(&mut self, commands: Vec<Command>) {
        let Some(db) = self.db.take() else {
            return;
        };
        let since = self.shipped;
        let path = self.path.clone();
        let ran = tokio::task::spawn_blocking(move || run_all(db, &path, commands, since)).await;
        // A panic in SQLite's thread drops the replies (their callers are
        // told) and the connection (the next batch opens it again).
        let Ok((db, answered, frames)) = ran else {
            return;
        };
        self.db = Some(db);
        let bytes = crate::database_bytes(&self.path);
        let shipped = match frames {
            Ok(None) => Ok(self.head),
            Ok(Some((frames, block))) => self.ship(&frames, block).await,
            Err(e) => Err(e),
        };
        for (reply, mut answer) in answered {
            answer.bytes = bytes;
            match &shipped {
                Ok(head) => answer.bookmark = *head,
                Err(e) => {
                    answer.result = Err(SqlError::Internal(format!(
                        "the change could not be logged, and may or may not be kept: {e}"
                    )))
                }
            }
            let _ = reply.send(Outcome::Done(answer));
        }
    }

    /// Appends `frames` (deflated as `block`) to the log as its next
    /// entry.
    async fn ship(&mut self, frames: &Frames, block: Block) -> Result<u64, LogError> {
        let seq = self.head + 1;
        self.behind = true;
        match self.log.append_pages(seq, frames, block).await {
            Ok(bytes) => {
                self.behind = false;
                self.head = seq;
                self.shipped = Some(frames.end);
                self.since_snapshot.0 += 1;
                self.since_snapshot.1 += bytes;
                Ok(seq)
            }
            Err(LogError::Moved) => {
                self.lost();
                Err(LogError::Moved)
            }
            Err(e) => Err(e),
        }
    }

    /// Another node owns the database now: what this one holds of it is
    /// no one's (its next owner here rebuilds it from the log).
    fn lost(&mut self) {
        self.moved = true;
        self.db = None;
        if let Err(e) = crate::log::remove_database(&self.path) {
            tracing::warn!(path = %self.path.display(), "removing a moved database: {e}");
        }
    }

    /// After a batch: checkpoints a long WAL, snapshots when enough
    /// entries passed.
    async fn tend(&mut self) -> Result<(), LogError> {
        if self.moved || self.db.is_none() {
            return Ok(());
        }
        if self.behind {
            let (path, since) = (self.path.clone(), self.shipped);
            match blocking(move || committed(&path, since)).await? {
                Some((frames, block)) => self.ship(&frames, block).await.map(drop)?,
                None => self.behind = false,
            }
        }
        let file_bytes = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        let (entries, bytes) = self.since_snapshot;
        let every = self.log.storage().snapshot_every;
        if entries >= every || bytes >= SNAPSHOT_BYTES.max(file_bytes) {
            return self.snapshot(false).await;
        }
        if self.shipped.is_some_and(|p| p.offset > CHECKPOINT_BYTES) {
            self.checkpoint().await?;
        }
        Ok(())
    }

    async fn checkpoint(&mut self) -> Result<(), LogError> {
        let db = self.db.take().expect("open");
        let (db, done) = blocking(move || {
            let done = db.checkpoint();
            Ok((db, done))
        })
        .await?;
        self.db = Some(db);
        done.map_err(storage)
    }

    /// Keeps the file as a snapshot of the log's head; `restored`: as a
    /// new entry saying the database is this file (the log starts here).
    async fn snapshot(&mut self, restored: bool) -> Result<(), LogError> {
        self.checkpoint().await?;
        let copy = sibling(&self.path, ".snapshot");
        let (from, to) = (self.path.clone(), copy.clone());
        blocking(move || std::fs::copy(&from, &to).map_err(storage)).await?;
        let seq = self.head + u64::from(restored);
        let saved = async {
            let key = self.log.upload_snapshot(seq, &copy).await?;
            if restored {
                let at_ms = spike_storage::util::now_ms();
                let entry = Entry::Restored {
                    at_ms,
                    snapshot: key.clone(),
                };
                self.log.append(seq, &entry).await?;
            }
            self.log.record_snapshot(seq, key).await
        };
        let saved = saved.await;
        let _ = std::fs::remove_file(&copy);
        if let Err(LogError::Moved) = saved {
            self.lost();
        }
        saved?;
        self.head = seq;
        self.shipped = None;
        self.since_snapshot = (0, 0);
        Ok(())
    }
}

/// Runs `commands` in order on the connection, as one transaction
/// (`group`), and reads what they committed from the WAL; gives the
/// connection back.
#[allow(clippy::type_complexity)]
fn run_all(
    mut db: Box<Guarded>,
    path: &Path,
    commands: Vec<Command>,
    since: Option<Position>,
) -> (
    Box<Guarded>,
    Vec<(oneshot::Sender<Outcome>, Answer)>,
    Result<Option<(Frames, Block)>, LogError>,
) {
    let works: Vec<&Work> = commands.iter().map(|c| &c.work).collect();
    let ran = db.run_group(&works);
    let answered = (commands.into_iter().zip(ran))
        .map(|(command, ran)| {
            let answer = Answer {
                result: ran.result,
                counts: ran.counts,
                time: ran.time,
                bookmark: 0,
                bytes: 0,
            };
            (command.reply, answer)
        })
        .collect();
    (db, answered, committed(path, since))
}

/// What the WAL of the database at `path` committed after `since`, and
/// its pages deflated for the log (on a blocking thread).
fn committed(path: &Path, since: Option<Position>) -> Result<Option<(Frames, Block)>, LogError> {
    let Some(frames) = wal::committed_since(&wal::wal_path(path), since).map_err(storage)? else {
        return Ok(None);
    };
    let block = crate::log::deflate(&frames, &sibling(path, ".entry")).map_err(storage)?;
    Ok(Some((frames, block)))
}

fn storage(e: impl std::fmt::Display) -> LogError {
    LogError::Storage(e.to_string())
}

/// Runs `f` on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, LogError> + Send + 'static,
) -> Result<T, LogError> {
    tokio::task::spawn_blocking(f).await.map_err(storage)?
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

/// The owner of a new database `name`, for `spawn`.
pub fn new_owner(
    dir: &Path,
    name: &Arc<str>,
    limits: &SqlLimits,
    storage: &crate::log::SqlStorage,
) -> Owner {
    Owner {
        path: dir.join(format!("{name}.sqlite")),
        limits: limits.clone(),
        log: ChangeLog::new(storage.clone(), name.clone()),
        db: None,
        head: 0,
        shipped: None,
        since_snapshot: (0, 0),
        behind: false,
        moved: false,
    }
}
