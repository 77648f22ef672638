//! Load for WebSocket rooms, for `bench/rooms.sh`. Protocol-agnostic: a
//! message carries `t=<µs>;s=<sender>;` and whatever the server sends back
//! (spike's JSON event, a workerd Durable Object's echo) is searched for
//! those markers. Prints one JSON line of results.
//!
//! ```text
//! roomload fanout   URL CLIENTS RATE SECONDS   # latency of each delivery at RATE msgs/s in all
//! roomload saturate URL CLIENTS WINDOW SECONDS # deliveries/s, each client WINDOW messages in flight
//! roomload idle     URL_PREFIX ROOMS PER_ROOM SECONDS  # open connections, hold them
//! roomload yjs-fanout   URL_PREFIX READERS RATE SECONDS    # one writer's Yjs updates to READERS
//! roomload yjs-saturate URL_PREFIX READERS WINDOW SECONDS  # updates/s, WINDOW in flight
//! roomload yjs-docs     URL_PREFIX DOCS SECONDS            # open documents, one client each
//! ```
//!
//! `fanout` and `saturate` take several URLs separated by commas (one
//! room through the nodes of a cluster), the clients spread over them.
//!
//! The Yjs modes speak y-protocols in binary frames: the writer appends
//! `t=<µs>;` to a shared text with `yrs` and sends each change as a sync
//! update, as y-websocket does; the marker is found in the update's bytes
//! (Yjs stores strings as UTF-8), also when a server re-encodes it.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Microseconds since this process started: senders and receivers share it.
pub(crate) fn now_us() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// The number after `key` in `text`, up to the next `;`.
fn marker(text: &str, key: &str) -> Option<u64> {
    let at = text.find(key)? + key.len();
    let rest = &text[at..];
    rest[..rest.find(';')?].parse().ok()
}

fn message(sender: usize) -> Message {
    // About 64 bytes, like a short chat line.
    Message::text(format!("t={};s={sender};{}", now_us(), "x".repeat(32)))
}

pub(crate) async fn connect(url: &str) -> Socket {
    for attempt in 0.. {
        match tokio_tungstenite::connect_async(url).await {
            Ok((ws, _)) => return ws,
            // A server may refuse a burst of handshakes for a moment.
            Err(_) if attempt < 20 => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("connect {url}: {e}"),
        }
    }
    unreachable!()
}

/// `n` clients; `urls` may list several, separated by commas (the same
/// room through several nodes of a cluster): the clients take them in
/// turn, the first client the first URL.
pub(crate) async fn connect_all(urls: &str, n: usize) -> Vec<Socket> {
    let urls: Vec<&str> = urls.split(',').collect();
    let mut sockets = Vec::with_capacity(n);
    for i in 0..n {
        sockets.push(connect(urls[i % urls.len()]).await);
    }
    sockets
}

pub(crate) fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    sorted[i] as f64 / 1000.0
}

/// Every client sends once every CLIENTS/RATE seconds (RATE in all, spread
/// evenly), and times every delivery it gets.
async fn fanout(url: String, clients: usize, rate: f64, seconds: u64) {
    let sockets = connect_all(&url, clients).await;
    let warmup = Duration::from_secs(1);
    let start = tokio::time::Instant::now() + Duration::from_millis(200);
    let measure_from = now_us() + 200_000 + warmup.as_micros() as u64;
    let end = start + warmup + Duration::from_secs(seconds);
    let period = Duration::from_secs_f64(clients as f64 / rate);
    let mut tasks = Vec::new();
    for (i, mut ws) in sockets.into_iter().enumerate() {
        let first = start + period.mul_f64(i as f64 / clients as f64);
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(first, period);
            let mut latencies = Vec::new();
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if tokio::time::Instant::now() >= end { break; }
                        ws.send(message(i)).await.expect("send");
                    }
                    frame = ws.next() => {
                        let Some(Ok(Message::Text(text))) = frame else { continue };
                        if let Some(sent) = marker(&text, "t=")
                            && sent >= measure_from
                        {
                            latencies.push(now_us().saturating_sub(sent));
                        }
                    }
                }
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("client"));
    }
    all.sort_unstable();
    println!(
        "{{\"mode\":\"fanout\",\"clients\":{clients},\"rate\":{rate},\"deliveries\":{},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3}}}",
        all.len(),
        percentile(&all, 0.50),
        percentile(&all, 0.99),
        percentile(&all, 1.0)
    );
}

