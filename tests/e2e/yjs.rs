//! Yjs rooms with unmodified clients from npm (`yjs` 13.6 and `y-websocket`
//! 3.1 in Node, `ws` as their WebSocket): editing together, a late joiner,
//! a restart, awareness.

use serde_json::json;
use spike_e2e::node::{YJS, YjsPeer};
use spike_e2e::rooms::ws_url;
use spike_e2e::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn y_websocket_clients_collaborate_and_late_joiners_get_everything() {
    let server = TestServer::start(&[YJS]).await;
    let url = ws_url(&server.url, "/yjs");
    let mut ann = YjsPeer::start(&url, "notes").await;
    let mut bob = YjsPeer::start(&url, "notes").await;
    ann.synced().await;
    bob.synced().await;
    // At the same time, at the same place: both converge.
    let text = ann.edit_together(&mut bob).await;

    // Awareness: seen by the others, gone when its client leaves.
    ann.command(json!({"op": "presence", "state": {"user": "ann"}}))
        .await;
    bob.until("ann's presence", |d| d["peers"] == json!([{"user": "ann"}]))
        .await;
    let mut carl = YjsPeer::start(&url, "notes").await;
    carl.synced().await;
    carl.text_is(&text).await;
    carl.until("ann's presence", |d| d["peers"] == json!([{"user": "ann"}]))
        .await;
    ann.quit().await;
    bob.until("ann gone", |d| d["peers"] == json!([])).await;

    // Another document is another room.
    let mut other = YjsPeer::start(&url, "other").await;
    other.synced().await;
    assert_eq!(other.dump().await["text"], "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_survive_a_restart_and_compaction() {
    let compacting = Plugin {
        manifest: "[[rooms]]\nprefix = \"/yjs\"\nprotocol = \"yjs\"\ncompact_every = 10\n",
        ..YJS
    };
    let mut server = TestServer::start(&[compacting]).await;
    let url = ws_url(&server.url, "/yjs");
    let mut writer = YjsPeer::start(&url, "kept").await;
    writer.synced().await;
    let mut want = String::new();
    for k in 0..25 {
        let piece = format!("{k},");
        writer.insert(want.len(), &piece).await;
        want.push_str(&piece);
    }
    // Another client has it all: the server has stored it all.
    let mut reader = YjsPeer::start(&url, "kept").await;
    reader.synced().await;
    reader.text_is(&want).await;
    writer.quit().await;
    reader.quit().await;

    server.restart().await;
    let url = ws_url(&server.url, "/yjs");
    let mut fresh = YjsPeer::start(&url, "kept").await;
    fresh.synced().await;
    fresh.text_is(&want).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_frames_and_garbage_close_only_their_connection() {
    use spike_e2e::rooms::{RoomClient, tungstenite::Message};
    let server = TestServer::start(&[YJS]).await;
    let url = ws_url(&server.url, "/yjs");
    let mut editor = YjsPeer::start(&url, "sturdy").await;
    editor.synced().await;
    // A text frame: 1003.
    let mut texting = RoomClient::open(&format!("{url}/sturdy"), None)
        .await
        .unwrap();
    texting.send("hello").await;
    assert_eq!(texting.closed().await.0, 1003);
    // Bytes that are not y-protocols: 1007.
    let mut garbage = RoomClient::open(&format!("{url}/sturdy"), None)
        .await
        .unwrap();
    garbage
        .send_message(Message::binary(vec![0u8, 1, 255, 255, 255, 255, 255]))
        .await;
    assert_eq!(garbage.closed().await.0, 1007);
    editor.insert(0, "still fine").await;
    let mut other = YjsPeer::start(&url, "sturdy").await;
    other.synced().await;
    other.text_is("still fine").await;
}

fn with_handler(read_only: bool) -> String {
    format!(
        "[[rooms]]\nprefix = \"/yjs\"\nprotocol = \"yjs\"\n[env]\nREAD_ONLY = \"{read_only}\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_handler_sees_updates_and_can_refuse_them() {
    for read_only in [false, true] {
        let manifest = with_handler(read_only);
        let handled = Plugin {
            name: "yjs",
            guest: "fixture_room_faults_v1",
            manifest: &manifest,
        };
        let server = TestServer::start(&[handled]).await;
        let url = ws_url(&server.url, "/yjs");
        let mut writer = YjsPeer::start(&url, "guarded").await;
        writer.synced().await;
        writer.insert(0, "change").await;
        let mut reader = YjsPeer::start(&url, "guarded").await;
        reader.synced().await;
        if read_only {
            // Give the refused update every chance to arrive: it must not.
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            assert_eq!(reader.dump().await["text"], "");
        } else {
            reader.text_is("change").await;
        }
        let metrics = server.metrics_text().await;
        assert!(
            metrics.contains(r#"spike_room_handler_calls_total{plugin="yjs",kind="ok"}"#),
            "{metrics}"
        );
        assert_eq!(
            metrics.contains("spike_room_events_total{plugin=\"yjs\"} 0"),
            read_only,
            "{metrics}"
        );
    }
}

/// A y-websocket client cannot read a JSON error frame: past its rate it
/// is closed, and its provider reconnects and syncs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_client_is_closed_not_silently_dropped() {
    use spike_e2e::rooms::{RoomClient, tungstenite::Message};
    let limited = Plugin {
        manifest: "[[rooms]]\nprefix = \"/yjs\"\nprotocol = \"yjs\"\nmessages_per_s = 5\n",
        ..YJS
    };
    let server = TestServer::start(&[limited]).await;
    let url = ws_url(&server.url, "/yjs/busy");
    let mut flood = RoomClient::open(&url, None).await.unwrap();
    // Awareness queries: valid, and each answered, so only the rate stops them.
    for _ in 0..20 {
        flood.send_message(Message::binary(vec![3u8])).await;
    }
    let (code, reason) = flood.closed().await;
    assert_eq!(code, 1008, "{reason}");
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains(r#"spike_room_closes_total{plugin="yjs",kind="rate_limited"} 1"#),
        "{metrics}"
    );
}
