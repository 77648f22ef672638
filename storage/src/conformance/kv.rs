//! The KV checks of the conformance suite.

use std::path::Path;
use std::time::Duration;

use super::Open;
use crate::{Expected, KvEntry, Quota, StorageError, Swap};

/// An entry of `value`.
pub(super) fn entry(value: &[u8], metadata: Option<&str>, expires_at_ms: Option<u64>) -> KvEntry {
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
