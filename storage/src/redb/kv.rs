//! KV namespaces in redb: one table of entries keyed by (namespace, key),
//! and an expiry index that the sweeper walks to reclaim expired entries.

use std::sync::Weak;
use std::time::Duration;

use redb::ReadableTable;

use super::group_commit::GroupCommit;
use super::usage::{self, Kind, Ledger, USAGE};
use super::{Inner, KV_ENTRIES, KV_EXPIRY, RedbBackend, blocking, list_scope};
use crate::kv_entry::{codec, incremented, live, swap_refused};
use crate::util::now_ms;
use crate::{Expected, KvBackend, KvEntry, KvKey, Page, Quota, Result, StorageError, Swap, Usage};

fn corrupt(ns: &str, key: &str) -> StorageError {
    StorageError::Corrupt(format!("kv entry {ns}/{key}"))
}

/// One write to the KV, waiting for the writer thread.
pub(super) enum KvWrite {
    Set {
        ns: String,
        key: String,
        entry: KvEntry,
        quota: Quota,
    },
    Delete {
        ns: String,
        key: String,
        now: u64,
    },
    Increment {
        ns: String,
        key: String,
        delta: i64,
        now: u64,
        quota: Quota,
    },
    Swap {
        ns: String,
        key: String,
        expected: Expected,
        entry: KvEntry,
        now: u64,
        quota: Quota,
    },
}

/// What a write did.
pub(super) enum Written {
    Set,
    /// Whether a live key was removed.
    Deleted(bool),
    /// The counter's new value.
    Incremented(i64),
    Swapped(Swap),
}

/// The writer thread of KV writes (group commit).
pub(super) type KvWriter = GroupCommit<KvWrite, Written>;

/// Starts the thread that commits KV writes.
pub(super) fn start_writer(inner: Weak<Inner>) -> std::io::Result<KvWriter> {
    GroupCommit::start("spike-kv", "KV", inner, commit_writes)
}

type Entries<'t> = redb::Table<'t, (&'static str, &'static str), &'static [u8]>;
type Expiry<'t> = redb::Table<'t, (u64, &'static str, &'static str), ()>;

/// The tables a KV write changes.
struct Tables<'t> {
    entries: Entries<'t>,
    expiry: Expiry<'t>,
    ledger: Ledger<'t>,
}

/// What an entry weighs in its namespace's usage.
fn weight(key: &str, encoded_len: usize) -> i64 {
    (key.len() + encoded_len) as i64
}

impl Tables<'_> {
    /// Moves `ns`'s usage from an entry of `old` bytes (`None`: none) to
    /// one of `new` bytes (`None`: removed), if `quota` allows it.
    fn account(
        &mut self,
        ns: &str,
        key: &str,
        old: Option<usize>,
        new: Option<usize>,
        quota: Quota,
    ) -> Result<Result<()>> {
        let before = usage::get(&self.ledger, Kind::Kv, ns)?;
        let bytes = new.map_or(0, |n| weight(key, n)) - old.map_or(0, |o| weight(key, o));
        let items = i64::from(new.is_some()) - i64::from(old.is_some());
        let after = usage::moved(before, bytes, items);
        if let Err(refused) = quota.check(&Kind::Kv.describe(ns), before, after) {
            return Ok(Err(refused));
        }
        usage::put(&mut self.ledger, Kind::Kv, ns, after)?;
        Ok(Ok(()))
    }

    /// Stores `entry` under `key`, replacing whatever was there (live or
    /// not) and its place in the expiry index, if `quota` allows it.
    fn put(&mut self, ns: &str, key: &str, entry: &KvEntry, quota: Quota) -> Result<Result<()>> {
        let encoded = codec::encode(entry);
        let old_len = self.entries.get((ns, key))?.map(|o| o.value().len());
        if let Err(refused) = self.account(ns, key, old_len, Some(encoded.len()), quota)? {
            return Ok(Err(refused));
        }
        let old = self.entries.insert((ns, key), encoded.as_slice())?;
        if let Some(old_t) = old.and_then(|o| codec::expires_at(o.value())) {
            self.expiry.remove((old_t, ns, key))?;
        }
        if let Some(at) = entry.expires_at_ms {
            self.expiry.insert((at, ns, key), ())?;
        }
        Ok(Ok(()))
    }

    /// The entry stored under `key`, live or not.
    fn stored(&self, ns: &str, key: &str) -> Result<Option<KvEntry>> {
        match self.entries.get((ns, key))? {
            Some(raw) => Ok(Some(
                codec::decode(raw.value()).ok_or_else(|| corrupt(ns, key))?,
            )),
            None => Ok(None),
        }
    }
}

