//! The backend conformance suite: what every storage backend must do,
//! written once against the traits (the KV checks in `kv`). A backend runs
//! all of it with `suite!(open)`, where `open(dir)` returns its `Backends`
//! over `dir` (reopening the same `dir` must find what was written).

use std::path::Path;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use bytes::Bytes;

use super::{
    Backends, Quota, RoomSnapshot, StorageError, VersionHistory, VersionRecord, VersionSource,
};

pub type Open = dyn Fn(&Path) -> Backends + Sync;

mod kv;
use kv::entry;
pub use kv::*;

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
