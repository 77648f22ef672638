//! Rate limits: per route in the manifest, a server-wide default, by client
//! address or by verified user, the forwarded address only from a trusted
//! proxy, 429 with `Retry-After` and `RateLimit-*` before any instance is
//! made; and quotas a plugin keeps through the `rate-limit` import.

use std::time::Duration;

use serde_json::{Value, json};
use spike::config::ServerConfig;
use spike_e2e::tokens::{AUTH_HS256, hs256_secret, hs256_tokens};
use spike_e2e::*;

const HS_KEY: &str = "rate-limit-test-hs256-key";

const WHOAMI: &str = r#"
[[routes]]
prefix = "/whoami"
[[routes]]
prefix = "/whoami/limited"
rate_limit = { requests = 3, per_s = 2, key = "ip" }
[[routes]]
prefix = "/whoami/off"
rate_limit = false
[[routes]]
prefix = "/whoami/per-user"
auth = "required"
rate_limit = { requests = 2, per_s = 60, key = "user" }
[quotas.calls]
requests = 2
per_s = 60
"#;

async fn start(configure: impl FnOnce(&mut ServerConfig)) -> TestServer {
    TestServer::start_with(
        &[
            Plugin {
                name: "whoami",
                guest: "fixture_whoami",
                manifest: WHOAMI,
            },
            AUTH_HS256,
        ],
        |config| {
            config.secrets = hs256_secret(HS_KEY);
            configure(config);
        },
    )
    .await
}

/// Status and the rate limit headers of `GET path` with `headers`.
async fn hit(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = client().get(server.at(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = within(req.send()).await.unwrap();
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| json!(v.to_str().unwrap().parse::<u64>().unwrap()))
            .unwrap_or(Value::Null)
    };
    let seen = json!({
        "limit": header("ratelimit-limit"),
        "remaining": header("ratelimit-remaining"),
        "retry_after": header("retry-after"),
    });
    let body = within(resp.text()).await.unwrap();
    if status == 429 {
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(error_code(&body), "rate_limited", "{body}");
    }
    (status, seen)
}

/// The statuses of `n` requests to `path`.
async fn statuses(server: &TestServer, path: &str, headers: &[(&str, &str)], n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(hit(server, path, headers).await.0);
    }
    out
}

