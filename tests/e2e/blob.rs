//! The blob capability end to end: hello's files (ranges, ETags) and every
//! operation through the probe fixture.

use sha2::{Digest, Sha256};
use spike_e2e::*;

const PROBE: Plugin = Plugin {
    name: "probe",
    guest: "fixture_probe",
    // Shares hello's bucket, and has one of its own.
    manifest: "[[routes]]\nprefix = \"/probe\"\n[grants]\nblob = [\"probe-files\", \"hello-files\"]\n",
};

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[tokio::test]
async fn files_round_trip_with_etag_and_ranges() {
    let mut server = TestServer::start(&[HELLO]).await;
    let c = client();
    let data: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();

    let resp = within(
        c.put(server.at("/hello/files/data.bin"))
            .header("content-type", "application/x-test")
            .body(data.clone())
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 201);
    let etag = format!("\"{}\"", sha256(&data));
    assert_eq!(resp.headers()["etag"], etag.as_str());
    let body: serde_json::Value = within(resp.json()).await.unwrap();
    assert_eq!(body["size"], data.len());

    let resp = within(c.get(server.at("/hello/files/data.bin")).send())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["etag"], etag.as_str());
    assert_eq!(resp.headers()["content-type"], "application/x-test");
    assert_eq!(within(resp.bytes()).await.unwrap(), data);

    for (range, start, end) in [
        ("bytes=0-9", 0, 9),
        ("bytes=1000-", 1000, data.len() - 1),
        ("bytes=399990-400000", 399_990, 399_999),
    ] {
        let resp = within(
            c.get(server.at("/hello/files/data.bin"))
                .header("range", range)
                .send(),
        )
        .await
        .unwrap();
        assert_eq!(resp.status(), 206, "{range}");
        assert_eq!(
            resp.headers()["content-range"],
            format!("bytes {start}-{end}/{}", data.len()).as_str(),
            "{range}"
        );
        assert_eq!(
            within(resp.bytes()).await.unwrap(),
            &data[start..=end],
            "{range}"
        );
    }
    let (status, _) = send(
        c.get(server.at("/hello/files/data.bin"))
            .header("range", "bytes=400000-"),
    )
    .await;
    assert_eq!(status, 416);

    // Overwrite, then restart: the newest version is what is kept.
    let v2 = b"second version".to_vec();
    send(c.put(server.at("/hello/files/data.bin")).body(v2.clone())).await;
    server.restart().await;
    let resp = within(c.get(server.at("/hello/files/data.bin")).send())
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["etag"],
        format!("\"{}\"", sha256(&v2)).as_str()
    );
    assert_eq!(within(resp.bytes()).await.unwrap(), v2);

    let (status, _) = send(c.get(server.at("/hello/files/absent"))).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn head_list_metadata_delete_and_shared_bodies() {
    let server = TestServer::start(&[HELLO, PROBE]).await;
    let c = client();

    // Uploaded through hello, seen through the probe: same granted bucket.
    send(c.put(server.at("/hello/files/from-hello")).body("hi")).await;
    let (status, meta) =
        send_json(c.get(server.at("/probe/blob-meta/from-hello?bucket=hello-files"))).await;
    assert_eq!(status, 200);
    assert_eq!(meta["size"], 2);
    assert_eq!(meta["etag"], sha256(b"hi"));

    for i in 0..7 {
        let (status, meta) = send_json(
            c.put(server.at(&format!("/probe/blob/dir/f{i}")))
                .header("content-type", "text/plain")
                .header("x-meta-author", "test")
                .body("same bytes"),
        )
        .await;
        assert_eq!(status, 201);
        assert_eq!(meta["metadata"]["author"], "test");
        assert_eq!(meta["content_type"], "text/plain");
    }
    send(c.put(server.at("/probe/blob/other")).body("x")).await;

    let mut keys = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = server.at("/probe/blob?prefix=dir%2F&limit=3");
        if let Some(c) = &cursor {
            url += &format!("&cursor={}", c.replace('/', "%2F"));
        }
        let (_, page) = send_json(c.get(url)).await;
        keys.extend(
            page["objects"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["key"].as_str().unwrap().to_string()),
        );
        match page["cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(
        keys,
        (0..7).map(|i| format!("dir/f{i}")).collect::<Vec<_>>()
    );

    // Seven objects share one body; deleting six leaves the seventh intact.
    for i in 0..6 {
        let (_, body) = send_json(c.delete(server.at(&format!("/probe/blob/dir/f{i}")))).await;
        assert_eq!(body["deleted"], true);
    }
    let (_, body) = send_json(c.delete(server.at("/probe/blob/dir/f0"))).await;
    assert_eq!(body["deleted"], false);
    let (status, text) = send(c.get(server.at("/probe/blob/dir/f6"))).await;
    assert_eq!((status, text.as_str()), (200, "same bytes"));
    let (status, _) = send(c.get(server.at("/probe/blob-meta/dir/f0"))).await;
    assert_eq!(status, 404);

    // A bucket not in the manifest: access denied.
    let (status, body) = send_json(c.get(server.at("/probe/blob?bucket=secret"))).await;
    assert_eq!((status, error_code(&body)), (403, "access_denied"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_during_overwrites_see_the_old_or_the_new_object_never_404() {
    let server = TestServer::start(&[HELLO]).await;
    let c = client();
    let url = server.at("/hello/files/contended");
    let bodies = [vec![b'a'; 64 * 1024], vec![b'b'; 32 * 1024]];
    let (status, _) = send(c.put(&url).body(bodies[0].clone())).await;
    assert_eq!(status, 201);

    // Two writers overwrite the key with their own bytes while a reader
    // reads it, for two seconds.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let writers = bodies.clone().map(|body| {
        let (c, url) = (c.clone(), url.clone());
        tokio::spawn(async move {
            let mut writes = 0;
            while std::time::Instant::now() < until {
                let (status, text) = send(c.put(&url).body(body.clone())).await;
                assert_eq!(status, 201, "{text}");
                writes += 1;
            }
            writes
        })
    });
    let mut reads = 0;
    while std::time::Instant::now() < until {
        let resp = within(c.get(&url).send()).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = within(resp.bytes()).await.unwrap();
        assert_eq!(
            status,
            200,
            "read {reads}: {}",
            String::from_utf8_lossy(&bytes)
        );
        assert!(
            bytes == bodies[0] || bytes == bodies[1],
            "read {reads}: {} bytes of neither object",
            bytes.len()
        );
        reads += 1;
    }
    let mut writes = 0;
    for w in writers {
        writes += within(w).await.unwrap();
    }
    eprintln!("{reads} reads during {writes} overwrites, none missed");
    assert!(reads > 20 && writes > 20, "{reads} reads, {writes} writes");
}

/// What a plugin's writes may fill is bounded by its manifest's
/// `[storage]` (the hostile probe: anonymous 5 GiB uploads with no quota
/// and no delete): past it, 507 `quota_exceeded`, the upload stopped as it
/// passes the quota, nothing of it kept; replacing or deleting makes room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_past_the_buckets_quota_get_507() {
    let hello = Plugin {
        manifest: "[[routes]]\nprefix = \"/hello\"\n[grants]\nkv = [\"hello\"]\nblob = [\"hello-files\"]\n\
                   [storage]\nblob_mib = 1\nblob_objects = 3\nkv_keys = 1\n\
                   [env]\nWRITE_ACCESS = \"anyone\"\n",
        ..HELLO
    };
    let server = TestServer::start(&[hello]).await;
    let c = client();
    let put = |name: &str, bytes: usize| {
        c.put(server.at(&format!("/hello/files/{name}")))
            .body(vec![b'x'; bytes])
    };
    assert_eq!(send(put("a", 600 << 10)).await.0, 201);
    let (status, body) = send_json(put("b", 600 << 10)).await;
    assert_eq!(
        (status, error_code(&body)),
        (507, "quota_exceeded"),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("quota exceeded")
    );
    let (status, _) = send(c.get(server.at("/hello/files/b"))).await;
    assert_eq!(status, 404, "nothing of it is kept");
    // Replacing "a" with less makes room for "b".
    assert_eq!(send(put("a", 100 << 10)).await.0, 201);
    assert_eq!(send(put("b", 600 << 10)).await.0, 201);
    assert_eq!(send(put("c", 10)).await.0, 201);
    // The objects' count.
    let (status, body) = send_json(put("d", 10)).await;
    assert_eq!(
        (status, error_code(&body)),
        (507, "quota_exceeded"),
        "{body}"
    );
    // The KV's keys: one counter, then no second key.
    assert_eq!(send(c.post(server.at("/hello/counter"))).await.0, 200);
    assert_eq!(send(c.post(server.at("/hello/counter"))).await.0, 200);
    let metrics = server.metrics_text().await;
    let refused = "spike_storage_quota_refusals_total{plugin=\"hello\"} 2";
    assert!(metrics.contains(refused), "{metrics}");
}

