//! Rooms over real WebSockets: order, catch-up, the text protocol's
//! convergence, limits and bad input, restarts.

use std::collections::BTreeMap;

use serde_json::Value;
use spike_e2e::rooms::*;
use spike_e2e::*;

fn plugin(manifest: &str) -> Plugin<'_> {
    Plugin {
        name: "rooms",
        guest: "",
        manifest,
    }
}

/// Reads events until `n` have arrived; checks they are numbered
/// `first..first + n` with no gap or repeat.
async fn events(client: &mut RoomClient, first: u64, n: usize) -> Vec<Value> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let event = client.next_event().await;
        let want = first + got.len() as u64;
        assert_eq!(event["seq"], want, "out of order: {event}");
        got.push(event);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_gets_every_event_once_in_one_order() {
    let server = TestServer::start(&[ROOMS]).await;
    // The admin API lists where a room plugin's sockets connect.
    let status = server.plugin_status("rooms").await;
    assert_eq!(
        status["rooms"],
        serde_json::json!([
            {"path": "/room/{doc}", "protocol": "text"},
            {"path": "/chat/{id}", "protocol": "relay"}
        ]),
        "{status}"
    );
    let url = ws_url(&server.url, "/chat/order");
    const CLIENTS: usize = 6;
    const EACH: usize = 40;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(RoomClient::join(&url).await);
    }
    assert_eq!(clients[0].welcome["protocol"], "relay");
    assert_eq!(clients[0].welcome["seq"], 0);
    assert_eq!(clients[CLIENTS - 1].welcome["member_count"], CLIENTS);
    // Everyone sends at once and reads at once.
    let mut tasks = Vec::new();
    for (i, mut client) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let me = client.id();
            let sending = async {
                for k in 0..EACH {
                    client.send(&format!("{i}:{k}")).await;
                }
            };
            // Sends interleave with reads on one socket: send first, the
            // queue holds what arrives meanwhile.
            sending.await;
            let got = events(&mut client, 1, CLIENTS * EACH).await;
            (me, got)
        }));
    }
    let mut orders = Vec::new();
    for task in tasks {
        orders.push(within(task).await.unwrap());
    }
    let first: Vec<&Value> = orders[0].1.iter().map(|e| &e["data"]).collect();
    for (me, got) in &orders {
        let seen: Vec<&Value> = got.iter().map(|e| &e["data"]).collect();
        assert_eq!(seen, first, "every member sees one order");
        // Each sender's own messages keep their order, under its id.
        let mine: Vec<&str> = (got.iter())
            .filter(|e| e["from"] == me.as_str())
            .map(|e| e["data"].as_str().unwrap())
            .collect();
        assert_eq!(mine.len(), EACH);
        let i = mine[0].split(':').next().unwrap();
        let want: Vec<String> = (0..EACH).map(|k| format!("{i}:{k}")).collect();
        assert_eq!(mine, want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_with_since_catches_up_then_goes_live() {
    let server = TestServer::start(&[ROOMS]).await;
    let url = ws_url(&server.url, "/chat/catch-up");
    let mut writer = RoomClient::join(&url).await;
    for k in 1..=10 {
        writer.send(&format!("m{k}")).await;
    }
    events(&mut writer, 1, 10).await;
    let mut late = RoomClient::join(&format!("{url}?since=4")).await;
    assert_eq!(late.welcome["seq"], 10);
    let caught: Vec<Value> = events(&mut late, 5, 6).await;
    assert_eq!(caught[0]["data"], "m5");
    assert_eq!(caught[5]["data"], "m10");
    writer.send("live").await;
    let live = late.next_event().await;
    assert_eq!(
        (live["seq"].as_u64(), live["data"].as_str()),
        (Some(11), Some("live"))
    );
    // Up to date, or ahead: nothing to catch up.
    let mut current = RoomClient::join(&format!("{url}?since=11")).await;
    writer.send("next").await;
    assert_eq!(current.next_event().await["seq"], 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_logs_catch_up_from_a_snapshot_and_survive_a_restart() {
    let rooms = "[[rooms]]\nprefix = \"/chat\"\ncompact_every = 10\n\
                 [[rooms]]\nprefix = \"/room\"\nprotocol = \"text\"\ncompact_every = 10\n";
    let mut server = TestServer::start(&[plugin(rooms)]).await;
    let chat = ws_url(&server.url, "/chat/long");
    let mut writer = RoomClient::join(&chat).await;
    for k in 1..=35 {
        writer.send(&format!("m{k}")).await;
    }
    events(&mut writer, 1, 35).await;
    let text_url = ws_url(&server.url, "/room/doc");
    let mut editor = RoomClient::join(&text_url).await;
    for k in 0..25u64 {
        let op = format!(r#"{{"type":"insert","position":{k},"content":"x","seq":{k}}}"#);
        editor.send(&op).await;
        assert_eq!(editor.next_event().await["seq"], k + 1);
    }
    writer.close().await;
    editor.close().await;
    server.restart().await;

    // The relay log kept the last events: an old `since` gets a snapshot
    // frame (what was dropped), then every event kept, in order.
    let chat = ws_url(&server.url, "/chat/long");
    let mut late = RoomClient::join(&format!("{chat}?since=2")).await;
    assert_eq!(late.welcome["seq"], 35);
    let snapshot = late.next_of("snapshot").await;
    let from = snapshot["seq"].as_u64().unwrap();
    assert!((1..35).contains(&from), "{snapshot}");
    let kept = events(&mut late, from + 1, (35 - from) as usize).await;
    assert_eq!(kept.last().unwrap()["data"], "m35");
    // The text room starts over from its text when `since` is too old, and
    // a fresh join gets the text and its number.
    let text_url = ws_url(&server.url, "/room/doc");
    let fresh = RoomClient::join(&text_url).await;
    assert_eq!(fresh.welcome["text"], "x".repeat(25));
    assert_eq!(fresh.welcome["seq"], 25);
    let old = RoomClient::join(&format!("{text_url}?since=1")).await;
    assert_eq!(old.welcome["text"], "x".repeat(25));
    let recent = RoomClient::join(&format!("{text_url}?since=24")).await;
    assert_eq!(recent.welcome.get("text"), None);
}

/// Three editors type into one text room at once, each sending edits
/// made against the last `seq` it has seen, without waiting for answers;
/// all end with the owner's text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_editors_converge() {
    let server = TestServer::start(&[ROOMS]).await;
    let url = ws_url(&server.url, "/room/shared");
    const EDITORS: u64 = 3;
    const ROUNDS: u64 = 60;
    let mut tasks = Vec::new();
    for e in 0..EDITORS {
        let mut client = RoomClient::join(&url).await;
        tasks.push(tokio::spawn(async move {
            // Editors that join after the first has started get its text.
            let mut text: Vec<u16> = client.welcome["text"].as_str().unwrap().encode_utf16().collect();
            let mut seq = client.welcome["seq"].as_u64().unwrap();
            let mut seed = 0x9E3779B97F4A7C15u64.wrapping_mul(e + 1);
            let mut random = move |n: usize| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed % n.max(1) as u64) as usize
            };
            let total = EDITORS * ROUNDS;
            let mut sent = 0;
            while seq < total {
                if sent < ROUNDS {
                    let len = text.len();
                    let op = match random(3) {
                        0 | 1 if len > 0 && random(2) == 0 => {
                            let at = random(len);
                            let n = 1 + random((len - at).min(3));
                            format!(
                                r#"{{"type":"replace","position":{at},"length":{n},"content":"{e}","seq":{seq}}}"#
                            )
                        }
                        0 if len > 0 => {
                            let at = random(len);
                            let n = 1 + random((len - at).min(4));
                            format!(r#"{{"type":"delete","position":{at},"length":{n},"seq":{seq}}}"#)
                        }
                        _ => {
                            let at = random(len + 1);
                            format!(
                                r#"{{"type":"insert","position":{at},"content":"{e}{e}","seq":{seq}}}"#
                            )
                        }
                    };
                    client.send(&op).await;
                    sent += 1;
                }
                // Take what has arrived (at least one event once done
                // sending).
                loop {
                    let frame = if sent < ROUNDS {
                        match tokio::time::timeout(
                            std::time::Duration::from_millis(random(3) as u64),
                            client.next(),
                        )
                        .await
                        {
                            Ok(frame) => frame,
                            Err(_) => break,
                        }
                    } else {
                        client.next().await
                    };
                    match frame["type"].as_str() {
                        Some("op") => {
                            assert_eq!(frame["seq"], seq + 1, "{frame}");
                            seq += 1;
                            apply(&mut text, &frame["ops"]);
                        }
                        Some("join" | "leave") => {}
                        _ => panic!("editor {e}: {frame}"),
                    }
                    if sent == ROUNDS {
                        break;
                    }
                }
            }
            (String::from_utf16(&text).unwrap(), client)
        }));
    }
    let mut texts = Vec::new();
    for task in tasks {
        let (text, client) = within(task).await.unwrap();
        texts.push(text);
        client.close().await;
    }
    assert!(texts.iter().all(|t| *t == texts[0]), "{texts:#?}");
    let late = RoomClient::join(&url).await;
    assert_eq!(late.welcome["text"], texts[0]);
    assert_eq!(late.welcome["seq"], EDITORS * ROUNDS);
}

/// Applies a broadcast `ops` list the way a client does.
fn apply(text: &mut Vec<u16>, ops: &Value) {
    for op in ops.as_array().unwrap() {
        let at = op["position"].as_u64().unwrap() as usize;
        let content: Vec<u16> = op["content"]
            .as_str()
            .unwrap_or("")
            .encode_utf16()
            .collect();
        let length = op["length"].as_u64().unwrap_or(0) as usize;
        match op["type"].as_str().unwrap() {
            "insert" => {
                text.splice(at..at, content);
            }
            "delete" => {
                text.drain(at..at + length);
            }
            "replace" => {
                text.splice(at..at + length, content);
            }
            other => panic!("op type {other}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_rooms_refuse_bad_edits_without_closing() {
    let server = TestServer::start(&[ROOMS]).await;
    let mut client = RoomClient::join(&ws_url(&server.url, "/room/strict")).await;
    assert_eq!(client.welcome["text"], "");
    for (bad, needle) in [
        (
            r#"{"type":"insert","position":5,"content":"x","seq":0}"#,
            "past the end",
        ),
        (
            r#"{"type":"insert","position":0,"content":"x"}"#,
            "seq is required",
        ),
        (
            r#"{"type":"insert","position":0,"content":"x","seq":9}"#,
            "ahead of the room",
        ),
        (r#"{"type":"rotate","position":0,"seq":0}"#, "rotate"),
        ("plain words", "expected"),
    ] {
        client.send(bad).await;
        let error = client.next_of("error").await;
        assert_eq!(error["code"], "bad_edit", "{bad}: {error}");
        assert!(
            error["message"].as_str().unwrap().contains(needle),
            "{bad}: {error}"
        );
    }
    client
        .send(r#"{"type":"insert","position":0,"content":"ok","seq":0}"#)
        .await;
    let op = client.next_event().await;
    assert_eq!(op["seq"], 1, "refused edits take no number: {op}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_announces_joins_and_leaves() {
    let server = TestServer::start(&[ROOMS]).await;
    let url = ws_url(&server.url, "/chat/presence");
    let mut first = RoomClient::join(&url).await;
    let second = RoomClient::join(&url).await;
    assert_eq!(
        second.welcome["members"][0]["connection"],
        first.id().as_str()
    );
    let joined = first.next_of("join").await;
    assert_eq!(joined["connection"], second.id().as_str());
    assert_eq!(joined["member_count"], 2);
    let id = second.id();
    second.close().await;
    let left = first.next_of("leave").await;
    assert_eq!(
        (left["connection"].as_str(), left["member_count"].as_u64()),
        (Some(id.as_str()), Some(1))
    );
    // A client that vanishes without a close frame leaves too, and is not
    // counted as a malformed one.
    let raw = raw_websocket(server.addr(), "/chat/presence").await;
    first.next_of("join").await;
    drop(raw);
    assert_eq!(first.next_of("leave").await["member_count"], 1);
    let metrics = server.metrics_text().await;
    assert!(!metrics.contains("kind=\"malformed\""), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_before_the_upgrade_are_json() {
    let rooms = "[[rooms]]\nprefix = \"/chat\"\nmax_connections = 2\n";
    let server = TestServer::start(&[plugin(rooms)]).await;
    let (status, body) = send_json(client().get(server.at("/chat/a"))).await;
    assert_eq!(
        (status, error_code(&body)),
        (426, "upgrade_required"),
        "{body}"
    );
    let (status, body) = send_json(client().get(server.at("/chat/a/b"))).await;
    assert_eq!((status, error_code(&body)), (404, "not_found"), "{body}");
    let refused = RoomClient::try_join(&ws_url(&server.url, "/chat/a?since=x")).await;
    assert_eq!(refused_status(&refused.err().unwrap()), 400);
    let url = ws_url(&server.url, "/chat/full");
    let _one = RoomClient::join(&url).await;
    let _two = RoomClient::join(&url).await;
    let refused = RoomClient::try_join(&url).await;
    assert_eq!(refused_status(&refused.err().unwrap()), 503);
    // Another room has room.
    RoomClient::join(&ws_url(&server.url, "/chat/other")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_caps_room_sockets_across_rooms() {
    let server = TestServer::start_with(&[ROOMS], |config| {
        config.clients.max_connections = 100;
        config.clients.max_room_connections = 2;
    })
    .await;
    let one = RoomClient::join(&ws_url(&server.url, "/chat/a")).await;
    let _two = RoomClient::join(&ws_url(&server.url, "/chat/b")).await;
    let refused = RoomClient::try_join(&ws_url(&server.url, "/chat/c")).await;
    assert_eq!(refused_status(&refused.err().unwrap()), 503);
    // A socket that closes gives its place back.
    one.close().await;
    joins_soon(&ws_url(&server.url, "/chat/c")).await;
}

/// Joins `url` once a place is free (a closed socket gives its place back
/// when the server sees the close), within the usual timeout.
async fn joins_soon(url: &str) {
    within(async {
        while RoomClient::try_join(url).await.is_err() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// One client address holds a bounded share of the host's room sockets
/// (the hostile probe suggested it: one source could take them all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_holds_a_bounded_number_of_room_sockets() {
    let server = TestServer::start_with(&[ROOMS], |config| {
        config.clients.max_room_connections_per_client = 2;
    })
    .await;
    let one = RoomClient::join(&ws_url(&server.url, "/chat/a")).await;
    let _two = RoomClient::join(&ws_url(&server.url, "/chat/b")).await;
    let refused = RoomClient::try_join(&ws_url(&server.url, "/chat/a")).await;
    assert_eq!(refused_status(&refused.err().unwrap()), 429);
    let metrics = server.metrics_text().await;
    assert!(metrics.contains("kind=\"client_full\"} 1"), "{metrics}");
    one.close().await;
    joins_soon(&ws_url(&server.url, "/chat/c")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_closed_after_two_pings() {
    let rooms = "[[rooms]]\nprefix = \"/chat\"\nping_s = 1\n";
    let server = TestServer::start(&[plugin(rooms)]).await;
    // A raw socket that reads but never answers.
    let mut raw = raw_websocket(server.addr(), "/chat/quiet").await;
    let started = std::time::Instant::now();
    let mut pings = 0;
    let code = loop {
        let (opcode, payload) = read_frame(&mut raw).await;
        match opcode {
            9 => pings += 1,
            8 => break u16::from_be_bytes([payload[0], payload[1]]),
            _ => {}
        }
    };
    assert_eq!(code, 1001);
    assert!(pings >= 2, "{pings} pings");
    assert!(started.elapsed() >= std::time::Duration::from_secs(2));
    // A client that reads (and so answers pings) stays.
    let mut live = RoomClient::join(&ws_url(&server.url, "/chat/quiet")).await;
    let reading = tokio::time::timeout(std::time::Duration::from_secs(4), live.next()).await;
    assert!(reading.is_err(), "nothing but pings came: {reading:?}");
    live.send("still open").await;
    assert_eq!(live.next_event().await["data"], "still open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_close_only_their_connection() {
    let rooms = "[[rooms]]\nprefix = \"/chat\"\nmax_message_kib = 1\n";
    let server = TestServer::start(&[plugin(rooms)]).await;
    let url = ws_url(&server.url, "/chat/frames");
    let mut bystander = RoomClient::join(&url).await;

    let mut big = RoomClient::join(&url).await;
    big.send(&"x".repeat(2 << 10)).await;
    assert_eq!(big.closed().await.0, 1009);

    let mut binary = RoomClient::join(&url).await;
    binary
        .send_message(tungstenite::Message::binary(vec![1, 2, 3]))
        .await;
    assert_eq!(binary.closed().await.0, 1003);

    // A text frame that is not UTF-8, and a frame with reserved bits set,
    // written by hand (a client library will not send them).
    for (frame, code) in [
        (masked_frame(0x81, &[0xff, 0xfe]), 1007),
        (masked_frame(0xf1, b"hi"), 1002),
    ] {
        let mut raw = raw_websocket(server.addr(), "/chat/frames").await;
        use tokio::io::AsyncWriteExt;
        within(raw.write_all(&frame)).await.unwrap();
        assert_eq!(read_close_code(&mut raw).await, code);
    }

    bystander.send("still here").await;
    let event = bystander.next_event().await;
    assert_eq!(event["data"], "still here");
}

/// A client frame: `first` (FIN, opcode, reserved bits), masked payload.
fn masked_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![first, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// A WebSocket handshake on a plain TCP stream; the welcome frame read.
async fn raw_websocket(addr: std::net::SocketAddr, path: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = raw_connect(addr).await;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    within(stream.write_all(request.as_bytes())).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        within(stream.read_exact(&mut byte)).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    read_frame(&mut stream).await; // the welcome
    stream
}

/// One unmasked server frame: (opcode, payload).
async fn read_frame(stream: &mut tokio::net::TcpStream) -> (u8, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; 2];
    within(stream.read_exact(&mut head)).await.unwrap();
    let len = match head[1] & 0x7f {
        126 => {
            let mut n = [0u8; 2];
            within(stream.read_exact(&mut n)).await.unwrap();
            u16::from_be_bytes(n) as usize
        }
        127 => {
            let mut n = [0u8; 8];
            within(stream.read_exact(&mut n)).await.unwrap();
            u64::from_be_bytes(n) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    within(stream.read_exact(&mut payload)).await.unwrap();
    (head[0] & 0x0f, payload)
}

async fn read_close_code(stream: &mut tokio::net::TcpStream) -> u16 {
    loop {
        let (opcode, payload) = read_frame(stream).await;
        if opcode == 8 {
            return u16::from_be_bytes([payload[0], payload[1]]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_dropped_and_the_room_goes_on() {
    let rooms = "[[rooms]]\nprefix = \"/chat\"\nmax_message_kib = 64\nsend_queue = 16\n\
                 messages_per_s = 100000\n";
    let server = TestServer::start(&[plugin(rooms)]).await;
    let url = ws_url(&server.url, "/chat/slow");
    let mut slow = RoomClient::join(&url).await; // never reads until the end
    let mut writer = RoomClient::join(&url).await;
    let big = "y".repeat(60 << 10);
    // Enough to fill the socket buffers on both sides, then the queue.
    for k in 0..400u64 {
        writer.send(&big).await;
        let event = writer.next_event().await;
        assert_eq!(event["seq"], k + 1);
    }
    let (code, reason) = slow.closed().await;
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("slow consumer"), "{reason}");
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains(r#"spike_room_closes_total{plugin="rooms",kind="slow_consumer"} 1"#),
        "{metrics}"
    );
}

/// A member's queue is bounded in bytes too, whatever its count allows:
/// 1,024 frames of up to 8 MiB (a `yjs` room's) were 8 GiB per member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumers_queue_is_bounded_in_bytes() {
    let rooms = "[[rooms]]\nprefix = \"/chat\"\nmax_message_kib = 64\nsend_queue = 100000\n\
                 send_queue_kib = 256\nmessages_per_s = 100000\n";
    let server = TestServer::start(&[plugin(rooms)]).await;
    let url = ws_url(&server.url, "/chat/slow");
    let mut slow = RoomClient::join(&url).await; // never reads until the end
    let mut writer = RoomClient::join(&url).await;
    let big = "y".repeat(60 << 10);
    // 24 MiB: past the socket buffers on both sides, then past 256 KiB
    // queued (100,000 frames would have held all of it).
    for k in 0..400u64 {
        writer.send(&big).await;
        assert_eq!(writer.next_event().await["seq"], k + 1);
    }
    let (code, reason) = slow.closed().await;
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("slow consumer"), "{reason}");
}

/// A member that never reads a byte: its socket cannot take even the close
/// frame, so it is let go after the send timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_never_reads_is_let_go() {
    let rooms = "[[rooms]]\nprefix = \"/chat\"\nmax_message_kib = 64\nsend_queue = 16\n\
                 messages_per_s = 100000\n";
    let server = TestServer::start_with(&[plugin(rooms)], |config| {
        config.clients.send_timeout = std::time::Duration::from_secs(1);
    })
    .await;
    let _deaf = raw_websocket(server.addr(), "/chat/deaf").await;
    let mut writer = RoomClient::join(&ws_url(&server.url, "/chat/deaf")).await;
    let big = "z".repeat(60 << 10);
    for k in 0..400u64 {
        writer.send(&big).await;
        assert_eq!(writer.next_event().await["seq"], k + 1);
    }
    let gauge = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("spike_room_connections "))
            .map(|l| l.to_string())
    };
    within(async {
        loop {
            let metrics = server.metrics_text().await;
            if gauge(&metrics).as_deref() == Some("spike_room_connections 1")
                && metrics
                    .contains(r#"spike_room_closes_total{plugin="rooms",kind="send_timeout"} 1"#)
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_member_is_told_and_slowed() {
    let rooms = "[[rooms]]\nprefix = \"/chat\"\nmessages_per_s = 5\n";
    let server = TestServer::start(&[plugin(rooms)]).await;
    let mut client = RoomClient::join(&ws_url(&server.url, "/chat/flood")).await;
    for k in 0..20 {
        client.send(&format!("m{k}")).await;
    }
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..20 {
        let frame = client.next().await;
        *kinds
            .entry(frame["type"].as_str().unwrap().into())
            .or_default() += 1;
        if frame["type"] == "error" {
            assert_eq!(frame["code"], "rate_limited", "{frame}");
        }
    }
    let stored = kinds.get("event").copied().unwrap_or(0);
    assert!((5..=7).contains(&stored), "{kinds:?}");
    assert_eq!(kinds.get("error").copied().unwrap_or(0), 20 - stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_rooms_close_and_reopen_from_their_log() {
    let rooms = "[[rooms]]\nprefix = \"/room\"\nprotocol = \"text\"\nidle_s = 1\n";
    let server = TestServer::start(&[plugin(rooms)]).await;
    let url = ws_url(&server.url, "/room/sleepy");
    let mut client = RoomClient::join(&url).await;
    client
        .send(r#"{"type":"insert","position":0,"content":"zz","seq":0}"#)
        .await;
    client.next_event().await;
    // Hibernating with a member: the next edit reloads the text.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    client
        .send(r#"{"type":"insert","position":2,"content":"!","seq":1}"#)
        .await;
    assert_eq!(client.next_event().await["seq"], 2);
    client.close().await;
    let open = |m: &str| {
        m.lines()
            .find(|l| l.starts_with("spike_rooms_open "))
            .map(|l| l.to_string())
    };
    within(async {
        loop {
            let metrics = server.metrics_text().await;
            if open(&metrics).as_deref() == Some("spike_rooms_open 0") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
    let again = RoomClient::join(&url).await;
    assert_eq!(
        (
            again.welcome["text"].as_str(),
            again.welcome["seq"].as_u64()
        ),
        (Some("zz!"), Some(2))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_server_closes_rooms_with_1001() {
    let mut server = TestServer::start(&[ROOMS]).await;
    let mut client = RoomClient::join(&ws_url(&server.url, "/chat/bye")).await;
    let stopping = tokio::spawn(async move {
        server.stop().await;
        server
    });
    let (code, reason) = client.closed().await;
    assert_eq!(code, 1001);
    assert!(reason.contains("since"), "{reason}");
    within(stopping).await.unwrap();
}

/// A long text reaches a joiner in parts (joined, it is the room's text),
/// and joiners that read nothing hold little of the server's memory: a
/// welcome of the whole text in one frame cost each of them a copy (60 of
/// an 8 M-character room: 379 → 855 MiB, in the hostile probe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joiners_of_a_long_text_that_read_nothing_hold_little_memory() {
    use spike_e2e::process::SpikeProcess;
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    let rooms = "[[rooms]]\nprefix = \"/room\"\nprotocol = \"text\"\nmax_message_kib = 16384\n";
    write_plugins(&plugins, &[plugin(rooms)]);
    let log = dir.path().join("spike.log");
    let mut spike = SpikeProcess::new("spike", &plugins, &dir.path().join("data"), log, &[]);
    spike.spawn();
    spike.wait_ready().await;
    let url = ws_url(&spike.url, "/room/long");
    let text = "0123456789".repeat(800_000); // 8 M characters
    let mut writer = RoomClient::join(&url).await;
    let edit = serde_json::json!({"type": "insert", "position": 0, "content": text, "seq": 0});
    writer.send(&edit.to_string()).await;
    assert_eq!(writer.next_event().await["seq"], 1);
    let reader = RoomClient::join(&url).await;
    assert!(reader.welcome["text_parts"].as_u64() > Some(1));
    assert!(
        reader.welcome["text"] == text.as_str(),
        "the parts join into the text"
    );

    let watch = RssWatch::of(spike.pid().to_string());
    let mut deaf = Vec::new();
    for _ in 0..60 {
        let mut stream = raw_connect(spike.addr).await;
        let request = "GET /room/long HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n\
                       Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                       Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        within(stream.write_all(request.as_bytes())).await.unwrap();
        deaf.push(stream); // never read
    }
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let growth = watch.growth();
    assert!(
        growth < 160 << 20,
        "60 joiners that read nothing took {} MiB",
        growth >> 20
    );
    drop(deaf);
}
