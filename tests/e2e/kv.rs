//! The KV capability end to end: the hello counter, and every operation
//! through the probe fixture.

use std::time::Duration;

use spike_e2e::*;

const PROBE: Plugin = Plugin {
    name: "probe",
    guest: "fixture_probe",
    manifest: "[[routes]]\nprefix = \"/probe\"\n[grants]\nkv = [\"probe\"]\n",
};

#[tokio::test]
async fn counter_counts_concurrently_and_survives_restart() {
    let mut server = TestServer::start(&[HELLO]).await;
    let c = client();
    let count = |body: serde_json::Value| body["count"].as_i64().unwrap();

    let (status, body) = send_json(c.post(server.at("/hello/counter"))).await;
    assert_eq!((status, count(body)), (200, 1));

    // 40 concurrent increments: every one is counted, none twice.
    let url = server.at("/hello/counter");
    let mut seen: Vec<i64> = within(futures::future::join_all((0..40).map(|_| {
        let (c, url) = (c.clone(), url.clone());
        async move { count(send_json(c.post(url)).await.1) }
    })))
    .await;
    seen.sort();
    assert_eq!(seen, (2..=41).collect::<Vec<_>>());

    server.restart().await;
    let (_, body) = send_json(c.post(server.at("/hello/counter"))).await;
    assert_eq!(count(body), 42);
}

#[tokio::test]
async fn set_get_metadata_delete() {
    let server = TestServer::start(&[PROBE]).await;
    let c = client();

    let (status, _) = send(c.get(server.at("/probe/kv/k1"))).await;
    assert_eq!(status, 404);
    let (status, _) = send(
        c.put(server.at("/probe/kv/k1?metadata=%7B%22a%22%3A1%7D"))
            .body("v1"),
    )
    .await;
    assert_eq!(status, 204);
    let resp = within(c.get(server.at("/probe/kv/k1")).send())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-metadata"], r#"{"a":1}"#);
    assert!(resp.headers().get("x-expires-at-ms").is_none());
    assert_eq!(within(resp.text()).await.unwrap(), "v1");

    // Overwrite replaces value and metadata.
    send(c.put(server.at("/probe/kv/k1")).body("v2")).await;
    let resp = within(c.get(server.at("/probe/kv/k1")).send())
        .await
        .unwrap();
    assert!(resp.headers().get("x-metadata").is_none());
    assert_eq!(within(resp.text()).await.unwrap(), "v2");

    let (_, body) = send_json(c.delete(server.at("/probe/kv/k1"))).await;
    assert_eq!(body["deleted"], true);
    let (_, body) = send_json(c.delete(server.at("/probe/kv/k1"))).await;
    assert_eq!(body["deleted"], false);
    let (status, _) = send(c.get(server.at("/probe/kv/k1"))).await;
    assert_eq!(status, 404);

    // Bad input comes back as the WIT error, mapped to 4xx by the guest.
    let long_key = "k".repeat(513);
    let (status, body) =
        send_json(c.put(server.at(&format!("/probe/kv/{long_key}"))).body("x")).await;
    assert_eq!((status, error_code(&body)), (400, "invalid_input"));
    let (status, body) = send_json(
        c.put(server.at(&format!("/probe/kv/k?metadata={}", "m".repeat(1025))))
            .body("x"),
    )
    .await;
    assert_eq!((status, error_code(&body)), (413, "too_large"));
}

#[tokio::test]
async fn ttl_expires_and_is_reclaimed() {
    let server = TestServer::start(&[PROBE]).await;
    let c = client();
    send(
        c.put(server.at("/probe/kv/short?ttl_ms=1500"))
            .body("soon gone"),
    )
    .await;
    send(c.put(server.at("/probe/kv/long")).body("stays")).await;

    let resp = within(c.get(server.at("/probe/kv/short")).send())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-expires-at-ms"));
    let (_, body) = send_json(c.get(server.at("/probe/kv"))).await;
    assert_eq!(body["keys"], serde_json::json!(["long", "short"]));

    tokio::time::sleep(Duration::from_millis(1700)).await;
    let (status, _) = send(c.get(server.at("/probe/kv/short"))).await;
    assert_eq!(status, 404);
    let (_, body) = send_json(c.get(server.at("/probe/kv"))).await;
    assert_eq!(body["keys"], serde_json::json!(["long"]));
    // That the sweeper also reclaims the space is the storage backend's
    // own test (`storage::redb::kv::the_sweeper_reclaims_expired_entries`).
}

#[tokio::test]
async fn list_pages_with_cursor_and_prefix() {
    let server = TestServer::start(&[PROBE]).await;
    let c = client();
    for i in 0..23 {
        send(
            c.put(server.at(&format!("/probe/kv/item:{i:03}")))
                .body("x"),
        )
        .await;
    }
    send(c.put(server.at("/probe/kv/other")).body("x")).await;

    let mut keys = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut url = server.at("/probe/kv?prefix=item%3A&limit=10");
        if let Some(c) = &cursor {
            url += &format!("&cursor={}", c.replace(':', "%3A"));
        }
        let (status, body) = send_json(c.get(url)).await;
        assert_eq!(status, 200);
        pages += 1;
        keys.extend(
            body["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k.as_str().unwrap().to_string()),
        );
        match body["cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(
        keys,
        (0..23).map(|i| format!("item:{i:03}")).collect::<Vec<_>>()
    );

    let (status, body) = send_json(c.get(server.at("/probe/kv?limit=5000"))).await;
    assert_eq!((status, error_code(&body)), (400, "invalid_input"));
}

/// `namespace.compare-and-swap`: absent is expected as none, a stale
/// expectation changes nothing, and of 32 callers expecting one value
/// exactly one swaps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_swap_swaps_once_per_value() {
    let server = TestServer::start(&[PROBE]).await;
    let c = client();
    let swap = |expected: Option<&str>, value: &str| {
        let query = expected
            .map(|e| format!("?expected={e}"))
            .unwrap_or_default();
        let url = server.at(&format!("/probe/kv/cas{query}"));
        let request = c.post(url).body(value.to_string());
        async move {
            let (status, body) = send_json(request).await;
            assert_eq!(status, 200, "{body}");
            body["swapped"].as_bool().unwrap()
        }
    };
    assert!(swap(None, "1").await);
    assert!(!swap(None, "2").await, "the key is there");
    assert!(!swap(Some("0"), "2").await, "a stale expectation");
    assert!(swap(Some("1"), "2").await);
    let (_, value) = send(c.get(server.at("/probe/kv/cas"))).await;
    assert_eq!(value, "2");

    let all = within(futures::future::join_all(
        (0..32).map(|n| swap(Some("2"), ["a", "b"][n % 2])),
    ))
    .await;
    assert_eq!(all.iter().filter(|s| **s).count(), 1, "{all:?}");
    let (_, value) = send(c.get(server.at("/probe/kv/cas"))).await;
    assert!(value == "a" || value == "b", "{value}");
}
