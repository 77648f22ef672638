//! Service bindings: a plugin calls another at
//! `http://<plugin>.spike.internal/<path>`, in-process, if its manifest
//! grants `services`; denied without the grant; a chain of calls cut at the
//! depth limit. The fetch fixture makes the calls and answers
//! `upstream <status>: <body>` (or 502 with the `wasi:http` error code); the
//! probe fixture answers them.

use spike_e2e::*;

/// The fetch fixture at `/{name}` with these grants.
fn caller<'a>(name: &'a str, grants: &'a str) -> Plugin<'a> {
    Plugin {
        name,
        guest: "fixture_fetch",
        manifest: Box::leak(
            format!("[[routes]]\nprefix = \"/{name}\"\n[grants]\n{grants}\n").into_boxed_str(),
        ),
    }
}

/// The probe fixture, on a route that the calls below do not use: a
/// service call goes to the plugin, not through the route table.
fn probe() -> Plugin<'static> {
    Plugin {
        name: "probe",
        guest: "fixture_probe",
        manifest: "[[routes]]\nprefix = \"/elsewhere\"\n[limits]\ncpu_ms = 200\n",
    }
}

async fn call(server: &TestServer, from: &str, query: &str) -> (u16, String) {
    send(client().get(server.at(&format!("/{from}?{query}")))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_service_is_called_in_process() {
    let server = TestServer::start(&[caller("front", "services = [\"probe\"]"), probe()]).await;
    let (status, text) = call(
        &server,
        "front",
        "authority=probe.spike.internal&path=/probe/count",
    )
    .await;
    assert_eq!((status, text.as_str()), (200, "upstream 200: 1"));

    // The callee's faults reach the caller as the statuses a client gets.
    let (status, text) = call(
        &server,
        "front",
        "authority=probe.spike.internal&path=/probe/trap",
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(text.starts_with("upstream 500: "), "{text}");
    assert!(text.contains("plugin_trap"), "{text}");

    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains(
            "spike_service_calls_total{plugin=\"front\",service=\"probe\",outcome=\"called\"} 2"
        ),
        "{metrics}"
    );
    // The callee counted its own fault.
    assert!(
        metrics.contains("spike_plugin_faults_total{plugin=\"probe\",kind=\"trap\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_call_without_the_grant_is_denied() {
    let server = TestServer::start(&[
        caller("front", "services = [\"probe\", \"nobody\"]"),
        caller("other", "kv = [\"x\"]"),
        probe(),
    ])
    .await;
    let (status, text) = call(
        &server,
        "other",
        "authority=probe.spike.internal&path=/probe/count",
    )
    .await;
    assert_eq!(status, 502, "{text}");
    assert!(text.contains("HttpRequestDenied"), "{text}");

    // Granted, but no such plugin.
    let (status, text) = call(&server, "front", "authority=nobody.spike.internal&path=/").await;
    assert_eq!(status, 502, "{text}");
    assert!(text.contains("DestinationNotFound"), "{text}");

    let metrics = server.metrics_text().await;
    for (plugin, service, outcome) in [("other", "probe", "denied"), ("front", "nobody", "failed")]
    {
        let line = format!(
            "spike_service_calls_total{{plugin=\"{plugin}\",service=\"{service}\",outcome=\"{outcome}\"}} 1"
        );
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_of_service_calls_is_cut_at_the_depth_limit() {
    let server = TestServer::start(&[caller("again", "services = [\"again\"]")]).await;
    let (status, text) = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        call(&server, "again", "authority=again.spike.internal&loop=1"),
    )
    .await
    .expect("the loop ends");
    // Each level answers `upstream 200: ` around the next; the call the
    // limit refuses fails with loop-detected at the deepest level.
    assert_eq!(status, 200, "{text}");
    let deepest = format!("{}upstream 502: ", "upstream 200: ".repeat(7));
    let error = text.strip_prefix(&deepest).expect(&text);
    assert!(error.contains("LoopDetected"), "{text}");
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains(
            "spike_service_calls_total{plugin=\"again\",service=\"again\",outcome=\"too_deep\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "spike_service_calls_total{plugin=\"again\",service=\"again\",outcome=\"called\"} 8"
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caller_reaches_only_the_services_listed_in_identity_to() {
    const KEY: &str = "service-bindings-test-hs256-key";
    let passes = "[[routes]]\nprefix = \"/passes\"\nauth = \"required\"\n\
                  [grants]\nservices = [\"whoami\"]\nidentity_to = [\"whoami\"]\n";
    let keeps = "[[routes]]\nprefix = \"/keeps\"\nauth = \"required\"\n\
                 [grants]\nservices = [\"whoami\"]\n";
    let server = spike_e2e::tokens::start_with_hs256_auth(
        KEY,
        &[
            Plugin {
                name: "passes",
                guest: "fixture_fetch",
                manifest: passes,
            },
            Plugin {
                name: "keeps",
                guest: "fixture_fetch",
                manifest: keeps,
            },
            Plugin {
                name: "whoami",
                guest: "fixture_whoami",
                manifest: "[[routes]]\nprefix = \"/whoami\"\n",
            },
        ],
    )
    .await;
    let token = spike_e2e::tokens::hs256_tokens(KEY, &["alice"]).remove(0);
    let c = client();
    let ask = |from: &str| {
        c.get(server.at(&format!(
            "/{from}?authority=whoami.spike.internal&path=/whoami"
        )))
        .header("authorization", format!("Bearer {token}"))
    };
    let (status, text) = send(ask("passes")).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.starts_with("upstream 200: "), "{text}");
    assert!(text.contains("\"subject\":\"alice\""), "{text}");
    let (status, text) = send(ask("keeps")).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"anonymous\":true"), "{text}");
    assert!(!text.contains("alice"), "{text}");
}
