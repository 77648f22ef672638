//! A database's change log: every committed write, as the pages it wrote
//! (`wal`), appended to the storage's log (`RoomLog`, under `#sql/<db>`)
//! before the write is answered, and snapshots of the whole file in the
//! blob store (bucket `spike/sql`, which no plugin can be granted: its
//! name has a `/`). On a cluster the log is JetStream's, fenced as room
//! logs are, so a database survives the loss of its owner's disk: a new
//! owner takes the latest snapshot and replays the entries after it. On
//! any node the log is what a point-in-time restore replays.
//!
//! An entry is the pages one or more commits wrote (`Pages`), deflated,
//! kept inline up to `INLINE` and else in a blob the entry names (a big
//! transaction lands whole or not at all either way); or the note that the
//! database was restored (`Restored`): it is now the snapshot the entry
//! names. Entry numbers are the bookmarks the callers see.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use spike_storage::{BlobBackend, Cluster, Quota, RoomLog, RoomLogHead, RoomSnapshot};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::wal::{Frames, Position};

/// The blob bucket of snapshots and large entries.
pub const BUCKET: &str = "spike/sql";
/// Entries whose pages deflate to more than this keep them in a blob.
const INLINE: usize = 256 * 1024;
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

/// One entry of a database's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Pages {
        at_ms: u64,
        page_size: u32,
        db_pages: u32,
        /// Where the owner's WAL stood after these pages.
        end: Position,
        pages: Stored,
    },
    /// The database became the snapshot `snapshot` (a restore).
    Restored { at_ms: u64, snapshot: String },
}

/// Where an entry's pages are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    Inline(Bytes),
    Blob(String),
}

const PAGES_INLINE: u8 = 1;
const PAGES_IN_BLOB: u8 = 2;
const RESTORED: u8 = 3;

impl Entry {
    pub fn at_ms(&self) -> u64 {
        match self {
            Entry::Pages { at_ms, .. } | Entry::Restored { at_ms, .. } => *at_ms,
        }
    }

    fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        match self {
            Entry::Pages {
                at_ms,
                page_size,
                db_pages,
                end,
                pages,
            } => {
                let (kind, body) = match pages {
                    Stored::Inline(bytes) => (PAGES_INLINE, bytes.as_ref()),
                    Stored::Blob(key) => (PAGES_IN_BLOB, key.as_bytes()),
                };
                out.put_u8(kind);
                out.put_u64_le(*at_ms);
                out.put_u32_le(*page_size);
                out.put_u32_le(*db_pages);
                out.put_u32_le(end.salt[0]);
                out.put_u32_le(end.salt[1]);
                out.put_u64_le(end.offset);
                out.put_u32_le(end.checksum[0]);
                out.put_u32_le(end.checksum[1]);
                out.put_slice(body);
            }
            Entry::Restored { at_ms, snapshot } => {
                out.put_u8(RESTORED);
                out.put_u64_le(*at_ms);
                out.put_slice(snapshot.as_bytes());
            }
        }
        out.freeze()
    }

    fn decode(mut raw: Bytes) -> Option<Self> {
        if raw.len() < 9 {
            return None;
        }
        let kind = raw.get_u8();
        let at_ms = raw.get_u64_le();
        let text = |raw: Bytes| String::from_utf8(raw.to_vec()).ok();
        match kind {
            PAGES_INLINE | PAGES_IN_BLOB if raw.len() >= 32 => {
                let page_size = raw.get_u32_le();
                let db_pages = raw.get_u32_le();
                let salt = [raw.get_u32_le(), raw.get_u32_le()];
                let offset = raw.get_u64_le();
                let checksum = [raw.get_u32_le(), raw.get_u32_le()];
                let pages = match kind {
                    PAGES_INLINE => Stored::Inline(raw),
                    _ => Stored::Blob(text(raw)?),
                };
                Some(Entry::Pages {
                    at_ms,
                    page_size,
                    db_pages,
                    end: Position {
                        salt,
                        offset,
                        checksum,
                    },
                    pages,
                })
            }
            RESTORED => Some(Entry::Restored {
                at_ms,
                snapshot: text(raw)?,
            }),
            _ => None,
        }
    }
}

/// `frames`' pages as one deflated block: `[page u32][bytes]` each.
fn deflate(frames: &Frames) -> std::io::Result<Vec<u8>> {
    let mut out = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    for (page, data) in &frames.pages {
        out.write_all(&page.to_le_bytes())?;
        out.write_all(data)?;
    }
    out.finish()
}

/// The pages of a deflated block of pages of `page_size`.
fn inflate(block: &[u8], page_size: u32) -> std::io::Result<Vec<(u32, Vec<u8>)>> {
    let mut raw = Vec::new();
    flate2::read::DeflateDecoder::new(block).read_to_end(&mut raw)?;
    let each = 4 + page_size as usize;
    if raw.len() % each != 0 {
        return Err(std::io::Error::other("a change's pages are cut short"));
    }
    Ok(raw
        .chunks_exact(each)
        .map(|c| {
            let page = u32::from_le_bytes(c[..4].try_into().expect("4 bytes"));
            (page, c[4..].to_vec())
        })
        .collect())
}

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

