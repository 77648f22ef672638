//! `instance_reuse`: an instance serves up to N requests of its plugin in
//! turn; never one after a trap or a limit, never another plugin's, and
//! not after `instance_idle_ms` unused.
//! The probe fixture's `/probe/count` says how many requests the instance
//! that answers has served.

use spike_e2e::*;

fn probe(name: &'static str, prefix: &'static str, limits: &'static str) -> Plugin<'static> {
    Plugin {
        name,
        guest: "fixture_probe",
        manifest: Box::leak(
            format!("[[routes]]\nprefix = \"{prefix}\"\n[limits]\n{limits}\n").into_boxed_str(),
        ),
    }
}

/// What `/probe/count` answers for each of `n` requests in turn to `prefix`.
async fn counts(server: &TestServer, prefix: &str, n: usize) -> Vec<String> {
    let c = client();
    let mut seen = Vec::new();
    for _ in 0..n {
        let (status, text) = send(c.get(server.at(&format!("{prefix}/probe/count")))).await;
        assert_eq!(status, 200, "{text}");
        seen.push(text);
    }
    seen
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_gets_a_fresh_instance_unless_the_manifest_asks() {
    let server = TestServer::start(&[
        probe("fresh", "/fresh", ""),
        probe("reused", "/reused", "instance_reuse = 3"),
    ])
    .await;
    assert_eq!(
        counts(&server, "/fresh", 3).await,
        strings(&["1", "1", "1"])
    );
    // Three requests per instance, then a new one.
    assert_eq!(
        counts(&server, "/reused", 7).await,
        strings(&["1", "2", "3", "1", "2", "3", "1"])
    );
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains("spike_plugin_instance_reuses_total{plugin=\"reused\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("spike_plugin_instantiations_total{plugin=\"reused\"} 3"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_trapped_or_hit_a_limit_is_never_reused() {
    let server = TestServer::start(&[probe(
        "reused",
        "/reused",
        "instance_reuse = 1000\ncpu_ms = 200",
    )])
    .await;
    let c = client();
    assert_eq!(counts(&server, "/reused", 2).await, strings(&["1", "2"]));
    let (status, body) = send_json(c.get(server.at("/reused/probe/trap"))).await;
    assert_eq!((status, error_code(&body)), (500, "plugin_trap"), "{body}");
    assert_eq!(counts(&server, "/reused", 2).await, strings(&["1", "2"]));
    let (status, body) = send_json(c.get(server.at("/reused/probe/spin"))).await;
    assert_eq!(
        (status, error_code(&body)),
        (504, "plugin_cpu_limit"),
        "{body}"
    );
    assert_eq!(counts(&server, "/reused", 1).await, strings(&["1"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_plugin_leaves_in_an_instance_never_reaches_another() {
    // The same component, twice, both reusing.
    let server = TestServer::start(&[
        probe("one", "/one", "instance_reuse = 100"),
        probe("two", "/two", "instance_reuse = 100"),
    ])
    .await;
    assert_eq!(counts(&server, "/one", 2).await, strings(&["1", "2"]));
    assert_eq!(counts(&server, "/two", 1).await, strings(&["1"]));
    assert_eq!(counts(&server, "/one", 1).await, strings(&["3"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_manifest_starts_from_fresh_instances() {
    let server = TestServer::start(&[probe("reused", "/reused", "instance_reuse = 100")]).await;
    assert_eq!(counts(&server, "/reused", 2).await, strings(&["1", "2"]));
    // The same component under an edited manifest (other limits): the
    // instances kept under the old one are not used.
    let manifest = "component = \"reused.wasm\"\n[[routes]]\nprefix = \"/reused\"\n\
                    [limits]\ninstance_reuse = 100\ncpu_ms = 4000\n";
    let (status, text) = send(
        client()
            .put(server.at("/_spike/plugins/reused/manifest"))
            .bearer_auth(ADMIN_TOKEN)
            .body(manifest),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(counts(&server, "/reused", 2).await, strings(&["1", "2"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_instance_unused_for_its_idle_time_is_dropped() {
    let server = TestServer::start(&[probe(
        "reused",
        "/reused",
        "instance_reuse = 100\ninstance_idle_ms = 1000",
    )])
    .await;
    assert_eq!(counts(&server, "/reused", 2).await, strings(&["1", "2"]));
    // Within its idle time, the instance is still there.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(counts(&server, "/reused", 1).await, strings(&["3"]));
    // Past it (plus a few of the watchdog's 50 ms ticks), it is gone.
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    assert_eq!(counts(&server, "/reused", 1).await, strings(&["1"]));
}

#[test]
fn a_reuse_count_out_of_bounds_is_refused_with_its_line() {
    let text =
        "component = \"x.wasm\"\n[[routes]]\nprefix = \"/x\"\n[limits]\ninstance_reuse = 2000000\n";
    let err = spike::runtime::manifest::parse(std::path::Path::new("x.toml"), text).unwrap_err();
    assert_eq!(err.line, Some(5), "{err}");
    assert!(err.message.contains("at most 1000000"), "{err}");
    let text =
        "component = \"x.wasm\"\n[[routes]]\nprefix = \"/x\"\n[limits]\ninstance_idle_ms = 5\n";
    let err = spike::runtime::manifest::parse(std::path::Path::new("x.toml"), text).unwrap_err();
    assert_eq!(err.line, Some(5), "{err}");
    assert!(err.message.contains("between 10 and"), "{err}");
}
