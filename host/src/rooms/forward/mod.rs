//! Room connections forwarded between the nodes of a cluster. A client
//! may connect to any node; the room lives on the node that holds its
//! lease (its owner). The node the client came to (the entry) keeps the
//! client's socket and relays its frames to the owner and back over a
//! link (`storage::Link`), so that every client of the room sees the one
//! order the owner makes, whatever node it came to.
//!
//! - A join: the entry calls the owner node (`storage::Cluster::call`)
//!   with a `Request` naming a link it has opened; the owner answers the
//!   link's other end, answers the call at once (`CALL_TIMEOUT` is short:
//!   a call to a node that just died goes unanswered), then joins the room
//!   as for a local socket (never forwarding it again: a room that is not
//!   its own any more is `Refusal::Elsewhere`) and sends the join's answer
//!   first on the link.
//! - On the link, `Message`s, numbered from 0 in each direction: data
//!   frames, a close (a kick from the owner, or the client gone from the
//!   entry), and keepalives while it is quiet. A message missing from the
//!   numbering (dropped for a slow reader) ends the connection: the client
//!   reconnects with `since`, as after any close, and loses nothing
//!   stored.
//! - Silence for `SILENCE` (the other node died or was cut off) ends it
//!   too; the client then reconnects, and reaches the room's next owner.
//!
//! `entry_node` is the entry node's side, `owner_node` the owner node's.

mod entry_node;
mod owner_node;

pub use entry_node::{Up, join};
pub use owner_node::serve;

use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::{Dialect, Frame, JoinError, Kick};
use crate::caps::identity::Caller;
use crate::storage::{Link, LinkSender, StorageError};

/// The cluster's calls for rooms (joins) go to this service of a node.
const SERVICE: &str = "rooms";

/// How long an entry waits for the owner node to take a join (to answer
/// the call, before it joins): a node that does not is dead, paused or cut
/// off, and the client tries again, which reaches the room's next owner
/// once the lease lapses. Short: a call can reach a node that just died.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);

/// How long an entry waits for the join's answer on the link: longer than
/// a room handler's `on-connect` takes, shorter than a client waits.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A quiet link sends a keepalive this often.
const KEEPALIVE: Duration = Duration::from_secs(2);

/// A link that heard nothing for this long is dead: its other node died,
/// stopped or was cut off. Longer than two keepalives.
const SILENCE: Duration = Duration::from_secs(5);

/// The entry's join, as the owner node reads it.
#[derive(Serialize, Deserialize)]
struct Request {
    link: String,
    plugin: String,
    /// The room route's prefix, which names it in the plugin's manifest.
    prefix: String,
    room: String,
    since: Option<u64>,
    caller: Option<WireCaller>,
    /// The upgrade request's headers (for a room handler's `on-connect`).
    headers: Vec<(String, Vec<u8>)>,
    /// A LiveStore connection's dialect.
    dialect: Option<Dialect>,
    /// The entry's `traceparent`, if the join is traced: the owner node
    /// continues its trace.
    #[serde(default)]
    trace: Option<String>,
}

/// A verified caller as it travels to the owner node (it was verified at
/// the entry, which the owner trusts as it trusts its own sockets).
#[derive(Serialize, Deserialize)]
struct WireCaller {
    subject: String,
    session_id: Option<String>,
    issuer: String,
    claims: String,
    expires_at_ms: Option<u64>,
}

impl From<&Caller> for WireCaller {
    fn from(c: &Caller) -> Self {
        Self {
            subject: c.subject.clone(),
            session_id: c.session_id.clone(),
            issuer: c.issuer.clone(),
            claims: c.claims.clone(),
            expires_at_ms: c.expires_at_ms,
        }
    }
}

impl From<WireCaller> for Caller {
    fn from(c: WireCaller) -> Self {
        Self {
            subject: c.subject,
            session_id: c.session_id,
            issuer: c.issuer,
            claims: c.claims,
            expires_at_ms: c.expires_at_ms,
        }
    }
}

