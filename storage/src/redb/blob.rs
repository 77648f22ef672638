//! Blob buckets on redb and files. Object bodies are files named by their
//! SHA-256 under `blobs/`, shared between objects with the same bytes and
//! reference-counted in redb; object records live in redb. An upload is
//! written to a temporary file while it is hashed, then fsynced, renamed
//! into place and committed in one redb transaction, so an object is either
//! wholly there or not at all.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt};

use super::usage::{self, Kind, USAGE};
use super::{BLOB_OBJECTS, BLOB_REFS, Inner, RedbBackend, blocking, list_scope};
use crate::spool::Spool;
use crate::util::{now_ms, unpoisoned};
use crate::{
    BlobBackend, ObjectBody, ObjectInfo, ObjectUpload, OpenObject, Page, Quota, Result,
    StorageError, Usage,
};

/// What redb keeps about an object (the key is the table's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    sha256: String,
    size: u64,
    content_type: Option<String>,
    metadata: Vec<(String, String)>,
    uploaded_at_ms: u64,
}

impl Record {
    fn info(self, key: &str) -> ObjectInfo {
        ObjectInfo {
            key: key.to_string(),
            size: self.size,
            etag: self.sha256,
            content_type: self.content_type,
            metadata: self.metadata,
            uploaded_at_ms: self.uploaded_at_ms,
        }
    }
}

fn decode(raw: &[u8]) -> Result<Record> {
    serde_json::from_slice(raw).map_err(|e| StorageError::Corrupt(format!("blob record: {e}")))
}

impl Inner {
    /// The file holding the body with this hash.
    fn body_path(&self, sha256: &str) -> PathBuf {
        let shard = sha256.get(..2).unwrap_or("00");
        self.root.join("blobs").join(shard).join(sha256)
    }

    fn blob_head(&self, bucket: &str, key: &str) -> Result<Option<Record>> {
        let txn = redb::ReadableDatabase::begin_read(&*self.db)?;
        let table = txn.open_table(BLOB_OBJECTS)?;
        table
            .get((bucket, key))?
            .map(|raw| decode(raw.value()))
            .transpose()
    }

    /// The record of `bucket/key` and its body, opened: the caller streams
    /// from the file it got, whatever writers do next (an unlinked file
    /// stays readable through an open handle).
    ///
    /// An overwrite commits the new record and then unlinks the old body,
    /// so a body can vanish between reading a record and opening its file.
    /// That means a newer record is committed: read again. After a few tries
    /// (a key overwritten that often), take the lock writers unlink under,
    /// which settles it.
    fn blob_open(&self, bucket: &str, key: &str) -> Result<Option<(Record, std::fs::File)>> {
        const OPTIMISTIC_TRIES: usize = 8;
        for attempt in 0..=OPTIMISTIC_TRIES {
            let _guard = (attempt == OPTIMISTIC_TRIES).then(|| unpoisoned(self.blob_fs.lock()));
            let Some(record) = self.blob_head(bucket, key)? else {
                return Ok(None);
            };
            match std::fs::File::open(self.body_path(&record.sha256)) {
                Ok(file) => return Ok(Some((record, file))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StorageError::io("opening a blob body")(e)),
            }
        }
        Err(StorageError::Corrupt(format!(
            "{bucket}/{key}: the record points at a missing body"
        )))
    }

