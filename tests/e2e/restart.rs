//! A graceful stop and a start again, as an operator's supervisor does
//! them: SIGTERM stops accepting, lets a request in flight finish, closes
//! every room socket (chat, Yjs, LiveStore) with 1001 and a hint to come
//! back, writes its last log line and exits 0; started again on the same
//! data, every plugin, room, document and store is there as acknowledged.

use std::time::Duration;

use futures::SinkExt;
use spike_e2e::livestore_wire::{event, push};
use spike_e2e::process::SpikeProcess;
use spike_e2e::rooms::{RoomClient, tungstenite::Message, ws_url};
use spike_e2e::yjs_wire;
use spike_e2e::*;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::connect_async;

const ROOMS: Plugin = Plugin {
    name: "rooms",
    guest: "",
    manifest: "[[rooms]]\nprefix = \"/chat\"\n\
               [[rooms]]\nprefix = \"/yjs\"\nprotocol = \"yjs\"\n\
               [[rooms]]\nprefix = \"/livestore\"\nprotocol = \"livestore\"\n",
};

const UPLOAD: usize = 2 << 20;

fn upload_byte(i: usize) -> u8 {
    (i % 251) as u8
}

/// Waits until a new connection to `addr` is refused.
async fn refused(addr: std::net::SocketAddr) {
    within(async {
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_tells_room_members_and_a_restart_resumes_everything() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    write_plugins(&plugins, &[HELLO, ROOMS]);
    let log = dir.path().join("spike.log");
    let mut spike = SpikeProcess::new("spike", &plugins, &dir.path().join("data"), log, &[]);
    spike.restart().await;
    let c = client();

    // Acknowledged state of each kind.
    for _ in 0..3 {
        let (status, _) = send(c.post(spike.at("/hello/counter"))).await;
        assert_eq!(status, 200);
    }
    let mut chat = RoomClient::join(&ws_url(&spike.url, "/chat/lobby")).await;
    for i in 0..5 {
        chat.send(&format!("message {i}")).await;
        assert_eq!(chat.next_of("event").await["seq"], i + 1);
    }
    let store_url = ws_url(&spike.url, "/livestore?storeId=s&transport=ws");
    let mut store = RoomClient::open(&store_url, None).await.unwrap();
    store
        .send(&push("1", "s", (1..=3).map(event).collect(), None))
        .await;
    assert_eq!(store.next().await["exit"]["_tag"], "Success");
    let doc_url = ws_url(&spike.url, "/yjs/notes");
    let (mut writer, _) = within(connect_async(&doc_url)).await.unwrap();
    let mut observer = RoomClient::open(&doc_url, None).await.unwrap();
    let update = yjs_wire::append(7, 0, None, "hello");
    let message = Message::binary(yjs_wire::update_message(&update));
    within(writer.send(message)).await.unwrap();
    // Relayed to the observer: stored.
    within(async {
        loop {
            let Message::Binary(bytes) = observer.next_message().await else {
                continue;
            };
            if yjs_wire::update_heads(&bytes).is_some_and(|h| h.contains(&(7, 0))) {
                return;
            }
        }
    })
    .await;

    // An upload in flight when the signal comes: half its body sent.
    let mut upload = raw_connect(spike.addr).await;
    let head = format!(
        "PUT /hello/files/big HTTP/1.1\r\nhost: x\r\ncontent-length: {UPLOAD}\r\nconnection: close\r\n\r\n"
    );
    let body: Vec<u8> = (0..UPLOAD).map(upload_byte).collect();
    upload.write_all(head.as_bytes()).await.unwrap();
    upload.write_all(&body[..UPLOAD / 2]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    spike.signal("TERM");
    // Every room socket is told, with a code a client reconnects on.
    for (code, reason) in [
        chat.closed().await,
        store.closed().await,
        observer.closed().await,
    ] {
        assert_eq!(code, 1001, "{reason}");
        assert!(reason.contains("reconnect"), "{reason}");
    }
    // No new connection, while the upload still finishes.
    refused(spike.addr).await;
    upload.write_all(&body[UPLOAD / 2..]).await.unwrap();
    let answer = read_response(&mut upload, Duration::from_secs(20)).await;
    assert_eq!(
        answer.status,
        201,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let status = spike.exited(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}");
    let log = spike.log();
    assert!(
        log.trim_end().ends_with("spike stopped"),
        "the last line says so: {}",
        &log[log.len().saturating_sub(400)..]
    );

    // Started again: everything acknowledged is there.
    spike.restart().await;
    let (_, count) = send_json(c.get(spike.at("/hello/counter"))).await;
    assert_eq!(count["count"], 3);
    let file = within(c.get(spike.at("/hello/files/big")).send())
        .await
        .unwrap();
    assert_eq!(file.status(), 200);
    assert!(
        within(file.bytes()).await.unwrap() == body,
        "the upload, whole"
    );
    let mut chat = RoomClient::join(&ws_url(&spike.url, "/chat/lobby?since=0")).await;
    assert_eq!(chat.welcome["seq"], 5);
    for i in 0..5 {
        assert_eq!(chat.next_of("event").await["data"], format!("message {i}"));
    }
    chat.send("after the restart").await;
    assert_eq!(chat.next_of("event").await["seq"], 6);
    let mut store = RoomClient::open(&store_url, None).await.unwrap();
    store.send(&push("2", "s", vec![event(4)], None)).await;
    assert_eq!(
        store.next().await["exit"]["_tag"],
        "Success",
        "events 1-3 are there"
    );
    let vector = yjs_wire::state_vector_at(&doc_url).await;
    assert_eq!(vector.get(&7), Some(&5), "the Yjs edit is there");
    let status = spike.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_outlasts_the_drain_timeout_is_cut_and_the_stop_ends() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    write_plugins(&plugins, &[HELLO]);
    let log = dir.path().join("spike.log");
    let data = dir.path().join("data");
    let mut spike = SpikeProcess::new(
        "spike",
        &plugins,
        &data,
        log,
        &["--drain-timeout-secs", "1"],
    );
    spike.restart().await;
    // An upload whose client stops sending, as one on a dying network.
    let mut upload = raw_connect(spike.addr).await;
    let head = "PUT /hello/files/stuck HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\n\r\n";
    upload.write_all(head.as_bytes()).await.unwrap();
    upload.write_all(&[b'x'; 1000]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let status = spike.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}");
    // The drain (1 s), then the stalled upload is cut, its guest dropped.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "the stop took {took:?}");
    assert!(spike.log().contains("connections still open after 1s"));
    // The cut upload left nothing behind.
    spike.restart().await;
    let (status, _) = send(client().get(spike.at("/hello/files/stuck"))).await;
    assert_eq!(status, 404);
}