/// The owner node's answer to a join.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Answer {
    /// The call's answer: the owner node has the link, and answers the
    /// join on it.
    Accepted,
    /// With the connection's id.
    Joined {
        connection: String,
    },
    Refused(JoinError),
}

/// What a link carries.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Message {
    Frame(Frame),
    /// The end of the connection: from the owner, the close the client
    /// gets; from the entry, the client is gone.
    Close {
        code: u16,
        reason: String,
    },
    Keepalive,
    /// The owner's answer to the join (an `Answer` in JSON), first.
    Answer(Bytes),
}

const TEXT: u8 = 0;
const BINARY: u8 = 1;
const CLOSE: u8 = 2;
const KEEPALIVE_KIND: u8 = 3;
const ANSWER: u8 = 4;

impl Message {
    /// `[number: u64][kind: u8][payload]`, big-endian.
    fn encode(&self, number: u64) -> Bytes {
        let (kind, payload): (u8, &[u8]) = match self {
            Message::Frame(Frame::Text(text)) => (TEXT, text.as_bytes()),
            Message::Frame(Frame::Binary(data)) => (BINARY, data),
            Message::Close { reason, .. } => (CLOSE, reason.as_bytes()),
            Message::Keepalive => (KEEPALIVE_KIND, &[]),
            Message::Answer(json) => (ANSWER, json),
        };
        let mut out = BytesMut::with_capacity(11 + payload.len());
        out.put_u64(number);
        out.put_u8(kind);
        if let Message::Close { code, .. } = self {
            out.put_u16(*code);
        }
        out.put_slice(payload);
        out.freeze()
    }

    fn decode(mut bytes: Bytes) -> Option<(u64, Self)> {
        if bytes.len() < 9 {
            return None;
        }
        let number = bytes.get_u64();
        let message = match bytes.get_u8() {
            TEXT => Message::Frame(Frame::Text(Utf8Bytes::try_from(bytes).ok()?)),
            BINARY => Message::Frame(Frame::Binary(bytes)),
            CLOSE if bytes.len() >= 2 => {
                let code = bytes.get_u16();
                let reason = String::from_utf8(bytes.to_vec()).ok()?;
                Message::Close { code, reason }
            }
            KEEPALIVE_KIND => Message::Keepalive,
            ANSWER => Message::Answer(bytes),
            _ => return None,
        };
        Some((number, message))
    }
}

/// A link's sending half: numbers what it sends.
struct Outgoing {
    sender: Box<dyn LinkSender>,
    next: u64,
    /// When it last sent: a keepalive is due `KEEPALIVE` after.
    last_sent: tokio::time::Instant,
}

impl Outgoing {
    async fn send(&mut self, message: &Message) -> Result<(), StorageError> {
        let number = self.next;
        self.next += 1;
        self.last_sent = tokio::time::Instant::now();
        self.sender.send(message.encode(number)).await
    }

    /// Sends a keepalive if nothing went out for `KEEPALIVE`.
    async fn keep_alive(&mut self) -> Result<(), StorageError> {
        if self.last_sent.elapsed() >= KEEPALIVE {
            self.send(&Message::Keepalive).await?;
        }
        Ok(())
    }
}

/// A link's receiving half: checks the numbering.
struct Incoming {
    received: futures::stream::BoxStream<'static, Bytes>,
    next: u64,
    last_heard: tokio::time::Instant,
}

/// Why a link stopped delivering.
#[derive(Debug, PartialEq, Eq)]
enum Broken {
    /// A message was lost or garbled, or the backend closed the link.
    Lost,
}

impl Incoming {
    /// The next message, keepalives included.
    async fn next(&mut self) -> Result<Message, Broken> {
        let bytes = self.received.next().await.ok_or(Broken::Lost)?;
        let (number, message) = Message::decode(bytes).ok_or(Broken::Lost)?;
        if number != self.next {
            return Err(Broken::Lost);
        }
        self.next += 1;
        self.last_heard = tokio::time::Instant::now();
        Ok(message)
    }

