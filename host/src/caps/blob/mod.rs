//! The `spike:host/blob` capability: R2-style object storage.
//!
//! `BlobView` implements the generated `Host` traits for a guest: it checks
//! the grant when a bucket is opened, checks keys, metadata, sizes and
//! ranges, and streams bytes between the guest's `wasi:io` streams and the
//! `BlobBackend`; an object never passes through memory whole.
//! `wasi:blobstore@0.2.0-draft` is served from the same buckets
//! (`wasi_blobstore`).

use std::sync::Arc;

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use wasmtime::component::{HasData, Linker, Resource};
use wasmtime_wasi::p2::{
    DynInputStream, DynOutputStream, OutputStream, Pollable, StreamError, StreamResult,
    pipe::AsyncReadStream,
};

use super::{CapError, Kind, Named, View, call_span, check_key, page_limit};
use crate::bindings::spike::host::blob::{
    self as wit, ByteRange, ObjectBody, ObjectMeta, ObjectPage, PutOptions,
};
use crate::metrics::KindLabels;
use crate::storage::{BlobBackend, ObjectInfo, ObjectUpload};
use crate::telemetry::{self, traced};

/// Longest object key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest custom metadata (names + values), in bytes.
pub const MAX_METADATA_BYTES: usize = 2048;
/// Longest content type, in bytes.
pub const MAX_CONTENT_TYPE_BYTES: usize = 256;
/// How much a guest may write into an upload stream per `write`.
const WRITE_BUDGET: usize = 256 * 1024;

fn key(key: &str) -> Result<(), CapError> {
    check_key("object key", key, MAX_KEY_BYTES)
}

fn meta(info: ObjectInfo) -> ObjectMeta {
    ObjectMeta {
        key: info.key,
        size: info.size,
        content_type: info.content_type,
        etag: info.etag,
        metadata: info.metadata,
        uploaded_at_ms: info.uploaded_at_ms,
    }
}

/// The offset and length a `range` asks of an object of `size` bytes.
fn span(range: Option<ByteRange>, size: u64) -> Result<(u64, u64), CapError> {
    match range {
        None => Ok((0, size)),
        Some(r) if r.offset > size || (r.offset == size && size > 0) => {
            Err(CapError::InvalidInput(format!(
                "range starts at {} but the object is {size} bytes",
                r.offset
            )))
        }
        Some(r) => {
            let rest = size - r.offset;
            Ok((r.offset, r.length.map_or(rest, |l| l.min(rest))))
        }
    }
}

/// The host's blob storage: the backend and the size limit.
pub struct BlobCtx {
    pub backend: Arc<dyn BlobBackend>,
    /// Largest object accepted.
    pub max_object_bytes: u64,
}

/// Why an upload cannot be committed.
#[derive(Debug, Clone)]
enum UploadFailure {
    TooLarge {
        limit: u64,
    },
    /// Past what the bucket's quota leaves (it says so).
    Quota(String),
    Storage,
}

/// An upload's state, shared by its `object-writer` and its body stream.
struct Upload {
    /// `None` once sealed (committed or abandoned).
    sink: Option<Box<dyn ObjectUpload>>,
    size: u64,
    max_size: u64,
    /// What the bucket's quota leaves, if it has one.
    quota_room: Option<u64>,
    /// Bytes accepted by `write` and not yet handed to the backend.
    pending: Option<Bytes>,
    failed: Option<UploadFailure>,
}

impl Upload {
    /// An upload into `sink` of at most `max_size` bytes.
    fn start(
        sink: Box<dyn ObjectUpload>,
        max_size: u64,
        quota_room: Option<u64>,
    ) -> Arc<tokio::sync::Mutex<Self>> {
        Arc::new(tokio::sync::Mutex::new(Self {
            sink: Some(sink),
            size: 0,
            max_size,
            quota_room,
            pending: None,
            failed: None,
        }))
    }

    async fn write_pending(&mut self) {
        if let (Some(bytes), Some(sink)) = (self.pending.take(), self.sink.as_mut())
            && let Err(e) = sink.write(&bytes).await
        {
            tracing::error!("writing an upload: {e}");
            self.failed = Some(UploadFailure::Storage);
        }
    }

