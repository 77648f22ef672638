//! `wasi:blobstore@0.2.0-draft` on spike's blob buckets: a container is a
//! bucket the manifest grants (`grants.blob`), so `create-container` and
//! `get-container` open a granted bucket (refused otherwise),
//! `container-exists` says whether it is granted, and `delete-container`
//! removes the bucket's objects (the grant stays). Objects stream both
//! ways as `spike:host/blob`'s do, under the same limits and quotas:
//!
//! - an `outgoing-value` is an upload: its body stream writes into the
//!   backend as the guest writes, `write-data` names where it goes, and
//!   `finish` stores it (durable when it returns). Dropped unfinished, it
//!   stores nothing.
//! - an `incoming-value` is an object opened at `get-data` (the bytes stay
//!   readable if the object is replaced or deleted meanwhile); its range
//!   is inclusive, as the interface says. `consume-sync` copies at most
//!   `MAX_SYNC_BYTES` into the guest; larger ranges stream.
//! - timestamps are seconds since the Unix epoch (the upload's); a
//!   container's `created-at` is 0, since a grant has no creation time.
//! - errors are the interface's strings: spike's message of the failure.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::io::AsyncReadExt;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, pipe::AsyncReadStream};

use super::{BlobView, Bucket, HasBlob, Upload, UploadStream, key};
use crate::bindings::wasi::blobstore::{blobstore, container, types};
use crate::caps::{CapError, call_span};
use crate::storage::ObjectBody;
use crate::telemetry::traced;

/// Most bytes `incoming-value-consume-sync` copies into a guest at once.
pub const MAX_SYNC_BYTES: u64 = 64 << 20;

/// Names one `read-stream-object-names` call may return.
const MAX_NAMES_PER_READ: u64 = 10_000;

/// An upload under way: where `write-data` said it goes, once it did.
pub struct OutgoingValue {
    upload: Arc<tokio::sync::Mutex<Upload>>,
    body_taken: bool,
    target: Option<(Arc<str>, String)>,
}

/// An object's range, opened.
pub struct IncomingValue {
    body: Box<dyn ObjectBody>,
    offset: u64,
    length: u64,
}

/// A listing of a container's names, read a page at a time.
pub struct ObjectNames {
    bucket: Arc<str>,
    after: Option<String>,
    ready: VecDeque<String>,
    done: bool,
}

/// A failure as the interface's error string; a trap stays a trap.
fn error<T>(r: Result<T, CapError>) -> wasmtime::Result<Result<T, String>> {
    match r {
        Ok(v) => Ok(Ok(v)),
        Err(CapError::Trap(e)) => Err(e),
        Err(e) => Ok(Err(e.to_string())),
    }
}

fn seconds(ms: u64) -> u64 {
    ms / 1000
}

/// The offset and length of the inclusive range `start..=end` of an object
/// of `size` bytes (an `end` past it ends at it).
fn inclusive(start: u64, end: u64, size: u64) -> Result<(u64, u64), CapError> {
    if start > end || (start >= size && size > 0) {
        return Err(CapError::InvalidInput(format!(
            "range {start}..={end} is outside the object of {size} bytes"
        )));
    }
    Ok((start, end.saturating_add(1).min(size).saturating_sub(start)))
}