    fn silent(&self) -> bool {
        self.last_heard.elapsed() >= SILENCE
    }
}

/// A link split into its halves.
fn halves(link: Link) -> (Outgoing, Incoming) {
    let now = tokio::time::Instant::now();
    let outgoing = Outgoing {
        sender: link.sender,
        next: 0,
        last_sent: now,
    };
    let incoming = Incoming {
        received: link.received,
        next: 0,
        last_heard: now,
    };
    (outgoing, incoming)
}

/// Counts a link in `room_links` while it is open.
struct LinkGauge(prometheus_client::metrics::gauge::Gauge);

impl LinkGauge {
    fn new(metrics: &crate::metrics::Metrics, plugin: &str, side: &'static str) -> Self {
        let labels = crate::metrics::KindLabels {
            plugin: plugin.into(),
            kind: side,
        };
        let gauge = metrics.rooms.links.get_or_create(&labels).clone();
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for LinkGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The close a forwarded connection gets when its link breaks.
const LINK_LOST: Kick = Kick {
    code: 1012,
    reason: "lost the room's node: reconnect with since",
};

/// The kick for a close the owner node sent: one of the host's own (a
/// close reason is a static string on this side too), or a generic one
/// with the same code.
fn kick_of(code: u16, reason: &str) -> Kick {
    const KNOWN: [Kick; 8] = [
        Kick::SLOW_CONSUMER,
        Kick::TOO_FAST,
        Kick::UNAVAILABLE,
        Kick::HANDLER_FAILED,
        Kick::MALFORMED,
        Kick::MOVED,
        Kick::STOPPING,
        LINK_LOST,
    ];
    KNOWN
        .into_iter()
        .find(|k| k.code == code && k.reason == reason)
        .unwrap_or(Kick {
            code,
            reason: "closed by the room's node",
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_messages_round_trip() {
        for message in [
            Message::Frame(Frame::Text("héllo".into())),
            Message::Frame(Frame::Binary(Bytes::from_static(&[0, 1, 2]))),
            Message::Frame(Frame::Binary(Bytes::new())),
            Message::Close {
                code: 1012,
                reason: "moved".into(),
            },
            Message::Keepalive,
            Message::Answer(Bytes::from_static(b"\"accepted\"")),
        ] {
            let decoded = Message::decode(message.encode(7)).unwrap();
            assert_eq!(decoded, (7, message));
        }
        for garbage in [
            &[][..],
            &[0; 8],
            &[0, 0, 0, 0, 0, 0, 0, 0, 9],
            &[0, 0, 0, 0, 0, 0, 0, 0, 2, 1],
        ] {
            assert_eq!(Message::decode(Bytes::copy_from_slice(garbage)), None);
        }
        let not_utf8 = [0, 0, 0, 0, 0, 0, 0, 0, TEXT, 0xff];
        assert_eq!(Message::decode(Bytes::copy_from_slice(&not_utf8)), None);
    }

    #[test]
    fn closes_from_the_owner_keep_their_code() {
        assert_eq!(kick_of(1012, Kick::MOVED.reason), Kick::MOVED);
        assert_eq!(
            kick_of(1008, Kick::SLOW_CONSUMER.reason),
            Kick::SLOW_CONSUMER
        );
        assert_eq!(kick_of(4000, "custom").code, 4000);
    }

    #[tokio::test]
    async fn a_missing_number_breaks_the_link() {
        let sent = [
            Message::Keepalive.encode(0),
            Message::Frame(Frame::Text("a".into())).encode(2),
        ];
        let mut incoming = Incoming {
            received: futures::stream::iter(sent).boxed(),
            next: 0,
            last_heard: tokio::time::Instant::now(),
        };
        assert_eq!(incoming.next().await, Ok(Message::Keepalive));
        assert_eq!(incoming.next().await, Err(Broken::Lost));
    }
}