    fn status(&self) -> StreamResult<()> {
        if let Some(failure) = &self.failed {
            let message = match failure {
                UploadFailure::TooLarge { limit } => {
                    format!("object is larger than the limit of {limit} bytes")
                }
                UploadFailure::Quota(why) => why.clone(),
                UploadFailure::Storage => "storing the upload failed".into(),
            };
            return Err(StreamError::LastOperationFailed(wasmtime::format_err!(
                "{message}"
            )));
        }
        if self.sink.is_none() {
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
            up.failed = Some(match up.quota_room.filter(|room| *room == up.max_size) {
                Some(room) => UploadFailure::Quota(format!(
                    "quota exceeded: the bucket has {room} bytes left of its quota"
                )),
                None => UploadFailure::TooLarge { limit: up.max_size },
            });
            return up.status();
        }
        up.size = size;
        up.pending = Some(bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        // Pending bytes go to the backend in `ready`, which a flush waits for.
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
pub struct Bucket(Arc<str>);

impl Named for Bucket {
    const KIND: Kind = Kind::Blob;

    fn new(name: Arc<str>) -> Self {
        Self(name)
    }

    fn name(&self) -> &Arc<str> {
        &self.0
    }
}

/// An `object-writer` handle. Dropped without `finish` (or with the guest
/// trapping), its upload is dropped and nothing is stored.
pub struct ObjectWriter {
    bucket: Arc<str>,
    key: String,
    options: PutOptions,
    upload: Arc<tokio::sync::Mutex<Upload>>,
    body_taken: bool,
}

/// The view of a store's data that implements the blob `Host` traits.
pub type BlobView<'a> = View<'a, BlobCtx>;

impl wit::Host for BlobView<'_> {}

impl wit::HostBucket for BlobView<'_> {
    async fn open(&mut self, name: String) -> Result<Resource<Bucket>, CapError> {
        self.open_granted(name)
    }

    async fn head(
        &mut self,
        b: Resource<Bucket>,
        k: String,
    ) -> Result<Option<ObjectMeta>, CapError> {
        let bucket = self.name_of(&b)?;
        traced(call_span("blob", "head", &bucket), async {
            key(&k)?;
            self.counts.blob("head");
            Ok(self.ctx.backend.head(&bucket, &k).await?.map(meta))
        })
        .await
    }

    async fn get(
        &mut self,
        b: Resource<Bucket>,
        k: String,
        range: Option<ByteRange>,
    ) -> Result<Option<ObjectBody>, CapError> {
        let bucket = self.name_of(&b)?;
        let call = call_span("blob", "get", &bucket);
        traced(call.clone(), async {
            key(&k)?;
            self.counts.blob("get");
            let Some(object) = self.ctx.backend.open(&bucket, &k).await? else {
                return Ok(None);
            };
            let (offset, length) = span(range, object.info.size)?;
            // Counted when handed out: what the guest then streams on.
            self.counts.blob_bytes("read", length);
            telemetry::record(&call, "spike.bytes", length);
            let reader = object.body.range(offset, length).await?;
            let stream: DynInputStream = Box::new(AsyncReadStream::new(reader));
            Ok(Some(ObjectBody {
                meta: meta(object.info),
                offset,
                length,
                body: self.table.push(stream)?,
            }))
        })
        .await
    }

    async fn put(
        &mut self,
        b: Resource<Bucket>,
        k: String,
        options: PutOptions,
    ) -> Result<Resource<ObjectWriter>, CapError> {
        let bucket = self.name_of(&b)?;
        key(&k)?;
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
        if options
            .content_type
            .as_ref()
            .is_some_and(|c| c.len() > MAX_CONTENT_TYPE_BYTES)
        {
            return Err(CapError::InvalidInput(format!(
                "content type is over {MAX_CONTENT_TYPE_BYTES} bytes"
            )));
        }
        self.counts.blob("put");
        // What the bucket's quota leaves, the object replaced included: the
        // upload stops there, before its bytes fill the disk (the commit
        // checks again, exactly).
        let quota = self.grants.storage.blob;
        let quota_room = match (quota.bytes, quota.items) {
            (None, None) => None,
            _ => match self.ctx.backend.usage(&bucket).await? {
                None => None,
                Some(usage) => {
                    let old = self.ctx.backend.head(&bucket, &k).await?.map(|o| o.size);
                    if old.is_none() && quota.items.is_some_and(|max| usage.items >= max) {
                        return Err(CapError::QuotaExceeded(format!(
                            "quota exceeded: the bucket '{bucket}' holds {} objects, its quota",
                            usage.items
                        )));
                    }
                    (quota.bytes).map(|max| (max + old.unwrap_or(0)).saturating_sub(usage.bytes))
                }
            },
        };
        let max_object = self.ctx.max_object_bytes;
        let sink = self.ctx.backend.upload().await?;
        let max_size = quota_room.map_or(max_object, |room| room.min(max_object));
        let upload = Upload::start(sink, max_size, quota_room);
        Ok(self.table.push(ObjectWriter {
            bucket,
            key: k,
            options,
            upload,
            body_taken: false,
        })?)
    }

    async fn delete(&mut self, b: Resource<Bucket>, k: String) -> Result<bool, CapError> {
        let bucket = self.name_of(&b)?;
        traced(call_span("blob", "delete", &bucket), async {
            key(&k)?;
            self.counts.blob("delete");
            Ok(self.ctx.backend.delete(&bucket, &k).await?)
        })
        .await
    }

    async fn list(
        &mut self,
        b: Resource<Bucket>,
        prefix: String,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<ObjectPage, CapError> {
        let bucket = self.name_of(&b)?;
        let call = call_span("blob", "list", &bucket);
        let page = traced(call.clone(), async {
            let limit = page_limit(limit)?;
            self.counts.blob("list");
            let backend = &self.ctx.backend;
            Ok::<_, CapError>(
                backend
                    .list(&bucket, &prefix, cursor.as_deref(), limit)
                    .await?,
            )
        })
        .await?;
        telemetry::record(&call, "spike.rows", page.items.len() as u64);
        Ok(ObjectPage {
            objects: page.items.into_iter().map(meta).collect(),
            cursor: page.cursor,
        })
    }

    async fn drop(&mut self, b: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(b)?;
        Ok(())
    }
}

impl BlobView<'_> {
    /// Stores what a writer uploaded, once its limits and quota held.
    async fn commit(&mut self, writer: ObjectWriter) -> Result<ObjectMeta, CapError> {
        let options = writer.options;
        let info = (self.commit_upload(&writer.upload, &writer.bucket, &writer.key))
            .store(options.content_type, options.metadata)
            .await?;
        Ok(meta(info))
    }

    /// The commit of `upload` as the object `bucket/key` (`wasi:blobstore`
    /// commits its uploads here too). `&mut`: a host call's future that
    /// held the view shared would not be `Send`.
    fn commit_upload<'u>(
        &'u mut self,
        upload: &'u tokio::sync::Mutex<Upload>,
        bucket: &'u str,
        key: &'u str,
    ) -> Commit<'u> {
        Commit {
            quota: self.grants.storage.blob,
            counts: self.counts,
            upload,
            bucket,
            key,
        }
    }
}

