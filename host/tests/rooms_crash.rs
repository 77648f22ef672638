//! `kill -9` of the server in the middle of a burst of room messages:
//! after a restart, every event the room acknowledged is there, with the
//! same content, and the log has no gap.

mod common;

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

type Socket = WebSocket<MaybeTlsStream<TcpStream>>;

fn join(addr: &str, path: &str) -> (Socket, Value) {
    let (mut ws, _) = tungstenite::connect(format!("ws://{addr}{path}")).unwrap();
    if let MaybeTlsStream::Plain(stream) = ws.get_mut() {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
    }
    let welcome = next_frame(&mut ws).expect("a welcome");
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (ws, welcome)
}

/// The next JSON frame; `None` once the connection is gone.
fn next_frame(ws: &mut Socket) -> Option<Value> {
    loop {
        match ws.read() {
            Ok(Message::Text(text)) => return Some(serde_json::from_str(&text).unwrap()),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// Two senders burst `BURST` messages each into the room; returns the
/// events acknowledged to the first (stored, numbered, sent back) once
/// `acks` of them have come back, the server still writing.
fn burst(addr: &str, round: usize, acks: usize) -> BTreeMap<u64, String> {
    const BURST: usize = 3000;
    let mut senders: Vec<(Socket, String)> = (0..2)
        .map(|_| {
            let (ws, welcome) = join(addr, "/chat/crash");
            (ws, welcome["connection"].as_str().unwrap().to_string())
        })
        .collect();
    for (i, (ws, _)) in senders.iter_mut().enumerate() {
        for k in 0..BURST {
            ws.write(Message::text(format!("{round}.{i}:{k}"))).unwrap();
        }
        ws.flush().unwrap();
    }
    let mut acked = BTreeMap::new();
    let (ws, me) = &mut senders[0];
    let started = Instant::now();
    while acked.len() < acks {
        assert!(started.elapsed() < Duration::from_secs(30), "too slow");
        let event = next_frame(ws).expect("the server is up");
        if event["type"] == "event" && event["from"] == me.as_str() {
            let seq = event["seq"].as_u64().unwrap();
            acked.insert(seq, event["data"].as_str().unwrap().to_string());
        }
    }
    acked
}

/// Every event of the room from the start: numbered 1 to the head with
/// no gap or repeat, each sender's messages in their order.
fn whole_log(addr: &str) -> BTreeMap<u64, String> {
    let (mut ws, welcome) = join(addr, "/chat/crash?since=0");
    let head = welcome["seq"].as_u64().unwrap();
    let mut stored = BTreeMap::new();
    let mut last_of: BTreeMap<String, usize> = BTreeMap::new();
    while (stored.len() as u64) < head {
        let frame = next_frame(&mut ws).expect("catch-up");
        if frame["type"] != "event" {
            continue;
        }
        let seq = frame["seq"].as_u64().unwrap();
        assert_eq!(seq, stored.len() as u64 + 1, "a gap or a repeat: {frame}");
        let data = frame["data"].as_str().unwrap().to_string();
        let (sender, k) = data.split_once(':').unwrap();
        let k: usize = k.parse().unwrap();
        let last = last_of.insert(sender.to_string(), k);
        assert!(
            last.is_none_or(|last| k == last + 1),
            "{data} after {last:?}"
        );
        stored.insert(seq, data);
    }
    stored
}

#[test]
fn acknowledged_room_events_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    // Nothing compacted away: the whole log is checked after each kill.
    std::fs::write(
        plugins.join("rooms.toml"),
        "[[rooms]]\nprefix = \"/chat\"\nmessages_per_s = 1000000\ncompact_every = 1000000\n",
    )
    .unwrap();
    // Three bursts, each cut by kill -9; after every restart the whole log
    // is read back.
    let mut acked = BTreeMap::new();
    for round in 0..=3 {
        let mut spike = Spike::start_in(dir.path(), &["--log-format", "json"], &[]);
        let addr = spike.serving_addr();
        wait_ready(&addr);
        let stored = whole_log(&addr);
        for (seq, data) in &acked {
            assert_eq!(stored.get(seq), Some(data), "acknowledged event {seq} lost");
        }
        if round == 3 {
            assert!(
                stored.len() < 3 * 6000,
                "the kills came before the bursts ended"
            );
            spike.stop();
            break;
        }
        acked.extend(burst(&addr, round, 400));
        spike.child.kill().unwrap();
        spike.child.wait().unwrap();
    }
}
