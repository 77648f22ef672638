//! A database's change log: every committed write, as the pages it wrote
//! (`wal`), appended to the storage's log (`RoomLog`, under `#sql/<db>`)
//! before the write is answered, and snapshots of the whole file in the
//! blob store (bucket `spike/sql`, which no plugin can be granted: its
//! name has a `/`). On a cluster the log is JetStream's, fenced as room
//! logs are, so a database survives the loss of its owner's disk: a new
//! owner takes the latest snapshot and replays the entries after it. On
//! any node the log is what a point-in-time restore replays.
//!
//! An entry (`entry`) is the pages one or more commits wrote, or the note
//! that the database was restored; a big transaction's pages are a blob
//! the entry names, so it lands whole or not at all. Entry numbers are the
//! bookmarks the callers see.

mod entry;
mod snapshots;

pub use entry::{Entry, Stored};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use spike_storage::{BlobBackend, Cluster, Quota, RoomLog, RoomLogHead};

use crate::wal::Frames;
use entry::inflate;
pub use entry::{Block, deflate};

/// The blob bucket of snapshots and large entries.
pub const BUCKET: &str = "spike/sql";
/// Entries read from the log at once when replaying.
const READ_PAGE: usize = 256;

/// Where databases keep their logs and snapshots.
#[derive(Clone)]
pub struct SqlStorage {
    pub log: Arc<dyn RoomLog>,
    pub blobs: Arc<dyn BlobBackend>,
    /// The other nodes, when the storage is shared.
    pub cluster: Option<Arc<dyn Cluster>>,
    /// How long a database can be restored back to.
    pub retention: std::time::Duration,
    /// Entries after which its owner takes a snapshot (fewer to replay
    /// on a takeover); `SNAPSHOT_EVERY` unless a test wants them often.
    pub snapshot_every: u64,
}

/// Entries between snapshots by default.
pub const SNAPSHOT_EVERY: u64 = 2_000;

/// Why the log could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Another owner wrote to the log (its fence, or its entries): this
    /// node no longer owns the database.
    #[error("another node owns the database now")]
    Moved,
    #[error("{0}")]
    Storage(String),
}

impl From<spike_storage::StorageError> for LogError {
    fn from(e: spike_storage::StorageError) -> Self {
        match e {
            spike_storage::StorageError::RoomConflict { .. } => LogError::Moved,
            e => LogError::Storage(e.to_string()),
        }
    }
}

impl From<std::io::Error> for LogError {
    fn from(e: std::io::Error) -> Self {
        LogError::Storage(e.to_string())
    }
}

/// One database's log.
#[derive(Clone)]
pub struct ChangeLog {
    storage: SqlStorage,
    database: Arc<str>,
    /// Its name in the storage's logs.
    log: String,
}

impl ChangeLog {
    pub fn new(storage: SqlStorage, database: Arc<str>) -> Self {
        // `#` is in no plugin's room name: the logs cannot meet.
        let log = format!("#sql/{database}");
        Self {
            storage,
            database,
            log,
        }
    }

    pub fn storage(&self) -> &SqlStorage {
        &self.storage
    }

    pub async fn head(&self) -> Result<RoomLogHead, LogError> {
        Ok(self.storage.log.head(&self.log).await?)
    }

    /// Makes every append another node prepared fail (`LogError::Moved`
    /// to it): a new owner's first act.
    pub async fn fence(&self) -> Result<(), LogError> {
        Ok(self.storage.log.fence(&self.log).await?)
    }

    /// Entry `seq`, if the log holds it.
    pub async fn entry(&self, seq: u64) -> Result<Option<Entry>, LogError> {
        Ok(self
            .entries(seq.saturating_sub(1), 1)
            .await?
            .pop()
            .map(|e| e.1))
    }

    /// Up to `limit` entries after `after`.
    pub async fn entries(&self, after: u64, limit: usize) -> Result<Vec<(u64, Entry)>, LogError> {
        let raw = self.storage.log.read(&self.log, after, limit).await?;
        raw.into_iter()
            .map(|(seq, bytes)| {
                let entry = Entry::decode(bytes).ok_or_else(|| {
                    LogError::Storage(format!("entry {seq} of '{}' is corrupt", self.database))
                })?;
                Ok((seq, entry))
            })
            .collect()
    }

    /// Appends `frames`, deflated as `block`, as entry `seq` (the head
    /// plus one), durably; the bytes its pages took.
    pub async fn append_pages(
        &self,
        seq: u64,
        frames: &Frames,
        block: Block,
    ) -> Result<u64, LogError> {
        let (pages, bytes) = match block {
            Block::Inline(block) => {
                let bytes = block.len() as u64;
                (Stored::Inline(block.into()), bytes)
            }
            Block::Spilled(file) => {
                let key = format!(
                    "{}/changes/{seq:020}-{}",
                    self.database,
                    spike_storage::util::unique_suffix()
                );
                let uploaded = self.upload(&key, &file, seq).await;
                let bytes = std::fs::metadata(&file).map_or(0, |m| m.len());
                let _ = std::fs::remove_file(&file);
                uploaded?;
                (Stored::Blob(key), bytes)
            }
        };
        let entry = Entry::Pages {
            at_ms: spike_storage::util::now_ms(),
            page_size: frames.page_size,
            db_pages: frames.db_pages,
            end: frames.end,
            pages,
        };
        self.append(seq, &entry).await?;
        Ok(bytes)
    }

