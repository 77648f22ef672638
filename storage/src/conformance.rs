//! The backend conformance suite: what every storage backend must do,
//! written once against the traits. A backend runs all of it with
//! `suite!(open)`, where `open(dir)` returns its `Backends` over `dir`
//! (reopening the same `dir` must find what was written).

use std::path::Path;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use bytes::Bytes;

use super::{
    Backends, Expected, KvEntry, Quota, RoomSnapshot, StorageError, Swap, VersionHistory,
    VersionRecord, VersionSource,
};

pub type Open = dyn Fn(&Path) -> Backends + Sync;

/// One `#[tokio::test]` per check, for a backend's `open`.
macro_rules! suite {
    ($open:ident) => {
        $crate::conformance::suite!(@each $open;
            kv_set_get_delete, kv_metadata_and_ttl, kv_pages_with_cursors,
            kv_increment_is_atomic, kv_compare_and_swap_is_atomic, blob_streams_large_objects, blob_ranges_and_metadata,
            blob_pages_with_cursors, blob_shared_bodies_and_abandoned_uploads,
            versions_history_and_bytes, rooms_append_in_order, rooms_group_commits_many_rooms,
            rooms_compact_to_a_snapshot, rooms_keep_small_state, everything_survives_reopen);
    };
    (@each $open:ident; $($check:ident),*) => {
        mod conformance {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let dir = tempfile::tempdir().unwrap();
                    $crate::conformance::$check(dir.path(), &super::$open).await;
                }
            )*
        }
    };
}
pub(crate) use suite;

fn entry(value: &[u8], metadata: Option<&str>, expires_at_ms: Option<u64>) -> KvEntry {
    KvEntry {
        value: value.to_vec(),
        metadata: metadata.map(str::to_string),
        expires_at_ms,
    }
}

pub async fn kv_set_get_delete(dir: &Path, open: &Open) {
    let kv = open(dir).kv;
    assert_eq!(kv.get("a", "k").await.unwrap(), None);
    kv.set("a", "k", entry(b"v", None, None), Quota::NONE)
        .await
        .unwrap();
    assert_eq!(kv.get("a", "k").await.unwrap().unwrap().value, b"v");
    // Namespaces are separate.
    assert_eq!(kv.get("b", "k").await.unwrap(), None);
    kv.set("a", "k", entry(b"v2", None, None), Quota::NONE)
        .await
        .unwrap();
    assert_eq!(kv.get("a", "k").await.unwrap().unwrap().value, b"v2");
    assert!(kv.delete("a", "k").await.unwrap());
    assert!(!kv.delete("a", "k").await.unwrap());
    assert_eq!(kv.get("a", "k").await.unwrap(), None);
}