/// One transaction for `writes`, applied in order; a write that is refused
/// (an increment of a value that is not an integer) changes nothing and
/// fails alone. `Err`: nothing was written.
fn commit_writes(inner: &Inner, writes: &[KvWrite]) -> Result<Vec<Result<Written>>> {
    let txn = inner.db.begin_write()?;
    let mut outcomes = Vec::with_capacity(writes.len());
    {
        let mut tables = Tables {
            entries: txn.open_table(KV_ENTRIES)?,
            expiry: txn.open_table(KV_EXPIRY)?,
            ledger: txn.open_table(USAGE)?,
        };
        for write in writes {
            outcomes.push(write.apply(&mut tables)?);
        }
    }
    txn.commit()?;
    Ok(outcomes)
}

impl KvWrite {
    /// Applies the write. The outer `Err` is a storage failure (the whole
    /// transaction is abandoned); the inner one refuses this write alone,
    /// and is only returned before anything of it was written.
    fn apply(&self, t: &mut Tables) -> Result<Result<Written>> {
        match self {
            KvWrite::Set {
                ns,
                key,
                entry,
                quota,
            } => Ok(t.put(ns, key, entry, *quota)?.map(|()| Written::Set)),
            KvWrite::Delete { ns, key, now } => {
                let (ns, key) = (ns.as_str(), key.as_str());
                let removed = (t.entries.remove((ns, key))?)
                    .map(|old| (codec::expires_at(old.value()), old.value().len()));
                let removed_live = match removed {
                    None => false,
                    Some((at, len)) => {
                        if let Some(at) = at {
                            t.expiry.remove((at, ns, key))?;
                        }
                        // Less is always allowed.
                        let _ = t.account(ns, key, Some(len), None, Quota::NONE)?;
                        at.is_none_or(|at| at > *now)
                    }
                };
                Ok(Ok(Written::Deleted(removed_live)))
            }
            KvWrite::Increment {
                ns,
                key,
                delta,
                now,
                quota,
            } => {
                let old = t.stored(ns, key)?;
                // Everything that may refuse the write comes before any of
                // it is written.
                let (entry, next) = match incremented(old.as_ref(), key, *delta, *now) {
                    Ok(done) => done,
                    Err(refused) => return Ok(Err(refused)),
                };
                Ok(t.put(ns, key, &entry, *quota)?
                    .map(|()| Written::Incremented(next)))
            }
            KvWrite::Swap {
                ns,
                key,
                expected,
                entry,
                now,
                quota,
            } => {
                let old = t.stored(ns, key)?;
                if let Some(current) = swap_refused(old, expected, *now) {
                    return Ok(Ok(Written::Swapped(Swap::Changed(current))));
                }
                Ok(t.put(ns, key, entry, *quota)?
                    .map(|()| Written::Swapped(Swap::Done)))
            }
        }
    }
}

/// The operations, with the time passed in (so tests can move it).
impl Inner {
    fn kv_get(&self, ns: &str, key: &str, now: u64) -> Result<Option<KvEntry>> {
        let txn = redb::ReadableDatabase::begin_read(&*self.db)?;
        let table = txn.open_table(KV_ENTRIES)?;
        let Some(raw) = table.get((ns, key))? else {
            return Ok(None);
        };
        let entry = codec::decode(raw.value()).ok_or_else(|| corrupt(ns, key))?;
        Ok(live(&entry, now).then_some(entry))
    }

    fn kv_list(
        &self,
        ns: &str,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
        now: u64,
    ) -> Result<Page<KvKey>> {
        let txn = redb::ReadableDatabase::begin_read(&*self.db)?;
        let table = txn.open_table(KV_ENTRIES)?;
        list_scope(&table, ns, prefix, cursor, limit, |key, raw| {
            let expires_at_ms = codec::expires_at(raw);
            if expires_at_ms.is_some_and(|t| t <= now) {
                return Ok(None);
            }
            Ok(Some(KvKey {
                name: key.to_string(),
                metadata: codec::metadata(raw),
                expires_at_ms,
            }))
        })
    }