    /// Makes a finished upload the object `bucket/key`, durable on return,
    /// unless that passes the bucket's `quota` (then nothing is kept of it).
    fn blob_commit(
        &self,
        bucket: &str,
        key: &str,
        staged: &Path,
        record: &Record,
        quota: Quota,
    ) -> Result<()> {
        let body = self.body_path(&record.sha256);
        let io = |what: &str| StorageError::io(format!("{what} {}", body.display()));
        let _guard = unpoisoned(self.blob_fs.lock());
        let placed = !body.exists();
        if !placed {
            std::fs::remove_file(staged).map_err(io("dropping a duplicate of"))?;
        } else {
            let dir = body.parent().expect("body paths have a shard folder");
            std::fs::create_dir_all(dir).map_err(io("creating the folder of"))?;
            std::fs::rename(staged, &body).map_err(io("moving an upload to"))?;
            // Make the rename itself durable before redb points at it.
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io("syncing the folder of"))?;
        }
        let txn = self.db.begin_write()?;
        let orphan = {
            let mut objects = txn.open_table(BLOB_OBJECTS)?;
            let mut refs = txn.open_table(BLOB_REFS)?;
            let mut ledger = txn.open_table(USAGE)?;
            let raw = serde_json::to_vec(record)
                .map_err(|e| StorageError::Corrupt(format!("encoding a blob record: {e}")))?;
            let old_size = (objects.get((bucket, key))?)
                .map(|o| decode(o.value()))
                .transpose()?
                .map(|o| o.size);
            let before = usage::get(&ledger, Kind::Blob, bucket)?;
            let bytes = record.size as i64 - old_size.unwrap_or(0) as i64;
            let after = usage::moved(before, bytes, i64::from(old_size.is_none()));
            if let Err(refused) = quota.check(&Kind::Blob.describe(bucket), before, after) {
                drop((objects, refs, ledger));
                drop(txn);
                // A body this upload put in place, which nothing points at.
                if placed {
                    self.remove_body(&record.sha256);
                }
                return Err(refused);
            }
            usage::put(&mut ledger, Kind::Blob, bucket, after)?;
            let old = objects
                .insert((bucket, key), raw.as_slice())?
                .map(|o| decode(o.value()))
                .transpose()?;
            add_ref(&mut refs, &record.sha256, 1)?;
            match old {
                Some(old) => add_ref(&mut refs, &old.sha256, -1)?,
                None => None,
            }
        };
        txn.commit()?;
        if let Some(hash) = orphan {
            self.remove_body(&hash);
        }
        Ok(())
    }

    fn blob_delete(&self, bucket: &str, key: &str) -> Result<bool> {
        let _guard = unpoisoned(self.blob_fs.lock());
        let txn = self.db.begin_write()?;
        let (existed, orphan) = {
            let mut objects = txn.open_table(BLOB_OBJECTS)?;
            let mut refs = txn.open_table(BLOB_REFS)?;
            let mut ledger = txn.open_table(USAGE)?;
            let old = objects
                .remove((bucket, key))?
                .map(|o| decode(o.value()))
                .transpose()?;
            match old {
                Some(old) => {
                    let before = usage::get(&ledger, Kind::Blob, bucket)?;
                    let after = usage::moved(before, -(old.size as i64), -1);
                    usage::put(&mut ledger, Kind::Blob, bucket, after)?;
                    (true, add_ref(&mut refs, &old.sha256, -1)?)
                }
                None => (false, None),
            }
        };
        txn.commit()?;
        if let Some(hash) = orphan {
            self.remove_body(&hash);
        }
        Ok(existed)
    }

    fn remove_body(&self, hash: &str) {
        let path = self.body_path(hash);
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::error!(path = %path.display(), "removing an unreferenced blob body: {e}");
        }
    }
}

/// Adds `delta` to the reference count of `hash`; returns the hash if it
/// dropped to zero (its file is then to be removed after the commit).
fn add_ref(refs: &mut redb::Table<&str, u64>, hash: &str, delta: i64) -> Result<Option<String>> {
    let current = refs.get(hash)?.map(|g| g.value()).unwrap_or(0);
    let next = current.saturating_add_signed(delta);
    if next == 0 {
        refs.remove(hash)?;
        Ok(Some(hash.to_string()))
    } else {
        refs.insert(hash, next)?;
        Ok(None)
    }
}

