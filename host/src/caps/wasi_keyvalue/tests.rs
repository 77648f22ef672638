//! The `Host` impls on a view, as a guest would call them (no wasm).

use super::*;
use crate::caps::kv::fixture::Fixture;
use draft::store::HostBucket as _;
use draft2::atomics::{Host as _, HostCas as _};

fn borrow<T: 'static>(r: &Resource<T>) -> Resource<T> {
    Resource::new_borrow(r.rep())
}

#[tokio::test]
async fn grants_and_draft_cursors_count_keys() {
    let dir = tempfile::tempdir().unwrap();
    let mut fixture = Fixture::new(dir.path(), &["a"]);
    let mut view = fixture.view();
    let denied = draft::store::Host::open(&mut view, "b".into())
        .await
        .unwrap();
    assert!(matches!(denied, Err(draft::store::Error::AccessDenied)));
    let bucket = draft::store::Host::open(&mut view, "a".into())
        .await
        .unwrap()
        .unwrap();
    // 2,500 keys: draft's cursor is how many keys earlier pages held.
    for chunk in (0..2500).collect::<Vec<_>>().chunks(500) {
        let pairs = chunk
            .iter()
            .map(|i| (format!("k{i:04}"), vec![1]))
            .collect();
        let set = draft2::batch::Host::set_many(&mut view, borrow(&bucket), pairs).await;
        set.unwrap().unwrap();
    }
    let (mut seen, mut cursor, mut pages) = (Vec::new(), None, 0);
    loop {
        let page = view
            .list_keys(borrow(&bucket), cursor)
            .await
            .unwrap()
            .unwrap();
        pages += 1;
        seen.extend(page.keys);
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!((pages, seen.len()), (3, 2500));
    assert_eq!((seen[0].as_str(), seen[2499].as_str()), ("k0000", "k2499"));
    // A cursor past the end is an empty last page.
    let past = view
        .list_keys(borrow(&bucket), Some(9999))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((past.keys.len(), past.cursor), (0, None));
    // A handle that is not a bucket traps.
    let bogus = Resource::<Namespace>::new_borrow(9999);
    assert!(view.get(bogus, "k".into()).await.is_err());
}

#[tokio::test]
async fn a_stale_swap_fails_with_a_handle_on_the_value_found() {
    let dir = tempfile::tempdir().unwrap();
    let mut fixture = Fixture::new(dir.path(), &["a"]);
    let mut view = fixture.view();
    let bucket = draft2::store::Host::open(&mut view, "a".into())
        .await
        .unwrap()
        .unwrap();
    let cas = view
        .new(borrow(&bucket), "k".into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.current(borrow(&cas)).await.unwrap().unwrap(), None);
    let ops = view.ops();
    ops.put("a", "k", b"theirs".to_vec(), no_options())
        .await
        .unwrap();
    let again = match view.swap(cas, b"mine".to_vec()).await.unwrap() {
        Err(draft2::atomics::CasError::CasFailed(again)) => again,
        other => panic!("a stale swap: {other:?}"),
    };
    let current = view.current(borrow(&again)).await.unwrap().unwrap();
    assert_eq!(current.as_deref(), Some(&b"theirs"[..]));
    view.swap(again, b"mine".to_vec()).await.unwrap().unwrap();
    let stored = ops.get_entry("a", "k").await.unwrap().unwrap();
    assert_eq!(stored.value, b"mine");
    // `current` reads again: a swap then expects what it answered.
    let cas = view
        .new(borrow(&bucket), "k".into())
        .await
        .unwrap()
        .unwrap();
    ops.put("a", "k", b"later".to_vec(), no_options())
        .await
        .unwrap();
    let current = view.current(borrow(&cas)).await.unwrap().unwrap();
    assert_eq!(current.as_deref(), Some(&b"later"[..]));
    view.swap(cas, b"last".to_vec()).await.unwrap().unwrap();
    // A batch's values are bounded in all.
    let big = vec![7u8; 5 << 20];
    for i in 0..8 {
        ops.put("a", &format!("big{i}"), big.clone(), no_options())
            .await
            .unwrap();
    }
    let keys = (0..8).map(|i| format!("big{i}")).collect();
    let many = draft2::batch::Host::get_many(&mut view, borrow(&bucket), keys).await;
    assert!(
        matches!(many.unwrap(), Err(draft2::store::Error::Other(m)) if m.contains("smaller batches"))
    );
    // Draft's unsigned increment cannot answer below zero.
    ops.put("a", "n", b"-5".to_vec(), no_options())
        .await
        .unwrap();
    let below = draft::atomics::Host::increment(&mut view, borrow(&bucket), "n".into(), 1);
    let below = below.await.unwrap();
    assert!(matches!(below, Err(draft::store::Error::Other(m)) if m.contains("below zero")));
}
