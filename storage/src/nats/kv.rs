//! KV namespaces in one JetStream KV bucket, `P_kv`: the key
//! `<namespace>.<key>`, the value in the shared entry layout
//! (`kv_entry::codec`). An entry that expires is also published with a
//! per-message TTL, so the server reclaims it; until then the expiry in
//! the entry hides it. `increment` and `compare_and_swap` are a
//! compare-and-set on the key's revision, retried from the new value when
//! another writer came first.

use std::time::Duration;

use async_nats::jetstream::kv::Store;
use bytes::Bytes;

use super::names::{scoped, token, unscoped};
use super::stream::{Published, kv_values, last, publish, purge, subject};
use super::{NatsBackend, StorageError};
use crate::kv_entry::{codec, incremented, live, swap_refused};
use crate::util::now_ms;
use crate::{Expected, KvBackend, KvEntry, KvKey, Page, Quota, Result, Swap, Usage};

/// The stored entry under a key and the revision a write over it expects.
pub(super) struct Current {
    pub entry: Option<KvEntry>,
    pub revision: u64,
}

async fn current(store: &Store, key: &str) -> Result<Current> {
    let (value, revision) = last(store, key).await?;
    let entry = match value {
        Some(raw) => Some(codec::decode(&raw).ok_or_else(|| corrupt(key))?),
        None => None,
    };
    Ok(Current { entry, revision })
}

fn corrupt(key: &str) -> StorageError {
    StorageError::Corrupt(format!("kv entry {key}"))
}

/// How long the server should keep an entry that expires at `expires_at`.
fn ttl(expires_at: Option<u64>) -> Option<Duration> {
    expires_at.map(|t| Duration::from_millis(t.saturating_sub(now_ms())))
}

/// An increment waiting for the writer of its key.
pub(super) struct Waiting {
    delta: i64,
    done: tokio::sync::oneshot::Sender<Result<i64>>,
}

/// Increments waiting, by KV key. The first to arrive for a key starts
/// its writer (`write_increments`), which writes everything that waits
/// then as one compare-and-set, and again while more arrive: concurrent
/// increments of one counter cost one write, not a write and a retry
/// each (the contention a hot counter would otherwise spend its time on).
/// A key is in the map exactly as long as its writer runs.
pub(super) type Increments = std::sync::Mutex<std::collections::HashMap<String, Vec<Waiting>>>;

impl NatsBackend {
    async fn write_increments(self, kv_key: String, key: String) {
        loop {
            let batch = {
                let mut waiting = self.inner.increments.lock().unwrap();
                let queue = waiting
                    .get_mut(&kv_key)
                    .expect("the writer's key is in the map");
                // Everything waiting now; the key stays in the map while
                // the writer runs, so what arrives meanwhile queues for
                // its next write instead of starting another writer.
                let batch = std::mem::take(queue);
                if batch.is_empty() {
                    waiting.remove(&kv_key);
                    return;
                }
                batch
            };
            let outcomes = self.apply_increments(&kv_key, &key, &batch).await;
            for (waiter, outcome) in batch.into_iter().zip(outcomes) {
                let _ = waiter.done.send(outcome);
            }
        }
    }

    /// One compare-and-set of every delta of `batch`, in order, retried
    /// from the stored value when another writer came first. A delta the
    /// value refuses fails alone.
    async fn apply_increments(
        &self,
        kv_key: &str,
        key: &str,
        batch: &[Waiting],
    ) -> Vec<Result<i64>> {
        let failed = |e: StorageError| {
            let each = |_| Err(StorageError::Backend(e.to_string()));
            batch.iter().map(each).collect()
        };
        loop {
            let found = match current(&self.inner.kv, kv_key).await {
                Ok(found) => found,
                Err(e) => return failed(e),
            };
            let now = now_ms();
            let mut entry = found.entry;
            let outcomes: Vec<Result<i64>> = batch
                .iter()
                .map(|w| {
                    let (next, n) = incremented(entry.as_ref(), key, w.delta, now)?;
                    entry = Some(next);
                    Ok(n)
                })
                .collect();
            // Every delta refused: nothing to write.
            let Some(entry) = entry.filter(|_| outcomes.iter().any(Result::is_ok)) else {
                return outcomes;
            };
            match self.write_kv(kv_key, &entry, Some(found.revision)).await {
                Ok(Published::Stored(_)) => return outcomes,
                Ok(Published::Conflict) => tokio::task::yield_now().await,
                Err(e) => return failed(e),
            }
        }
    }