/// An upload about to be committed: what it needs of the view, apart from
/// the view (whose resource table a host call's future must not hold
/// shared across an await).
struct Commit<'u> {
    quota: crate::storage::Quota,
    counts: super::Counts<'u>,
    upload: &'u tokio::sync::Mutex<Upload>,
    bucket: &'u str,
    key: &'u str,
}

impl Commit<'_> {
    /// Stores the bytes with this content type and metadata, once the
    /// upload's limits and quota held.
    async fn store(
        self,
        content_type: Option<String>,
        metadata: Vec<(String, String)>,
    ) -> Result<ObjectInfo, CapError> {
        let mut up = self.upload.lock().await;
        up.write_pending().await;
        let sink = up.sink.take();
        match up.failed.clone() {
            Some(UploadFailure::TooLarge { limit }) => {
                return Err(CapError::TooLarge(format!(
                    "object is larger than the limit of {limit} bytes"
                )));
            }
            Some(UploadFailure::Quota(why)) => return Err(CapError::QuotaExceeded(why)),
            Some(UploadFailure::Storage) => {
                return Err(CapError::Internal("storing the upload failed".into()));
            }
            None => {}
        }
        let Some(sink) = sink else {
            return Err(CapError::InvalidInput("upload already finished".into()));
        };
        let info = sink
            .commit(self.bucket, self.key, content_type, metadata, self.quota)
            .await?;
        self.counts.blob_bytes("written", info.size);
        Ok(info)
    }
}

impl wit::HostObjectWriter for BlobView<'_> {
    async fn body(
        &mut self,
        w: Resource<ObjectWriter>,
    ) -> Result<Resource<DynOutputStream>, CapError> {
        let writer = self.table.get_mut(&w)?;
        if writer.body_taken {
            return Err(CapError::InvalidInput(
                "the body stream was already taken".into(),
            ));
        }
        writer.body_taken = true;
        let stream: DynOutputStream = Box::new(UploadStream {
            upload: writer.upload.clone(),
        });
        Ok(self.table.push(stream)?)
    }

    async fn finish(&mut self, w: Resource<ObjectWriter>) -> Result<ObjectMeta, CapError> {
        let writer = self.table.delete(w)?;
        let call = call_span("blob", "put", &writer.bucket);
        let info = traced(call.clone(), self.commit(writer)).await?;
        telemetry::record(&call, "spike.bytes", info.size);
        Ok(info)
    }

    async fn drop(&mut self, w: Resource<ObjectWriter>) -> wasmtime::Result<()> {
        let writer = self.table.delete(w)?;
        writer.upload.lock().await.sink = None;
        Ok(())
    }
}

struct HasBlob;

impl HasData for HasBlob {
    type Data<'a> = BlobView<'a>;
}

/// Adds `spike:host/blob` and `wasi:blobstore@0.2.0-draft` to the linker.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> BlobView<'_>,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasBlob>(linker, view)?;
    wasi_blobstore::add_to_linker(linker, view)
}

mod wasi_blobstore;
pub use wasi_blobstore::{IncomingValue, ObjectNames, OutgoingValue};

crate::metrics::series! {
    /// The blob import's series.
    pub struct BlobMetrics {
        operations: Family<KindLabels, Counter> = Family::default(),
            "blob_operations", "Blob calls, by operation";
        /// Object bytes `read` and `written`.
        bytes: Family<KindLabels, Counter> = Family::default(),
            "blob_bytes", "Object bytes read and written";
    }
}

#[cfg(test)]
mod tests;
