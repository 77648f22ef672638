//! Routing, the host's own endpoints, bad input and bad plugins at start.

use spike_e2e::*;

/// Hello with a 1 MiB body limit.
const HELLO_1MIB: Plugin = Plugin {
    name: "hello",
    guest: "hello",
    manifest: r#"
[[routes]]
prefix = "/hello"
methods = ["GET", "POST", "PUT"]
[grants]
kv = ["hello"]
blob = ["hello-files"]
[limits]
max_body_mib = 1
[env]
WRITE_ACCESS = "anyone"
"#,
};

const PLAIN: Plugin = Plugin {
    name: "plain",
    guest: "fixture_plain_hello",
    manifest: "[[routes]]\nprefix = \"/plain\"\n",
};

#[tokio::test]
async fn serves_routes_and_own_endpoints() {
    let server = TestServer::start(&[HELLO_1MIB, PLAIN]).await;
    let c = client();

    // JSON answers end their line: the host's, and a guest's through the
    // SDK (its 404, its JSON).
    let (status, body) = send(c.get(server.at("/healthz"))).await;
    assert_eq!((status, body.as_str()), (200, "{\"status\":\"ok\"}\n"));
    for path in ["/nothing-here", "/hello/unknown", "/hello/counter"] {
        let (_, body) = send(c.get(server.at(path))).await;
        assert!(
            body.starts_with('{') && body.ends_with("}\n"),
            "{path}: {body:?}"
        );
    }

    let (status, body) = send(c.get(server.at("/hello"))).await;
    assert_eq!(status, 200);
    assert_eq!(body, "Hello, world! This is spike.\n");
    let (_, body) = send(c.get(server.at("/hello?name=operator"))).await;
    assert_eq!(body, "Hello, operator! This is spike.\n");

    // A plain wasi:http component, built without our SDK, serves unmodified.
    let (status, body) = send(c.get(server.at("/plain/anything"))).await;
    assert_eq!((status, body.as_str()), (200, "Hello, world!\n"));

    // Prefixes match whole segments.
    let (status, body) = send_json(c.get(server.at("/helloworld"))).await;
    assert_eq!(status, 404);
    assert_eq!(error_code(&body), "not_found");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/helloworld")
    );

    let resp = within(c.delete(server.at("/hello")).send()).await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "GET, HEAD, POST, PUT");

    // The plugin's own 404 for a path it does not know, and 405 for a
    // method its router has no route for (the SDK's router).
    let (status, body) = send_json(c.get(server.at("/hello/unknown"))).await;
    assert_eq!((status, error_code(&body)), (404, "not_found"));
    let resp = within(c.put(server.at("/hello/counter")).send())
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "GET, HEAD, POST");
    let body: serde_json::Value = within(resp.json()).await.unwrap();
    assert_eq!(error_code(&body), "method_not_allowed");
    // A GET route answers HEAD: the headers, no body.
    let resp = within(c.head(server.at("/hello/counter")).send())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(within(resp.bytes()).await.unwrap().len(), 0);
    // A path parameter arrives percent-decoded.
    let (status, _) = send(c.put(server.at("/hello/files/a%20b")).body("spaced")).await;
    assert_eq!(status, 201);
    let (status, body) = send(c.get(server.at("/hello/files/a%20b"))).await;
    assert_eq!((status, body.as_str()), (200, "spaced"));
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let server = TestServer::start(&[HELLO_1MIB]).await;
    let c = client();
    let big = vec![7u8; (1 << 20) + 1];

    // Declared by Content-Length: refused before the plugin runs.
    let (status, body) = send_json(c.put(server.at("/hello/files/big")).body(big.clone())).await;
    assert_eq!((status, error_code(&body)), (413, "body_too_large"));

    // Chunked, no length: cut off while the plugin reads it.
    let stream = futures::stream::iter(
        big.chunks(64 * 1024)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let (status, body) = send_json(
        c.put(server.at("/hello/files/big"))
            .body(reqwest::Body::wrap_stream(stream)),
    )
    .await;
    assert_eq!((status, error_code(&body)), (413, "body_too_large"));

    // Nothing half-written was stored.
    let (status, _) = send(c.get(server.at("/hello/files/big"))).await;
    assert_eq!(status, 404);

    // Exactly at the limit is fine.
    let (status, _) = send(
        c.put(server.at("/hello/files/fits"))
            .body(vec![7u8; 1 << 20]),
    )
    .await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn missing_or_broken_component_fails_only_its_plugin() {
    init_logging();
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    write_plugins(&plugins, &[HELLO_1MIB]);
    std::fs::write(
        plugins.join("gone.toml"),
        "component = \"gone.wasm\"\n[[routes]]\nprefix = \"/gone\"\n",
    )
    .unwrap();
    std::fs::write(plugins.join("junk.wasm"), b"not wasm at all").unwrap();
    std::fs::write(
        plugins.join("junk.toml"),
        "component = \"junk.wasm\"\n[[routes]]\nprefix = \"/junk\"\n",
    )
    .unwrap();
    let server = within(spike::start(test_config(
        &plugins,
        &dir.path().join("data"),
    )))
    .await
    .unwrap();
    within(server.ready()).await;
    let url = |p: &str| format!("http://{}{p}", server.addr);
    let c = client();

    // The public answer names the plugin, not why it failed: that names
    // files of the host, and goes to the log and the admin API only.
    for (path, reason) in [("/gone", "gone.wasm"), ("/junk", "not a valid component")] {
        let (status, body) = send_json(c.get(url(path))).await;
        assert_eq!(
            (status, error_code(&body)),
            (503, "plugin_unavailable"),
            "{path}"
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(&path[1..]), "{path}: {message}");
        assert!(!message.contains(reason), "{path}: {message}");
        assert!(
            !message.contains(&plugins.display().to_string()),
            "{message}"
        );
    }
    let (status, _) = send(c.get(url("/hello"))).await;
    assert_eq!(status, 200);
    // Not ready while plugins have no version that loaded.
    let (status, body) = send_json(c.get(url("/readyz"))).await;
    assert_eq!((status, body["status"].as_str()), (503, Some("failed")));
    assert_eq!(body["failed"], serde_json::json!(["gone", "junk"]));

    let (status, list) = send_json(c.get(url("/_spike/plugins")).bearer_auth(ADMIN_TOKEN)).await;
    assert_eq!(status, 200);
    let state = |name: &str| {
        list["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["state"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(state("gone"), "failed");
    assert_eq!(state("junk"), "failed");
    assert_eq!(state("hello"), "ready");
    let error = |name: &str| {
        let plugin = list["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name);
        plugin.unwrap()["error"].as_str().unwrap().to_string()
    };
    assert!(error("gone").contains("gone.wasm"), "{}", error("gone"));
    assert!(
        error("junk").contains("not a valid component"),
        "{}",
        error("junk")
    );
    within(server.stop()).await;
}

#[tokio::test]
async fn malformed_manifest_stops_the_start_naming_file_and_line() {
    init_logging();
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    write_plugins(&plugins, &[HELLO_1MIB]);
    std::fs::write(
        plugins.join("typo.toml"),
        "component = \"hello.wasm\"\n[[routes]]\nprefix = \"/typo\"\n\n[limits]\ncpu_milliseconds = 5\n",
    )
    .unwrap();
    let err = start_error(
        &plugins,
        &dir.path().join("data"),
        "a malformed manifest must stop the start",
    )
    .await;
    assert!(err.contains("typo.toml:6:"), "{err}");
    assert!(err.contains("cpu_milliseconds"), "{err}");

    // Two plugins claiming the same route are refused too.
    std::fs::write(
        plugins.join("typo.toml"),
        "component = \"hello.wasm\"\n[[routes]]\nprefix = \"/hello\"\n",
    )
    .unwrap();
    let err = start_error(
        &plugins,
        &dir.path().join("data"),
        "clashing routes must stop the start",
    )
    .await;
    assert!(err.contains("already served by plugin 'hello'"), "{err}");
}

/// The error that stops a server from starting on `plugins`.
async fn start_error(plugins: &std::path::Path, data: &std::path::Path, why: &str) -> String {
    match within(spike::start(test_config(plugins, data))).await {
        Ok(_) => panic!("{why}"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn the_server_listens_while_plugins_load() {
    init_logging();
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    write_plugins(&plugins, &[HELLO_1MIB]);
    let start = |delay_ms, wait_ms, data: &str| {
        let mut config = test_config(&plugins, &dir.path().join(data));
        config.test_load_delay = std::time::Duration::from_millis(delay_ms);
        config.clients.load_wait = std::time::Duration::from_millis(wait_ms);
        spike::start(config)
    };
    let server = within(start(1500, 10_000, "data")).await.unwrap();
    let url = |p: &str| format!("http://{}{p}", server.addr);
    let c = client();

    // Listening already; the plugin is not ready yet.
    let (status, _) = send(c.get(url("/healthz"))).await;
    assert_eq!(status, 200, "alive while loading");
    let (status, body) = send_json(c.get(url("/readyz"))).await;
    assert_eq!((status, body["status"].as_str()), (503, Some("loading")));
    assert_eq!(body["loading"], serde_json::json!(["hello"]));
    // A request waits for the load rather than being turned away.
    let asked = std::time::Instant::now();
    let (status, _) = send(c.get(url("/hello"))).await;
    assert_eq!(status, 200);
    assert!(asked.elapsed() >= std::time::Duration::from_millis(1000));
    let (status, body) = send_json(c.get(url("/readyz"))).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ready")));
    within(server.stop()).await;

    // Past the load wait: 503, to come back.
    let server = within(start(3000, 200, "data-2")).await.unwrap();
    let resp = within(c.get(format!("http://{}/hello", server.addr)).send())
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    let body: serde_json::Value = within(resp.json()).await.unwrap();
    assert_eq!(error_code(&body), "plugin_loading");
    within(server.stop()).await;
}