/// A sample of the admin metrics: the line starting with `series` that
/// has every label of `labels`.
async fn sample(server: &TestServer, series: &str, labels: &[&str]) -> f64 {
    let text = server.metrics_text().await;
    text.lines()
        .find(|l| l.starts_with(series) && labels.iter().all(|label| l.contains(label)))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .unwrap_or_else(|| panic!("no {series} {labels:?} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_limit_is_429_with_headers_before_any_instance() {
    let server = start(|_| {}).await;
    let path = "/whoami/limited";
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let (status, seen) = hit(&server, path, &[]).await;
        assert_eq!(status, 200);
        assert_eq!(seen["limit"], 3);
        remaining.push(seen["remaining"].as_u64().unwrap());
    }
    assert_eq!(remaining, [2, 1, 0]);
    let instances = sample(&server, "spike_plugin_instantiations_total", &["whoami"]).await;
    let (status, seen) = hit(&server, path, &[]).await;
    assert_eq!(status, 429);
    // GCRA: one request comes back every 2/3 s.
    assert_eq!(seen, json!({"limit": 3, "remaining": 0, "retry_after": 1}));
    assert_eq!(
        sample(&server, "spike_plugin_instantiations_total", &["whoami"]).await,
        instances,
        "a refused request made an instance"
    );
    assert_eq!(
        sample(
            &server,
            "spike_rate_limited_total",
            &["whoami", "/whoami/limited"]
        )
        .await,
        1.0
    );
    // Other routes of the plugin are not limited.
    assert_eq!(statuses(&server, "/whoami/off", &[], 10).await, [200; 10]);
    assert_eq!(statuses(&server, "/whoami", &[], 10).await, [200; 10]);

    // The window's edge: after 2/3 s one request fits again, and only one.
    tokio::time::sleep(Duration::from_millis(750)).await;
    assert_eq!(statuses(&server, path, &[], 2).await, [200, 429]);
    // After the whole period the allowance is whole again.
    tokio::time::sleep(Duration::from_millis(2050)).await;
    assert_eq!(statuses(&server, path, &[], 4).await, [200, 200, 200, 429]);
    // The sweeper (every 5 s) reports the keys the limiters hold: this
    // client's address.
    within_for(Duration::from_secs(15), async {
        while sample(&server, "spike_rate_limit_keys", &[]).await < 1.0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_default_applies_where_a_route_says_nothing() {
    let server = start(|config| config.default_rate_limit = Some("2/60".parse().unwrap())).await;
    assert_eq!(statuses(&server, "/whoami", &[], 3).await, [200, 200, 429]);
    // `rate_limit = false` opts out; a route's own rule replaces the default.
    assert_eq!(statuses(&server, "/whoami/off", &[], 5).await, [200; 5]);
    assert_eq!(
        statuses(&server, "/whoami/limited", &[], 4).await,
        [200, 200, 200, 429]
    );
    // The host's own endpoints are never limited.
    assert_eq!(statuses(&server, "/healthz", &[], 5).await, [200; 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_limits_count_each_caller_apart() {
    let server = start(|_| {}).await;
    let t = hs256_tokens(HS_KEY, &["alice", "bob"]);
    let alice = format!("Bearer {}", t[0]);
    let bob = format!("Bearer {}", t[1]);
    let path = "/whoami/per-user";
    let as_alice = [("authorization", alice.as_str())];
    let as_bob = [("authorization", bob.as_str())];
    assert_eq!(statuses(&server, path, &as_alice, 3).await, [200, 200, 429]);
    // Same address, another user: a whole allowance.
    assert_eq!(statuses(&server, path, &as_bob, 3).await, [200, 200, 429]);
    // No token: 401 from the hook, not 429.
    assert_eq!(statuses(&server, path, &[], 2).await, [401, 401]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forwarded_address_counts_only_from_a_trusted_proxy() {
    let path = "/whoami/limited";
    // Loopback is the trusted proxy: each forwarded client has its own
    // allowance, and the rightmost untrusted hop is the client.
    let server = start(|config| {
        config.client_addresses.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let one = [("x-forwarded-for", "203.0.113.1")];
    let two = [("x-forwarded-for", "198.51.100.7, 203.0.113.2")];
    let spoofed = [("x-forwarded-for", "203.0.113.1, 203.0.113.2")];
    assert_eq!(statuses(&server, path, &one, 4).await, [200, 200, 200, 429]);
    assert_eq!(statuses(&server, path, &two, 3).await, [200, 200, 200]);
    // A client cannot escape its count by prepending addresses: the
    // rightmost is what the proxy saw.
    assert_eq!(statuses(&server, path, &spoofed, 1).await, [429]);
    drop(server);

    // The same header from an address that is not a trusted proxy is
    // ignored: every request counts against the connection's address.
    let server = start(|config| {
        config.client_addresses.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
    })
    .await;
    let mut got = Vec::new();
    for i in 0..4 {
        let forwarded = format!("203.0.113.{i}");
        got.push(
            hit(&server, path, &[("x-forwarded-for", &forwarded)])
                .await
                .0,
        );
    }
    assert_eq!(got, [200, 200, 200, 429]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_keep_their_own_quotas() {
    let server = start(|_| {}).await;
    let check = |quota: &str, key: &str, cost: u32| {
        client().post(server.at(&format!(
            "/whoami/quota?quota={quota}&key={key}&cost={cost}"
        )))
    };
    let (status, first) = send_json(check("calls", "alice", 1)).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(
        first,
        json!({"allowed": true, "limit": 2, "remaining": 1, "retry_after_ms": 0})
    );
    let (_, second) = send_json(check("calls", "alice", 1)).await;
    assert_eq!(second["remaining"], 0);
    let (_, third) = send_json(check("calls", "alice", 1)).await;
    assert_eq!(third["allowed"], false, "{third}");
    assert_eq!(third["remaining"], 0);
    // One call per 30 s comes back.
    let wait = third["retry_after_ms"].as_u64().unwrap();
    assert!((29_000..=30_000).contains(&wait), "{wait}");
    // Another key has its own allowance; a cost of 2 fits a fresh one.
    let (_, bob) = send_json(check("calls", "bob", 2)).await;
    assert_eq!(bob["allowed"], true, "{bob}");
    // A quota the manifest does not declare, and a cost no allowance fits.
    let (status, body) = send_json(check("other", "alice", 1)).await;
    assert_eq!((status, error_code(&body)), (403, "access_denied"));
    let (status, body) = send_json(check("calls", "carol", 3)).await;
    assert_eq!((status, error_code(&body)), (400, "invalid_input"));
    assert_eq!(
        sample(&server, "spike_quota_checks_total", &["whoami", "refused"]).await,
        1.0
    );
    assert!(sample(&server, "spike_quota_checks_total", &["whoami", "allowed"]).await >= 3.0);
}
