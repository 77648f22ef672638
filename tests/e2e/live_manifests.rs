//! Manifests are live: edits, new manifests and removed ones take effect
//! without a restart, under load, without a failed request; a bad edit is
//! refused with the reason while the old manifest keeps serving.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use spike_e2e::*;

const PLAIN: Plugin = Plugin {
    name: "plain",
    guest: "fixture_plain_hello",
    manifest: "[[routes]]\nprefix = \"/plain\"\n",
};

const PROBE: Plugin = Plugin {
    name: "probe",
    guest: "fixture_probe",
    manifest: "[[routes]]\nprefix = \"/probe\"\n[grants]\nkv = [\"probe\"]\n",
};

fn manifest(server: &TestServer, name: &str, body: &str) {
    let text = format!("component = \"{name}.wasm\"\n{body}");
    // Written to a temporary name and renamed, as editors do: the watcher
    // never sees half a file.
    let tmp = server.plugins_dir.join(format!(".{name}.toml.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, server.plugins_dir.join(format!("{name}.toml"))).unwrap();
}

/// Polls `path` until it answers `status`.
async fn until_status(server: &TestServer, path: &str, status: u16) -> String {
    within_for(Duration::from_secs(10), async {
        loop {
            let (got, body) = send(client().get(server.at(path))).await;
            if got == status {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// Requests to `path` in a loop until stopped: (answered 200, anything else).
fn load(server: &TestServer, path: &str) -> (Arc<AtomicBool>, tokio::task::JoinHandle<(u64, u64)>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (url, flag) = (server.at(path), stop.clone());
    let task = tokio::spawn(async move {
        let c = client();
        let (ok, failed) = (AtomicU64::new(0), AtomicU64::new(0));
        while !flag.load(Ordering::Relaxed) {
            match c.get(&url).send().await {
                Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                _ => failed.fetch_add(1, Ordering::Relaxed),
            };
        }
        (ok.into_inner(), failed.into_inner())
    });
    (stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_come_and_go_under_load_without_a_failed_request() {
    let server = TestServer::start(&[PLAIN]).await;
    let (stop, task) = load(&server, "/plain");

    // A route added...
    manifest(
        &server,
        "plain",
        "[[routes]]\nprefix = \"/plain\"\n[[routes]]\nprefix = \"/greet\"\n",
    );
    let body = until_status(&server, "/greet", 200).await;
    assert_eq!(body, "Hello, world!\n");
    // ...and removed again.
    manifest(&server, "plain", "[[routes]]\nprefix = \"/plain\"\n");
    until_status(&server, "/greet", 404).await;
    let status = server.plugin_status("plain").await;
    assert_eq!(status["state"], "ready", "{status}");

    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = within(task).await.unwrap();
    eprintln!("{ok} requests during the edits, {failed} failed");
    assert!(ok > 20, "{ok}");
    assert_eq!(failed, 0);
}

#[tokio::test]
async fn a_revoked_grant_denies_the_next_request() {
    let server = TestServer::start(&[PROBE]).await;
    let c = client();
    let (status, _) = send(c.put(server.at("/probe/kv/k")).body("v")).await;
    assert_eq!(status, 204);
    manifest(&server, "probe", "[[routes]]\nprefix = \"/probe\"\n");
    let body = until_status(&server, "/probe/kv/k", 403).await;
    assert!(body.contains("access_denied"), "{body}");
    // Granted again: the data was never gone.
    manifest(&server, "probe", PROBE.manifest);
    let body = until_status(&server, "/probe/kv/k", 200).await;
    assert_eq!(body, "v");
}

#[tokio::test]
async fn a_bad_edit_is_refused_and_the_old_manifest_serves() {
    let server = TestServer::start(&[PLAIN]).await;
    let file = server.plugins_dir.join("plain.toml");
    let original = std::fs::read(&file).unwrap();
    let before = server.plugin_status("plain").await["manifest"]["sha256"].clone();
    manifest(
        &server,
        "plain",
        "[[routes]]\nprefix = \"/plain\"\n[limits]\nmemroy_mib = 3\n",
    );
    let status = within_for(Duration::from_secs(10), async {
        loop {
            let status = server.plugin_status("plain").await;
            if status["state"] == "degraded" {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let error = status["error"].as_str().unwrap();
    assert!(error.contains("plain.toml:5:"), "{error}");
    assert!(error.contains("memroy_mib"), "{error}");
    assert_eq!(
        status["manifest"]["sha256"], before,
        "the old manifest is in force"
    );
    let (code, body) = send(client().get(server.at("/plain"))).await;
    assert_eq!((code, body.as_str()), (200, "Hello, world!\n"));

    // Put back byte for byte as it is in force: ready again.
    std::fs::write(&file, original).unwrap();
    within_for(Duration::from_secs(10), async {
        while server.plugin_status("plain").await["state"] != "ready" {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn manifests_are_added_removed_and_refused_on_a_route_clash() {
    let server = TestServer::start(&[PLAIN]).await;
    // Added: a second plugin from a new manifest (its component first).
    std::fs::copy(
        guest("fixture_versioned_v2"),
        server.plugins_dir.join("ver.wasm"),
    )
    .unwrap();
    manifest(&server, "ver", "[[routes]]\nprefix = \"/ver\"\n");
    let body = until_status(&server, "/ver", 200).await;
    assert_eq!(body, "version 2");

    // A third claiming a route that is taken: refused, with the reason.
    std::fs::copy(
        guest("fixture_plain_hello"),
        server.plugins_dir.join("thief.wasm"),
    )
    .unwrap();
    manifest(&server, "thief", "[[routes]]\nprefix = \"/ver\"\n");
    let refusal = within_for(Duration::from_secs(10), async {
        loop {
            let (_, list) = send_json(
                client()
                    .get(server.at("/_spike/plugins"))
                    .bearer_auth(ADMIN_TOKEN),
            )
            .await;
            if let Some(r) = list["refused_manifests"].as_array().and_then(|r| r.first()) {
                return r.clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let reason = refusal["reason"].as_str().unwrap();
    assert!(
        reason.contains("already served by plugin 'ver'"),
        "{reason}"
    );
    assert!(refusal["path"].as_str().unwrap().ends_with("thief.toml"));
    let (_, body) = send(client().get(server.at("/ver"))).await;
    assert_eq!(body, "version 2", "the route stays with the first");

    // Removed: its routes go.
    std::fs::remove_file(server.plugins_dir.join("ver.toml")).unwrap();
    let body = until_status(&server, "/ver", 404).await;
    assert!(body.contains("no plugin serves"), "{body}");
}
