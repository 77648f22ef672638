//! A 200 MiB object streamed in and out through the hello plugin, with the
//! process's memory watched: streaming must never hold the object whole.
//! Alone in its own test binary so that nothing else moves the RSS.

use futures::StreamExt;
use sha2::{Digest, Sha256};
use spike_e2e::*;

const SIZE: u64 = 200 << 20;
const CHUNK: usize = 256 * 1024;

/// The byte at `offset` of the test object: a pattern, so any misplaced or
/// repeated chunk changes the hash.
fn chunk_at(offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| {
            let x = offset + i;
            (x ^ (x >> 8) ^ (x >> 16)) as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_mib_streams_in_and_out_with_bounded_memory() {
    let server = TestServer::start(&[Plugin {
        name: "hello",
        guest: "hello",
        manifest: "[[routes]]\nprefix = \"/hello\"\n[grants]\nkv = [\"hello\"]\nblob = [\"hello-files\"]\n[limits]\nmax_body_mib = 512\ntimeout_ms = 300000\n[env]\nWRITE_ACCESS = \"anyone\"\n",
    }])
    .await;
    let c = client();
    // Warm up the plugin, the client and the allocator before the baseline.
    send(
        c.put(server.at("/hello/files/warm"))
            .body(vec![1u8; 4 << 20]),
    )
    .await;
    send(c.get(server.at("/hello/files/warm"))).await;

    let rss = RssWatch::start();

    // Upload from a generator, hashing as we go.
    let mut hasher = Sha256::new();
    let chunks: Vec<u64> = (0..SIZE).step_by(CHUNK).collect();
    let upload = futures::stream::iter(chunks).map(|offset| {
        let len = CHUNK.min((SIZE - offset) as usize);
        Ok::<_, std::io::Error>(chunk_at(offset, len))
    });
    for offset in (0..SIZE).step_by(CHUNK) {
        hasher.update(chunk_at(offset, CHUNK.min((SIZE - offset) as usize)));
    }
    let want = hex::encode(hasher.finalize());
    let resp = within(
        c.put(server.at("/hello/files/big.bin"))
            .header("content-length", SIZE)
            .body(reqwest::Body::wrap_stream(upload))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 201);
    let meta: serde_json::Value = within(resp.json()).await.unwrap();
    assert_eq!(meta["size"], SIZE);
    assert_eq!(meta["etag"], want);

    // Download, hashing as we go.
    let resp = within(c.get(server.at("/hello/files/big.bin")).send())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.content_length(), Some(SIZE));
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = within(body.next()).await {
        let chunk = chunk.unwrap();
        received += chunk.len() as u64;
        hasher.update(&chunk);
    }
    assert_eq!(received, SIZE);
    assert_eq!(hex::encode(hasher.finalize()), want);

    let growth = rss.growth();
    eprintln!(
        "peak RSS growth while streaming 200 MiB in and out: {} MiB",
        growth >> 20
    );
    // Holding the object once would be 200 MiB; streaming stays far below.
    assert!(growth < 64 << 20, "RSS grew by {} MiB", growth >> 20);
}