/// Removes body files no object points at (left by a crash between an
/// upload's rename and its commit). Run once, at open.
pub(super) fn sweep_orphans(inner: &Inner) -> Result<usize> {
    let io = StorageError::io("sweeping blob bodies");
    let _guard = unpoisoned(inner.blob_fs.lock());
    let txn = redb::ReadableDatabase::begin_read(&*inner.db)?;
    let refs = txn.open_table(BLOB_REFS)?;
    let mut removed = 0;
    let shards = std::fs::read_dir(inner.root.join("blobs")).map_err(io)?;
    for shard in shards.flatten() {
        let is_dir = shard.file_type().is_ok_and(|t| t.is_dir());
        if shard.file_name() == "tmp" || !is_dir {
            continue;
        }
        let Ok(bodies) = std::fs::read_dir(shard.path()) else {
            continue;
        };
        for body in bodies.flatten() {
            let name = body.file_name();
            let referenced = match name.to_str() {
                Some(hash) => refs.get(hash)?.is_some(),
                None => false,
            };
            if !referenced && std::fs::remove_file(body.path()).is_ok() {
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// An upload: a spooled temporary file, renamed into place at commit.
struct Upload {
    inner: Arc<Inner>,
    spool: Spool,
}

#[async_trait::async_trait]
impl ObjectUpload for Upload {
    async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.spool.write(bytes).await
    }

    async fn commit(
        self: Box<Self>,
        bucket: &str,
        key: &str,
        content_type: Option<String>,
        metadata: Vec<(String, String)>,
        quota: Quota,
    ) -> Result<ObjectInfo> {
        let spooled = self.spool.finish().await?;
        let record = Record {
            sha256: spooled.sha256,
            size: spooled.size,
            content_type,
            metadata,
            uploaded_at_ms: now_ms(),
        };
        let (inner, tmp) = (self.inner.clone(), spooled.path);
        let (bucket, key_owned, committed) = (bucket.to_string(), key.to_string(), record.clone());
        // The temporary file becomes the body (or, a duplicate, is removed).
        let done = blocking({
            let tmp = tmp.clone();
            move || inner.blob_commit(&bucket, &key_owned, &tmp, &committed, quota)
        })
        .await;
        if done.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        done?;
        Ok(record.info(key))
    }
}

/// The largest body read whole when it is opened: one trip to the
/// blocking pool for the open and the bytes together, where a file read
/// through tokio takes one per seek and read (each a thread handoff, most
/// of a small object's cost: 238 µs of CPU per 20 KB module served by the
/// npm plugin, against 16 µs for the same static file, `bench/npm.sh`).
const READ_WHOLE: u64 = 256 << 10;

/// An opened body: a small one's bytes, or its file.
enum Body {
    Bytes(Vec<u8>),
    File(std::fs::File),
}

impl Body {
    /// `file`, read whole if it is small.
    fn of(file: std::fs::File, size: u64) -> Result<Body> {
        if size > READ_WHOLE {
            return Ok(Body::File(file));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        std::io::Read::read_to_end(&mut { file }, &mut bytes)
            .map_err(StorageError::io("reading a blob body"))?;
        Ok(Body::Bytes(bytes))
    }
}

#[async_trait::async_trait]
impl ObjectBody for Body {
    async fn range(
        self: Box<Self>,
        offset: u64,
        length: u64,
    ) -> Result<Box<dyn AsyncRead + Send + Unpin>> {
        match *self {
            Body::Bytes(bytes) => {
                let start = (offset as usize).min(bytes.len());
                let end = start.saturating_add(length as usize).min(bytes.len());
                let mut cursor = std::io::Cursor::new(bytes);
                cursor.set_position(start as u64);
                Ok(Box::new(cursor.take((end - start) as u64)))
            }
            // A small range of a big body (a file of an unpacked npm
            // package) read in one trip too, the seek with it.
            Body::File(mut file) if length <= READ_WHOLE => {
                let bytes = blocking(move || {
                    std::io::Seek::seek(&mut file, SeekFrom::Start(offset))
                        .map_err(StorageError::io("seeking in a blob body"))?;
                    let mut bytes = Vec::with_capacity(length as usize);
                    std::io::Read::read_to_end(&mut std::io::Read::take(file, length), &mut bytes)
                        .map_err(StorageError::io("reading a blob body"))?;
                    Ok(bytes)
                })
                .await?;
                Ok(Box::new(std::io::Cursor::new(bytes)))
            }
            Body::File(file) => {
                let mut file = tokio::fs::File::from_std(file);
                file.seek(SeekFrom::Start(offset))
                    .await
                    .map_err(StorageError::io("seeking in a blob body"))?;
                Ok(Box::new(file.take(length)))
            }
        }
    }
}

#[async_trait::async_trait]
impl BlobBackend for RedbBackend {
    async fn usage(&self, bucket: &str) -> Result<Option<Usage>> {
        self.inner.usage(Kind::Blob, bucket).map(Some)
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectInfo>> {
        Ok(self.inner.blob_head(bucket, key)?.map(|r| r.info(key)))
    }

    async fn open(&self, bucket: &str, key: &str) -> Result<Option<OpenObject>> {
        let (inner, b, k) = (self.inner.clone(), bucket.to_string(), key.to_string());
        let opened = blocking(move || {
            let Some((record, file)) = inner.blob_open(&b, &k)? else {
                return Ok(None);
            };
            let body = Body::of(file, record.size)?;
            Ok(Some((record, body)))
        })
        .await?;
        Ok(opened.map(|(record, body)| OpenObject {
            info: record.info(key),
            body: Box::new(body),
        }))
    }

    async fn upload(&self) -> Result<Box<dyn ObjectUpload>> {
        let spool = Spool::create(&self.inner.root.join("blobs").join("tmp")).await?;
        Ok(Box::new(Upload {
            inner: self.inner.clone(),
            spool,
        }))
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<bool> {
        let (inner, b, k) = (self.inner.clone(), bucket.to_string(), key.to_string());
        blocking(move || inner.blob_delete(&b, &k)).await
    }

    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<ObjectInfo>> {
        let (inner, bucket, prefix) = (self.inner.clone(), bucket.to_string(), prefix.to_string());
        let cursor = cursor.map(str::to_string);
        blocking(move || {
            let txn = redb::ReadableDatabase::begin_read(&*inner.db)?;
            let table = txn.open_table(BLOB_OBJECTS)?;
            list_scope(
                &table,
                &bucket,
                &prefix,
                cursor.as_deref(),
                limit,
                |key, raw| Ok(Some(decode(raw)?.info(key))),
            )
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StorageSettings;

    fn open(dir: &Path) -> Arc<RedbBackend> {
        let settings = StorageSettings {
            kv_sweep_interval: std::time::Duration::from_secs(3600),
        };
        RedbBackend::open(dir, &settings).unwrap()
    }

    /// `bytes` staged as an upload's temporary file, with its record.
    fn staged(inner: &Inner, bytes: &[u8]) -> (PathBuf, Record) {
        let path = inner
            .root
            .join("blobs")
            .join("tmp")
            .join(crate::util::unique_suffix());
        std::fs::write(&path, bytes).unwrap();
        let record = Record {
            sha256: crate::util::sha256_hex(bytes),
            size: bytes.len() as u64,
            content_type: None,
            metadata: vec![],
            uploaded_at_ms: 0,
        };
        (path, record)
    }

    #[tokio::test]
    async fn open_during_overwrites_always_finds_a_body() {
        let dir = tempfile::tempdir().unwrap();
        let backend = open(dir.path());
        let inner = &backend.inner;
        let (path, record) = staged(inner, b"first");
        inner
            .blob_commit("b", "k", &path, &record, Quota::NONE)
            .unwrap();
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                // Each overwrite unlinks the body the previous one left.
                for i in 0..300u32 {
                    let (path, record) = staged(inner, format!("version {i}").as_bytes());
                    inner
                        .blob_commit("b", "k", &path, &record, Quota::NONE)
                        .unwrap();
                }
                done.store(true, std::sync::atomic::Ordering::Relaxed);
            });
            let mut opened = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let (record, mut file) = inner.blob_open("b", "k").unwrap().expect("never missing");
                let mut text = String::new();
                std::io::Read::read_to_string(&mut file, &mut text).unwrap();
                assert_eq!(crate::util::sha256_hex(text.as_bytes()), record.sha256);
                opened += 1;
            }
            assert!(opened > 0);
        });
    }

    #[tokio::test]
    async fn orphaned_bodies_are_swept_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let backend = open(dir.path());
        let (path, record) = staged(&backend.inner, b"kept");
        backend
            .inner
            .blob_commit("b", "k", &path, &record, Quota::NONE)
            .unwrap();
        // A body no record points at (a crash between rename and commit).
        let orphan = backend.inner.body_path("ff00");
        std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
        std::fs::write(&orphan, b"orphan").unwrap();
        drop(backend);
        let backend = open(dir.path());
        assert!(!orphan.exists());
        assert!(backend.inner.body_path(&record.sha256).exists());
    }
}
