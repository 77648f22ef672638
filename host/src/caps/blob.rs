//! The `spike:host/blob` capability: R2-style object storage.
//!
//! Object bodies are files named by their SHA-256 under `data/blobs/`, shared
//! between objects with the same bytes and reference-counted in redb; object
//! metadata lives in redb. An upload is streamed into a temporary file while
//! it is hashed, then fsynced, renamed into place and committed in one redb
//! transaction, so an object is either wholly there or not at all. Reads
//! stream from the file; nothing is ever held whole in memory.
//!
//! `BlobStore` is the storage logic (unit-tested without wasm); `BlobView`
//! implements the generated `Host` traits for a guest, checking the grant
//! when a bucket is opened.

use std::io::SeekFrom;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::{
    DynInputStream, DynOutputStream, OutputStream, Pollable, StreamError, StreamResult,
    pipe::AsyncReadStream,
};

use super::{CapError, Grants, WitError, blocking};
use crate::bindings::spike::host::blob::{
    self as wit, ByteRange, ObjectBody, ObjectMeta, ObjectPage, PutOptions,
};
use crate::storage::{BLOB_OBJECTS, BLOB_REFS, Storage, now_ms, unique_suffix};

/// Longest object key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest custom metadata (names + values), in bytes.
pub const MAX_METADATA_BYTES: usize = 2048;
/// How much a guest may write into an upload stream per `write`.
const WRITE_BUDGET: usize = 256 * 1024;

/// What redb keeps about an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRecord {
    pub sha256: String,
    pub size: u64,
    pub content_type: Option<String>,
    pub metadata: Vec<(String, String)>,
    pub uploaded_at_ms: u64,
}

impl ObjectRecord {
    fn meta(self, key: &str) -> ObjectMeta {
        ObjectMeta {
            key: key.to_string(),
            size: self.size,
            content_type: self.content_type,
            etag: self.sha256,
            metadata: self.metadata,
            uploaded_at_ms: self.uploaded_at_ms,
        }
    }
}

