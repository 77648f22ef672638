//! The `spike:host/kv` capability: durable key-value namespaces on redb.
//!
//! `KvStore` holds the storage logic (plain, synchronous, unit-tested without
//! wasm). `KvView` implements the generated `Host` traits for a guest: it
//! checks the grant when a namespace is opened (a `Namespace` handle exists
//! only for a granted name) and runs writes off the async workers, since a
//! redb commit waits for fsync.

use std::sync::Arc;

use redb::ReadableTable;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use super::{CapError, Grants, WitError, blocking};
use crate::bindings::spike::host::kv::{self as wit, Entry, KeyInfo, KeyPage, SetOptions};
use crate::storage::{KV_ENTRIES, KV_EXPIRY, Storage, now_ms};

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// Largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 25 * 1024 * 1024;
/// Largest metadata, in bytes.
pub const MAX_METADATA_BYTES: usize = 1024;

/// A stored entry, as the KV store sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    pub value: Vec<u8>,
    pub metadata: Option<String>,
    pub expires_at_ms: Option<u64>,
}

impl StoredEntry {
    fn live(&self, now: u64) -> bool {
        self.expires_at_ms.is_none_or(|t| t > now)
    }
}

/// The byte layout of an entry in `KV_ENTRIES`:
/// `[version=1][expires_at u64 LE, 0 = never][metadata length u32 LE, MAX = none][metadata][value]`.
mod codec {
    use super::StoredEntry;

    const VERSION: u8 = 1;
    const HEADER: usize = 1 + 8 + 4;

    pub fn encode(e: &StoredEntry) -> Vec<u8> {
        let meta = e.metadata.as_deref().map(str::as_bytes);
        let mut out = Vec::with_capacity(HEADER + meta.map_or(0, <[u8]>::len) + e.value.len());
        out.push(VERSION);
        out.extend_from_slice(&e.expires_at_ms.unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&meta.map_or(u32::MAX, |m| m.len() as u32).to_le_bytes());
        out.extend_from_slice(meta.unwrap_or_default());
        out.extend_from_slice(&e.value);
        out
    }

    /// Reads only the expiry, without copying the value.
    pub fn expires_at(bytes: &[u8]) -> Option<u64> {
        let t = u64::from_le_bytes(bytes.get(1..9)?.try_into().ok()?);
        (t != 0).then_some(t)
    }

    pub fn decode(bytes: &[u8]) -> Option<StoredEntry> {
        if bytes.len() < HEADER || bytes[0] != VERSION {
            return None;
        }
        let expires_at_ms = expires_at(bytes);
        let meta_len = u32::from_le_bytes(bytes[9..13].try_into().ok()?);
        let (metadata, rest) = if meta_len == u32::MAX {
            (None, &bytes[HEADER..])
        } else {
            let end = HEADER.checked_add(meta_len as usize)?;
            let meta = std::str::from_utf8(bytes.get(HEADER..end)?).ok()?;
            (Some(meta.to_string()), &bytes[end..])
        };
        Some(StoredEntry {
            value: rest.to_vec(),
            metadata,
            expires_at_ms,
        })
    }

    /// Reads the metadata only (for listings).
    pub fn metadata(bytes: &[u8]) -> Option<String> {
        let meta_len = u32::from_le_bytes(bytes.get(9..13)?.try_into().ok()?);
        if meta_len == u32::MAX {
            return None;
        }
        let meta = bytes.get(13..13 + meta_len as usize)?;
        std::str::from_utf8(meta).ok().map(str::to_string)
    }
}