    /// Writes `entry` under `key` if the key's revision is still `expect`.
    async fn write_kv(&self, key: &str, entry: &KvEntry, expect: Option<u64>) -> Result<Published> {
        let store = &self.inner.kv;
        publish(
            &self.inner.js,
            subject(store, key),
            Bytes::from(codec::encode(entry)),
            expect,
            ttl(entry.expires_at_ms),
        )
        .await
    }
}

#[async_trait::async_trait]
impl KvBackend for NatsBackend {
    /// Not accounted: on a cluster, JetStream's limits bound the buckets.
    async fn usage(&self, _ns: &str) -> Result<Option<Usage>> {
        Ok(None)
    }

    async fn get(&self, ns: &str, key: &str) -> Result<Option<KvEntry>> {
        let found = current(&self.inner.kv, &scoped(ns, key)).await?;
        Ok(found.entry.filter(|e| live(e, now_ms())))
    }

    /// Quotas are JetStream's here (its buckets' limits), not the host's.
    async fn set(&self, ns: &str, key: &str, entry: KvEntry, _quota: Quota) -> Result<()> {
        self.write_kv(&scoped(ns, key), &entry, None).await?;
        Ok(())
    }

    async fn delete(&self, ns: &str, key: &str) -> Result<bool> {
        let key = scoped(ns, key);
        let store = &self.inner.kv;
        loop {
            let found = current(store, &key).await?;
            let Some(entry) = found.entry else {
                return Ok(false);
            };
            let subject = subject(store, &key);
            match purge(&self.inner.js, subject, Some(found.revision)).await? {
                Published::Stored(_) => return Ok(live(&entry, now_ms())),
                Published::Conflict => continue,
            }
        }
    }

    async fn increment(&self, ns: &str, key: &str, delta: i64, _quota: Quota) -> Result<i64> {
        let kv_key = scoped(ns, key);
        let (done, result) = tokio::sync::oneshot::channel();
        let lead = {
            let mut waiting = self.inner.increments.lock().unwrap();
            let starts = !waiting.contains_key(&kv_key);
            let queue = waiting.entry(kv_key.clone()).or_default();
            queue.push(Waiting { delta, done });
            starts
        };
        if lead {
            // A task of its own: the writer must finish for every waiter
            // even if the caller that started it goes away.
            tokio::spawn(self.clone().write_increments(kv_key, key.to_string()));
        }
        result
            .await
            .map_err(|_| StorageError::Backend("the increment's writer stopped".into()))?
    }

    async fn compare_and_swap(
        &self,
        ns: &str,
        key: &str,
        expected: Expected,
        entry: KvEntry,
        _quota: Quota,
    ) -> Result<Swap> {
        let key = scoped(ns, key);
        loop {
            let found = current(&self.inner.kv, &key).await?;
            if let Some(current) = swap_refused(found.entry, &expected, now_ms()) {
                return Ok(Swap::Changed(current));
            }
            // The revision read is the value compared: a write between the
            // two makes this one a conflict, and the comparison runs again.
            match self.write_kv(&key, &entry, Some(found.revision)).await? {
                Published::Stored(_) => return Ok(Swap::Done),
                Published::Conflict => tokio::task::yield_now().await,
            }
        }
    }

    async fn list(
        &self,
        ns: &str,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<KvKey>> {
        // JetStream filters by whole tokens only: read the namespace's
        // last values, then pick and order here.
        let values = kv_values(
            &self.inner.client,
            &self.inner.kv,
            &format!("{}.>", token(ns)),
        )
        .await?;
        let now = now_ms();
        let mut keys = Vec::new();
        for (kv_key, raw) in values {
            let name = unscoped(&kv_key).ok_or_else(|| corrupt(&kv_key))?;
            let expires_at_ms = codec::expires_at(&raw);
            if !name.starts_with(prefix)
                || cursor.is_some_and(|c| name.as_str() <= c)
                || expires_at_ms.is_some_and(|t| t <= now)
            {
                continue;
            }
            let metadata = codec::metadata(&raw);
            keys.push((
                name.clone(),
                KvKey {
                    name,
                    metadata,
                    expires_at_ms,
                },
            ));
        }
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        Page::collect(keys.into_iter().map(Ok), prefix, limit)
    }
}