fn check_key(key: &str) -> Result<(), CapError> {
    if key.is_empty() {
        return Err(CapError::InvalidInput(
            "object key must not be empty".into(),
        ));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(CapError::InvalidInput(format!(
            "object key is {} bytes, the limit is {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    Ok(())
}

fn decode(raw: &[u8]) -> Result<ObjectRecord, CapError> {
    serde_json::from_slice(raw).map_err(|e| CapError::internal("blob record decode", e))
}

/// A finished upload in its temporary file, ready to be committed.
pub struct StagedUpload {
    pub tmp_path: PathBuf,
    pub sha256: String,
    pub size: u64,
}

/// Blob storage over the shared database and the content-addressed files.
#[derive(Clone)]
pub struct BlobStore {
    storage: Storage,
    /// Serialises "rename into place + commit refcount" against "commit
    /// refcount + unlink", so a body is never unlinked while an upload of the
    /// same bytes is being committed.
    fs_lock: Arc<Mutex<()>>,
    /// Largest object accepted.
    pub max_object_bytes: u64,
}

impl BlobStore {
    pub fn new(storage: Storage, max_object_bytes: u64) -> Self {
        Self {
            storage,
            fs_lock: Arc::default(),
            max_object_bytes,
        }
    }

    /// The file holding the body with this hash.
    pub fn body_path(&self, sha256: &str) -> PathBuf {
        let shard = sha256.get(..2).unwrap_or("00");
        self.storage.blob_dir().join(shard).join(sha256)
    }

    /// A new temporary file for an upload.
    pub fn new_tmp_path(&self) -> PathBuf {
        self.storage.blob_tmp_dir().join(unique_suffix())
    }

    /// The record of `bucket/key`, if any.
    pub fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectRecord>, CapError> {
        check_key(key)?;
        let txn = redb::ReadableDatabase::begin_read(self.storage.db())?;
        let table = txn.open_table(BLOB_OBJECTS)?;
        table
            .get((bucket, key))?
            .map(|raw| decode(raw.value()))
            .transpose()
    }

    /// The record of `bucket/key` and its body, opened: the caller streams
    /// from the file it got, whatever writers do next (an unlinked file
    /// stays readable through an open handle). Blocking.
    ///
    /// An overwrite commits the new record and then unlinks the old body,
    /// so a body can vanish between reading a record and opening its file.
    /// That means a newer record is committed: read again. After a few tries
    /// (a key overwritten that often), take the lock writers unlink under,
    /// which settles it.
    pub fn open(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<(ObjectRecord, std::fs::File)>, CapError> {
        const OPTIMISTIC_TRIES: usize = 8;
        for attempt in 0..=OPTIMISTIC_TRIES {
            let _guard = (attempt == OPTIMISTIC_TRIES)
                .then(|| self.fs_lock.lock().unwrap_or_else(|p| p.into_inner()));
            let Some(record) = self.head(bucket, key)? else {
                return Ok(None);
            };
            match std::fs::File::open(self.body_path(&record.sha256)) {
                Ok(file) => return Ok(Some((record, file))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(CapError::internal(
            "blob open",
            format!("{bucket}/{key}: the record points at a missing body"),
        ))
    }

    /// Makes a staged upload the object `bucket/key`, durable on return.
    pub fn commit(
        &self,
        bucket: &str,
        key: &str,
        staged: StagedUpload,
        content_type: Option<String>,
        metadata: Vec<(String, String)>,
    ) -> Result<ObjectRecord, CapError> {
        let record = ObjectRecord {
            sha256: staged.sha256.clone(),
            size: staged.size,
            content_type,
            metadata,
            uploaded_at_ms: now_ms(),
        };
        let body = self.body_path(&staged.sha256);
        let _guard = self.fs_lock.lock().unwrap_or_else(|p| p.into_inner());
        if body.exists() {
            std::fs::remove_file(&staged.tmp_path)?;
        } else {
            let dir = body.parent().expect("body paths have a shard folder");
            std::fs::create_dir_all(dir)?;
            std::fs::rename(&staged.tmp_path, &body)?;
            // Make the rename itself durable before redb points at it.
            std::fs::File::open(dir)?.sync_all()?;
        }
        let txn = self.storage.db().begin_write()?;
        let orphan = {
            let mut objects = txn.open_table(BLOB_OBJECTS)?;
            let mut refs = txn.open_table(BLOB_REFS)?;
            let raw = serde_json::to_vec(&record).map_err(|e| CapError::internal("encode", e))?;
            let old = objects
                .insert((bucket, key), raw.as_slice())?
                .map(|o| decode(o.value()))
                .transpose()?;
            increment_ref(&mut refs, &record.sha256, 1)?;
            match old {
                Some(old) => increment_ref(&mut refs, &old.sha256, -1)?,
                None => None,
            }
        };
        txn.commit()?;
        if let Some(hash) = orphan {
            remove_body(&self.body_path(&hash));
        }
        Ok(record)
    }

    /// Removes `bucket/key`; whether there was such an object.
    pub fn delete(&self, bucket: &str, key: &str) -> Result<bool, CapError> {
        check_key(key)?;
        let _guard = self.fs_lock.lock().unwrap_or_else(|p| p.into_inner());
        let txn = self.storage.db().begin_write()?;
        let (existed, orphan) = {
            let mut objects = txn.open_table(BLOB_OBJECTS)?;
            let mut refs = txn.open_table(BLOB_REFS)?;
            let old = objects
                .remove((bucket, key))?
                .map(|o| decode(o.value()))
                .transpose()?;
            match old {
                Some(old) => (true, increment_ref(&mut refs, &old.sha256, -1)?),
                None => (false, None),
            }
        };
        txn.commit()?;
        if let Some(hash) = orphan {
            remove_body(&self.body_path(&hash));
        }
        Ok(existed)
    }

    /// Objects whose keys start with `prefix`, after `cursor`, at most `limit`.
    pub fn list(
        &self,
        bucket: &str,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<ObjectMeta>, Option<String>), CapError> {
        let limit = super::page_limit(limit)?;
        let txn = redb::ReadableDatabase::begin_read(self.storage.db())?;
        let table = txn.open_table(BLOB_OBJECTS)?;
        use std::ops::Bound;
        let start = match cursor {
            Some(c) if c >= prefix => Bound::Excluded((bucket, c)),
            _ => Bound::Included((bucket, prefix)),
        };
        let mut objects = Vec::new();
        let mut more = false;
        for item in table.range::<(&str, &str)>((start, Bound::Unbounded))? {
            let (k, v) = item?;
            let (b, key) = k.value();
            if b != bucket || !key.starts_with(prefix) {
                break;
            }
            if objects.len() == limit {
                more = true;
                break;
            }
            objects.push(decode(v.value())?.meta(key));
        }
        let cursor = if more {
            objects.last().map(|o: &ObjectMeta| o.key.clone())
        } else {
            None
        };
        Ok((objects, cursor))
    }

    /// Removes body files no object points at (left by a crash between an
    /// upload's rename and its commit). Run once at start.
    pub fn sweep_orphans(&self) -> Result<usize, CapError> {
        let _guard = self.fs_lock.lock().unwrap_or_else(|p| p.into_inner());
        let txn = redb::ReadableDatabase::begin_read(self.storage.db())?;
        let refs = txn.open_table(BLOB_REFS)?;
        let mut removed = 0;
        for shard in std::fs::read_dir(self.storage.blob_dir())? {
            let shard = shard?;
            if shard.file_name() == "tmp" || !shard.file_type()?.is_dir() {
                continue;
            }
            for body in std::fs::read_dir(shard.path())? {
                let body = body?;
                let name = body.file_name();
                let referenced = match name.to_str() {
                    Some(hash) => refs.get(hash)?.is_some(),
                    None => false,
                };
                if !referenced {
                    std::fs::remove_file(body.path())?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

/// Adds `delta` to the reference count of `hash`; returns the hash if it
/// dropped to zero (its file is then to be removed after the commit).
fn increment_ref(
    refs: &mut redb::Table<&str, u64>,
    hash: &str,
    delta: i64,
) -> Result<Option<String>, CapError> {
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

fn remove_body(path: &std::path::Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::error!(path = %path.display(), "removing an unreferenced blob body: {e}");
    }
}

/// An upload's bytes so far: written by the guest through `UploadStream`,
/// sealed by `object-writer.finish`.
struct Upload {
    /// `None` once sealed (finished or abandoned).
    file: Option<tokio::fs::File>,
    hasher: Sha256,
    size: u64,
    max_size: u64,
    /// Bytes accepted by `write` and not yet on their way to the file.
    pending: Option<Bytes>,
    failed: Option<String>,
}

impl Upload {
    async fn write_pending(&mut self) {
        if let (Some(bytes), Some(file)) = (self.pending.take(), self.file.as_mut())
            && let Err(e) = file.write_all(&bytes).await
        {
            self.failed = Some(format!("writing the upload: {e}"));
        }
    }

    fn status(&self) -> StreamResult<()> {
        if let Some(e) = &self.failed {
            return Err(StreamError::LastOperationFailed(wasmtime::format_err!(
                "{e}"
            )));
        }
        if self.file.is_none() {
            return Err(StreamError::Closed);
        }
        Ok(())
    }
}

/// The `output-stream` a guest writes an object's bytes into.
struct UploadStream {
    upload: Arc<tokio::sync::Mutex<Upload>>,
}

fn busy() -> StreamError {
    StreamError::Trap(wasmtime::format_err!(
        "upload stream used while it is being finished"
    ))
}

impl OutputStream for UploadStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        let mut up = self.upload.try_lock().map_err(|_| busy())?;
        up.status()?;
        if up.pending.is_some() {
            return Err(StreamError::Trap(wasmtime::format_err!(
                "write without a permit from check-write"
            )));
        }
        let size = up.size + bytes.len() as u64;
        if size > up.max_size {
            let msg = format!("object is larger than the limit of {} bytes", up.max_size);
            up.failed = Some(msg);
            return up.status();
        }
        up.hasher.update(&bytes);
        up.size = size;
        up.pending = Some(bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        // Pending bytes go to the file in `ready`, which a flush waits for.
        self.upload.try_lock().map_err(|_| busy())?.status()
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        let up = self.upload.try_lock().map_err(|_| busy())?;
        up.status()?;
        Ok(if up.pending.is_some() {
            0
        } else {
            WRITE_BUDGET
        })
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for UploadStream {
    async fn ready(&mut self) {
        self.upload.lock().await.write_pending().await;
    }
}

/// A `bucket` handle: the guest opened a granted bucket.
pub struct Bucket {
    name: Arc<str>,
}

/// An `object-writer` handle.
pub struct ObjectWriter {
    bucket: Arc<str>,
    key: String,
    options: PutOptions,
    tmp_path: PathBuf,
    upload: Arc<tokio::sync::Mutex<Upload>>,
    body_taken: bool,
    committed: bool,
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        // Abandoned (dropped without finish, or the guest trapped): the
        // staged bytes were never acknowledged.
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}

/// Per-request blob state: the store and the plugin's grants.
#[derive(Clone)]
pub struct BlobCtx {
    pub store: BlobStore,
    pub grants: Arc<Grants>,
}

/// The view of a store's data that implements the blob `Host` traits.
pub struct BlobView<'a> {
    pub ctx: &'a BlobCtx,
    pub table: &'a mut ResourceTable,
}

impl BlobView<'_> {
    fn bucket(&self, b: &Resource<Bucket>) -> wasmtime::Result<Arc<str>> {
        Ok(self.table.get(b)?.name.clone())
    }

    async fn get_object(
        &mut self,
        bucket: &str,
        key: &str,
        range: Option<ByteRange>,
    ) -> Result<Option<ObjectBody>, CapError> {
        let store = self.ctx.store.clone();
        let (bucket, key_owned) = (bucket.to_string(), key.to_string());
        let Some((record, file)) = blocking(move || store.open(&bucket, &key_owned)).await? else {
            return Ok(None);
        };
        let (offset, length) = match range {
            None => (0, record.size),
            Some(r) if r.offset > record.size || (r.offset == record.size && record.size > 0) => {
                return Err(CapError::InvalidInput(format!(
                    "range starts at {} but the object is {} bytes",
                    r.offset, record.size
                )));
            }
            Some(r) => {
                let rest = record.size - r.offset;
                (r.offset, r.length.map_or(rest, |l| l.min(rest)))
            }
        };
        let mut file = tokio::fs::File::from_std(file);
        file.seek(SeekFrom::Start(offset)).await?;
        let stream: DynInputStream = Box::new(AsyncReadStream::new(file.take(length)));
        let body = self
            .table
            .push(stream)
            .map_err(|e| CapError::internal("resource table", e))?;
        Ok(Some(ObjectBody {
            meta: record.meta(key),
            offset,
            length,
            body,
        }))
    }

    async fn start_put(
        &mut self,
        bucket: Arc<str>,
        key: String,
        options: PutOptions,
    ) -> Result<Resource<ObjectWriter>, CapError> {
        check_key(&key)?;
        let meta_size: usize = options
            .metadata
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        if meta_size > MAX_METADATA_BYTES {
            return Err(CapError::TooLarge(format!(
                "custom metadata is {meta_size} bytes, the limit is {MAX_METADATA_BYTES}"
            )));
        }
        if options.content_type.as_ref().is_some_and(|c| c.len() > 256) {
            return Err(CapError::InvalidInput(
                "content type is over 256 bytes".into(),
            ));
        }
        let tmp_path = self.ctx.store.new_tmp_path();
        let file = tokio::fs::File::create(&tmp_path).await?;
        let upload = Arc::new(tokio::sync::Mutex::new(Upload {
            file: Some(file),
            hasher: Sha256::new(),
            size: 0,
            max_size: self.ctx.store.max_object_bytes,
            pending: None,
            failed: None,
        }));
        self.table
            .push(ObjectWriter {
                bucket,
                key,
                options,
                tmp_path,
                upload,
                body_taken: false,
                committed: false,
            })
            .map_err(|e| CapError::internal("resource table", e))
    }

    async fn finish_put(
        &mut self,
        writer: Resource<ObjectWriter>,
    ) -> wasmtime::Result<Result<ObjectMeta, CapError>> {
        let mut writer = self.table.delete(writer)?;
        let staged = {
            let mut up = writer.upload.lock().await;
            up.write_pending().await;
            let mut file = up.file.take();
            if let Some(e) = up.failed.clone() {
                return Ok(Err(if e.contains("larger than") {
                    CapError::TooLarge(e)
                } else {
                    CapError::internal("upload", e)
                }));
            }
            let Some(file) = file.as_mut() else {
                return Ok(Err(CapError::InvalidInput(
                    "upload already finished".into(),
                )));
            };
            let synced = async {
                file.flush().await?;
                file.sync_all().await
            };
            if let Err(e) = synced.await {
                return Ok(Err(e.into()));
            }
            StagedUpload {
                tmp_path: writer.tmp_path.clone(),
                sha256: hex::encode(std::mem::take(&mut up.hasher).finalize()),
                size: up.size,
            }
        };
        let store = self.ctx.store.clone();
        let (bucket, key) = (writer.bucket.clone(), writer.key.clone());
        let (content_type, metadata) = (
            writer.options.content_type.take(),
            std::mem::take(&mut writer.options.metadata),
        );
        let r = blocking(move || store.commit(&bucket, &key, staged, content_type, metadata)).await;
        // Committed (the temporary file is gone) or failed (it must go).
        writer.committed = r.is_ok();
        Ok(r.map(|record| record.meta(&writer.key)))
    }
}

impl wit::Host for BlobView<'_> {}

impl wit::HostBucket for BlobView<'_> {
    async fn open(&mut self, name: String) -> wasmtime::Result<Result<Resource<Bucket>, WitError>> {
        if let Err(e) = self.ctx.grants.check_blob(&name) {
            return Ok(Err(e.into()));
        }
        Ok(Ok(self.table.push(Bucket { name: name.into() })?))
    }

    async fn head(
        &mut self,
        b: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<Option<ObjectMeta>, WitError>> {
        let bucket = self.bucket(&b)?;
        Ok(self
            .ctx
            .store
            .head(&bucket, &key)
            .map(|r| r.map(|r| r.meta(&key)))
            .map_err(Into::into))
    }

    async fn get(
        &mut self,
        b: Resource<Bucket>,
        key: String,
        range: Option<ByteRange>,
    ) -> wasmtime::Result<Result<Option<ObjectBody>, WitError>> {
        let bucket = self.bucket(&b)?;
        Ok(self
            .get_object(&bucket, &key, range)
            .await
            .map_err(Into::into))
    }

    async fn put(
        &mut self,
        b: Resource<Bucket>,
        key: String,
        options: PutOptions,
    ) -> wasmtime::Result<Result<Resource<ObjectWriter>, WitError>> {
        let bucket = self.bucket(&b)?;
        Ok(self
            .start_put(bucket, key, options)
            .await
            .map_err(Into::into))
    }

    async fn delete(
        &mut self,
        b: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<bool, WitError>> {
        let bucket = self.bucket(&b)?;
        let store = self.ctx.store.clone();
        let r = blocking(move || store.delete(&bucket, &key)).await;
        Ok(r.map_err(Into::into))
    }

    async fn list(
        &mut self,
        b: Resource<Bucket>,
        prefix: String,
        cursor: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Result<ObjectPage, WitError>> {
        let bucket = self.bucket(&b)?;
        Ok(self
            .ctx
            .store
            .list(&bucket, &prefix, cursor.as_deref(), limit)
            .map(|(objects, cursor)| ObjectPage { objects, cursor })
            .map_err(Into::into))
    }

    async fn drop(&mut self, b: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(b)?;
        Ok(())
    }
}

impl wit::HostObjectWriter for BlobView<'_> {
    async fn body(
        &mut self,
        w: Resource<ObjectWriter>,
    ) -> wasmtime::Result<Result<Resource<DynOutputStream>, WitError>> {
        let writer = self.table.get_mut(&w)?;
        if writer.body_taken {
            return Ok(Err(WitError::InvalidInput(
                "the body stream was already taken".into(),
            )));
        }
        writer.body_taken = true;
        let stream: DynOutputStream = Box::new(UploadStream {
            upload: writer.upload.clone(),
        });
        Ok(Ok(self.table.push(stream)?))
    }

    async fn finish(
        &mut self,
        w: Resource<ObjectWriter>,
    ) -> wasmtime::Result<Result<ObjectMeta, WitError>> {
        Ok(self.finish_put(w).await?.map_err(Into::into))
    }

    async fn drop(&mut self, w: Resource<ObjectWriter>) -> wasmtime::Result<()> {
        let writer = self.table.delete(w)?;
        writer.upload.lock().await.file = None;
        Ok(())
    }
}

struct HasBlob;

impl HasData for HasBlob {
    type Data<'a> = BlobView<'a>;
}

/// Adds `spike:host/blob` to the linker.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> BlobView<'_>,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasBlob>(linker, view)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wit::{HostBucket, HostObjectWriter};

    fn ctx(dir: &std::path::Path) -> BlobCtx {
        let grants = Grants {
            blob: ["files".to_string()].into(),
            ..Default::default()
        };
        BlobCtx {
            store: BlobStore::new(Storage::open(dir).unwrap(), 1 << 20),
            grants: Arc::new(grants),
        }
    }

    async fn read_all(table: &mut ResourceTable, stream: Resource<DynInputStream>) -> Vec<u8> {
        let stream = table.get_mut(&stream).unwrap();
        let mut out = Vec::new();
        loop {
            stream.ready().await;
            match stream.read(64 * 1024) {
                Ok(bytes) => out.extend_from_slice(&bytes),
                Err(StreamError::Closed) => return out,
                Err(e) => panic!("{e}"),
            }
        }
    }

    async fn upload(
        view: &mut BlobView<'_>,
        bucket: u32,
        key: &str,
        data: &[u8],
    ) -> Result<ObjectMeta, WitError> {
        let options = PutOptions {
            content_type: Some("text/plain".into()),
            metadata: vec![("a".into(), "b".into())],
        };
        let writer = view
            .put(Resource::new_borrow(bucket), key.into(), options)
            .await
            .unwrap()?;
        let body = view
            .body(Resource::new_borrow(writer.rep()))
            .await
            .unwrap()?;
        {
            let stream = view.table.get_mut(&body).unwrap();
            for chunk in data.chunks(1000) {
                stream.ready().await;
                if stream.write(Bytes::copy_from_slice(chunk)).is_err() {
                    break; // over the limit: `finish` says why
                }
            }
        }
        view.table.delete(body).unwrap();
        view.finish(writer).await.unwrap()
    }

    /// The `Host` impl on a view, as a guest would call it (no wasm).
    #[tokio::test]
    async fn view_checks_the_grant_then_streams() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = ctx(dir.path());
        let mut table = ResourceTable::new();
        let mut view = BlobView {
            ctx: &ctx,
            table: &mut table,
        };

        let denied = view.open("secret".into()).await.unwrap();
        assert!(matches!(denied, Err(WitError::AccessDenied(m)) if m.contains("'secret'")));
        let bucket = view.open("files".into()).await.unwrap().unwrap().rep();

        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let meta = upload(&mut view, bucket, "k", &data).await.unwrap();
        assert_eq!(meta.size, 10_000);
        assert_eq!(meta.etag, crate::storage::sha256_hex(&data));
        assert_eq!(meta.metadata, vec![("a".to_string(), "b".to_string())]);

        let whole = view
            .get(Resource::new_borrow(bucket), "k".into(), None)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(read_all(view.table, whole.body).await, data);
        let range = Some(ByteRange {
            offset: 9_990,
            length: Some(100),
        });
        let part = view
            .get(Resource::new_borrow(bucket), "k".into(), range)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!((part.offset, part.length), (9_990, 10));
        assert_eq!(read_all(view.table, part.body).await, &data[9_990..]);
        let past = Some(ByteRange {
            offset: 10_000,
            length: None,
        });
        let past = view
            .get(Resource::new_borrow(bucket), "k".into(), past)
            .await
            .unwrap();
        assert!(matches!(past, Err(WitError::InvalidInput(_))));

        // Over the size limit: refused, and nothing is stored.
        let big = vec![0u8; (1 << 20) + 1];
        let refused = upload(&mut view, bucket, "big", &big).await;
        assert!(matches!(refused, Err(WitError::TooLarge(_))), "{refused:?}");
        assert!(
            view.head(Resource::new_borrow(bucket), "big".into())
                .await
                .unwrap()
                .unwrap()
                .is_none()
        );
        let tmp_files = std::fs::read_dir(ctx.store.storage.blob_tmp_dir())
            .unwrap()
            .count();
        assert_eq!(
            tmp_files, 0,
            "the refused upload's staging file must be gone"
        );

        assert!(
            view.delete(Resource::new_borrow(bucket), "k".into())
                .await
                .unwrap()
                .unwrap()
        );
        assert!(
            view.get(Resource::new_borrow(bucket), "k".into(), None)
                .await
                .unwrap()
                .unwrap()
                .is_none()
        );
    }

    /// `bytes` as an upload ready to commit.
    fn staged(store: &BlobStore, bytes: &[u8]) -> StagedUpload {
        let tmp_path = store.new_tmp_path();
        std::fs::write(&tmp_path, bytes).unwrap();
        StagedUpload {
            tmp_path,
            sha256: crate::storage::sha256_hex(bytes),
            size: bytes.len() as u64,
        }
    }

    #[test]
    fn open_during_overwrites_always_finds_a_body() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::new(Storage::open(dir.path()).unwrap(), 1 << 20);
        let stage = |bytes: &[u8]| staged(&store, bytes);
        store
            .commit("b", "k", stage(b"first"), None, vec![])
            .unwrap();
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                // Each overwrite unlinks the body the previous one left.
                for i in 0..300u32 {
                    let body = format!("version {i}");
                    store
                        .commit("b", "k", stage(body.as_bytes()), None, vec![])
                        .unwrap();
                }
                done.store(true, std::sync::atomic::Ordering::Relaxed);
            });
            let mut opened = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let (record, mut file) = store.open("b", "k").unwrap().expect("never missing");
                let mut text = String::new();
                std::io::Read::read_to_string(&mut file, &mut text).unwrap();
                assert_eq!(crate::storage::sha256_hex(text.as_bytes()), record.sha256);
                opened += 1;
            }
            assert!(opened > 0);
        });
    }

    #[test]
    fn shared_bodies_are_reference_counted() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::new(Storage::open(dir.path()).unwrap(), 1 << 20);
        let stage = |bytes: &[u8]| staged(&store, bytes);
        let a = store
            .commit("b", "a", stage(b"same"), None, vec![])
            .unwrap();
        store
            .commit("b", "b", stage(b"same"), None, vec![])
            .unwrap();
        let body = store.body_path(&a.sha256);
        assert!(store.delete("b", "a").unwrap());
        assert!(body.exists(), "still used by b/b");
        // Overwriting the last user releases the old body.
        store
            .commit("b", "b", stage(b"other"), None, vec![])
            .unwrap();
        assert!(!body.exists());
        // A body no record points at (a crash between rename and commit) is swept.
        std::fs::create_dir_all(store.body_path("ff00").parent().unwrap()).unwrap();
        std::fs::write(store.body_path("ff00"), b"orphan").unwrap();
        assert_eq!(store.sweep_orphans().unwrap(), 1);
        assert_eq!(store.head("b", "b").unwrap().unwrap().size, 5);
    }
}