/// Every client keeps WINDOW of its own messages in flight (sending the
/// next when one comes back); deliveries are counted at every client.
async fn saturate(url: String, clients: usize, window: usize, seconds: u64) {
    let sockets = connect_all(&url, clients).await;
    let warmup = Duration::from_secs(1);
    let measure = Duration::from_secs(seconds);
    let begin = tokio::time::Instant::now();
    let (from, until) = (begin + warmup, begin + warmup + measure);
    let mut tasks = Vec::new();
    for (i, mut ws) in sockets.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for _ in 0..window {
                ws.feed(message(i)).await.expect("send");
            }
            ws.flush().await.expect("flush");
            let mut delivered = 0u64;
            let deadline = tokio::time::sleep_until(until);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    _ = &mut deadline => break,
                    frame = ws.next() => {
                        let Some(Ok(Message::Text(text))) = frame else {
                            if frame.is_none() { break } else { continue }
                        };
                        let Some(sender) = marker(&text, ";s=") else { continue };
                        if tokio::time::Instant::now() >= from {
                            delivered += 1;
                        }
                        if sender as usize == i {
                            ws.send(message(i)).await.expect("send");
                        }
                    }
                }
            }
            delivered
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("client");
    }
    println!(
        "{{\"mode\":\"saturate\",\"clients\":{clients},\"window\":{window},\"deliveries\":{total},\"deliveries_per_s\":{:.0}}}",
        total as f64 / measure.as_secs_f64()
    );
}

/// Opens ROOMS x PER_ROOM connections, reads what comes, holds them for
/// SECONDS after saying they are open.
async fn idle(prefix: String, rooms: usize, per_room: usize, seconds: u64) {
    let mut tasks = Vec::new();
    let started = Instant::now();
    let (open_tx, mut open_rx) = tokio::sync::mpsc::unbounded_channel();
    for r in 0..rooms {
        let url = format!("{prefix}/idle-{r}");
        let open_tx = open_tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut sockets = Vec::with_capacity(per_room);
            for _ in 0..per_room {
                sockets.push(connect(&url).await);
            }
            let _ = open_tx.send(());
            // Read (presence, pings) so nothing backs up, until told to stop.
            let reads = sockets.into_iter().map(|mut ws| {
                tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} })
            });
            reads.collect::<Vec<_>>()
        }));
    }
    drop(open_tx);
    let mut open = 0;
    while open_rx.recv().await.is_some() {
        open += 1;
    }
    assert_eq!(open, rooms);
    println!(
        "{{\"mode\":\"idle\",\"connections\":{},\"open_after_s\":{:.1}}}",
        rooms * per_room,
        started.elapsed().as_secs_f64()
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    for task in tasks {
        for read in task.await.expect("room") {
            read.abort();
        }
    }
}

mod yjs;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| -> &str {
        args.get(i).map(String::as_str).unwrap_or_else(|| {
            eprintln!("usage: see the module doc of bench/roomload/src/main.rs");
            std::process::exit(2)
        })
    };
    let number = |i: usize| -> u64 { arg(i).parse().expect("a number") };
    // One thread: the load generator shares the machine with the server,
    // and a single thread keeps its own cost steady.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    now_us();
    match arg(1) {
        "fanout" => runtime.block_on(fanout(
            arg(2).into(),
            number(3) as usize,
            number(4) as f64,
            number(5),
        )),
        "saturate" => runtime.block_on(saturate(
            arg(2).into(),
            number(3) as usize,
            number(4) as usize,
            number(5),
        )),
        "idle" => runtime.block_on(idle(
            arg(2).into(),
            number(3) as usize,
            number(4) as usize,
            number(5),
        )),
        "yjs-fanout" => runtime.block_on(yjs::fanout(
            arg(2).into(),
            number(3) as usize,
            number(4) as f64,
            number(5),
        )),
        "yjs-saturate" => runtime.block_on(yjs::saturate(
            arg(2).into(),
            number(3) as usize,
            number(4) as usize,
            number(5),
        )),
        "yjs-docs" => runtime.block_on(yjs::docs(arg(2).into(), number(3) as usize, number(4))),
        other => {
            eprintln!("unknown mode {other}");
            std::process::exit(2)
        }
    }
}