pub async fn kv_metadata_and_ttl(dir: &Path, open: &Open) {
    let kv = open(dir).kv;
    kv.set("a", "m", entry(b"v", Some("{\"x\":1}"), None), Quota::NONE)
        .await
        .unwrap();
    let got = kv.get("a", "m").await.unwrap().unwrap();
    assert_eq!(got.metadata.as_deref(), Some("{\"x\":1}"));
    // Expiring in 300 ms: there, listed with its expiry, then gone.
    let at = crate::util::now_ms() + 300;
    kv.set("a", "t", entry(b"1", Some("meta"), Some(at)), Quota::NONE)
        .await
        .unwrap();
    let got = kv.get("a", "t").await.unwrap().unwrap();
    assert_eq!(got.expires_at_ms, Some(at));
    let page = kv.list("a", "t", None, 10).await.unwrap();
    assert_eq!(page.items[0].expires_at_ms, Some(at));
    assert_eq!(page.items[0].metadata.as_deref(), Some("meta"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(kv.get("a", "t").await.unwrap(), None);
    assert!(kv.list("a", "t", None, 10).await.unwrap().items.is_empty());
    assert!(
        !kv.delete("a", "t").await.unwrap(),
        "an expired key is not live"
    );
    // An expired counter starts again from zero.
    kv.set(
        "a",
        "n",
        entry(b"41", None, Some(crate::util::now_ms())),
        Quota::NONE,
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(kv.increment("a", "n", 1, Quota::NONE).await.unwrap(), 1);
}

pub async fn kv_pages_with_cursors(dir: &Path, open: &Open) {
    let kv = open(dir).kv;
    for i in 0..25 {
        kv.set(
            "a",
            &format!("user:{i:02}"),
            entry(b"", None, None),
            Quota::NONE,
        )
        .await
        .unwrap();
    }
    kv.set("a", "other", entry(b"", None, None), Quota::NONE)
        .await
        .unwrap();
    kv.set("a", "zzz", entry(b"", None, None), Quota::NONE)
        .await
        .unwrap();
    kv.set("b", "user:99", entry(b"", None, None), Quota::NONE)
        .await
        .unwrap();
    let (mut seen, mut cursor, mut pages) = (Vec::new(), None, 0);
    loop {
        let page = kv.list("a", "user:", cursor.as_deref(), 10).await.unwrap();
        pages += 1;
        seen.extend(page.items.into_iter().map(|k| k.name));
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let want: Vec<String> = (0..25).map(|i| format!("user:{i:02}")).collect();
    assert_eq!(seen, want);
    // An exact page boundary leaves no cursor to an empty page.
    let page = kv.list("a", "user:", None, 25).await.unwrap();
    assert_eq!((page.items.len(), page.cursor), (25, None));
    // No prefix: the whole namespace and nothing of the next.
    let page = kv.list("a", "", None, 1000).await.unwrap();
    assert_eq!(page.items.len(), 27);
}

pub async fn kv_increment_is_atomic(dir: &Path, open: &Open) {
    let kv = open(dir).kv;
    assert_eq!(kv.increment("a", "n", 1, Quota::NONE).await.unwrap(), 1);
    assert_eq!(kv.increment("a", "n", 41, Quota::NONE).await.unwrap(), 42);
    kv.set("a", "s", entry(b"text", None, None), Quota::NONE)
        .await
        .unwrap();
    assert!(matches!(
        kv.increment("a", "s", 1, Quota::NONE).await,
        Err(StorageError::NotAnInteger { .. })
    ));
    let max = i64::MAX.to_string().into_bytes();
    kv.set("a", "max", entry(&max, None, None), Quota::NONE)
        .await
        .unwrap();
    assert!(matches!(
        kv.increment("a", "max", 1, Quota::NONE).await,
        Err(StorageError::Overflow { .. })
    ));
    // A live key keeps its metadata and expiry; an expired one starts over.
    let later = crate::util::now_ms() + 3_600_000;
    kv.set("a", "t", entry(b"5", Some("m"), Some(later)), Quota::NONE)
        .await
        .unwrap();
    assert_eq!(kv.increment("a", "t", 1, Quota::NONE).await.unwrap(), 6);
    let kept = kv.get("a", "t").await.unwrap().unwrap();
    assert_eq!(
        (kept.metadata.as_deref(), kept.expires_at_ms),
        (Some("m"), Some(later))
    );
    kv.set("a", "gone", entry(b"5", Some("m"), Some(1)), Quota::NONE)
        .await
        .unwrap();
    assert_eq!(kv.increment("a", "gone", 1, Quota::NONE).await.unwrap(), 1);
    let fresh = kv.get("a", "gone").await.unwrap().unwrap();
    assert_eq!((fresh.metadata, fresh.expires_at_ms), (None, None));
    // 32 callers at once, 10 increments each: none lost, none doubled.
    let callers = (0..32).map(|_| {
        let kv = kv.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..10 {
                seen.push(kv.increment("a", "c", 1, Quota::NONE).await.unwrap());
            }
            seen
        })
    });
    let mut all: Vec<i64> = futures::future::join_all(callers)
        .await
        .into_iter()
        .flat_map(Result::unwrap)
        .collect();
    all.sort();
    assert_eq!(all, (1..=320).collect::<Vec<_>>());
}

pub async fn kv_compare_and_swap_is_atomic(dir: &Path, open: &Open) {
    let kv = open(dir).kv;
    let value = |v: &[u8]| Expected::Value(v.to_vec());
    let swap = |expected: Expected, value: &[u8]| {
        let kv = kv.clone();
        let entry = entry(value, Some("m"), None);
        async move {
            kv.compare_and_swap("a", "k", expected, entry, Quota::NONE)
                .await
                .unwrap()
        }
    };
    // Absent is expected as `Absent`, and only so.
    assert_eq!(swap(value(b""), b"x").await, Swap::Changed(None));
    assert_eq!(
        swap(Expected::digest_of(Some(b"")), b"x").await,
        Swap::Changed(None)
    );
    assert_eq!(swap(Expected::Absent, b"1").await, Swap::Done);
    let stored = kv.get("a", "k").await.unwrap().unwrap();
    assert_eq!(
        (stored.value.as_slice(), stored.metadata.as_deref()),
        (&b"1"[..], Some("m"))
    );
    // A stale expectation changes nothing and sees the live entry.
    assert_eq!(
        swap(Expected::Absent, b"2").await,
        Swap::Changed(Some(stored.clone()))
    );
    assert_eq!(
        swap(value(b"0"), b"2").await,
        Swap::Changed(Some(stored.clone()))
    );
    let stale = Expected::digest_of(Some(b"0"));
    assert_eq!(swap(stale, b"2").await, Swap::Changed(Some(stored)));
    assert_eq!(swap(value(b"1"), b"2").await, Swap::Done);
    // A value expected by its SHA-256.
    assert_eq!(
        swap(Expected::digest_of(Some(b"2")), b"3").await,
        Swap::Done
    );
    assert_eq!(kv.get("a", "k").await.unwrap().unwrap().value, b"3");
    // An expired key is absent.
    kv.set("a", "old", entry(b"v", None, Some(1)), Quota::NONE)
        .await
        .unwrap();
    let fresh = entry(b"new", None, None);
    let swapped = kv.compare_and_swap("a", "old", Expected::Absent, fresh, Quota::NONE);
    assert_eq!(swapped.await.unwrap(), Swap::Done);
    // 32 callers at once, each appending its number once by read and
    // swap, retried on a change: every number lands exactly once.
    let callers = (0..32u8).map(|n| {
        let kv = kv.clone();
        tokio::spawn(async move {
            let (mut expected, mut seen) = (Expected::Absent, Vec::new());
            let mut tries = 0;
            loop {
                tries += 1;
                let mut next = seen.clone();
                next.push(n);
                let put = entry(&next, None, None);
                match kv
                    .compare_and_swap("a", "list", expected, put, Quota::NONE)
                    .await
                {
                    Ok(Swap::Done) => return tries,
                    Ok(Swap::Changed(found)) => {
                        seen = found.map(|e| e.value).unwrap_or_default();
                        expected = Expected::Value(seen.clone());
                    }
                    Err(e) => panic!("swap failed: {e}"),
                }
            }
        })
    });
    let tries: Vec<u32> = futures::future::join_all(callers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let mut list = kv.get("a", "list").await.unwrap().unwrap().value;
    assert_eq!(list.len(), 32, "each swap landed once (tries {tries:?})");
    list.sort();
    assert_eq!(list, (0..32).collect::<Vec<u8>>());
}

/// Uploads `bytes` in chunks of `chunk`.
async fn put(
    backends: &Backends,
    bucket: &str,
    key: &str,
    bytes: &[u8],
    chunk: usize,
) -> super::ObjectInfo {
    let mut upload = backends.blob.upload().await.unwrap();
    for part in bytes.chunks(chunk.max(1)) {
        upload.write(part).await.unwrap();
    }
    let metadata = vec![("owner".to_string(), "test".to_string())];
    upload
        .commit(
            bucket,
            key,
            Some("application/x-test".into()),
            metadata,
            Quota::NONE,
        )
        .await
        .unwrap()
}

async fn read(backends: &Backends, bucket: &str, key: &str, offset: u64, length: u64) -> Vec<u8> {
    let object = backends.blob.open(bucket, key).await.unwrap().unwrap();
    let mut reader = object.body.range(offset, length).await.unwrap();
    let mut out = Vec::new();
    reader.read_to_end(&mut out).await.unwrap();
    out
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i ^ (i >> 8) ^ (i >> 16)) as u8).collect()
}

pub async fn blob_streams_large_objects(dir: &Path, open: &Open) {
    let backends = open(dir);
    let data = pattern(24 << 20);
    let info = put(&backends, "b", "big", &data, 64 * 1024).await;
    assert_eq!(info.size, data.len() as u64);
    assert_eq!(info.etag, crate::util::sha256_hex(&data));
    let back = read(&backends, "b", "big", 0, info.size).await;
    assert!(back == data, "the object came back different");
    // Ranges of it, small and large, the last at its end.
    for (offset, length) in [
        (5_000_000, 1_000),
        (1, 300_000),
        (data.len() as u64 - 10, 10),
    ] {
        let end = (offset + length).min(data.len() as u64) as usize;
        let got = read(&backends, "b", "big", offset, length).await;
        assert!(
            got == data[offset as usize..end],
            "the range at {offset} came back different"
        );
    }
}

pub async fn blob_ranges_and_metadata(dir: &Path, open: &Open) {
    let backends = open(dir);
    let data = pattern(10_000);
    put(&backends, "b", "k", &data, 1000).await;
    let info = backends.blob.head("b", "k").await.unwrap().unwrap();
    assert_eq!(info.key, "k");
    assert_eq!(info.content_type.as_deref(), Some("application/x-test"));
    assert_eq!(
        info.metadata,
        vec![("owner".to_string(), "test".to_string())]
    );
    assert!(info.uploaded_at_ms > 0);
    assert_eq!(read(&backends, "b", "k", 9_990, 10).await, &data[9_990..]);
    assert_eq!(read(&backends, "b", "k", 1234, 1).await, &data[1234..1235]);
    assert_eq!(backends.blob.head("b", "absent").await.unwrap(), None);
    assert!(backends.blob.open("b", "absent").await.unwrap().is_none());
    assert_eq!(backends.blob.head("other", "k").await.unwrap(), None);
    // An empty object.
    let empty = put(&backends, "b", "empty", b"", 1).await;
    assert_eq!(empty.size, 0);
    assert_eq!(read(&backends, "b", "empty", 0, 0).await, b"");
}

pub async fn blob_pages_with_cursors(dir: &Path, open: &Open) {
    let backends = open(dir);
    for i in 0..12 {
        put(&backends, "b", &format!("img/{i:02}"), b"x", 1).await;
    }
    put(&backends, "b", "zzz", b"x", 1).await;
    put(&backends, "c", "img/99", b"x", 1).await;
    let (mut seen, mut cursor) = (Vec::new(), None);
    loop {
        let page = backends
            .blob
            .list("b", "img/", cursor.as_deref(), 5)
            .await
            .unwrap();
        seen.extend(page.items.into_iter().map(|o| o.key));
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let want: Vec<String> = (0..12).map(|i| format!("img/{i:02}")).collect();
    assert_eq!(seen, want);
    assert_eq!(
        backends
            .blob
            .list("b", "", None, 100)
            .await
            .unwrap()
            .items
            .len(),
        13
    );
}

pub async fn blob_shared_bodies_and_abandoned_uploads(dir: &Path, open: &Open) {
    let backends = open(dir);
    put(&backends, "b", "one", b"same bytes", 3).await;
    put(&backends, "b", "two", b"same bytes", 3).await;
    assert!(backends.blob.delete("b", "one").await.unwrap());
    assert!(!backends.blob.delete("b", "one").await.unwrap());
    assert_eq!(read(&backends, "b", "two", 0, 10).await, b"same bytes");
    // Overwriting the last user of a body, then reading the new bytes.
    put(&backends, "b", "two", b"other", 5).await;
    assert_eq!(read(&backends, "b", "two", 0, 5).await, b"other");
    // An upload dropped without commit leaves no object.
    let mut upload = backends.blob.upload().await.unwrap();
    upload.write(b"never committed").await.unwrap();
    drop(upload);
    assert_eq!(backends.blob.head("b", "never").await.unwrap(), None);
    // An object opened before it is overwritten still reads as it was.
    let opened = backends.blob.open("b", "two").await.unwrap().unwrap();
    put(&backends, "b", "two", b"third", 5).await;
    let mut old = Vec::new();
    let mut reader = opened.body.range(0, 5).await.unwrap();
    reader.read_to_end(&mut old).await.unwrap();
    assert_eq!(old, b"other");
}

pub async fn versions_history_and_bytes(dir: &Path, open: &Open) {
    let versions = open(dir).versions;
    assert_eq!(
        versions.history("p").await.unwrap(),
        VersionHistory::default()
    );
    let history = VersionHistory {
        versions: vec![VersionRecord {
            sha256: "ab".repeat(32),
            source: VersionSource::Upload,
            activated_at_ms: 7,
        }],
        file_sha256: Some("cd".repeat(32)),
        active: Some("ab".repeat(32)),
    };
    versions.save_history("p", &history).await.unwrap();
    assert_eq!(versions.history("p").await.unwrap(), history);
    assert_eq!(
        versions.history("q").await.unwrap(),
        VersionHistory::default()
    );
    let sha = "ef".repeat(32);
    versions.keep(&sha, b"component bytes").await.unwrap();
    versions.keep(&sha, b"component bytes").await.unwrap();
    assert_eq!(versions.load(&sha).await.unwrap(), b"component bytes");
    assert!(matches!(
        versions.load(&"00".repeat(32)).await,
        Err(StorageError::NoSuchVersion { .. })
    ));
}

pub async fn everything_survives_reopen(dir: &Path, open: &Open) {
    let backends = open(dir);
    backends
        .kv
        .set("a", "k", entry(b"v", Some("m"), None), Quota::NONE)
        .await
        .unwrap();
    put(&backends, "b", "k", b"object", 2).await;
    backends
        .versions
        .keep(&"12".repeat(32), b"bytes")
        .await
        .unwrap();
    let history = VersionHistory {
        file_sha256: Some("f".into()),
        ..Default::default()
    };
    backends.versions.save_history("p", &history).await.unwrap();
    let rooms = &backends.rooms;
    rooms
        .append("r", 1, events(&["a", "b"]), Quota::NONE)
        .await
        .unwrap();
    let snapshot = RoomSnapshot {
        seq: 1,
        data: Bytes::from_static(b"snap"),
    };
    rooms.compact("r", snapshot.clone(), 1).await.unwrap();
    let liveness = backends.liveness();
    drop(backends);
    let closed = tokio::time::timeout(Duration::from_secs(2), liveness.closed()).await;
    assert!(closed.is_ok(), "the backends did not close");

    let backends = open(dir);
    let got = backends.kv.get("a", "k").await.unwrap().unwrap();
    assert_eq!(
        (got.value.as_slice(), got.metadata.as_deref()),
        (&b"v"[..], Some("m"))
    );
    assert_eq!(read(&backends, "b", "k", 0, 6).await, b"object");
    assert_eq!(
        backends.versions.load(&"12".repeat(32)).await.unwrap(),
        b"bytes"
    );
    assert_eq!(backends.versions.history("p").await.unwrap(), history);
    let head = backends.rooms.head("r").await.unwrap();
    assert_eq!((head.head, head.compacted_through), (2, 1));
    assert_eq!(head.snapshot, Some(snapshot));
    assert_eq!(
        backends.rooms.read("r", 0, 10).await.unwrap(),
        numbered(2, &["b"])
    );
}

fn events(texts: &[&str]) -> Vec<Bytes> {
    texts.iter().map(|t| Bytes::from(t.to_string())).collect()
}

fn numbered(first: u64, texts: &[&str]) -> Vec<(u64, Bytes)> {
    (first..).zip(events(texts)).collect()
}

pub async fn rooms_append_in_order(dir: &Path, open: &Open) {
    let rooms = open(dir).rooms;
    let head = rooms.head("r").await.unwrap();
    assert_eq!(
        (head.head, head.compacted_through, head.snapshot),
        (0, 0, None)
    );
    rooms
        .append("r", 1, events(&["a", "b"]), Quota::NONE)
        .await
        .unwrap();
    rooms
        .append("r", 3, events(&["c"]), Quota::NONE)
        .await
        .unwrap();
    assert_eq!(rooms.head("r").await.unwrap().head, 3);
    assert_eq!(
        rooms.read("r", 0, 10).await.unwrap(),
        numbered(1, &["a", "b", "c"])
    );
    assert_eq!(rooms.read("r", 1, 1).await.unwrap(), numbered(2, &["b"]));
    assert_eq!(rooms.read("r", 3, 10).await.unwrap(), vec![]);
    assert_eq!(rooms.read("r", u64::MAX, 10).await.unwrap(), vec![]);
    // Rooms are separate, including rooms whose names extend another's.
    assert_eq!(rooms.read("r2", 0, 10).await.unwrap(), vec![]);
    rooms
        .append("r2", 1, events(&["x"]), Quota::NONE)
        .await
        .unwrap();
    assert_eq!(rooms.read("r", 0, 10).await.unwrap().len(), 3);
    // Not right after the head: refused, nothing written.
    for first in [3, 5, 0] {
        let refused = rooms.append("r", first, events(&["z"]), Quota::NONE).await;
        assert!(
            matches!(refused, Err(StorageError::RoomConflict { head: 3, .. })),
            "{first}: {refused:?}"
        );
    }
    assert_eq!(rooms.head("r").await.unwrap().head, 3);
}

/// Appends to many rooms at once (committed together by a backend that
/// batches) each land whole, in order, and a refused one spoils no other.
pub async fn rooms_group_commits_many_rooms(dir: &Path, open: &Open) {
    let rooms = open(dir).rooms;
    let mut tasks = tokio::task::JoinSet::new();
    for r in 0..16 {
        let rooms = rooms.clone();
        tasks.spawn(async move {
            let room = format!("room-{r}");
            for seq in 1..=50u64 {
                rooms
                    .append(&room, seq, events(&[&format!("{r}:{seq}")]), Quota::NONE)
                    .await
                    .unwrap();
                // A stale writer is refused without harm to the batch.
                assert!(
                    rooms
                        .append(&room, seq, events(&["stale"]), Quota::NONE)
                        .await
                        .is_err()
                );
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    for r in 0..16 {
        let got = rooms.read(&format!("room-{r}"), 0, 100).await.unwrap();
        let want: Vec<(u64, Bytes)> = (1..=50)
            .map(|seq| (seq, Bytes::from(format!("{r}:{seq}"))))
            .collect();
        assert_eq!(got, want);
    }
}

pub async fn rooms_compact_to_a_snapshot(dir: &Path, open: &Open) {
    let rooms = open(dir).rooms;
    rooms
        .append("r", 1, events(&["a", "b", "c", "d"]), Quota::NONE)
        .await
        .unwrap();
    let snapshot = |seq, data: &'static [u8]| RoomSnapshot {
        seq,
        data: Bytes::from_static(data),
    };
    rooms.compact("r", snapshot(3, b"abc"), 2).await.unwrap();
    let head = rooms.head("r").await.unwrap();
    assert_eq!((head.head, head.compacted_through), (4, 2));
    assert_eq!(head.snapshot, Some(snapshot(3, b"abc")));
    assert_eq!(
        rooms.read("r", 0, 10).await.unwrap(),
        numbered(3, &["c", "d"])
    );
    // Numbers go on from the head, never reused.
    rooms
        .append("r", 5, events(&["e"]), Quota::NONE)
        .await
        .unwrap();
    rooms.compact("r", snapshot(5, b"abcde"), 5).await.unwrap();
    assert_eq!(rooms.read("r", 0, 10).await.unwrap(), vec![]);
    let head = rooms.head("r").await.unwrap();
    assert_eq!((head.head, head.compacted_through), (5, 5));
    rooms
        .append("r", 6, events(&["f"]), Quota::NONE)
        .await
        .unwrap();
    assert_eq!(rooms.read("r", 0, 10).await.unwrap(), numbered(6, &["f"]));
    // A snapshot past the head, or dropping past the snapshot: refused.
    assert!(rooms.compact("r", snapshot(7, b"x"), 6).await.is_err());
    assert!(rooms.compact("r", snapshot(5, b"x"), 6).await.is_err());
    assert_eq!(rooms.head("r").await.unwrap().compacted_through, 5);
}

pub async fn rooms_keep_small_state(dir: &Path, open: &Open) {
    let rooms = open(dir).rooms;
    assert_eq!(rooms.state_get("r", "k").await.unwrap(), None);
    rooms
        .state_set("r", "k", Some(Bytes::from_static(b"v")))
        .await
        .unwrap();
    assert_eq!(
        rooms.state_get("r", "k").await.unwrap().as_deref(),
        Some(&b"v"[..])
    );
    assert_eq!(rooms.state_get("r2", "k").await.unwrap(), None);
    rooms.state_set("r", "k", None).await.unwrap();
    assert_eq!(rooms.state_get("r", "k").await.unwrap(), None);
}
