//! The blob capability through its view: grants, streams, ranges.

use super::*;
use crate::caps::{Counts, Grants};
use crate::storage::{Backends, StorageSettings};
use wasmtime::component::ResourceTable;
use wit::{HostBucket, HostObjectWriter};

fn ctx(dir: &std::path::Path) -> BlobCtx {
    let settings = StorageSettings {
        kv_sweep_interval: std::time::Duration::from_secs(3600),
    };
    BlobCtx {
        backend: Backends::open_redb(dir, &settings).unwrap().blob,
        max_object_bytes: 1 << 20,
    }
}

async fn read_all(table: &mut ResourceTable, stream: Resource<DynInputStream>) -> Vec<u8> {
    let stream = table.get_mut(&stream).unwrap();
    let mut out = Vec::new();
    loop {
        stream.ready().await;
        match stream.read(64 * 1024) {
            Ok(bytes) => out.extend_from_slice(&bytes),
            Err(StreamError::Closed) => return out,
            Err(e) => panic!("{e}"),
        }
    }
}

async fn upload(
    view: &mut BlobView<'_>,
    bucket: u32,
    key: &str,
    data: &[u8],
) -> Result<ObjectMeta, CapError> {
    let options = PutOptions {
        content_type: Some("text/plain".into()),
        metadata: vec![("a".into(), "b".into())],
    };
    let writer = view
        .put(Resource::new_borrow(bucket), key.into(), options)
        .await?;
    let body = view.body(Resource::new_borrow(writer.rep())).await?;
    {
        let stream = view.table.get_mut(&body).unwrap();
        for chunk in data.chunks(1000) {
            stream.ready().await;
            if stream.write(Bytes::copy_from_slice(chunk)).is_err() {
                break; // over the limit: `finish` says why
            }
        }
    }
    view.table.delete(body).unwrap();
    view.finish(writer).await
}

/// The `Host` impl on a view, as a guest would call it (no wasm).
#[tokio::test]
async fn view_checks_the_grant_then_streams() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = ctx(dir.path());
    let mut grants = Grants::default();
    grants.grant(Kind::Blob, "files");
    let mut table = ResourceTable::new();
    let metrics = crate::metrics::Metrics::new();
    let plugin: Arc<str> = "p".into();
    let mut view = BlobView {
        ctx: &ctx,
        grants: &grants,
        counts: Counts {
            metrics: &metrics,
            plugin: &plugin,
        },
        table: &mut table,
    };

    let denied = view.open("secret".into()).await;
    assert!(matches!(denied, Err(CapError::AccessDenied(m)) if m.contains("'secret'")));
    let bucket = view.open("files".into()).await.unwrap().rep();

    let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
    let meta = upload(&mut view, bucket, "k", &data).await.unwrap();
    assert_eq!(meta.size, 10_000);
    assert_eq!(meta.etag, crate::util::sha256_hex(&data));
    assert_eq!(meta.metadata, vec![("a".to_string(), "b".to_string())]);

    let whole = view
        .get(Resource::new_borrow(bucket), "k".into(), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read_all(view.table, whole.body).await, data);
    let range = Some(ByteRange {
        offset: 9_990,
        length: Some(100),
    });
    let part = view
        .get(Resource::new_borrow(bucket), "k".into(), range)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((part.offset, part.length), (9_990, 10));
    assert_eq!(read_all(view.table, part.body).await, &data[9_990..]);
    let past = Some(ByteRange {
        offset: 10_000,
        length: None,
    });
    let past = view
        .get(Resource::new_borrow(bucket), "k".into(), past)
        .await;
    assert!(matches!(past, Err(CapError::InvalidInput(_))));

    // Over the size limit: refused as too large, and nothing is stored.
    let big = vec![0u8; (1 << 20) + 1];
    let refused = upload(&mut view, bucket, "big", &big).await;
    assert!(
        matches!(&refused, Err(CapError::TooLarge(m)) if m.contains("limit of 1048576 bytes")),
        "{refused:?}"
    );
    assert!(
        view.head(Resource::new_borrow(bucket), "big".into())
            .await
            .unwrap()
            .is_none()
    );
    let staged = std::fs::read_dir(dir.path().join("blobs").join("tmp"))
        .unwrap()
        .count();
    assert_eq!(staged, 0, "the refused upload's staging file must be gone");

    assert!(
        view.delete(Resource::new_borrow(bucket), "k".into())
            .await
            .unwrap()
    );
    assert!(
        view.get(Resource::new_borrow(bucket), "k".into(), None)
            .await
            .unwrap()
            .is_none()
    );
}

#[test]
fn spans_are_checked_against_the_size() {
    let r = |offset, length| Some(ByteRange { offset, length });
    assert_eq!(span(None, 10).unwrap(), (0, 10));
    assert_eq!(span(r(4, None), 10).unwrap(), (4, 6));
    assert_eq!(span(r(4, Some(100)), 10).unwrap(), (4, 6));
    assert_eq!(span(r(0, None), 0).unwrap(), (0, 0));
    assert!(span(r(10, None), 10).is_err());
    assert!(span(r(11, None), 10).is_err());
}
