//! Blob buckets: bodies in the Object Store `P_bodies` by SHA-256, so that
//! equal bytes are kept once and an object opened before an overwrite
//! still reads as it was; the index `bucket/key -> ObjectInfo` in the KV
//! bucket `P_blobs`.
//!
//! A body no object points at is removed by the sweeper of any node, an
//! hour after it was last referenced. `P_body_refs` holds, per body, when
//! a commit last referenced it (`live`) or that a sweeper is removing it
//! (`deleting`); both sides move that state only by compare-and-set, so a
//! commit either refreshes a body the sweeper then leaves alone, or waits
//! for the sweeper to finish and uploads the body again.

use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::jetstream::object_store::{ObjectMetadata, ObjectStore};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::names::{scoped, token, unscoped};
use super::stream::{Published, kv_values, last, publish, purge, subject};
use super::{Inner, NatsBackend, OrFailed};
use crate::spool::{Spool, Spooled};
use crate::util::now_ms;
use crate::{
    BlobBackend, ObjectBody, ObjectInfo, ObjectUpload, OpenObject, Page, Quota, Result,
    StorageError, Usage,
};

/// How long a body outlives the last object that pointed at it: readers
/// that opened it before an overwrite have this long to finish.
const GRACE_MS: u64 = 3_600_000;
/// A `deleting` state older than this was left by a sweeper that died.
const ABANDONED_MS: u64 = 600_000;

#[derive(Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum BodyRef {
    Live { at_ms: u64 },
    Deleting { at_ms: u64 },
}

impl Inner {
    async fn body_ref(&self, sha256: &str) -> Result<(Option<BodyRef>, u64)> {
        let (value, revision) = last(&self.body_refs, sha256).await?;
        let state = value.and_then(|v| serde_json::from_slice(&v).ok());
        Ok((state, revision))
    }

    /// Moves a body's state from `revision` to `state`; false if another
    /// node moved it first.
    async fn set_body_ref(&self, sha256: &str, state: &BodyRef, revision: u64) -> Result<bool> {
        let value = serde_json::to_vec(state).expect("a body state encodes");
        let subject = subject(&self.body_refs, sha256);
        let done = publish(&self.js, subject, value.into(), Some(revision), None).await?;
        Ok(matches!(done, Published::Stored(_)))
    }

    async fn body_exists(&self, sha256: &str) -> Result<bool> {
        match self.bodies.info(sha256).await {
            Ok(info) => Ok(!info.deleted),
            Err(e) if e.kind() == async_nats::jetstream::object_store::InfoErrorKind::NotFound => {
                Ok(false)
            }
            Err(e) => Err(e).or_failed(format!("looking up body {sha256}")),
        }
    }

    /// Makes sure the body of `spooled` is stored and marked referenced now.
    async fn keep_body(&self, spooled: &Spooled) -> Result<()> {
        let sha = &spooled.sha256;
        loop {
            let (state, revision) = self.body_ref(sha).await?;
            let now = now_ms();
            if let Some(BodyRef::Deleting { at_ms }) = state
                && now.saturating_sub(at_ms) < ABANDONED_MS
            {
                // A sweeper is removing these bytes: let it finish first.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            if !self
                .set_body_ref(sha, &BodyRef::Live { at_ms: now }, revision)
                .await?
            {
                continue;
            }
            // Referenced now: no sweeper removes it from here on.
            if !self.body_exists(sha).await? {
                let mut file = tokio::fs::File::open(&spooled.path)
                    .await
                    .map_err(StorageError::io("reopening an upload"))?;
                let meta = ObjectMetadata {
                    name: sha.clone(),
                    ..Default::default()
                };
                self.bodies
                    .put(meta, &mut file)
                    .await
                    .or_failed(format!("storing body {sha}"))?;
            }
            return Ok(());
        }
    }
}

struct Upload {
    backend: NatsBackend,
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
        _quota: Quota,
    ) -> Result<ObjectInfo> {
        let spooled = self.spool.finish().await?;
        let inner = &self.backend.inner;
        let kept = inner.keep_body(&spooled).await;
        let _ = tokio::fs::remove_file(&spooled.path).await;
        kept?;
        let info = ObjectInfo {
            key: key.to_string(),
            size: spooled.size,
            etag: spooled.sha256,
            content_type,
            metadata,
            uploaded_at_ms: now_ms(),
        };
        let record = serde_json::to_vec(&info).expect("an object's info encodes");
        let subject = subject(&inner.blobs, &scoped(bucket, key));
        publish(&inner.js, subject, record.into(), None, None).await?;
        Ok(info)
    }
}

/// An object's body: its bytes in the Object Store.
struct Body {
    bodies: ObjectStore,
    sha256: String,
}