    /// Appends `entry` as number `seq`.
    pub async fn append(&self, seq: u64, entry: &Entry) -> Result<(), LogError> {
        let events = vec![entry.encode()];
        Ok(self
            .storage
            .log
            .append(&self.log, seq, events, Quota::NONE)
            .await?)
    }

    /// Writes the database as it was after entry `target` into `into`
    /// (replacing it): the newest snapshot at or before it, then the
    /// entries after that snapshot. `Err` if the log no longer reaches
    /// back that far.
    pub async fn rebuild(&self, target: u64, into: &Path) -> Result<(), LogError> {
        remove_database(into)?;
        let base = (self.snapshots().await?.into_iter()).rfind(|s| s.seq <= target);
        let head = self.head().await?;
        let mut at = 0;
        if let Some(base) = base {
            self.download_file(&base.key, into).await?;
            at = base.seq;
        }
        if at < head.compacted_through.min(target) {
            return Err(LogError::Storage(format!(
                "the log of '{}' no longer reaches back to entry {target}",
                self.database
            )));
        }
        'replay: while at < target {
            let entries = self.entries(at, READ_PAGE).await?;
            if entries.is_empty() {
                break;
            }
            for (seq, entry) in entries {
                if seq > target {
                    break 'replay;
                }
                self.replay(&entry, into).await?;
                at = seq;
            }
        }
        // Written page by page unsynced: synced once, at the end.
        if let Ok(file) = tokio::fs::File::open(into).await {
            file.sync_all().await?;
        }
        Ok(())
    }

    /// Applies one entry to the database file `into`.
    async fn replay(&self, entry: &Entry, into: &Path) -> Result<(), LogError> {
        match entry {
            Entry::Pages {
                page_size,
                db_pages,
                pages,
                ..
            } => {
                // A blob's pages come to a file first: any size, in bounded
                // memory.
                let fetched = match pages {
                    Stored::Inline(_) => None,
                    Stored::Blob(key) => {
                        let file = sibling(into, ".replay");
                        self.download_file(key, &file).await?;
                        Some(file)
                    }
                };
                let (path, page_size, db_pages) = (into.to_path_buf(), *page_size, *db_pages);
                let inline = match pages {
                    Stored::Inline(bytes) => bytes.clone(),
                    Stored::Blob(_) => bytes::Bytes::new(),
                };
                tokio::task::spawn_blocking(move || {
                    let applied = match &fetched {
                        None => crate::wal::apply(
                            &path,
                            page_size,
                            db_pages,
                            inflate(&inline[..], page_size),
                        ),
                        Some(file) => {
                            let block = std::io::BufReader::new(std::fs::File::open(file)?);
                            crate::wal::apply(&path, page_size, db_pages, inflate(block, page_size))
                        }
                    };
                    if let Some(file) = fetched {
                        let _ = std::fs::remove_file(file);
                    }
                    applied
                })
                .await
                .map_err(|e| LogError::Storage(e.to_string()))??;
            }
            Entry::Restored { snapshot, .. } => {
                remove_database(into)?;
                self.download_file(snapshot, into).await?;
            }
        }
        Ok(())
    }

    /// The last entry at or before `time_ms` (0: before the first).
    /// `Err` if the log no longer reaches back to that time.
    pub async fn seq_at(&self, time_ms: u64) -> Result<u64, LogError> {
        let head = self.head().await?;
        let mut found = head.compacted_through;
        let mut at = head.compacted_through;
        loop {
            let entries = self.entries(at, READ_PAGE).await?;
            let Some(last) = entries.last().map(|e| e.0) else {
                return Ok(found);
            };
            for (seq, entry) in entries {
                if entry.at_ms() > time_ms {
                    if seq == head.compacted_through + 1 && head.compacted_through > 0 {
                        return Err(LogError::Storage(format!(
                            "the log of '{}' reaches back only to {} ms since the epoch",
                            self.database,
                            entry.at_ms()
                        )));
                    }
                    return Ok(found);
                }
                found = seq;
            }
            at = last;
        }
    }
}

/// Removes a database file and SQLite's files beside it.
pub fn remove_database(path: &Path) -> std::io::Result<()> {
    for file in [
        path.to_path_buf(),
        crate::wal::wal_path(path),
        sibling(path, "-shm"),
    ] {
        match std::fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}