impl BlobView<'_> {
    async fn head_object(
        &mut self,
        bucket: &Arc<str>,
        name: &str,
    ) -> Result<Option<crate::storage::ObjectInfo>, CapError> {
        key(name)?;
        self.counts.blob("head");
        Ok(self.ctx.backend.head(bucket, name).await?)
    }

    async fn remove_object(&mut self, bucket: &Arc<str>, name: &str) -> Result<(), CapError> {
        key(name)?;
        self.counts.blob("delete");
        self.ctx.backend.delete(bucket, name).await?;
        Ok(())
    }

    /// Deletes every object of `bucket`, a page at a time.
    async fn clear_bucket(&mut self, bucket: &Arc<str>) -> Result<(), CapError> {
        traced(call_span("blob", "clear", bucket), async {
            loop {
                self.counts.blob("list");
                let page = self.ctx.backend.list(bucket, "", None, 1000).await?;
                if page.items.is_empty() {
                    return Ok(());
                }
                for object in page.items {
                    self.remove_object(bucket, &object.key).await?;
                }
            }
        })
        .await
    }

    /// Copies `src` to `dest` (both in granted containers), streaming, with
    /// its content type and metadata.
    async fn copy(
        &mut self,
        src: &types::ObjectId,
        dest: &types::ObjectId,
    ) -> Result<(), CapError> {
        let (from, to) = (
            self.granted(&src.container)?,
            self.granted(&dest.container)?,
        );
        key(&src.object)?;
        key(&dest.object)?;
        traced(call_span("blob", "copy", &to), async {
            self.counts.blob("get");
            let Some(object) = self.ctx.backend.open(&from, &src.object).await? else {
                return Err(CapError::InvalidInput(format!(
                    "no object '{}' in '{from}'",
                    src.object
                )));
            };
            let size = object.info.size;
            if size > self.ctx.max_object_bytes {
                return Err(CapError::TooLarge(format!(
                    "object is larger than the limit of {} bytes",
                    self.ctx.max_object_bytes
                )));
            }
            let mut reader = object.body.range(0, size).await?;
            self.counts.blob("put");
            let mut sink = self.ctx.backend.upload().await?;
            let mut buf = vec![0; 256 * 1024];
            loop {
                let n = reader
                    .read(&mut buf)
                    .await
                    .map_err(|e| CapError::internal("copy", e))?;
                if n == 0 {
                    break;
                }
                sink.write(&buf[..n]).await?;
            }
            self.counts.blob_bytes("read", size);
            let info = object.info;
            let quota = self.grants.storage.blob;
            let stored =
                (sink.commit(&to, &dest.object, info.content_type, info.metadata, quota)).await?;
            self.counts.blob_bytes("written", stored.size);
            Ok(())
        })
        .await
    }

    /// The bucket `name`, if granted.
    fn granted(&self, name: &str) -> Result<Arc<str>, CapError> {
        self.grants.check(crate::caps::Kind::Blob, name)?;
        Ok(name.into())
    }

    /// The next `n` names of a listing, and whether it has ended.
    async fn next_names(
        &mut self,
        names: &Resource<ObjectNames>,
        n: u64,
    ) -> Result<(Vec<String>, bool), CapError> {
        let n = n.min(MAX_NAMES_PER_READ) as usize;
        loop {
            let listing = self.table.get_mut(names)?;
            if listing.ready.len() >= n || listing.done {
                let take = n.min(listing.ready.len());
                let out: Vec<String> = listing.ready.drain(..take).collect();
                return Ok((out, listing.done && listing.ready.is_empty()));
            }
            let (bucket, after) = (listing.bucket.clone(), listing.after.clone());
            self.counts.blob("list");
            let page = self
                .ctx
                .backend
                .list(&bucket, "", after.as_deref(), 1000)
                .await?;
            let listing = self.table.get_mut(names)?;
            listing.done = page.cursor.is_none();
            listing.after = page.cursor;
            listing.ready.extend(page.items.into_iter().map(|o| o.key));
        }
    }
}

impl types::Host for BlobView<'_> {}

impl types::HostOutgoingValue for BlobView<'_> {
    async fn new_outgoing_value(&mut self) -> wasmtime::Result<Resource<OutgoingValue>> {
        // Where it goes, and so its quota, is known at `write-data`: the
        // commit checks the quota exactly; the size limit holds throughout.
        let sink = self
            .ctx
            .backend
            .upload()
            .await
            .map_err(|e| wasmtime::format_err!("starting an upload failed: {e}"))?;
        let upload = Upload::start(sink, self.ctx.max_object_bytes, None);
        Ok(self.table.push(OutgoingValue {
            upload,
            body_taken: false,
            target: None,
        })?)
    }

    async fn outgoing_value_write_body(
        &mut self,
        value: Resource<OutgoingValue>,
    ) -> wasmtime::Result<Result<Resource<DynOutputStream>, ()>> {
        let value = self.table.get_mut(&value)?;
        if value.body_taken {
            return Ok(Err(()));
        }
        value.body_taken = true;
        let stream: DynOutputStream = Box::new(UploadStream {
            upload: value.upload.clone(),
        });
        Ok(Ok(self.table.push(stream)?))
    }

    async fn finish(
        &mut self,
        value: Resource<OutgoingValue>,
    ) -> wasmtime::Result<Result<(), String>> {
        let value = self.table.delete(value)?;
        let Some((bucket, name)) = value.target else {
            value.upload.lock().await.sink = None;
            return Ok(Err(
                "no write-data named where this value goes: nothing stored".into(),
            ));
        };
        let call = call_span("blob", "put", &bucket);
        let stored = traced(call, async {
            self.counts.blob("put");
            (self.commit_upload(&value.upload, &bucket, &name))
                .store(None, Vec::new())
                .await
        })
        .await;
        error(stored.map(drop))
    }

    async fn drop(&mut self, value: Resource<OutgoingValue>) -> wasmtime::Result<()> {
        let value = self.table.delete(value)?;
        value.upload.lock().await.sink = None;
        Ok(())
    }
}

