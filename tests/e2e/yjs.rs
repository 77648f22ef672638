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

/// Sync step 1 with an empty state vector: "send me everything".
const STEP1_EMPTY: [u8; 4] = [0, 0, 1, 0];

/// A document of `bytes` ASCII characters, written by a client that then
/// waits for its own update to come back (stored).
async fn write_document(url: &str, bytes: usize) {
    use spike_e2e::rooms::{RoomClient, tungstenite::Message};
    use spike_e2e::yjs_wire::{append, update_message};
    let mut writer = RoomClient::open(url, None).await.unwrap();
    let update = update_message(&append(1, 0, None, &"x".repeat(bytes)));
    writer.send_message(Message::binary(update)).await;
    loop {
        if let Message::Binary(b) = writer.next_message().await
            && b.len() > bytes
        {
            break;
        }
    }
    writer.close().await;
}

/// The hostile probe's amplification: one small frame of many sync step
/// 1s was answered once per message (600 copies of a 1 MiB document for a
/// 2,400-byte frame). A frame is answered once per kind, and each of its
/// messages counts against `messages_per_s`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_frame_of_many_queries_is_answered_once_and_counted_per_message() {
    use spike_e2e::rooms::{RoomClient, tungstenite::Message};
    let server = TestServer::start(&[YJS]).await;
    let url = ws_url(&server.url, "/yjs/big");
    write_document(&url, 1 << 20).await;
    let mut asker = RoomClient::open(&url, None).await.unwrap();
    assert!(matches!(asker.next_message().await, Message::Binary(_)));
    // 40 sync step 1s and 40 awareness queries: within the rate (100 a
    // second).
    let frame: Vec<u8> = (0..40)
        .flat_map(|_| [&STEP1_EMPTY[..], &[3]].concat())
        .collect();
    asker.send_message(Message::binary(frame)).await;
    let mut answers = Vec::new();
    let wait = std::time::Duration::from_millis(1500);
    while let Some(message) = asker.message_within(wait).await {
        match message {
            Message::Binary(b) => answers.push(b.len()),
            Message::Close(close) => panic!("closed: {close:?}"),
            _ => {}
        }
    }
    assert_eq!(
        answers.len(),
        2,
        "one sync step 2 and one awareness answer: {answers:?}"
    );
    assert!(answers.iter().any(|n| *n > 1 << 20), "{answers:?}");
    // 600 in one frame: past 100 messages a second, the sender is closed.
    let frame: Vec<u8> = STEP1_EMPTY.repeat(600);
    asker.send_message(Message::binary(frame)).await;
    let (code, reason) = asker.closed().await;
    assert_eq!(
        (code, reason.as_str()),
        (1008, "too many messages a second")
    );
}

/// The same attack by a client that stops reading, against a spike
/// process of its own: its memory stays flat (before: 377 → 919 MiB with
/// one 2,400-byte frame), and so do the awareness queries of another
/// (before: 1,000 one-byte queries against 512 KiB of states, 378 → 817
/// MiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_asks_much_and_reads_nothing_costs_the_server_little() {
    use spike_e2e::process::SpikeProcess;
    use spike_e2e::rooms::{RoomClient, tungstenite::Message};
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    write_plugins(&plugins, &[YJS]);
    let log = dir.path().join("spike.log");
    let mut spike = SpikeProcess::new("spike", &plugins, &dir.path().join("data"), log, &[]);
    spike.spawn();
    spike.wait_ready().await;
    let url = ws_url(&spike.url, "/yjs/big");
    write_document(&url, 1 << 20).await;
    // Awareness states as large as the room keeps (1 MiB in all).
    let mut states = RoomClient::open(&url, None).await.unwrap();
    for client in 0..3u64 {
        let json = format!(r#"{{"pad":"{}"}}"#, "s".repeat(300 << 10));
        states
            .send_message(Message::binary(awareness_message(client + 10, &json)))
            .await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let watch = RssWatch::of(spike.pid().to_string());
    let mut deaf = Vec::new();
    for round in 0..4 {
        let mut asker = RoomClient::open(&url, None).await.unwrap();
        let frame: Vec<u8> = if round % 2 == 0 {
            STEP1_EMPTY.repeat(600)
        } else {
            vec![3; 1000]
        };
        asker.send_message(Message::binary(frame)).await;
        deaf.push(asker); // never read
    }
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let growth = watch.growth();
    assert!(
        growth < 64 << 20,
        "the server grew by {} MiB for four small frames",
        growth >> 20
    );
    // The room still serves.
    let mut reader = RoomClient::open(&url, None).await.unwrap();
    assert!(matches!(reader.next_message().await, Message::Binary(_)));
    drop(deaf);
}

/// y-protocols' awareness message for one client's state.
fn awareness_message(client: u64, json: &str) -> Vec<u8> {
    fn var(out: &mut Vec<u8>, mut n: u64) {
        while n >= 0x80 {
            out.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }
    let mut update = Vec::new();
    var(&mut update, 1);
    var(&mut update, client);
    var(&mut update, 1); // clock
    var(&mut update, json.len() as u64);
    update.extend_from_slice(json.as_bytes());
    let mut message = vec![1];
    var(&mut message, update.len() as u64);
    message.extend_from_slice(&update);
    message
}

/// A document's log is bounded (`max_log_mib`; the hostile probe: Yjs
/// logs were anonymous, uncapped writers): an update past it is not
/// stored, its sender is closed with 1008 "the room's log is full", and
/// the document keeps what it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_past_its_log_quota_takes_no_more() {
    use spike_e2e::rooms::{RoomClient, tungstenite::Message};
    use spike_e2e::yjs_wire::{append, update_message};
    let limited = Plugin {
        manifest: "[[rooms]]\nprefix = \"/yjs\"\nprotocol = \"yjs\"\nmax_log_mib = 1\n",
        ..YJS
    };
    let server = TestServer::start(&[limited]).await;
    let url = ws_url(&server.url, "/yjs/full");
    let mut writer = RoomClient::open(&url, None).await.unwrap();
    let chunk = "y".repeat(300 << 10);
    let mut clock = 0u64;
    let mut stored = 0;
    let closed = loop {
        let after = (clock > 0).then(|| (1, clock - 1));
        let update = update_message(&append(1, clock, after, &chunk));
        writer.send_message(Message::binary(update)).await;
        // Its own update comes back once stored; a close if refused.
        let answer = loop {
            match writer.next_message().await {
                Message::Binary(b) if b.len() > chunk.len() => break None,
                Message::Close(frame) => break Some(frame),
                _ => {}
            }
        };
        match answer {
            None => {
                stored += 1;
                clock += chunk.len() as u64;
            }
            Some(frame) => break frame,
        }
        assert!(stored < 10, "never refused");
    };
    let frame = closed.expect("a close frame");
    assert_eq!(
        (u16::from(frame.code), frame.reason.as_str()),
        (1008, "the room's log is full")
    );
    assert_eq!(stored, 3, "three of 300 KiB fit in 1 MiB");
    // What was stored stays: a new client syncs three chunks' worth.
    let sv = spike_e2e::yjs_wire::state_vector_at(&url).await;
    assert_eq!(sv.get(&1), Some(&clock));
}