/// The shipped manifest's hello takes writes from signed-in callers only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_hello_takes_writes_from_signed_in_callers_only() {
    use spike_e2e::tokens::{HS256_AUTH, hs256_secret, hs256_tokens};
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/hello.toml"),
    )
    .unwrap();
    let manifest: String = (shipped.lines())
        .filter(|l| !l.starts_with("component"))
        .collect::<Vec<_>>()
        .join("\n");
    let auth = Plugin {
        name: "auth",
        guest: "auth",
        manifest: HS256_AUTH,
    };
    let hello = Plugin {
        manifest: &manifest,
        ..HELLO
    };
    let server = TestServer::start_with(&[auth, hello], |config| {
        config.secrets = hs256_secret("hello-test-key");
    })
    .await;
    let c = client();
    let (status, body) = send_json(c.put(server.at("/hello/files/x")).body("anonymous")).await;
    assert_eq!(
        (status, error_code(&body)),
        (401, "missing_token"),
        "{body}"
    );
    assert_eq!(send(c.post(server.at("/hello/counter"))).await.0, 401);
    let token = hs256_tokens("hello-test-key", &["ann"]).remove(0);
    let put = c
        .put(server.at("/hello/files/x"))
        .bearer_auth(&token)
        .body("ann's");
    assert_eq!(send(put).await.0, 201);
    // Reads stay open.
    let (status, text) = send(c.get(server.at("/hello/files/x"))).await;
    assert_eq!((status, text.as_str()), (200, "ann's"));
    assert_eq!(send(c.get(server.at("/hello"))).await.0, 200);
}

/// An uploaded page is downloaded, never run on this origin (the hostile
/// probe's stored XSS: an anonymous `evil.html` read a signed-in
/// visitor's session and documents).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploaded_pages_are_served_inert() {
    let server = TestServer::start(&[HELLO]).await;
    let c = client();
    let page = "<script>document.title = document.cookie</script>";
    let resp = within(
        c.put(server.at("/hello/files/evil.html"))
            .header("content-type", "text/html")
            .body(page)
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 201);
    for range in [None, Some("bytes=0-9")] {
        let mut req = c.get(server.at("/hello/files/evil.html"));
        if let Some(range) = range {
            req = req.header("range", range);
        }
        let resp = within(req.send()).await.unwrap();
        let h = resp.headers();
        assert_eq!(h["content-type"], "text/html", "{range:?}");
        assert_eq!(h["content-disposition"], "attachment");
        assert_eq!(h["content-security-policy"], "sandbox");
        assert_eq!(h["x-content-type-options"], "nosniff");
    }
}
