//! One room connection, from the upgrade to the close: the welcome and
//! catch-up first, then client messages to the room's owner and the
//! owner's frames to the client, keepalive pings, and the close codes the
//! host sends (1009 too big, 1003 binary, 1007 / 1002 malformed, 1008 slow
//! consumer, 1001 silent or stopping). One task per connection; an idle
//! one holds its socket, a small read buffer and an empty queue.

use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::metrics::{KindLabels, Metrics};
use crate::rooms::{CatchUp, Delivery, Frame, Inbox, Joined, Kick, Membership};

/// Frames written before one flush.
const MAX_FRAMES_PER_FLUSH: usize = 64;

/// How long a closing connection waits to send its close frame and get
/// the client's.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The series a connection counts its closes in.
pub struct SocketMetrics {
    closes: Family<KindLabels, Counter>,
    plugin: std::sync::Arc<str>,
}

impl SocketMetrics {
    pub fn new(metrics: &Metrics, plugin: &str) -> Self {
        Self {
            closes: metrics.rooms.closes.clone(),
            plugin: plugin.into(),
        }
    }

    fn count(&self, kind: &'static str) {
        Metrics::count(&self.closes, &self.plugin, kind, 1);
    }
}

/// Why the loop ended.
enum End {
    /// The client closed or went away: nothing to send.
    Gone,
    /// The client left what was written unread for the send timeout: the
    /// connection is dropped without a close frame (it would not be read).
    Stalled,
    /// The host closes, with this code and reason; counted as `kind`.
    Close(u16, &'static str, &'static str),
}

impl End {
    /// Closed as the owner said (the owner counted it).
    fn kicked(kick: Kick) -> Self {
        End::Close(kick.code, kick.reason, "")
    }
}

/// Runs one room connection; `send_timeout` bounds every write (a client
/// that stops reading cannot hold its task and socket).
///
/// Not an `async fn`: an open connection is mostly its task's future, so
/// that future holds boxes (the socket's `Connection`, then the `Member`
/// part of the join) and the larger, rarer steps (welcome and catch-up, a
/// burst of writes, the close) are boxed when they run. An idle connection then holds a few hundred bytes
/// of future instead of several KB (`docs/BENCHMARKS.md`, Yjs memory).
pub fn run(
    socket: WebSocket,
    joined: Box<Joined>,
    metrics: SocketMetrics,
    send_timeout: Duration,
) -> impl Future<Output = ()> + Send {
    let connection = Box::new(Connection {
        socket,
        metrics,
        limit: send_timeout,
    });
    connection.run(joined)
}

/// What an open connection keeps of its join.
struct Member {
    queue: Inbox,
    kicked: tokio::sync::oneshot::Receiver<Kick>,
    membership: Membership,
}

struct Connection {
    socket: WebSocket,
    metrics: SocketMetrics,
    /// The send timeout.
    limit: Duration,
}

impl Connection {
    async fn run(mut self: Box<Self>, joined: Box<Joined>) {
        let end = match self.serve(joined).await {
            Ok(end) | Err(end) => end,
        };
        match end {
            End::Gone => {}
            End::Stalled => self.metrics.count("send_timeout"),
            End::Close(code, reason, kind) => {
                if !kind.is_empty() {
                    self.metrics.count(kind);
                }
                Box::pin(close(
                    &mut self.socket,
                    code,
                    Utf8Bytes::from_static(reason),
                ))
                .await;
            }
        }
    }

    /// The welcome and what the connection is owed from the log.
    async fn welcome(&mut self, hello: Vec<Frame>, catch_up: Option<CatchUp>) -> Result<(), End> {
        let (socket, limit) = (&mut self.socket, self.limit);
        for frame in hello {
            bounded(limit, socket.feed(message(frame))).await?;
        }
        if let Some(catch_up) = catch_up {
            write_catch_up(socket, catch_up, limit).await?;
        }
        bounded(limit, socket.flush()).await
    }

