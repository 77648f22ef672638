//! A database's snapshots, and its entries too big to be inline, in the
//! blob store: `<db>/snapshots/<entry>` (the whole file as it was after
//! that entry) and `<db>/changes/<entry>-<unique>`. Which snapshot a new
//! owner starts from is the log's own (`RoomLog::compact` keeps its key);
//! older ones stay as long as a restore within the retention needs them.

use std::path::Path;

use bytes::Bytes;
use spike_storage::{Quota, RoomSnapshot};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{BUCKET, ChangeLog, LogError};

/// A snapshot kept in the blob store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The last entry it covers.
    pub seq: u64,
    pub key: String,
    pub at_ms: u64,
}

impl ChangeLog {
    /// Keeps the database file `file` as the snapshot of entry `seq`; its
    /// key.
    pub async fn upload_snapshot(&self, seq: u64, file: &Path) -> Result<String, LogError> {
        let key = format!("{}/snapshots/{seq:020}", self.database);
        self.upload(&key, file, seq).await?;
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

    /// Keeps the file `path` as the blob `key` (of entry `seq`), a MiB at
    /// a time.
    pub(super) async fn upload(&self, key: &str, path: &Path, seq: u64) -> Result<(), LogError> {
        let mut upload = self.storage.blobs.upload().await?;
        let mut file = tokio::fs::File::open(path).await?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            upload.write(&buf[..n]).await?;
        }
        let metadata = vec![("seq".to_string(), seq.to_string())];
        upload
            .commit(BUCKET, key, None, metadata, Quota::NONE)
            .await?;
        Ok(())
    }

    pub(super) async fn download(
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

    pub(super) async fn download_file(&self, key: &str, into: &Path) -> Result<(), LogError> {
        let mut file = tokio::fs::File::create(into).await?;
        self.download(key, &mut file).await?;
        file.flush().await?;
        file.sync_all().await?;
        Ok(())
    }
}

/// The number a blob key under `prefix` starts with.
fn number_in(key: &str, prefix: &str) -> Option<u64> {
    let rest = key.strip_prefix(prefix)?;
    rest.split('-').next()?.parse().ok()
}
