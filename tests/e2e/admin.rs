//! The admin API under attack: uploads are authorised before a byte of the
//! body is read, authorised ones are streamed under a size limit, and why a
//! plugin failed reaches the operator, not the public. Alone in its binary
//! because one test watches the process's memory.

use std::time::Duration;

use spike_e2e::*;
use tokio::io::AsyncWriteExt;

/// An upload's head, declaring `length` bytes that are never sent.
fn upload_head(token: Option<&str>, length: u64) -> String {
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    format!(
        "PUT /_spike/plugins/hello HTTP/1.1\r\nhost: spike\r\n{auth}content-length: {length}\r\n\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_refused_before_their_body_is_read() {
    let server = TestServer::start(&[HELLO]).await;
    let no_admin = TestServer::start_with(&[HELLO], |c| c.admin_token = None).await;
    // Each declares 256 MiB and sends none of it: the answer must come
    // anyway, at once.
    for (server, token, status, code) in [
        (&server, None, 401, "unauthorized"),
        (&server, Some("wrong-token"), 401, "unauthorized"),
        (&no_admin, Some(ADMIN_TOKEN), 403, "admin_disabled"),
    ] {
        let mut conn = raw_connect(server.addr()).await;
        conn.write_all(upload_head(token, 256 << 20).as_bytes())
            .await
            .unwrap();
        let resp = read_response(&mut conn, Duration::from_secs(5)).await;
        assert_eq!(resp.status, status, "{token:?}");
        assert_eq!(error_code(&resp.json()), code);
    }

    // Anonymous uploads that do send their bodies, eight at once, 64 MiB
    // each: the server reads none of it into memory.
    let rss = RssWatch::start();
    let uploads = (0..8).map(|_| {
        let addr = server.addr();
        tokio::spawn(async move {
            let mut conn = raw_connect(addr).await;
            conn.write_all(upload_head(None, 64 << 20).as_bytes())
                .await
                .unwrap();
            let chunk = vec![0u8; 256 * 1024];
            let mut sent = 0u64;
            // The server answers and closes: writing fails long before
            // the end (or, if the kernel buffers it all, ends).
            while sent < 64 << 20 {
                match conn.write_all(&chunk).await {
                    Ok(()) => sent += chunk.len() as u64,
                    Err(_) => break,
                }
            }
            sent
        })
    });
    let sent: Vec<u64> = within(futures::future::join_all(uploads))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let growth = rss.growth();
    eprintln!(
        "sent before the server hung up: {:?} MiB; peak RSS growth {} KiB",
        sent.iter().map(|s| s >> 20).collect::<Vec<_>>(),
        growth >> 10
    );
    assert!(
        growth < 16 << 20,
        "RSS grew by {} MiB during anonymous uploads",
        growth >> 20
    );
    // And the server is fine.
    let (status, _) = send(client().get(server.at("/hello"))).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn authorised_uploads_are_streamed_under_the_size_limit() {
    let server = TestServer::start_with(&[HELLO], |c| c.max_component_bytes = 1 << 20).await;
    let c = client();
    let url = server.at("/_spike/plugins/hello");

    // Declared too large: refused before the body.
    let mut conn = raw_connect(server.addr()).await;
    conn.write_all(upload_head(Some(ADMIN_TOKEN), 2 << 20).as_bytes())
        .await
        .unwrap();
    let resp = read_response(&mut conn, Duration::from_secs(5)).await;
    assert_eq!(
        (resp.status, error_code(&resp.json())),
        (413, "component_too_large")
    );

    // Streamed without a length, and too large: refused when it passes the
    // limit, and nothing is left behind.
    let chunks = futures::stream::iter(
        (0..8).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![0u8; 256 * 1024]))),
    );
    let (status, body) = send_json(
        c.put(&url)
            .bearer_auth(ADMIN_TOKEN)
            .body(reqwest::Body::wrap_stream(chunks)),
    )
    .await;
    assert_eq!((status, error_code(&body)), (413, "component_too_large"));
    let leftovers: Vec<_> = std::fs::read_dir(server.data_dir.join("plugin-versions"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "staging files left: {leftovers:?}");

    // A component under the limit goes through the same streaming path.
    let v2 = std::fs::read(guest("fixture_versioned_v2")).unwrap();
    let (status, body) = send_json(c.put(&url).bearer_auth(ADMIN_TOKEN).body(v2)).await;
    assert_eq!(status, 200, "{body}");
    let (status, text) = send(c.get(server.at("/hello"))).await;
    assert_eq!((status, text.as_str()), (200, "version 2"));
}

#[tokio::test]
async fn why_a_plugin_failed_reaches_the_operator_not_the_public() {
    // A manifest that names a file of the host that is no component.
    let server = TestServer::start(&[HELLO]).await;
    let manifest = "component = \"/etc/passwd\"\n[[routes]]\nprefix = \"/leak\"\n";
    std::fs::write(server.plugins_dir.join("leak.toml"), manifest).unwrap();
    let mut server = server;
    server.restart().await;

    let (status, text) = send(client().get(server.at("/leak"))).await;
    assert_eq!(status, 503, "{text}");
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error_code(&body), "plugin_unavailable");
    for secret in ["/etc/passwd", "root:", "component", "valid"] {
        assert!(
            !text.contains(secret),
            "the public 503 shows {secret:?}: {text}"
        );
    }
    let status = server.plugin_status("leak").await;
    assert_eq!(status["state"], "failed");
    assert!(
        status["error"]
            .as_str()
            .unwrap()
            .contains("not a valid component"),
        "{status}"
    );
}