    /// Deletes up to `max` entries that expired at or before `now`; how many.
    fn kv_sweep_expired(&self, now: u64, max: usize) -> Result<usize> {
        let txn = self.db.begin_write()?;
        let swept = {
            let mut entries = txn.open_table(KV_ENTRIES)?;
            let mut expiry = txn.open_table(KV_EXPIRY)?;
            let mut ledger = txn.open_table(USAGE)?;
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
                    .filter(|raw| codec::expires_at(raw.value()) == Some(*t))
                    .map(|raw| raw.value().len());
                if let Some(len) = still_due {
                    entries.remove((ns.as_str(), key.as_str()))?;
                    let before = usage::get(&ledger, Kind::Kv, ns)?;
                    let after = usage::moved(before, -weight(key, len), -1);
                    usage::put(&mut ledger, Kind::Kv, ns, after)?;
                }
            }
            due.len()
        };
        txn.commit()?;
        Ok(swept)
    }
}

#[async_trait::async_trait]
impl KvBackend for RedbBackend {
    async fn get(&self, ns: &str, key: &str) -> Result<Option<KvEntry>> {
        // A value may be 25 MiB, read from the file and copied: not on an
        // async worker.
        let (inner, ns, key) = (self.inner.clone(), ns.to_string(), key.to_string());
        blocking(move || inner.kv_get(&ns, &key, now_ms())).await
    }

    async fn set(&self, ns: &str, key: &str, entry: KvEntry, quota: Quota) -> Result<()> {
        let (ns, key) = (ns.to_string(), key.to_string());
        let write = KvWrite::Set {
            ns,
            key,
            entry,
            quota,
        };
        self.kv_writer.submit(write).await?;
        Ok(())
    }

    async fn delete(&self, ns: &str, key: &str) -> Result<bool> {
        let (ns, key, now) = (ns.to_string(), key.to_string(), now_ms());
        match self
            .kv_writer
            .submit(KvWrite::Delete { ns, key, now })
            .await?
        {
            Written::Deleted(removed) => Ok(removed),
            _ => unreachable!("a delete answers Deleted"),
        }
    }

    async fn increment(&self, ns: &str, key: &str, delta: i64, quota: Quota) -> Result<i64> {
        let (ns, key, now) = (ns.to_string(), key.to_string(), now_ms());
        let write = KvWrite::Increment {
            ns,
            key,
            delta,
            now,
            quota,
        };
        match self.kv_writer.submit(write).await? {
            Written::Incremented(n) => Ok(n),
            _ => unreachable!("an increment answers Incremented"),
        }
    }

    async fn compare_and_swap(
        &self,
        ns: &str,
        key: &str,
        expected: Expected,
        entry: KvEntry,
        quota: Quota,
    ) -> Result<Swap> {
        let (ns, key, now) = (ns.to_string(), key.to_string(), now_ms());
        let write = KvWrite::Swap {
            ns,
            key,
            expected,
            entry,
            now,
            quota,
        };
        match self.kv_writer.submit(write).await? {
            Written::Swapped(swap) => Ok(swap),
            _ => unreachable!("a swap answers Swapped"),
        }
    }

