//! What each KV namespace, blob bucket and room log holds, kept in the
//! same transactions as the writes that change it, so that a quota is
//! checked against the exact usage and refused in the step that would
//! pass it (`Quota::check`).
//!
//! A KV entry weighs its key and its encoded entry; a blob object its
//! size (as the bucket holds it, whatever other buckets share its body);
//! a room its snapshot and the events after it. A database written
//! before this ledger existed is counted once, at open (`rebuild`).

use redb::{ReadableTable, TableDefinition};

use super::rooms::{ROOM_EVENTS, ROOM_SNAPSHOTS};
use super::{BLOB_OBJECTS, KV_ENTRIES};
use crate::{Result, StorageError, Usage};

/// ("kv" | "blob" | "room", name) -> (bytes, items).
pub(super) const USAGE: TableDefinition<(&str, &str), (u64, u64)> = TableDefinition::new("usage");

/// The ledger's own record that it counts everything written.
const COUNTED: (&str, &str) = ("", "counted");

pub(super) type Ledger<'t> = redb::Table<'t, (&'static str, &'static str), (u64, u64)>;

#[derive(Clone, Copy)]
pub(super) enum Kind {
    Kv,
    Blob,
    Room,
}

impl Kind {
    fn key(self) -> &'static str {
        match self {
            Kind::Kv => "kv",
            Kind::Blob => "blob",
            Kind::Room => "room",
        }
    }

    /// How a refusal names the store.
    pub fn describe(self, name: &str) -> String {
        match self {
            Kind::Kv => format!("the KV namespace '{name}'"),
            Kind::Blob => format!("the bucket '{name}'"),
            Kind::Room => format!("the room '{name}'"),
        }
    }
}

pub(super) fn get(
    ledger: &impl ReadableTable<(&'static str, &'static str), (u64, u64)>,
    kind: Kind,
    name: &str,
) -> Result<Usage> {
    let (bytes, items) = ledger
        .get((kind.key(), name))?
        .map_or((0, 0), |v| v.value());
    Ok(Usage { bytes, items })
}

pub(super) fn put(ledger: &mut Ledger, kind: Kind, name: &str, usage: Usage) -> Result<()> {
    if usage == Usage::default() {
        ledger.remove((kind.key(), name))?;
    } else {
        ledger.insert((kind.key(), name), (usage.bytes, usage.items))?;
    }
    Ok(())
}

/// `usage` with `bytes` and `items` added (negative: taken away).
pub(super) fn moved(usage: Usage, bytes: i64, items: i64) -> Usage {
    Usage {
        bytes: usage.bytes.saturating_add_signed(bytes),
        items: usage.items.saturating_add_signed(items),
    }
}