#[async_trait::async_trait]
impl ObjectBody for Body {
    async fn range(
        self: Box<Self>,
        offset: u64,
        length: u64,
    ) -> Result<Box<dyn AsyncRead + Send + Unpin>> {
        let mut object = self
            .bodies
            .get(&self.sha256)
            .await
            .or_failed(format!("opening body {}", self.sha256))?;
        // The Object Store reads a body from its first chunk: the bytes
        // before the range are read and dropped.
        tokio::io::copy(&mut (&mut object).take(offset), &mut tokio::io::sink())
            .await
            .map_err(StorageError::io("skipping to a range"))?;
        Ok(Box::new(object.take(length)))
    }
}

fn decode(key: &str, raw: &[u8]) -> Result<ObjectInfo> {
    serde_json::from_slice(raw)
        .map_err(|e| StorageError::Corrupt(format!("blob record {key}: {e}")))
}

#[async_trait::async_trait]
impl BlobBackend for NatsBackend {
    /// Not accounted: on a cluster, JetStream's limits bound the buckets.
    async fn usage(&self, _bucket: &str) -> Result<Option<Usage>> {
        Ok(None)
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectInfo>> {
        let (value, _) = last(&self.inner.blobs, &scoped(bucket, key)).await?;
        value.map(|raw| decode(key, &raw)).transpose()
    }

    async fn open(&self, bucket: &str, key: &str) -> Result<Option<OpenObject>> {
        Ok(self.head(bucket, key).await?.map(|info| OpenObject {
            body: Box::new(Body {
                bodies: self.inner.bodies.clone(),
                sha256: info.etag.clone(),
            }),
            info,
        }))
    }

    async fn upload(&self) -> Result<Box<dyn ObjectUpload>> {
        Ok(Box::new(Upload {
            backend: self.clone(),
            spool: Spool::create(&self.inner.uploads_dir).await?,
        }))
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<bool> {
        let key = scoped(bucket, key);
        loop {
            let (value, revision) = last(&self.inner.blobs, &key).await?;
            if value.is_none() {
                return Ok(false);
            }
            let subject = subject(&self.inner.blobs, &key);
            if let Published::Stored(_) = purge(&self.inner.js, subject, Some(revision)).await? {
                return Ok(true);
            }
        }
    }

    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<ObjectInfo>> {
        let filter = format!("{}.>", token(bucket));
        let values = kv_values(&self.inner.client, &self.inner.blobs, &filter).await?;
        let mut objects = Vec::new();
        for (kv_key, raw) in values {
            let name = unscoped(&kv_key)
                .ok_or_else(|| StorageError::Corrupt(format!("blob key {kv_key}")))?;
            if name.starts_with(prefix) && cursor.is_none_or(|c| name.as_str() > c) {
                objects.push((name.clone(), decode(&name, &raw)?));
            }
        }
        objects.sort_by(|a, b| a.0.cmp(&b.0));
        Page::collect(objects.into_iter().map(Ok), prefix, limit)
    }
}

/// Removes, every `interval`, the bodies no object has pointed at for
/// `GRACE_MS`. Stops when the backend is dropped.
pub(super) fn spawn_sweeper(inner: Weak<Inner>, interval: Duration) -> tokio::task::AbortHandle {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            let Some(inner) = inner.upgrade() else { return };
            match sweep(&inner).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(bodies = n, "removed blob bodies no object uses"),
                Err(e) => tracing::warn!("sweeping blob bodies: {e}"),
            }
        }
    })
    .abort_handle()
}

async fn sweep(inner: &Arc<Inner>) -> Result<usize> {
    let used: HashSet<String> = kv_values(&inner.client, &inner.blobs, ">")
        .await?
        .into_iter()
        .filter_map(|(key, raw)| decode(&key, &raw).ok().map(|info| info.etag))
        .collect();
    let mut bodies = inner.bodies.list().await.or_failed("listing blob bodies")?;
    let mut unused = Vec::new();
    while let Some(body) = bodies.next().await {
        let body = body.or_failed("listing blob bodies")?;
        if !body.deleted && !used.contains(&body.name) {
            unused.push(body.name);
        }
    }
    let mut removed = 0;
    for sha in unused {
        let (state, revision) = inner.body_ref(&sha).await?;
        let now = now_ms();
        let stale = match state {
            Some(BodyRef::Live { at_ms }) => now.saturating_sub(at_ms) > GRACE_MS,
            Some(BodyRef::Deleting { at_ms }) => now.saturating_sub(at_ms) > ABANDONED_MS,
            None => true,
        };
        if !stale
            || !inner
                .set_body_ref(&sha, &BodyRef::Deleting { at_ms: now }, revision)
                .await?
        {
            continue;
        }
        inner
            .bodies
            .delete(&sha)
            .await
            .or_failed(format!("removing body {sha}"))?;
        let (_, revision) = inner.body_ref(&sha).await?;
        let subject = subject(&inner.body_refs, &sha);
        purge(&inner.js, subject, Some(revision)).await?;
        removed += 1;
    }
    Ok(removed)
}
