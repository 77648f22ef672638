//! `wasi:keyvalue` (`store`, `atomics`, `batch`) at `0.2.0-draft` and
//! `0.2.0-draft2`, on spike's KV: a bucket is a namespace the manifest
//! grants, and every call goes through the same operations as
//! `spike:host/kv` (`KvView::get_entry`, `put`, ...), so it is checked,
//! counted and traced the same way, and both interfaces see one store.
//!
//! Where the versions differ: draft's `list-keys` cursor is a number (here,
//! how many keys earlier pages returned) and its `increment` unsigned;
//! draft2's cursor is the last key returned, its `increment` signed, and it
//! adds compare-and-swap (`Cas`), on the storage trait's
//! `compare_and_swap`: a handle expects the value it last read (at `new`,
//! and at each `current`, which reads the key again), and a failed swap
//! hands back a handle on the value it found.

use std::collections::HashMap;
use std::sync::Arc;

use wasmtime::component::{Linker, Resource};

use super::CapError;
use super::kv::{HasKv, KvOps, KvView, Namespace};
use crate::bindings::spike::host::kv::SetOptions;
use crate::bindings::wasi::keyvalue0_2_0_draft as draft;
use crate::bindings::wasi::keyvalue0_2_0_draft2 as draft2;
use crate::storage::{Expected, Swap};

/// Keys one `list-keys` page holds.
const PAGE: usize = 1000;

/// Keys one batch call may name.
const MAX_BATCH: usize = 1000;

/// Most value bytes one `get-many` answers: they are held in the host
/// before the guest gets them.
const MAX_BATCH_BYTES: usize = 32 << 20;

/// Calls of one batch under way at once (a batch runs in chunks of this
/// many): enough for redb to commit a chunk's writes together, few enough
/// that a batch of reads takes a handful of blocking threads, not hundreds.
const BATCH_IN_FLIGHT: usize = 16;

/// A compare-and-swap under way: the value last read (by `new`, then by
/// each `current`), which `swap` expects still to be there. Kept as its
/// SHA-256, not the value: a guest may hold many handles on values of up to
/// 25 MiB, and the host's memory is not the guest's to fill.
pub struct Cas {
    ns: Arc<str>,
    key: String,
    expected: Expected,
}

/// What a failed call is in either version's `error` variant; a trap stays
/// a trap.
enum Failure {
    Denied,
    Other(String),
}

impl From<Failure> for draft::store::Error {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Denied => Self::AccessDenied,
            Failure::Other(m) => Self::Other(m),
        }
    }
}

impl From<Failure> for draft2::store::Error {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Denied => Self::AccessDenied,
            Failure::Other(m) => Self::Other(m),
        }
    }
}

impl<'a> KvView<'a> {
    fn failure(&self, e: CapError) -> wasmtime::Result<Failure> {
        Ok(match e {
            CapError::AccessDenied(_) => Failure::Denied,
            CapError::Trap(e) => return Err(e),
            CapError::QuotaExceeded(m) => {
                self.counts.quota_exceeded();
                Failure::Other(m)
            }
            other => Failure::Other(other.to_string()),
        })
    }

    /// `r` as a version's result: its error in that version's `error`.
    fn answer<T, E: From<Failure>>(
        &self,
        r: Result<T, CapError>,
    ) -> wasmtime::Result<Result<T, E>> {
        r.map_or_else(|e| Ok(Err(self.failure(e)?.into())), |v| Ok(Ok(v)))
    }

    /// A bucket's operations and its namespace's name; a handle that is
    /// not a bucket traps.
    fn bucket(&self, bucket: &Resource<Namespace>) -> wasmtime::Result<(KvOps<'a>, Arc<str>)> {
        match self.name_of(bucket) {
            Ok(ns) => Ok((self.ops(), ns)),
            Err(CapError::Trap(e)) => Err(e),
            Err(e) => Err(wasmtime::Error::msg(e.to_string())),
        }
    }

    async fn cas_new(
        &mut self,
        bucket: &Resource<Namespace>,
        key: String,
    ) -> Result<Resource<Cas>, CapError> {
        let ns = self.name_of(bucket)?;
        let current = self.ops().get_entry(&ns, &key).await?;
        let expected = Expected::digest_of(current.as_ref().map(|e| e.value.as_slice()));
        Ok(self.table.push(Cas { ns, key, expected })?)
    }

    /// The key's value now; the handle's swap expects it from here on (the
    /// guest computes what it swaps in from this).
    async fn cas_current(&mut self, cas: &Resource<Cas>) -> Result<Option<Vec<u8>>, CapError> {
        let (ns, key) = {
            let cas = self.table.get(cas)?;
            (cas.ns.clone(), cas.key.clone())
        };
        let current = self.ops().get_entry(&ns, &key).await?.map(|e| e.value);
        self.table.get_mut(cas)?.expected = Expected::digest_of(current.as_deref());
        Ok(current)
    }

    /// The swap of `cas`'s key from the value it read to `value`; if that
    /// value changed meanwhile, a new handle on the value found.
    async fn cas_swap(
        &mut self,
        cas: Resource<Cas>,
        value: Vec<u8>,
    ) -> Result<Result<(), Resource<Cas>>, CapError> {
        let Cas { ns, key, expected } = self.table.delete(cas)?;
        match self
            .ops()
            .swap(&ns, &key, expected, value, no_options())
            .await?
        {
            Swap::Done => Ok(Ok(())),
            Swap::Changed(found) => {
                let expected = Expected::digest_of(found.as_ref().map(|e| e.value.as_slice()));
                Ok(Err(self.table.push(Cas { ns, key, expected })?))
            }
        }
    }
}