/// A snapshot kept in the blob store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The last entry it covers.
    pub seq: u64,
    pub key: String,
    pub at_ms: u64,
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

    /// Appends `frames` as entry `seq` (the head plus one), durably; the
    /// bytes its pages took.
    pub async fn append_pages(&self, seq: u64, frames: &Frames) -> Result<u64, LogError> {
        let block = deflate(frames)?;
        let bytes = block.len() as u64;
        let pages = if block.len() <= INLINE {
            Stored::Inline(block.into())
        } else {
            let key = format!(
                "{}/changes/{seq:020}-{}",
                self.database,
                spike_storage::util::unique_suffix()
            );
            self.upload(&key, UploadFrom::Bytes(&block), seq).await?;
            Stored::Blob(key)
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

    /// The pages of a `Pages` entry.
    pub async fn pages(
        &self,
        stored: &Stored,
        page_size: u32,
    ) -> Result<Vec<(u32, Vec<u8>)>, LogError> {
        let block = match stored {
            Stored::Inline(bytes) => bytes.to_vec(),
            Stored::Blob(key) => {
                let mut out = Vec::new();
                self.download(key, &mut out).await?;
                out
            }
        };
        Ok(inflate(&block, page_size)?)
    }

    /// Keeps the database file `file` as the snapshot of entry `seq`; its
    /// key.
    pub async fn upload_snapshot(&self, seq: u64, file: &Path) -> Result<String, LogError> {
        let key = format!("{}/snapshots/{seq:020}", self.database);
        self.upload(&key, UploadFrom::File(file), seq).await?;
        Ok(key)
    }

    /// Makes the snapshot `key` of entry `seq` (in the log by now) the
    /// one a new owner starts from, and drops what no restore within the
    /// retention needs any more.
    pub async fn record_snapshot(&self, seq: u64, key: String) -> Result<(), LogError> {
        let snapshot = RoomSnapshot {
            seq,
            data: Bytes::from(key.clone()),
        };
        let kept = self.snapshots().await?;
        let horizon =
            spike_storage::util::now_ms().saturating_sub(self.storage.retention.as_millis() as u64);
        // The newest snapshot from before the horizon is the oldest any
        // restore within it starts from; what is older goes.
        let oldest_needed = kept
            .iter()
            .filter(|s| s.at_ms <= horizon && s.seq <= seq)
            .map(|s| s.seq)
            .max()
            .unwrap_or(0);
        self.storage
            .log
            .compact(&self.log, snapshot, oldest_needed)
            .await?;
        self.drop_blobs_before(oldest_needed).await
    }

    /// Snapshots and large entries of entries before `seq`.
    async fn drop_blobs_before(&self, seq: u64) -> Result<(), LogError> {
        for (prefix, keep_equal) in [("snapshots", true), ("changes", false)] {
            let prefix = format!("{}/{prefix}/", self.database);
            for info in self.list(&prefix).await? {
                let n = number_in(&info.key, &prefix);
                if n.is_some_and(|n| n < seq || (!keep_equal && n == seq)) {
                    self.storage.blobs.delete(BUCKET, &info.key).await?;
                }
            }
        }
        Ok(())
    }

    /// The snapshots kept, oldest first.
    pub async fn snapshots(&self) -> Result<Vec<Snapshot>, LogError> {
        let prefix = format!("{}/snapshots/", self.database);
        let mut all: Vec<Snapshot> = (self.list(&prefix).await?.into_iter())
            .filter_map(|info| {
                let seq = number_in(&info.key, &prefix)?;
                Some(Snapshot {
                    seq,
                    key: info.key,
                    at_ms: info.uploaded_at_ms,
                })
            })
            .collect();
        all.sort_by_key(|s| s.seq);
        Ok(all)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<spike_storage::ObjectInfo>, LogError> {
        let mut all = Vec::new();
        let mut cursor = None;
        loop {
            let page = (self.storage.blobs)
                .list(BUCKET, prefix, cursor.as_deref(), 1000)
                .await?;
            all.extend(page.items);
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(all),
            }
        }
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
                let pages = self.pages(pages, *page_size).await?;
                let (path, page_size, db_pages) = (into.to_path_buf(), *page_size, *db_pages);
                tokio::task::spawn_blocking(move || {
                    let each = pages.iter().map(|(n, d)| (*n, d.as_slice()));
                    crate::wal::apply(&path, page_size, db_pages, each)
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

    async fn upload(&self, key: &str, from: UploadFrom<'_>, seq: u64) -> Result<(), LogError> {
        let mut upload = self.storage.blobs.upload().await?;
        match from {
            UploadFrom::Bytes(bytes) => upload.write(bytes).await?,
            UploadFrom::File(path) => {
                let mut file = tokio::fs::File::open(path).await?;
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = file.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    upload.write(&buf[..n]).await?;
                }
            }
        }
        let metadata = vec![("seq".to_string(), seq.to_string())];
        upload
            .commit(BUCKET, key, None, metadata, Quota::NONE)
            .await?;
        Ok(())
    }

    async fn download(
        &self,
        key: &str,
        out: &mut (impl tokio::io::AsyncWrite + Unpin),
    ) -> Result<(), LogError> {
        let object = (self.storage.blobs.open(BUCKET, key).await?)
            .ok_or_else(|| LogError::Storage(format!("{key} is missing from the blob store")))?;
        let mut body = object.body.range(0, object.info.size).await?;
        tokio::io::copy(&mut body, out).await?;
        Ok(())
    }

    async fn download_file(&self, key: &str, into: &Path) -> Result<(), LogError> {
        let mut file = tokio::fs::File::create(into).await?;
        self.download(key, &mut file).await?;
        file.flush().await?;
        file.sync_all().await?;
        Ok(())
    }
}

enum UploadFrom<'a> {
    Bytes(&'a [u8]),
    File(&'a Path),
}

/// The number a blob key under `prefix` starts with.
fn number_in(key: &str, prefix: &str) -> Option<u64> {
    let rest = key.strip_prefix(prefix)?;
    rest.split('-').next()?.parse().ok()
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
