//! Hot swap: through the admin API and the file watcher, under load, with
//! refusals, rollback and restarts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use spike_e2e::*;

const VERSIONED: Plugin = Plugin {
    name: "ver",
    guest: "fixture_versioned_v1",
    manifest: "[[routes]]\nprefix = \"/ver\"\n",
};

fn bytes(guest_name: &str) -> Vec<u8> {
    std::fs::read(guest(guest_name)).unwrap()
}

async fn version(c: &reqwest::Client, server: &TestServer) -> String {
    let (status, body) = send(c.get(server.at("/ver"))).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn upload(
    c: &reqwest::Client,
    server: &TestServer,
    body: Vec<u8>,
) -> (u16, serde_json::Value) {
    send_json(
        c.put(server.at("/_spike/plugins/ver"))
            .bearer_auth(ADMIN_TOKEN)
            .body(body),
    )
    .await
}

async fn plugin_info(c: &reqwest::Client, server: &TestServer) -> serde_json::Value {
    let (status, list) =
        send_json(c.get(server.at("/_spike/plugins")).bearer_auth(ADMIN_TOKEN)).await;
    assert_eq!(status, 200);
    list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "ver")
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_swaps_under_load_drop_nothing() {
    let server = TestServer::start(&[VERSIONED]).await;
    let c = client();
    let (v1, v2) = (bytes("fixture_versioned_v1"), bytes("fixture_versioned_v2"));

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let load: Vec<_> = (0..8)
        .map(|_| {
            let (c, url) = (c.clone(), server.at("/ver"));
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match c.get(&url).send().await {
                        Ok(r) if r.status() == 200 => match r.text().await {
                            Ok(t) if t.starts_with("version ") => {
                                ok.fetch_add(1, Ordering::Relaxed)
                            }
                            _ => failed.fetch_add(1, Ordering::Relaxed),
                        },
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();

    for i in 0..20 {
        let (next, want) = if i % 2 == 0 {
            (&v2, "version 2")
        } else {
            (&v1, "version 1")
        };
        let (status, body) = upload(&c, &server, next.clone()).await;
        assert_eq!(status, 200, "{body}");
        // Once the swap is acknowledged, new requests get the new version.
        assert_eq!(version(&c, &server).await, want);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        within(task).await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("{ok} requests during 20 swaps, {failed} failed");
    assert_eq!(failed, 0);
    assert!(ok > 100, "only {ok} requests ran during the swaps");
}

#[tokio::test]
async fn requests_in_flight_finish_on_the_old_version() {
    let server = TestServer::start(&[VERSIONED]).await;
    let c = client();
    let slow = {
        let (c, url) = (c.clone(), server.at("/ver?sleep_ms=800"));
        tokio::spawn(async move { send(c.get(url)).await })
    };
    // Let the slow request get going on version 1, then swap under it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _) = upload(&c, &server, bytes("fixture_versioned_v2")).await;
    assert_eq!(status, 200);
    assert_eq!(version(&c, &server).await, "version 2");
    assert!(
        !slow.is_finished(),
        "the slow request should still be in flight"
    );
    let (status, body) = within(slow).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "version 1"));
}

#[tokio::test]
async fn refusals_rollback_and_auth() {
    let mut server = TestServer::start(&[VERSIONED]).await;
    let c = client();

    // Without the token, or with a wrong one: 401, nothing changes.
    let (status, body) = send_json(
        c.put(server.at("/_spike/plugins/ver"))
            .body(bytes("fixture_versioned_v2")),
    )
    .await;
    assert_eq!((status, error_code(&body)), (401, "unauthorized"));
    let (status, _) = send(c.get(server.at("/_spike/plugins")).bearer_auth("wrong")).await;
    assert_eq!(status, 401);
    let (status, _) = send(c.post(server.at("/_spike/plugins/ver/rollback"))).await;
    assert_eq!(status, 401);
    assert_eq!(version(&c, &server).await, "version 1");

    // Components that do not fit are refused with a reason; v1 keeps serving.
    let (status, body) = upload(&c, &server, bytes("fixture_not_a_plugin")).await;
    assert_eq!(
        (status, error_code(&body)),
        (422, "component_refused"),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("incoming-handler"),
        "{body}"
    );
    let (status, body) = upload(&c, &server, b"\0asm garbage".to_vec()).await;
    assert_eq!(
        (status, error_code(&body)),
        (422, "component_refused"),
        "{body}"
    );
    assert_eq!(version(&c, &server).await, "version 1");
    let info = plugin_info(&c, &server).await;
    assert_eq!(info["state"], "degraded");
    assert!(
        info["error"]
            .as_str()
            .unwrap()
            .contains("not a valid component"),
        "{info}"
    );

    let (status, body) = send_json(
        c.post(server.at("/_spike/plugins/ver/rollback"))
            .bearer_auth(ADMIN_TOKEN),
    )
    .await;
    assert_eq!((status, error_code(&body)), (409, "no_previous_version"));

    let (status, body) = upload(&c, &server, bytes("fixture_versioned_v2")).await;
    assert_eq!(status, 200);
    assert_eq!(body["version"]["source"], "upload");
    assert_eq!(version(&c, &server).await, "version 2");
    let info = plugin_info(&c, &server).await;
    assert_eq!(info["state"], "ready");
    assert_eq!(info["history"].as_array().unwrap().len(), 2);

    // An upload survives a restart (the file on disk did not change).
    server.restart().await;
    assert_eq!(version(&c, &server).await, "version 2");
    let info = plugin_info(&c, &server).await;
    assert_eq!(info["version"]["compile_cache"], "hit");

    let (status, body) = send_json(
        c.post(server.at("/_spike/plugins/ver/rollback"))
            .bearer_auth(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(version(&c, &server).await, "version 1");

    let (status, body) = send_json(
        c.put(server.at("/_spike/plugins/nope"))
            .bearer_auth(ADMIN_TOKEN)
            .body("x"),
    )
    .await;
    assert_eq!((status, error_code(&body)), (404, "not_found"));
}

async fn wait_for_version(c: &reqwest::Client, server: &TestServer, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if version(c, server).await == want {
            return;
        }
        assert!(Instant::now() < deadline, "still not {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn file_changes_swap_the_plugin() {
    let server = TestServer::start(&[VERSIONED]).await;
    let c = client();
    let file = server.plugins_dir.join("ver.wasm");
    assert_eq!(version(&c, &server).await, "version 1");

    std::fs::write(&file, bytes("fixture_versioned_v2")).unwrap();
    wait_for_version(&c, &server, "version 2").await;

    // A broken file is refused; the running version stays.
    std::fs::write(&file, bytes("fixture_not_a_plugin")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info = plugin_info(&c, &server).await;
        if info["error"].is_string() {
            assert_eq!(info["state"], "degraded");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the broken file was never noticed: {info}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(version(&c, &server).await, "version 2");

    // Replaced by rename, as deploy tools do.
    let tmp = server.plugins_dir.join("ver.wasm.new");
    std::fs::write(&tmp, bytes("fixture_versioned_v1")).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    wait_for_version(&c, &server, "version 1").await;
}