/// What both versions do the same way, on a namespace.
impl KvOps<'_> {
    async fn value(self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, CapError> {
        Ok(self.get_entry(ns, key).await?.map(|e| e.value))
    }

    /// A plain write: no metadata, no expiry (as `set` of either version).
    async fn write(self, ns: &str, key: &str, value: Vec<u8>) -> Result<(), CapError> {
        self.put(ns, key, value, no_options()).await
    }

    async fn exists(self, ns: &str, key: &str) -> Result<bool, CapError> {
        Ok(self.value(ns, key).await?.is_some())
    }

    async fn erase(self, ns: &str, key: &str) -> Result<(), CapError> {
        self.remove(ns, key).await.map(drop)
    }

    /// A page of keys after the key `after`, and the last key of it if more
    /// may follow.
    async fn page_after(
        self,
        ns: &str,
        after: Option<&str>,
    ) -> Result<(Vec<String>, Option<String>), CapError> {
        let page = self.keys(ns, "", after, PAGE).await?;
        Ok((
            page.items.into_iter().map(|k| k.name).collect(),
            page.cursor,
        ))
    }

    /// Draft's numbered pages: the keys after the first `skip`.
    async fn page_from(self, ns: &str, skip: u64) -> Result<(Vec<String>, Option<u64>), CapError> {
        let (mut left, mut after) = (skip, None::<String>);
        loop {
            let (keys, next) = self.page_after(ns, after.as_deref()).await?;
            if left >= keys.len() as u64 {
                left -= keys.len() as u64;
                match next {
                    Some(cursor) if !keys.is_empty() => after = Some(cursor),
                    _ => return Ok((Vec::new(), None)),
                }
                continue;
            }
            let keys: Vec<String> = keys.into_iter().skip(left as usize).collect();
            let cursor = next.map(|_| skip + keys.len() as u64);
            return Ok((keys, cursor));
        }
    }

    async fn get_many(
        self,
        ns: &str,
        keys: Vec<String>,
    ) -> Result<Vec<Option<(String, Vec<u8>)>>, CapError> {
        batch_size(keys.len())?;
        let (mut values, mut bytes) = (Vec::with_capacity(keys.len()), 0);
        for chunk in keys.chunks(BATCH_IN_FLIGHT) {
            let reads = chunk.iter().map(|k| self.value(ns, k));
            let read = futures::future::try_join_all(reads).await?;
            bytes += read.iter().flatten().map(Vec::len).sum::<usize>();
            if bytes > MAX_BATCH_BYTES {
                return Err(CapError::TooLarge(format!(
                    "the values of this batch are over {MAX_BATCH_BYTES} bytes: \
                     read them in smaller batches"
                )));
            }
            values.extend(read);
        }
        Ok(keys
            .into_iter()
            .zip(values)
            .map(|(k, v)| v.map(|v| (k, v)))
            .collect())
    }

    /// The writes of a batch a chunk at a time (redb commits a chunk's
    /// together); a key named twice keeps its last value, as if they ran
    /// in order.
    async fn set_many(self, ns: &str, pairs: Vec<(String, Vec<u8>)>) -> Result<(), CapError> {
        batch_size(pairs.len())?;
        let last: HashMap<&str, usize> = (pairs.iter().enumerate())
            .map(|(i, (k, _))| (k.as_str(), i))
            .collect();
        let kept: Vec<&(String, Vec<u8>)> = (pairs.iter().enumerate())
            .filter(|(i, (k, _))| last[k.as_str()] == *i)
            .map(|(_, pair)| pair)
            .collect();
        for chunk in kept.chunks(BATCH_IN_FLIGHT) {
            let writes = chunk.iter().map(|(k, v)| self.write(ns, k, v.clone()));
            futures::future::try_join_all(writes).await?;
        }
        Ok(())
    }

    async fn delete_many(self, ns: &str, keys: Vec<String>) -> Result<(), CapError> {
        batch_size(keys.len())?;
        for chunk in keys.chunks(BATCH_IN_FLIGHT) {
            futures::future::try_join_all(chunk.iter().map(|k| self.erase(ns, k))).await?;
        }
        Ok(())
    }
}

fn no_options() -> SetOptions {
    SetOptions {
        ttl_ms: None,
        metadata: None,
    }
}

fn batch_size(n: usize) -> Result<(), CapError> {
    if n > MAX_BATCH {
        return Err(CapError::InvalidInput(format!(
            "a batch of {n} keys is over the limit of {MAX_BATCH}"
        )));
    }
    Ok(())
}

/// Adds both versions of `wasi:keyvalue`'s `store`, `atomics` and `batch`
/// to the linker.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> KvView<'_>,
) -> wasmtime::Result<()> {
    draft::store::add_to_linker::<T, HasKv>(linker, view)?;
    draft::atomics::add_to_linker::<T, HasKv>(linker, view)?;
    draft::batch::add_to_linker::<T, HasKv>(linker, view)?;
    draft2::store::add_to_linker::<T, HasKv>(linker, view)?;
    draft2::atomics::add_to_linker::<T, HasKv>(linker, view)?;
    draft2::batch::add_to_linker::<T, HasKv>(linker, view)
}

mod version_draft;
mod version_draft2;

#[cfg(test)]
mod tests;