    async fn list(
        &self,
        ns: &str,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<KvKey>> {
        // A page may pass over any number of expired keys.
        let (inner, ns, prefix) = (self.inner.clone(), ns.to_string(), prefix.to_string());
        let cursor = cursor.map(str::to_string);
        blocking(move || inner.kv_list(&ns, &prefix, cursor.as_deref(), limit, now_ms())).await
    }

    async fn usage(&self, ns: &str) -> Result<Option<Usage>> {
        self.inner.usage(Kind::Kv, ns).map(Some)
    }
}

/// Reclaims the space of expired keys every `every`, until the backend is
/// gone.
pub(super) async fn run_expiry_sweeper(inner: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Sweep in batches so a backlog never holds the write lock for long.
        loop {
            let Some(inner) = inner.upgrade() else { return };
            match blocking(move || inner.kv_sweep_expired(now_ms(), 1000)).await {
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
    use std::sync::Arc;

    use super::*;
    use crate::StorageSettings;

    fn open() -> (tempfile::TempDir, Arc<RedbBackend>) {
        open_sweeping_every(Duration::from_secs(3600))
    }

    fn open_sweeping_every(interval: Duration) -> (tempfile::TempDir, Arc<RedbBackend>) {
        let dir = tempfile::tempdir().unwrap();
        let settings = StorageSettings {
            kv_sweep_interval: interval,
        };
        let backend = RedbBackend::open(dir.path(), &settings).unwrap();
        (dir, backend)
    }

    /// A write committed on its own, with no writer thread.
    fn set(inner: &Inner, ns: &str, key: &str, entry: KvEntry) {
        let (ns, key) = (ns.to_string(), key.to_string());
        let quota = Quota::NONE;
        let write = KvWrite::Set {
            ns,
            key,
            entry,
            quota,
        };
        let outcomes = commit_writes(inner, &[write]).unwrap();
        assert!(matches!(outcomes[..], [Ok(Written::Set)]));
    }

    fn entry(value: &[u8], ttl_from: Option<(u64, u64)>) -> KvEntry {
        KvEntry {
            value: value.to_vec(),
            metadata: None,
            expires_at_ms: ttl_from.map(|(now, ttl)| now + ttl),
        }
    }

    /// In one batch, a refused increment changes nothing (its value and
    /// its expiry stay) and the writes around it commit.
    #[tokio::test]
    async fn a_refused_write_fails_alone() {
        let (_d, kv) = open();
        let kv = &kv.inner;
        set(kv, "a", "text", entry(b"abc", Some((1_000, 100))));
        let write = |key: &str, delta| KvWrite::Increment {
            ns: "a".into(),
            key: key.into(),
            delta,
            now: 1_000,
            quota: Quota::NONE,
        };
        let outcomes =
            commit_writes(kv, &[write("n", 2), write("text", 1), write("n", 3)]).unwrap();
        assert!(matches!(outcomes[0], Ok(Written::Incremented(2))));
        assert!(matches!(
            outcomes[1],
            Err(StorageError::NotAnInteger { .. })
        ));
        assert!(matches!(outcomes[2], Ok(Written::Incremented(5))));
        assert_eq!(
            kv.kv_get("a", "text", 1_000).unwrap().unwrap().value,
            b"abc"
        );
        assert_eq!(
            kv.kv_sweep_expired(1_100, 10).unwrap(),
            1,
            "the expiry is kept"
        );
    }

    /// Writes from many tasks at once share commits and lose nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_share_commits() {
        let (_d, backend) = open();
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let backend = backend.clone();
                tokio::spawn(async move {
                    backend.increment("a", "n", 1, Quota::NONE).await.unwrap();
                    backend
                        .set("a", &format!("k{i}"), entry(b"v", None), Quota::NONE)
                        .await
                        .unwrap();
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(backend.get("a", "n").await.unwrap().unwrap().value, b"200");
        assert_eq!(
            backend
                .list("a", "k", None, 1000)
                .await
                .unwrap()
                .items
                .len(),
            200
        );
    }

    /// Expiry in controlled time: hidden at its instant, then swept.
    #[tokio::test]
    async fn ttl_hides_then_sweeps() {
        let (_d, kv) = open();
        let kv = &kv.inner;
        set(kv, "a", "t", entry(b"1", Some((1_000, 100))));
        set(kv, "a", "p", entry(b"2", None));
        assert!(kv.kv_get("a", "t", 1_099).unwrap().is_some());
        assert!(kv.kv_get("a", "t", 1_100).unwrap().is_none());
        let page = kv.kv_list("a", "", None, 1000, 1_100).unwrap();
        let names: Vec<&str> = page.items.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["p"]);
        assert_eq!(kv.kv_sweep_expired(1_099, 10).unwrap(), 0);
        assert_eq!(kv.kv_sweep_expired(1_100, 10).unwrap(), 1);
        assert_eq!(kv.kv_sweep_expired(1_100, 10).unwrap(), 0);
        // Overwriting without a TTL clears the old expiry from the index.
        set(kv, "a", "x", entry(b"1", Some((0, 10))));
        set(kv, "a", "x", entry(b"2", None));
        assert_eq!(kv.kv_sweep_expired(100, 10).unwrap(), 0);
        assert_eq!(kv.kv_get("a", "x", 100).unwrap().unwrap().value, b"2");
    }

    #[tokio::test]
    async fn the_sweeper_reclaims_expired_entries() {
        let (_d, backend) = open_sweeping_every(Duration::from_millis(50));
        let kv = &backend.inner;
        set(kv, "a", "short", entry(b"1", Some((now_ms(), 100))));
        set(kv, "a", "long", entry(b"2", None));
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Read as of long ago: an expired entry still stored would show.
        assert!(kv.kv_get("a", "short", 0).unwrap().is_none());
        assert!(kv.kv_get("a", "long", 0).unwrap().is_some());
    }

    #[tokio::test]
    async fn a_listing_ends_at_its_namespace() {
        let (_d, kv) = open();
        let kv = &kv.inner;
        set(kv, "a", "k1", entry(b"", None));
        set(kv, "b", "k2", entry(b"", None));
        for limit in [1, 10] {
            let page = kv.kv_list("a", "", None, limit, 0).unwrap();
            assert_eq!(page.items.len(), 1);
            assert_eq!(page.cursor, None, "limit {limit}");
        }
    }
}