#[tokio::test]
async fn a_deleted_component_file_leaves_the_plugin_degraded_and_serving() {
    let server = TestServer::start(&[HELLO]).await;
    let file = server.plugins_dir.join("hello.wasm");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::remove_file(&file).unwrap();

    let status = poll_status(&server, "degraded").await;
    let error = status["error"].as_str().unwrap();
    assert!(error.contains("hello.wasm"), "{error}");
    assert!(error.contains("No such file"), "{error}");
    // The version it had keeps serving.
    let (code, _) = send(client().get(server.at("/hello"))).await;
    assert_eq!(code, 200);

    // Put back as it was: ready again.
    std::fs::write(&file, bytes).unwrap();
    let status = poll_status(&server, "ready").await;
    assert!(status["error"].is_null(), "{status}");
}

/// Polls the admin API until hello is in `state`.
async fn poll_status(server: &TestServer, state: &str) -> serde_json::Value {
    within_for(Duration::from_secs(10), async {
        loop {
            let status = server.plugin_status("hello").await;
            if status["state"] == state {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

#[tokio::test]
async fn operators_can_look_into_a_kv_namespace() {
    let server = TestServer::start(&[HELLO]).await;
    let c = client();
    for _ in 0..2 {
        assert_eq!(send(c.post(server.at("/hello/counter"))).await.0, 200);
    }
    let url = |query: &str| server.at(&format!("/_spike/kv/hello{query}"));
    let (status, body) = send_json(c.get(url("?prefix=count")).bearer_auth(ADMIN_TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["keys"][0]["name"], "counter");
    assert_eq!(body["keys"][0]["value"], "2");
    assert_eq!(body["keys"].as_array().unwrap().len(), 1);
    let (status, body) = send_json(c.get(url("?prefix=nothing")).bearer_auth(ADMIN_TOKEN)).await;
    assert_eq!((status, body["keys"].as_array().unwrap().len()), (200, 0));
    // Bad input and a missing token: JSON errors, nothing shown.
    let (status, body) = send_json(c.get(url("?limit=lots")).bearer_auth(ADMIN_TOKEN)).await;
    assert_eq!((status, error_code(&body)), (400, "bad_request"));
    let (status, body) = send_json(c.get(url(""))).await;
    assert_eq!((status, error_code(&body)), (401, "unauthorized"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_log_ends_when_the_server_stops() {
    let mut server = TestServer::start(&[HELLO]).await;
    let resp = within(
        client()
            .get(server.at("/_spike/plugins/hello/logs?follow=true"))
            .bearer_auth(ADMIN_TOKEN)
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let body = tokio::spawn(resp.text());
    // Well within the 10 s the server gives open connections to finish.
    let started = std::time::Instant::now();
    server.stop().await;
    let text = tokio::time::timeout(Duration::from_secs(5), body)
        .await
        .expect("the followed log ended")
        .unwrap();
    assert!(text.is_ok(), "{text:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// Wrong operator tokens are throttled per client address (the hostile
/// probe sent 3,000 without being slowed): past ten a minute, the address
/// is refused with 429 whatever it sends, on the admin API and on plugin
/// routes that say `auth = "operator"` alike. Those routes' plugins see
/// the operator as their caller.
#[tokio::test]
async fn operator_tokens_are_throttled_and_operator_routes_see_the_operator() {
    let whoami = Plugin {
        name: "whoami",
        guest: "fixture_whoami",
        manifest: "[[routes]]\nprefix = \"/whoami/ops\"\nauth = \"operator\"\n",
    };
    let server = TestServer::start(&[whoami]).await;
    let (status, me) = send_json(
        client()
            .get(server.at("/whoami/ops"))
            .bearer_auth(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(
        (&me["subject"], &me["issuer"]),
        (&"operator".into(), &"spike".into())
    );
    let (status, body) = send_json(client().get(server.at("/whoami/ops"))).await;
    assert_eq!((status, error_code(&body)), (401, "unauthorized"));

    for _ in 0..9 {
        let wrong = client()
            .get(server.at("/_spike/plugins"))
            .bearer_auth("guess");
        assert_eq!(send_json(wrong).await.0, 401);
    }
    let resp = within(
        client()
            .get(server.at("/_spike/plugins"))
            .bearer_auth("guess")
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 429);
    let wait: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    // The right token too, from this address, for now; and the routes.
    let right = client()
        .get(server.at("/_spike/plugins"))
        .bearer_auth(ADMIN_TOKEN);
    let (status, body) = send_json(right).await;
    assert_eq!(
        (status, error_code(&body)),
        (429, "too_many_attempts"),
        "{body}"
    );
    let route = client()
        .get(server.at("/whoami/ops"))
        .bearer_auth(ADMIN_TOKEN);
    assert_eq!(send_json(route).await.0, 429);
}