impl types::HostIncomingValue for BlobView<'_> {
    async fn incoming_value_consume_sync(
        &mut self,
        value: Resource<IncomingValue>,
    ) -> wasmtime::Result<Result<Vec<u8>, String>> {
        let value = self.table.delete(value)?;
        if value.length > MAX_SYNC_BYTES {
            return error(Err(CapError::TooLarge(format!(
                "the range is {} bytes; over {MAX_SYNC_BYTES}, read it with \
                 incoming-value-consume-async",
                value.length
            ))));
        }
        let read = async {
            let mut reader = value.body.range(value.offset, value.length).await?;
            let mut bytes = Vec::with_capacity(value.length as usize);
            (reader.read_to_end(&mut bytes).await)
                .map_err(|e| CapError::internal("blob read", e))?;
            Ok(bytes)
        };
        error(read.await)
    }

    async fn incoming_value_consume_async(
        &mut self,
        value: Resource<IncomingValue>,
    ) -> wasmtime::Result<Result<Resource<DynInputStream>, String>> {
        let value = self.table.delete(value)?;
        let reader = match value.body.range(value.offset, value.length).await {
            Ok(reader) => reader,
            Err(e) => return error(Err(e.into())),
        };
        let stream: DynInputStream = Box::new(AsyncReadStream::new(reader));
        Ok(Ok(self.table.push(stream)?))
    }

    async fn size(&mut self, value: Resource<IncomingValue>) -> wasmtime::Result<u64> {
        Ok(self.table.get(&value)?.length)
    }

    async fn drop(&mut self, value: Resource<IncomingValue>) -> wasmtime::Result<()> {
        self.table.delete(value)?;
        Ok(())
    }
}

impl container::Host for BlobView<'_> {}

impl container::HostContainer for BlobView<'_> {
    async fn name(&mut self, c: Resource<Bucket>) -> wasmtime::Result<Result<String, String>> {
        let bucket = self.name_of(&c);
        error(bucket.map(|b| b.to_string()))
    }

    async fn info(
        &mut self,
        c: Resource<Bucket>,
    ) -> wasmtime::Result<Result<types::ContainerMetadata, String>> {
        let bucket = self.name_of(&c);
        error(bucket.map(|b| types::ContainerMetadata {
            name: b.to_string(),
            created_at: 0,
        }))
    }

    async fn get_data(
        &mut self,
        c: Resource<Bucket>,
        name: String,
        start: u64,
        end: u64,
    ) -> wasmtime::Result<Result<Resource<IncomingValue>, String>> {
        let bucket = self.name_of(&c)?;
        let call = call_span("blob", "get", &bucket);
        let opened = traced(call, async {
            key(&name)?;
            self.counts.blob("get");
            let Some(object) = self.ctx.backend.open(&bucket, &name).await? else {
                return Err(CapError::InvalidInput(format!(
                    "no object '{name}' in '{bucket}'"
                )));
            };
            let (offset, length) = inclusive(start, end, object.info.size)?;
            self.counts.blob_bytes("read", length);
            let value = IncomingValue {
                body: object.body,
                offset,
                length,
            };
            Ok(self.table.push(value)?)
        })
        .await;
        error(opened)
    }

    async fn write_data(
        &mut self,
        c: Resource<Bucket>,
        name: String,
        data: Resource<OutgoingValue>,
    ) -> wasmtime::Result<Result<(), String>> {
        let bucket = self.name_of(&c)?;
        if let Err(e) = key(&name) {
            return error(Err(e));
        }
        let value = self.table.get_mut(&data)?;
        if value.target.is_some() {
            return Ok(Err("write-data was already called for this value".into()));
        }
        value.target = Some((bucket, name));
        Ok(Ok(()))
    }

    async fn list_objects(
        &mut self,
        c: Resource<Bucket>,
    ) -> wasmtime::Result<Result<Resource<ObjectNames>, String>> {
        let bucket = self.name_of(&c)?;
        let names = ObjectNames {
            bucket,
            after: None,
            ready: VecDeque::new(),
            done: false,
        };
        Ok(Ok(self.table.push(names)?))
    }

    async fn delete_object(
        &mut self,
        c: Resource<Bucket>,
        name: String,
    ) -> wasmtime::Result<Result<(), String>> {
        let bucket = self.name_of(&c)?;
        let deleted = traced(call_span("blob", "delete", &bucket), async {
            self.remove_object(&bucket, &name).await
        })
        .await;
        error(deleted)
    }

    async fn delete_objects(
        &mut self,
        c: Resource<Bucket>,
        names: Vec<String>,
    ) -> wasmtime::Result<Result<(), String>> {
        let bucket = self.name_of(&c)?;
        let deleted = traced(call_span("blob", "delete", &bucket), async {
            for name in &names {
                self.remove_object(&bucket, name).await?;
            }
            Ok(())
        })
        .await;
        error(deleted)
    }

    async fn has_object(
        &mut self,
        c: Resource<Bucket>,
        name: String,
    ) -> wasmtime::Result<Result<bool, String>> {
        let bucket = self.name_of(&c)?;
        let found = self.head_object(&bucket, &name).await;
        error(found.map(|info| info.is_some()))
    }

    async fn object_info(
        &mut self,
        c: Resource<Bucket>,
        name: String,
    ) -> wasmtime::Result<Result<types::ObjectMetadata, String>> {
        let bucket = self.name_of(&c)?;
        let found = match self.head_object(&bucket, &name).await {
            Ok(Some(info)) => Ok(types::ObjectMetadata {
                name: info.key,
                container: bucket.to_string(),
                created_at: seconds(info.uploaded_at_ms),
                size: info.size,
            }),
            Ok(None) => Err(CapError::InvalidInput(format!(
                "no object '{name}' in '{bucket}'"
            ))),
            Err(e) => Err(e),
        };
        error(found)
    }

    async fn clear(&mut self, c: Resource<Bucket>) -> wasmtime::Result<Result<(), String>> {
        let bucket = self.name_of(&c)?;
        let cleared = self.clear_bucket(&bucket).await;
        error(cleared)
    }

    async fn drop(&mut self, c: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(c)?;
        Ok(())
    }
}