    async fn serve(&mut self, joined: Box<Joined>) -> Result<End, End> {
        // What the connection keeps of its join; the rest goes with the box.
        let Joined {
            hello,
            catch_up,
            binary,
            queue,
            kicked,
            membership,
            limits,
            ..
        } = *joined;
        let mut member = Box::new(Member {
            queue,
            kicked,
            membership,
        });
        Box::pin(self.welcome(hello, catch_up)).await?;
        let (limit, every) = (self.limit, limits.ping);
        let socket = &mut self.socket;
        let mut last_heard = Instant::now();
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                kick = &mut member.kicked => {
                    // No kick sent: the owner is gone (the host is stopping).
                    let kick = kick.unwrap_or(Kick::STOPPING);
                    return Ok(End::kicked(kick));
                }
                delivery = member.queue.recv() => {
                    let Some(delivery) = delivery else {
                        return Ok(End::kicked(Kick::STOPPING));
                    };
                    Box::pin(send_queued(socket, delivery, &mut member.queue, limit)).await?;
                }
                incoming = socket.recv() => {
                    last_heard = Instant::now();
                    let membership = &member.membership;
                    match incoming {
                        Some(Ok(Message::Text(text))) if !binary => {
                            if membership.send(Frame::Text(text)).await.is_err() {
                                return Ok(End::kicked(Kick::STOPPING));
                            }
                        }
                        Some(Ok(Message::Binary(data))) if binary => {
                            if membership.send(Frame::Binary(data)).await.is_err() {
                                return Ok(End::kicked(Kick::STOPPING));
                            }
                        }
                        Some(Ok(Message::Text(_))) => {
                            return Ok(End::Close(1003, "this room speaks binary (y-protocols)", "text"));
                        }
                        Some(Ok(Message::Binary(_))) => {
                            return Ok(End::Close(1003, "binary frames are not accepted: send text", "binary"));
                        }
                        // tungstenite queued the answer to a ping (or to a
                        // close): send it now.
                        Some(Ok(Message::Ping(_))) => bounded(limit, socket.flush()).await?,
                        Some(Ok(Message::Pong(_))) => {}
                        Some(Ok(Message::Close(_))) => {
                            let _ = tokio::time::timeout(CLOSE_GRACE, socket.flush()).await;
                            return Ok(End::Gone);
                        }
                        Some(Err(e)) => return Ok(refused(e)),
                        None => return Ok(End::Gone),
                    }
                }
                _ = ping.tick() => {
                    // Silent through two pings (and half an interval more for
                    // the answer to the second): gone.
                    if last_heard.elapsed() >= every * 5 / 2 {
                        return Ok(End::Close(1001, "no answer to pings", "silent"));
                    }
                    bounded(limit, socket.send(Message::Ping(Bytes::new()))).await?;
                }
            }
        }
    }
}

/// `write`, or `End::Stalled` if it does not finish within `limit`.
async fn bounded<T>(
    limit: Duration,
    write: impl Future<Output = Result<T, axum::Error>>,
) -> Result<T, End> {
    match tokio::time::timeout(limit, write).await {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(_)) => Err(End::Gone),
        Err(_) => Err(End::Stalled),
    }
}

/// Writes `first` and whatever else is queued (up to a bound), then
/// flushes once; each write is bounded by `limit`.
async fn send_queued(
    socket: &mut WebSocket,
    first: Delivery,
    queue: &mut Inbox,
    limit: Duration,
) -> Result<(), End> {
    let mut next = Some(first);
    let mut written = 0;
    while let Some(delivery) = next.take() {
        match delivery {
            Delivery::Frame(frame) => bounded(limit, socket.feed(message(frame))).await?,
            Delivery::CatchUp(catch_up) => write_catch_up(socket, *catch_up, limit).await?,
        }
        written += 1;
        if written < MAX_FRAMES_PER_FLUSH {
            next = queue.try_recv();
        }
    }
    bounded(limit, socket.flush()).await
}

/// Writes stored events read from the log, page by page.
async fn write_catch_up(
    socket: &mut WebSocket,
    catch_up: CatchUp,
    limit: Duration,
) -> Result<(), End> {
    let mut frames = std::pin::pin!(catch_up.frames());
    while let Some(frame) = frames.next().await {
        let frame = frame.map_err(|e| {
            tracing::error!("room catch-up: {e}");
            End::Close(1011, "the room's log could not be read", "log_error")
        })?;
        bounded(limit, socket.feed(message(frame))).await?;
    }
    Ok(())
}

/// A frame as the socket sends it.
fn message(frame: Frame) -> Message {
    match frame {
        Frame::Text(text) => Message::Text(text),
        Frame::Binary(data) => Message::Binary(data),
    }
}

/// The close for a frame the socket refused to read.
fn refused(e: axum::Error) -> End {
    use tungstenite::error::{CapacityError, Error, ProtocolError};
    match e.into_inner().downcast::<Error>().map(|e| *e) {
        Ok(Error::Capacity(CapacityError::MessageTooLong { .. })) => {
            End::Close(1009, "message too big for this room", "too_big")
        }
        Ok(Error::Utf8(_)) => End::Close(1007, "a text frame was not UTF-8", "malformed"),
        // The client went away without a close frame: nothing to say.
        Ok(Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => End::Gone,
        Ok(Error::Protocol(_) | Error::Capacity(_)) => {
            End::Close(1002, "malformed WebSocket frame", "malformed")
        }
        _ => End::Gone,
    }
}

/// A connection the room handler refused: closed at once with its code.
pub async fn refuse(mut socket: WebSocket, code: u16, reason: String) {
    close(&mut socket, code, Utf8Bytes::from(reason)).await;
}

/// Sends a close frame and waits for the client's, so that the client
/// reads the code before the connection drops; a client that takes
/// neither within `CLOSE_GRACE` is dropped.
async fn close(socket: &mut WebSocket, code: u16, reason: Utf8Bytes) {
    let frame = CloseFrame { code, reason };
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        if socket.send(Message::Close(Some(frame))).await.is_err() {
            return;
        }
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}