fn check_key(key: &str) -> Result<(), CapError> {
    if key.is_empty() {
        return Err(CapError::InvalidInput("key must not be empty".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(CapError::InvalidInput(format!(
            "key is {} bytes, the limit is {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    Ok(())
}

fn corrupt(ns: &str, key: &str) -> CapError {
    CapError::internal("kv decode", format!("entry {ns}/{key} is corrupt"))
}

/// KV storage over the shared redb database.
#[derive(Clone)]
pub struct KvStore {
    storage: Storage,
}

impl KvStore {
    pub fn new(storage: Storage) -> Self {
        Self { storage }
    }

    /// The live entry under `key`, if any.
    pub fn get(&self, ns: &str, key: &str, now: u64) -> Result<Option<StoredEntry>, CapError> {
        check_key(key)?;
        let txn = redb::ReadableDatabase::begin_read(self.storage.db())?;
        let table = txn.open_table(KV_ENTRIES)?;
        let Some(raw) = table.get((ns, key))? else {
            return Ok(None);
        };
        let entry = codec::decode(raw.value()).ok_or_else(|| corrupt(ns, key))?;
        Ok(entry.live(now).then_some(entry))
    }

    /// Stores `value` under `key`, durable on return.
    pub fn set(
        &self,
        ns: &str,
        key: &str,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
        metadata: Option<String>,
        now: u64,
    ) -> Result<(), CapError> {
        check_key(key)?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(CapError::TooLarge(format!(
                "value is {} bytes, the limit is {MAX_VALUE_BYTES}",
                value.len()
            )));
        }
        if let Some(m) = &metadata
            && m.len() > MAX_METADATA_BYTES
        {
            return Err(CapError::TooLarge(format!(
                "metadata is {} bytes, the limit is {MAX_METADATA_BYTES}",
                m.len()
            )));
        }
        let expires_at_ms = match ttl_ms {
            None => None,
            Some(0) => return Err(CapError::InvalidInput("ttl-ms must be at least 1".into())),
            Some(ttl) => Some(now.saturating_add(ttl)),
        };
        let entry = StoredEntry {
            value,
            metadata,
            expires_at_ms,
        };
        let txn = self.storage.db().begin_write()?;
        {
            let mut entries = txn.open_table(KV_ENTRIES)?;
            let mut expiry = txn.open_table(KV_EXPIRY)?;
            let old = entries.insert((ns, key), codec::encode(&entry).as_slice())?;
            if let Some(old_t) = old.and_then(|o| codec::expires_at(o.value())) {
                expiry.remove((old_t, ns, key))?;
            }
            if let Some(t) = expires_at_ms {
                expiry.insert((t, ns, key), ())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Removes `key`; whether a live entry was removed.
    pub fn delete(&self, ns: &str, key: &str, now: u64) -> Result<bool, CapError> {
        check_key(key)?;
        let txn = self.storage.db().begin_write()?;
        let removed_live = {
            let mut entries = txn.open_table(KV_ENTRIES)?;
            let mut expiry = txn.open_table(KV_EXPIRY)?;
            match entries.remove((ns, key))? {
                None => false,
                Some(old) => {
                    let t = codec::expires_at(old.value());
                    if let Some(t) = t {
                        expiry.remove((t, ns, key))?;
                    }
                    t.is_none_or(|t| t > now)
                }
            }
        };
        txn.commit()?;
        Ok(removed_live)
    }

    /// Adds `delta` to the decimal integer under `key`, in one transaction.
    pub fn increment(&self, ns: &str, key: &str, delta: i64, now: u64) -> Result<i64, CapError> {
        check_key(key)?;
        let txn = self.storage.db().begin_write()?;
        let next = {
            let mut entries = txn.open_table(KV_ENTRIES)?;
            let mut expiry = txn.open_table(KV_EXPIRY)?;
            let old = match entries.get((ns, key))? {
                Some(raw) => Some(codec::decode(raw.value()).ok_or_else(|| corrupt(ns, key))?),
                None => None,
            };
            let (current, metadata) = match old {
                Some(e) => {
                    if let Some(t) = e.expires_at_ms {
                        expiry.remove((t, ns, key))?;
                    }
                    if e.live(now) {
                        let n = std::str::from_utf8(&e.value)
                            .ok()
                            .and_then(|s| s.trim().parse::<i64>().ok())
                            .ok_or_else(|| {
                                CapError::InvalidInput(format!(
                                    "the value of '{key}' is not a decimal integer"
                                ))
                            })?;
                        (n, e.metadata)
                    } else {
                        (0, None)
                    }
                }
                None => (0, None),
            };
            let next = current.checked_add(delta).ok_or_else(|| {
                CapError::InvalidInput(format!("incrementing '{key}' overflows a 64-bit integer"))
            })?;
            let entry = StoredEntry {
                value: next.to_string().into_bytes(),
                metadata,
                expires_at_ms: None,
            };
            entries.insert((ns, key), codec::encode(&entry).as_slice())?;
            next
        };
        txn.commit()?;
        Ok(next)
    }

    /// Live keys starting with `prefix`, after `cursor`, at most `limit`.
    pub fn list(
        &self,
        ns: &str,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
        now: u64,
    ) -> Result<(Vec<KeyInfo>, Option<String>), CapError> {
        let limit = super::page_limit(limit)?;
        let txn = redb::ReadableDatabase::begin_read(self.storage.db())?;
        let table = txn.open_table(KV_ENTRIES)?;
        use std::ops::Bound;
        let start = match cursor {
            // A cursor before the prefix would only list keys outside it.
            Some(c) if c >= prefix => Bound::Excluded((ns, c)),
            _ => Bound::Included((ns, prefix)),
        };
        let range = table.range::<(&str, &str)>((start, Bound::Unbounded))?;
        let mut keys = Vec::new();
        let mut more = false;
        for item in range {
            let (k, v) = item?;
            let (k_ns, k_key) = k.value();
            if k_ns != ns || !k_key.starts_with(prefix) {
                break;
            }
            let raw = v.value();
            let expires_at_ms = codec::expires_at(raw);
            if expires_at_ms.is_some_and(|t| t <= now) {
                continue;
            }
            if keys.len() == limit {
                more = true;
                break;
            }
            keys.push(KeyInfo {
                name: k_key.to_string(),
                metadata: codec::metadata(raw),
                expires_at_ms,
            });
        }
        let cursor = if more {
            keys.last().map(|k| k.name.clone())
        } else {
            None
        };
        Ok((keys, cursor))
    }

    /// Deletes up to `max` entries that expired at or before `now`; how many.
    pub fn sweep_expired(&self, now: u64, max: usize) -> Result<usize, CapError> {
        let txn = self.storage.db().begin_write()?;
        let swept = {
            let mut entries = txn.open_table(KV_ENTRIES)?;
            let mut expiry = txn.open_table(KV_EXPIRY)?;
            let due: Vec<(u64, String, String)> = expiry
                .range::<(u64, &str, &str)>(..=(now, "\u{10ffff}", "\u{10ffff}"))?
                .take(max)
                .map(|item| {
                    item.map(|(k, _)| {
                        let (t, ns, key) = k.value();
                        (t, ns.to_string(), key.to_string())
                    })
                })
                .collect::<Result<_, _>>()?;
            for (t, ns, key) in &due {
                expiry.remove((*t, ns.as_str(), key.as_str()))?;
                // Only remove the entry if it still carries this expiry (the
                // index and the entry are written together, so it should).
                let still_due = entries
                    .get((ns.as_str(), key.as_str()))?
                    .is_some_and(|raw| codec::expires_at(raw.value()) == Some(*t));
                if still_due {
                    entries.remove((ns.as_str(), key.as_str()))?;
                }
            }
            due.len()
        };
        txn.commit()?;
        Ok(swept)
    }
}

/// Per-request KV state: the store and the plugin's grants.
#[derive(Clone)]
pub struct KvCtx {
    pub store: KvStore,
    pub grants: Arc<Grants>,
}

/// A `namespace` handle: the guest opened a granted namespace.
pub struct Namespace {
    name: Arc<str>,
}

/// The view of a store's data that implements the KV `Host` traits.
pub struct KvView<'a> {
    pub ctx: &'a KvCtx,
    pub table: &'a mut ResourceTable,
}

impl KvView<'_> {
    fn namespace(&self, ns: &Resource<Namespace>) -> wasmtime::Result<Arc<str>> {
        Ok(self.table.get(ns)?.name.clone())
    }
}

impl wit::Host for KvView<'_> {}

impl wit::HostNamespace for KvView<'_> {
    async fn open(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Resource<Namespace>, WitError>> {
        if let Err(e) = self.ctx.grants.check_kv(&name) {
            return Ok(Err(e.into()));
        }
        let ns = self.table.push(Namespace { name: name.into() })?;
        Ok(Ok(ns))
    }

    async fn get(
        &mut self,
        ns: Resource<Namespace>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, WitError>> {
        let ns = self.namespace(&ns)?;
        Ok(self
            .ctx
            .store
            .get(&ns, &key, now_ms())
            .map(|e| e.map(|e| e.value))
            .map_err(Into::into))
    }

    async fn get_with_metadata(
        &mut self,
        ns: Resource<Namespace>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Entry>, WitError>> {
        let ns = self.namespace(&ns)?;
        Ok(self
            .ctx
            .store
            .get(&ns, &key, now_ms())
            .map(|e| {
                e.map(|e| Entry {
                    value: e.value,
                    metadata: e.metadata,
                    expires_at_ms: e.expires_at_ms,
                })
            })
            .map_err(Into::into))
    }

    async fn set(
        &mut self,
        ns: Resource<Namespace>,
        key: String,
        value: Vec<u8>,
        options: SetOptions,
    ) -> wasmtime::Result<Result<(), WitError>> {
        let ns = self.namespace(&ns)?;
        let store = self.ctx.store.clone();
        let r = blocking(move || {
            store.set(&ns, &key, value, options.ttl_ms, options.metadata, now_ms())
        })
        .await;
        Ok(r.map_err(Into::into))
    }

    async fn delete(
        &mut self,
        ns: Resource<Namespace>,
        key: String,
    ) -> wasmtime::Result<Result<bool, WitError>> {
        let ns = self.namespace(&ns)?;
        let store = self.ctx.store.clone();
        let r = blocking(move || store.delete(&ns, &key, now_ms())).await;
        Ok(r.map_err(Into::into))
    }

    async fn increment(
        &mut self,
        ns: Resource<Namespace>,
        key: String,
        delta: i64,
    ) -> wasmtime::Result<Result<i64, WitError>> {
        let ns = self.namespace(&ns)?;
        let store = self.ctx.store.clone();
        let r = blocking(move || store.increment(&ns, &key, delta, now_ms())).await;
        Ok(r.map_err(Into::into))
    }

    async fn list(
        &mut self,
        ns: Resource<Namespace>,
        prefix: String,
        cursor: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Result<KeyPage, WitError>> {
        let ns = self.namespace(&ns)?;
        Ok(self
            .ctx
            .store
            .list(&ns, &prefix, cursor.as_deref(), limit, now_ms())
            .map(|(keys, cursor)| KeyPage { keys, cursor })
            .map_err(Into::into))
    }

    async fn drop(&mut self, ns: Resource<Namespace>) -> wasmtime::Result<()> {
        self.table.delete(ns)?;
        Ok(())
    }
}

struct HasKv;

impl HasData for HasKv {
    type Data<'a> = KvView<'a>;
}

/// Adds `spike:host/kv` to the linker.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> KvView<'_>,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasKv>(linker, view)
}

/// Reclaims the space of expired keys, forever, every `every`.
pub async fn run_expiry_sweeper(store: KvStore, every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let s = store.clone();
        // Sweep in batches so a backlog never holds the write lock for long.
        loop {
            let s = s.clone();
            match blocking(move || s.sweep_expired(now_ms(), 1000)).await {
                Ok(1000) => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::error!("kv expiry sweep: {e}");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, KvStore) {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        (dir, KvStore::new(storage))
    }

    #[test]
    fn codec_round_trips() {
        for e in [
            StoredEntry {
                value: b"v".to_vec(),
                metadata: None,
                expires_at_ms: None,
            },
            StoredEntry {
                value: vec![],
                metadata: Some("{}".into()),
                expires_at_ms: Some(5),
            },
            StoredEntry {
                value: vec![0; 1000],
                metadata: Some(String::new()),
                expires_at_ms: None,
            },
        ] {
            let bytes = codec::encode(&e);
            assert_eq!(codec::decode(&bytes), Some(e.clone()));
            assert_eq!(codec::metadata(&bytes), e.metadata);
            assert_eq!(codec::expires_at(&bytes), e.expires_at_ms);
        }
        assert_eq!(codec::decode(&[9, 9]), None);
    }

    #[test]
    fn set_get_delete() {
        let (_d, kv) = store();
        assert_eq!(kv.get("a", "k", 0).unwrap(), None);
        kv.set("a", "k", b"v".to_vec(), None, Some("m".into()), 0)
            .unwrap();
        let e = kv.get("a", "k", 0).unwrap().unwrap();
        assert_eq!(e.value, b"v");
        assert_eq!(e.metadata.as_deref(), Some("m"));
        // Namespaces are separate.
        assert_eq!(kv.get("b", "k", 0).unwrap(), None);
        assert!(kv.delete("a", "k", 0).unwrap());
        assert!(!kv.delete("a", "k", 0).unwrap());
        assert_eq!(kv.get("a", "k", 0).unwrap(), None);
    }

    #[test]
    fn rejects_bad_keys_and_sizes() {
        let (_d, kv) = store();
        assert!(matches!(kv.get("a", "", 0), Err(CapError::InvalidInput(_))));
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        assert!(matches!(
            kv.set("a", &long, vec![], None, None, 0),
            Err(CapError::InvalidInput(_))
        ));
        let meta = "m".repeat(MAX_METADATA_BYTES + 1);
        assert!(matches!(
            kv.set("a", "k", vec![], None, Some(meta), 0),
            Err(CapError::TooLarge(_))
        ));
        assert!(matches!(
            kv.set("a", "k", vec![], Some(0), None, 0),
            Err(CapError::InvalidInput(_))
        ));
        assert!(matches!(
            kv.list("a", "", None, 1001, 0),
            Err(CapError::InvalidInput(_))
        ));
    }

    #[test]
    fn ttl_hides_then_sweeps() {
        let (_d, kv) = store();
        kv.set("a", "t", b"1".to_vec(), Some(100), None, 1_000)
            .unwrap();
        kv.set("a", "p", b"2".to_vec(), None, None, 1_000).unwrap();
        assert!(kv.get("a", "t", 1_099).unwrap().is_some());
        assert!(kv.get("a", "t", 1_100).unwrap().is_none());
        let (keys, _) = kv.list("a", "", None, 0, 1_100).unwrap();
        assert_eq!(
            keys.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(),
            ["p"]
        );
        assert_eq!(kv.sweep_expired(1_099, 10).unwrap(), 0);
        assert_eq!(kv.sweep_expired(1_100, 10).unwrap(), 1);
        assert_eq!(kv.sweep_expired(1_100, 10).unwrap(), 0);
        // Overwriting without a TTL clears the old expiry from the index.
        kv.set("a", "x", b"1".to_vec(), Some(10), None, 0).unwrap();
        kv.set("a", "x", b"2".to_vec(), None, None, 0).unwrap();
        assert_eq!(kv.sweep_expired(100, 10).unwrap(), 0);
        assert_eq!(kv.get("a", "x", 100).unwrap().unwrap().value, b"2");
    }

    #[test]
    fn list_pages_by_prefix() {
        let (_d, kv) = store();
        for i in 0..25 {
            kv.set("a", &format!("user:{i:02}"), vec![], None, None, 0)
                .unwrap();
        }
        kv.set("a", "other", vec![], None, None, 0).unwrap();
        kv.set("b", "user:99", vec![], None, None, 0).unwrap();
        let mut seen = Vec::new();
        let mut cursor = None;
        let mut pages = 0;
        loop {
            let (keys, next) = kv.list("a", "user:", cursor.as_deref(), 10, 0).unwrap();
            pages += 1;
            seen.extend(keys.into_iter().map(|k| k.name));
            match next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(pages, 3);
        let want: Vec<String> = (0..25).map(|i| format!("user:{i:02}")).collect();
        assert_eq!(seen, want);
        // An exact page boundary gives no dangling cursor.
        let (keys, next) = kv.list("a", "user:", None, 25, 0).unwrap();
        assert_eq!((keys.len(), next), (25, None));
    }

    #[test]
    fn increment_is_atomic_and_checked() {
        let (_d, kv) = store();
        assert_eq!(kv.increment("a", "n", 1, 0).unwrap(), 1);
        assert_eq!(kv.increment("a", "n", 41, 0).unwrap(), 42);
        kv.set("a", "s", b"text".to_vec(), None, None, 0).unwrap();
        assert!(matches!(
            kv.increment("a", "s", 1, 0),
            Err(CapError::InvalidInput(_))
        ));
        kv.set("a", "max", i64::MAX.to_string().into_bytes(), None, None, 0)
            .unwrap();
        assert!(matches!(
            kv.increment("a", "max", 1, 0),
            Err(CapError::InvalidInput(_))
        ));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let kv = kv.clone();
                std::thread::spawn(move || {
                    for _ in 0..25 {
                        kv.increment("a", "c", 1, 0).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(kv.get("a", "c", 0).unwrap().unwrap().value, b"100");
    }

    /// The `Host` impl on a view, as a guest would call it (no wasm).
    #[tokio::test]
    async fn view_checks_the_grant_then_serves() {
        use wit::HostNamespace;
        let (_d, store) = store();
        let grants = Grants {
            kv: ["granted".to_string()].into(),
            ..Default::default()
        };
        let ctx = KvCtx {
            store,
            grants: Arc::new(grants),
        };
        let mut table = ResourceTable::new();
        let mut view = KvView {
            ctx: &ctx,
            table: &mut table,
        };

        let denied = view.open("other".into()).await.unwrap();
        assert!(matches!(denied, Err(WitError::AccessDenied(m)) if m.contains("'other'")));

        let ns = view.open("granted".into()).await.unwrap().unwrap();
        let borrow = || Resource::<Namespace>::new_borrow(ns.rep());
        let opts = SetOptions {
            ttl_ms: None,
            metadata: Some("m".into()),
        };
        view.set(borrow(), "k".into(), b"v".to_vec(), opts)
            .await
            .unwrap()
            .unwrap();
        let got = view
            .get_with_metadata(borrow(), "k".into())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(
            (got.value.as_slice(), got.metadata.as_deref()),
            (&b"v"[..], Some("m"))
        );
        assert_eq!(
            view.increment(borrow(), "n".into(), 5)
                .await
                .unwrap()
                .unwrap(),
            5
        );
        let page = view
            .list(borrow(), "".into(), None, 0)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(page.keys.len(), 2);
        let bad = view.get(borrow(), "".into()).await.unwrap();
        assert!(matches!(bad, Err(WitError::InvalidInput(_))));
        view.drop(ns).await.unwrap();
    }

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        KvStore::new(Storage::open(dir.path()).unwrap())
            .set("a", "k", b"v".to_vec(), None, None, 0)
            .unwrap();
        let kv = KvStore::new(Storage::open(dir.path()).unwrap());
        assert_eq!(kv.get("a", "k", 0).unwrap().unwrap().value, b"v");
    }
}
