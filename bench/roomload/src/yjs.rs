//! The Yjs modes: one writer, many readers, real updates.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use yrs::sync::{Message as YMessage, SyncMessage};
use yrs::updates::encoder::Encode;
use yrs::{Text, Transact};

use crate::{Socket, connect, connect_all, now_us, percentile};

/// A writer: a document whose every change is one sync update message.
struct Writer {
    doc: yrs::Doc,
    text: yrs::TextRef,
}

impl Writer {
    fn new() -> Self {
        let doc = yrs::Doc::new();
        let text = doc.get_or_insert_text("text");
        Self { doc, text }
    }

    /// Appends the send time (and `pad` bytes) and returns the update.
    fn change(&self, pad: usize) -> Message {
        let mut txn = self.doc.transact_mut();
        let piece = format!("t={};{}", now_us(), "y".repeat(pad));
        let end = self.text.len(&txn);
        self.text.insert(&mut txn, end, &piece);
        let update = txn.encode_update_v1();
        drop(txn);
        let message = YMessage::Sync(SyncMessage::Update(update)).encode_v1();
        Message::binary(message)
    }
}

/// The send time in a frame's bytes, if it carries one.
fn sent_at(data: &[u8]) -> Option<u64> {
    let at = data.windows(2).position(|w| w == b"t=")? + 2;
    let digits = &data[at..];
    let end = digits.iter().position(|&b| b == b';')?;
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

/// Each reader times every update it gets until `end`.
fn read_until(
    sockets: Vec<Socket>,
    measure_from: u64,
    end: tokio::time::Instant,
) -> Vec<tokio::task::JoinHandle<Vec<u64>>> {
    sockets
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let deadline = tokio::time::sleep_until(end);
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        _ = &mut deadline => break,
                        frame = ws.next() => match frame {
                            Some(Ok(Message::Binary(data))) => {
                                if let Some(sent) = sent_at(&data)
                                    && sent >= measure_from
                                {
                                    latencies.push(now_us().saturating_sub(sent));
                                }
                            }
                            Some(Ok(_)) => {}
                            _ => break,
                        }
                    }
                }
                latencies
            })
        })
        .collect()
}

/// One writer sends RATE updates a second; READERS time each delivery.
pub async fn fanout(prefix: String, readers_n: usize, rate: f64, seconds: u64) {
    let url = format!("{prefix}/fanout-{}", now_us());
    let sockets = connect_all(&url, readers_n).await;
    let mut writer_ws = connect(&url).await;
    let writer = Writer::new();
    let warmup = Duration::from_secs(1);
    let start = tokio::time::Instant::now();
    let measure_from = now_us() + warmup.as_micros() as u64;
    let end = start + warmup + Duration::from_secs(seconds);
    let tasks = read_until(sockets, measure_from, end + Duration::from_millis(500));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let mut sent = 0u64;
    while tokio::time::Instant::now() < end {
        tokio::select! {
            _ = tick.tick() => {
                writer_ws.send(writer.change(32)).await.expect("send");
                sent += 1;
            }
            // Drain what comes back so the writer's socket never backs up.
            _ = writer_ws.next() => {}
        }
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("reader"));
    }
    all.sort_unstable();
    println!(
        "{{\"mode\":\"yjs-fanout\",\"readers\":{readers_n},\"rate\":{rate},\"sent\":{sent},\"deliveries\":{},\"p50_ms\":{:.3},\"p99_ms\":{:.3}}}",
        all.len(),
        percentile(&all, 0.50),
        percentile(&all, 0.99)
    );
}

/// The writer keeps WINDOW updates in flight (the server sends each back
/// to its writer too); updates/s is what came back, and every reader
/// counts its deliveries.
pub async fn saturate(prefix: String, readers_n: usize, window: usize, seconds: u64) {
    let url = format!("{prefix}/saturate-{}", now_us());
    let sockets = connect_all(&url, readers_n).await;
    let mut writer_ws = connect(&url).await;
    let writer = Writer::new();
    let warmup = Duration::from_secs(1);
    let begin = tokio::time::Instant::now();
    let (from, until) = (
        begin + warmup,
        begin + warmup + Duration::from_secs(seconds),
    );
    let measure_from = now_us() + warmup.as_micros() as u64;
    let tasks = read_until(sockets, measure_from, until);
    for _ in 0..window {
        writer_ws.feed(writer.change(32)).await.expect("send");
    }
    writer_ws.flush().await.expect("flush");
    let mut acked = 0u64;
    loop {
        let frame = tokio::select! {
            _ = tokio::time::sleep_until(until) => break,
            frame = writer_ws.next() => frame,
        };
        match frame {
            Some(Ok(Message::Binary(data))) if sent_at(&data).is_some() => {
                if tokio::time::Instant::now() >= from {
                    acked += 1;
                }
                writer_ws.send(writer.change(32)).await.expect("send");
            }
            Some(Ok(_)) => {}
            _ => break,
        }
    }
    let mut deliveries = 0;
    for task in tasks {
        deliveries += task.await.expect("reader").len();
    }
    let secs = seconds as f64;
    println!(
        "{{\"mode\":\"yjs-saturate\",\"readers\":{readers_n},\"window\":{window},\"updates_per_s\":{:.0},\"deliveries_per_s\":{:.0}}}",
        acked as f64 / secs,
        deliveries as f64 / secs
    );
}

/// Opens DOCS documents, each with one client that writes about 1 KB of
/// text in 10 updates, and holds them for SECONDS after saying so.
pub async fn docs(prefix: String, docs: usize, seconds: u64) {
    let run = now_us();
    let mut sockets = Vec::with_capacity(docs);
    for d in 0..docs {
        let mut ws = connect(&format!("{prefix}/doc-{run}-{d}")).await;
        let writer = Writer::new();
        for _ in 0..10 {
            ws.feed(writer.change(90)).await.expect("send");
        }
        ws.flush().await.expect("flush");
        sockets.push(ws);
    }
    // Every update is back from the server: the documents hold them.
    for ws in &mut sockets {
        let mut back = 0;
        while back < 10 {
            match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
                Ok(Some(Ok(Message::Binary(data)))) if sent_at(&data).is_some() => back += 1,
                Ok(Some(Ok(_))) => {}
                other => panic!("a document did not answer: {other:?}"),
            }
        }
    }
    println!("{{\"mode\":\"yjs-docs\",\"docs\":{docs}}}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let reads: Vec<_> = sockets
        .into_iter()
        .map(|mut ws| tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} }))
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    for read in reads {
        read.abort();
    }
}