/// Counts what the database holds into the ledger, if it never has (a
/// database from before the ledger).
pub(super) fn rebuild(db: &redb::Database) -> Result<()> {
    let txn = db.begin_write()?;
    {
        let mut ledger = txn.open_table(USAGE)?;
        if ledger.get(COUNTED)?.is_some() {
            return Ok(());
        }
        let mut totals: std::collections::BTreeMap<(&'static str, String), Usage> =
            Default::default();
        let mut add = |kind: Kind, name: &str, bytes: u64| {
            let usage = totals.entry((kind.key(), name.to_string())).or_default();
            *usage = moved(*usage, bytes as i64, 1);
        };
        for entry in txn.open_table(KV_ENTRIES)?.iter()? {
            let (k, v) = entry?;
            let (ns, key) = k.value();
            add(Kind::Kv, ns, (key.len() + v.value().len()) as u64);
        }
        for entry in txn.open_table(BLOB_OBJECTS)?.iter()? {
            let (k, v) = entry?;
            let size = serde_json::from_slice::<serde_json::Value>(v.value())
                .ok()
                .and_then(|r| r["size"].as_u64())
                .ok_or_else(|| StorageError::Corrupt("a blob record without a size".into()))?;
            add(Kind::Blob, k.value().0, size);
        }
        for entry in txn.open_table(ROOM_EVENTS)?.iter()? {
            let (k, v) = entry?;
            add(Kind::Room, k.value().0, v.value().len() as u64);
        }
        for entry in txn.open_table(ROOM_SNAPSHOTS)?.iter()? {
            let (k, v) = entry?;
            let usage = totals
                .entry((Kind::Room.key(), k.value().to_string()))
                .or_default();
            *usage = moved(*usage, v.value().1.len() as i64, 0);
        }
        for ((kind, name), usage) in &totals {
            ledger.insert((*kind, name.as_str()), (usage.bytes, usage.items))?;
        }
        ledger.insert(COUNTED, (1, 0))?;
    }
    txn.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redb::RedbBackend;
    use crate::{BlobBackend, KvBackend, KvEntry, Quota, RoomLog, RoomSnapshot, StorageSettings};
    use bytes::Bytes;
    use std::sync::Arc;

    fn open(dir: &std::path::Path) -> Arc<RedbBackend> {
        let settings = StorageSettings {
            kv_sweep_interval: std::time::Duration::from_secs(3600),
        };
        RedbBackend::open(dir, &settings).unwrap()
    }

    fn value(n: usize) -> KvEntry {
        KvEntry {
            value: vec![b'v'; n],
            metadata: None,
            expires_at_ms: None,
        }
    }

    fn quota(bytes: u64, items: u64) -> Quota {
        Quota {
            bytes: Some(bytes),
            items: Some(items),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kv_writes_are_counted_and_held_to_their_quota() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        let q = quota(1000, 3);
        db.set("ns", "a", value(300), q).await.unwrap();
        db.set("ns", "b", value(300), q).await.unwrap();
        let used = KvBackend::usage(&*db, "ns").await.unwrap().unwrap();
        assert_eq!(used.items, 2);
        assert!((600..700).contains(&used.bytes), "{used:?}");
        // Past the bytes: refused, nothing written.
        let refused = db.set("ns", "c", value(500), q).await;
        assert!(
            matches!(refused, Err(StorageError::QuotaExceeded(_))),
            "{refused:?}"
        );
        assert_eq!(db.get("ns", "c").await.unwrap(), None);
        assert_eq!(KvBackend::usage(&*db, "ns").await.unwrap().unwrap(), used);
        // An overwrite with less, and a delete, always go.
        db.set("ns", "a", value(10), quota(1, 1)).await.unwrap();
        assert!(KvBackend::delete(&*db, "ns", "b").await.unwrap());
        let used = KvBackend::usage(&*db, "ns").await.unwrap().unwrap();
        assert_eq!(used.items, 1);
        // Past the keys.
        db.increment("ns", "n", 1, q).await.unwrap();
        db.set("ns", "x", value(1), q).await.unwrap();
        let refused = db.increment("ns", "m", 1, q).await;
        assert!(
            matches!(refused, Err(StorageError::QuotaExceeded(_))),
            "{refused:?}"
        );
        // Another namespace has its own.
        db.set("other", "a", value(900), q).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blobs_and_rooms_are_held_to_their_quota_and_the_ledger_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        let q = quota(1000, 10);
        let put = |key: &'static str, n: usize, q: Quota| {
            let db = db.clone();
            async move {
                let mut up = db.upload().await.unwrap();
                up.write(&vec![b'b'; n]).await.unwrap();
                up.commit("bucket", key, None, vec![], q).await
            }
        };
        put("a", 600, q).await.unwrap();
        let refused = put("b", 600, q).await;
        assert!(
            matches!(refused, Err(StorageError::QuotaExceeded(_))),
            "{refused:?}"
        );
        assert_eq!(BlobBackend::head(&*db, "bucket", "b").await.unwrap(), None);
        // Its body file is gone too: only "a"'s is left.
        let bodies = walk(&dir.path().join("blobs"));
        assert_eq!(bodies, 1, "one body file");
        put("a", 900, q).await.unwrap(); // replaces: 900 in all
        assert_eq!(
            BlobBackend::usage(&*db, "bucket").await.unwrap().unwrap(),
            Usage {
                bytes: 900,
                items: 1
            }
        );

        let rooms = &*db;
        let events = |n: usize| vec![Bytes::from(vec![b'e'; n]); 2];
        let room_quota = Quota {
            bytes: Some(1000),
            items: None,
        };
        rooms.append("r", 1, events(300), room_quota).await.unwrap();
        let refused = rooms.append("r", 3, events(300), room_quota).await;
        assert!(
            matches!(refused, Err(StorageError::QuotaExceeded(_))),
            "{refused:?}"
        );
        assert_eq!(RoomLog::head(rooms, "r").await.unwrap().head, 2);
        // Compaction makes room: a 100-byte snapshot for 600 bytes of events.
        let snapshot = RoomSnapshot {
            seq: 2,
            data: Bytes::from(vec![b's'; 100]),
        };
        rooms.compact("r", snapshot, 2).await.unwrap();
        rooms.append("r", 3, events(300), room_quota).await.unwrap();

        // A database from before the ledger: counted again at open.
        let counted = |db: &RedbBackend| {
            let txn = redb::ReadableDatabase::begin_read(&*db.inner.db).unwrap();
            let ledger = txn.open_table(USAGE).unwrap();
            (
                get(&ledger, Kind::Kv, "ns").unwrap(),
                get(&ledger, Kind::Blob, "bucket").unwrap(),
                get(&ledger, Kind::Room, "r").unwrap(),
            )
        };
        db.set("ns", "k", value(50), Quota::NONE).await.unwrap();
        let before = counted(&db);
        let txn = db.inner.db.begin_write().unwrap();
        txn.open_table(USAGE).unwrap().retain(|_, _| false).unwrap();
        txn.commit().unwrap();
        drop(db);
        let reopened = loop {
            // The old handle releases its lock as it closes.
            match std::panic::catch_unwind(|| open(dir.path())) {
                Ok(db) => break db,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        };
        assert_eq!(counted(&reopened), before);
        assert_eq!(before.2.bytes, 700, "the snapshot and two events");
    }

    fn walk(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| {
                let path = e.path();
                if path.is_dir() {
                    if path.ends_with("tmp") {
                        0
                    } else {
                        walk(&path)
                    }
                } else {
                    1
                }
            })
            .sum()
    }
}