impl container::HostStreamObjectNames for BlobView<'_> {
    async fn read_stream_object_names(
        &mut self,
        names: Resource<ObjectNames>,
        len: u64,
    ) -> wasmtime::Result<Result<(Vec<String>, bool), String>> {
        let read = self.next_names(&names, len).await;
        error(read)
    }

    async fn skip_stream_object_names(
        &mut self,
        names: Resource<ObjectNames>,
        num: u64,
    ) -> wasmtime::Result<Result<(u64, bool), String>> {
        let skipped = self.next_names(&names, num).await;
        error(skipped.map(|(names, end)| (names.len() as u64, end)))
    }

    async fn drop(&mut self, names: Resource<ObjectNames>) -> wasmtime::Result<()> {
        self.table.delete(names)?;
        Ok(())
    }
}

impl blobstore::Host for BlobView<'_> {
    async fn create_container(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Resource<Bucket>, String>> {
        let opened = self.open_granted(name);
        error(opened)
    }

    async fn get_container(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Resource<Bucket>, String>> {
        let opened = self.open_granted(name);
        error(opened)
    }

    async fn delete_container(&mut self, name: String) -> wasmtime::Result<Result<(), String>> {
        let cleared = match self.granted(&name) {
            Ok(bucket) => self.clear_bucket(&bucket).await,
            Err(e) => Err(e),
        };
        error(cleared)
    }

    async fn container_exists(&mut self, name: String) -> wasmtime::Result<Result<bool, String>> {
        Ok(Ok(self.granted(&name).is_ok()))
    }

    async fn copy_object(
        &mut self,
        src: types::ObjectId,
        dest: types::ObjectId,
    ) -> wasmtime::Result<Result<(), String>> {
        let copied = self.copy(&src, &dest).await;
        error(copied)
    }

    async fn move_object(
        &mut self,
        src: types::ObjectId,
        dest: types::ObjectId,
    ) -> wasmtime::Result<Result<(), String>> {
        let moved = async {
            self.copy(&src, &dest).await?;
            if (src.container.as_str(), src.object.as_str())
                != (dest.container.as_str(), dest.object.as_str())
            {
                let from = self.granted(&src.container)?;
                self.remove_object(&from, &src.object).await?;
            }
            Ok(())
        };
        error(moved.await)
    }
}

/// Adds `wasi:blobstore` (types, container, blobstore) to the linker.
pub(super) fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> BlobView<'_>,
) -> wasmtime::Result<()> {
    types::add_to_linker::<T, HasBlob>(linker, view)?;
    container::add_to_linker::<T, HasBlob>(linker, view)?;
    blobstore::add_to_linker::<T, HasBlob>(linker, view)
}

#[cfg(test)]
mod tests {
    use super::inclusive;

    #[test]
    fn ranges_are_inclusive_and_end_at_the_object() {
        assert_eq!(inclusive(0, 9, 100).unwrap(), (0, 10));
        assert_eq!(inclusive(90, u64::MAX, 100).unwrap(), (90, 10));
        assert_eq!(inclusive(0, 0, 0).unwrap(), (0, 0));
        assert!(inclusive(100, 200, 100).is_err());
        assert!(inclusive(5, 4, 100).is_err());
    }
}
