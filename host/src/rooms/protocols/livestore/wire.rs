//! LiveStore sync: the wire protocols of `@livestore/sync-cf`, read and
//! written here; the owner (`owner::livestore`) keeps the store.
//!
//! A room is a store (its id is the client's `storeId`); its log holds one
//! entry per event, so an event's `seqNum` is its place in the log. Two
//! dialects share a store:
//!
//! - **0.4** (`Dialect::Rpc`): Effect RPC over the socket, JSON frames.
//!   The client sends `{"_tag":"Request","id":"3","tag":"SyncWsRpc.Pull",
//!   "payload":{...},"headers":[]}`, `Ack`, `Interrupt`, `Ping`, `Eof`; the
//!   server answers with `Chunk` (a pull's pages, then every later push
//!   while the pull is `live`), `Exit` (a push's acknowledgement or
//!   failure, a finished pull) and `Pong`. Options are encoded
//!   `{"_tag":"Some","value":...}` / `{"_tag":"None"}`.
//! - **0.3** (`Dialect::WsMessage`): `WSMessage.PullReq` / `PushReq` /
//!   `Ping` in, `PullRes` / `PushAck` / `Error` / `Pong` out; every push is
//!   sent to every 0.3 connection of the store.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::rooms::frames::Frame;

/// The most events in one pull page (the client's own limit too).
pub const MAX_EVENTS_PER_CHUNK: usize = 100;

/// The most bytes of one frame the server sends (below the 1 MB frame
/// limits `@livestore/sync-cf` keeps to).
pub const MAX_CHUNK_BYTES: usize = 900_000;

/// Which `@livestore/sync-cf` a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dialect {
    /// 0.4: Effect RPC (`?storeId&payload&transport=ws` at the prefix).
    Rpc,
    /// 0.3: `WSMessage` (`{prefix}/websocket?storeId&payload`).
    WsMessage,
}

/// An event as clients encode it. `args` is kept as the client wrote it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Box<RawValue>>,
    pub seq_num: u64,
    pub parent_seq_num: u64,
    pub client_id: String,
    pub session_id: String,
}

/// What the log keeps of an event: the event and when it was stored.
#[derive(Serialize, Deserialize)]
struct Stored<'a> {
    #[serde(borrow)]
    event: &'a RawValue,
    #[serde(rename = "createdAt")]
    created_at: &'a str,
}

/// The log entry for `event`, stored at `created_at` (ISO 8601).
pub fn stored(event: &Event, created_at: &str) -> bytes::Bytes {
    let event = serde_json::value::to_raw_value(event).expect("an event serialises");
    let stored = Stored {
        event: &event,
        created_at,
    };
    serde_json::to_vec(&stored)
        .expect("a stored event serialises")
        .into()
}

/// A client's message.
#[derive(Debug)]
pub enum Request {
    Pull {
        id: String,
        store: Option<String>,
        /// Events after this one (`None`: from the first).
        cursor: Option<u64>,
        /// The backend the cursor came from (0.4).
        backend: Option<String>,
        /// Keep the pull open for later pushes (0.4).
        live: bool,
    },
    Push {
        id: String,
        store: Option<String>,
        batch: Vec<Event>,
        backend: Option<String>,
    },
    Ping,
    /// A 0.4 client's receipt of a chunk; the server does not wait for it.
    Ack,
    /// A 0.4 client ends a pull.
    Interrupt {
        id: String,
    },
    /// A 0.4 client has no more requests.
    Eof,
    /// A request this server does not serve (admin messages), by id.
    Unsupported {
        id: String,
        what: String,
    },
}

/// Every field either dialect's messages carry at the top level.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head {
    #[serde(rename = "_tag")]
    kind: String,
    id: Option<String>,
    tag: Option<String>,
    request_id: Option<String>,
    payload: Option<Box<RawValue>>,
    cursor: Option<u64>,
    batch: Option<Vec<Event>>,
}

/// Effect's encoding of an `Option`.
#[derive(Deserialize)]
struct Maybe<T> {
    #[serde(rename = "_tag")]
    kind: String,
    value: Option<T>,
}

impl<T> Maybe<T> {
    fn get(self) -> Result<Option<T>, String> {
        match (self.kind.as_str(), self.value) {
            ("None", _) => Ok(None),
            ("Some", Some(v)) => Ok(Some(v)),
            _ => Err(
                "an option must be {\"_tag\":\"None\"} or {\"_tag\":\"Some\",\"value\":…}".into(),
            ),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PullPayload {
    store_id: String,
    live: bool,
    cursor: Maybe<Cursor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Cursor {
    backend_id: String,
    event_sequence_number: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PushPayload {
    store_id: String,
    batch: Vec<Event>,
    backend_id: Maybe<String>,
}

/// Reads one client message of `dialect`.
pub fn parse(dialect: Dialect, text: &str) -> Result<Request, String> {
    let head: Head = serde_json::from_str(text).map_err(|e| format!("not a message: {e}"))?;
    let need = |v: Option<String>, field: &str| {
        v.ok_or_else(|| format!("{} without {field}", head_kind(&head.kind)))
    };
    match (dialect, head.kind.as_str()) {
        (Dialect::Rpc, "Request") => {
            let id = need(head.id, "id")?;
            let payload = head.payload.ok_or("a request without payload")?;
            match head.tag.as_deref() {
                Some("SyncWsRpc.Pull") => {
                    let p: PullPayload = serde_json::from_str(payload.get())
                        .map_err(|e| format!("a bad pull: {e}"))?;
                    let cursor = p.cursor.get()?;
                    Ok(Request::Pull {
                        id,
                        store: Some(p.store_id),
                        cursor: cursor.as_ref().map(|c| c.event_sequence_number),
                        backend: cursor.map(|c| c.backend_id),
                        live: p.live,
                    })
                }
                Some("SyncWsRpc.Push") => {
                    let p: PushPayload = serde_json::from_str(payload.get())
                        .map_err(|e| format!("a bad push: {e}"))?;
                    Ok(Request::Push {
                        id,
                        store: Some(p.store_id),
                        batch: p.batch,
                        backend: p.backend_id.get()?,
                    })
                }
                other => Ok(Request::Unsupported {
                    id,
                    what: other.map_or("a request without tag".into(), head_kind),
                }),
            }
        }
        (Dialect::Rpc, "Ack") => Ok(Request::Ack),
        (Dialect::Rpc, "Interrupt") => Ok(Request::Interrupt {
            id: need(head.request_id, "requestId")?,
        }),
        (Dialect::Rpc, "Ping") => Ok(Request::Ping),
        (Dialect::Rpc, "Eof") => Ok(Request::Eof),
        (Dialect::WsMessage, "WSMessage.PullReq") => Ok(Request::Pull {
            id: need(head.request_id, "requestId")?,
            store: None,
            cursor: head.cursor,
            backend: None,
            live: false,
        }),
        (Dialect::WsMessage, "WSMessage.PushReq") => Ok(Request::Push {
            id: need(head.request_id, "requestId")?,
            store: None,
            batch: head.batch.ok_or("a push without batch")?,
            backend: None,
        }),
        (Dialect::WsMessage, "WSMessage.Ping") => Ok(Request::Ping),
        (Dialect::WsMessage, kind @ ("WSMessage.AdminResetRoomReq" | "WSMessage.AdminInfoReq")) => {
            Ok(Request::Unsupported {
                id: need(head.request_id, "requestId")?,
                what: kind.to_string(),
            })
        }
        (_, kind) => Err(format!("unknown message {}", head_kind(kind))),
    }
}

fn head_kind(kind: &str) -> String {
    let mut kind: String = kind.chars().take(64).collect();
    kind.insert(0, '\'');
    kind.push('\'');
    kind
}

/// Why a push is refused before it is stored.
#[derive(Debug, PartialEq, Eq)]
pub enum PushRefusal {
    /// Its first event does not follow the store's head: the client pulls,
    /// rebases and pushes again.
    ServerAhead { head: u64, provided: u64 },
    /// Its events do not follow one another (`seqNum` = `parentSeqNum` + 1).
    Malformed(String),
}

/// Checks that `batch` continues a store whose last event is `head`.
pub fn check_push(head: u64, batch: &[Event]) -> Result<(), PushRefusal> {
    let Some(first) = batch.first() else {
        return Ok(());
    };
    if first.parent_seq_num != head {
        return Err(PushRefusal::ServerAhead {
            head,
            provided: first.parent_seq_num,
        });
    }
    let mut parent = head;
    for event in batch {
        if event.parent_seq_num != parent || Some(event.seq_num) != parent.checked_add(1) {
            return Err(PushRefusal::Malformed(format!(
                "event {} (parent {}) does not follow event {parent}",
                event.seq_num, event.parent_seq_num
            )));
        }
        parent = event.seq_num;
    }
    Ok(())
}

/// Stored events as the batch items of `dialect`'s pages (read once,
/// then framed for each request that gets them).
pub fn items(dialect: Dialect, events: &[bytes::Bytes]) -> Result<Vec<String>, String> {
    let metadata_tag = match dialect {
        Dialect::Rpc => r#""_tag":"SyncMessage.SyncMetadata","#,
        Dialect::WsMessage => "",
    };
    (events.iter())
        .map(|entry| {
            let stored: Stored<'_> = serde_json::from_slice(entry)
                .map_err(|e| format!("a stored event is corrupt: {e}"))?;
            Ok(format!(
                r#"{{"eventEncoded":{},"metadata":{{"_tag":"Some","value":{{{metadata_tag}"createdAt":{}}}}}}}"#,
                stored.event.get(),
                json_string(stored.created_at)
            ))
        })
        .collect()
}

/// Pull pages of one dialect: at most `MAX_EVENTS_PER_CHUNK` events and
/// `MAX_CHUNK_BYTES` bytes each.
pub struct Pages<'a> {
    pub dialect: Dialect,
    pub backend: &'a str,
    /// 0.4: the pull's request id; 0.3: the pull's or the push's.
    pub request: &'a str,
    /// 0.3: whether the events answer a pull (or were pushed).
    pub pulled: bool,
}

impl Pages<'_> {
    /// Frames for `items` (from `items`, in order), the last leaving
    /// `remaining` events of the pull unsent. No items: one empty page.
    pub fn frames(&self, items: &[String], remaining: u64) -> Vec<Frame> {
        let mut frames = Vec::new();
        let (mut start, mut bytes) = (0, 0);
        for (i, item) in items.iter().enumerate() {
            let count = i - start;
            if count == MAX_EVENTS_PER_CHUNK
                || (count > 0 && bytes + item.len() > MAX_CHUNK_BYTES - 256)
            {
                let left = remaining + (items.len() - i) as u64;
                frames.push(self.page(&items[start..i], left));
                (start, bytes) = (i, 0);
            }
            bytes += item.len() + 1;
        }
        frames.push(self.page(&items[start..], remaining));
        frames
    }

    fn page(&self, items: &[String], remaining: u64) -> Frame {
        let batch = items.join(",");
        let request = json_string(self.request);
        Frame::from(match self.dialect {
            Dialect::Rpc => {
                let page_info = if remaining > 0 {
                    format!(r#"{{"_tag":"MoreKnown","remaining":{remaining}}}"#)
                } else {
                    r#"{"_tag":"NoMore"}"#.to_string()
                };
                format!(
                    r#"{{"_tag":"Chunk","requestId":{request},"values":[{{"batch":[{batch}],"pageInfo":{page_info},"backendId":{}}}]}}"#,
                    json_string(self.backend)
                )
            }
            Dialect::WsMessage => {
                let context = if self.pulled { "pull" } else { "push" };
                format!(
                    r#"{{"_tag":"WSMessage.PullRes","batch":[{batch}],"requestId":{{"context":"{context}","requestId":{request}}},"remaining":{remaining}}}"#
                )
            }
        })
    }
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

/// A 0.4 request's end: `exit` is Effect's encoded `Exit`.
fn exit(request: &str, exit: &str) -> Frame {
    Frame::from(format!(
        r#"{{"_tag":"Exit","requestId":{},"exit":{exit}}}"#,
        json_string(request)
    ))
}

/// A 0.4 failure with this encoded error.
fn failure(request: &str, error: &str) -> Frame {
    exit(
        request,
        &format!(r#"{{"_tag":"Failure","cause":{{"_tag":"Fail","error":{error}}}}}"#),
    )
}

/// A push stored.
pub fn push_ack(dialect: Dialect, request: &str) -> Frame {
    match dialect {
        Dialect::Rpc => exit(request, r#"{"_tag":"Success","value":{}}"#),
        Dialect::WsMessage => Frame::from(format!(
            r#"{{"_tag":"WSMessage.PushAck","requestId":{}}}"#,
            json_string(request)
        )),
    }
}

/// A push refused: the client's `ServerAheadError` (0.4) or an error that
/// names the expected parent (0.3, as its server words it).
pub fn push_refused(dialect: Dialect, request: &str, refusal: &PushRefusal) -> Frame {
    match (dialect, refusal) {
        (Dialect::Rpc, PushRefusal::ServerAhead { head, provided }) => failure(
            request,
            &format!(
                r#"{{"_tag":"ServerAheadError","minimumExpectedNum":{head},"providedNum":{provided}}}"#
            ),
        ),
        (Dialect::WsMessage, PushRefusal::ServerAhead { head, provided }) => error(
            dialect,
            request,
            &format!("Invalid parent event number. Received e{provided} but expected e{head}"),
        ),
        (_, PushRefusal::Malformed(why)) => error(dialect, request, why),
    }
}

/// The cursor or push came from another backend (the store was reset or
/// moved): the client starts over.
pub fn backend_mismatch(request: &str, expected: &str, received: &str) -> Frame {
    failure(
        request,
        &format!(
            r#"{{"_tag":"BackendIdMismatchError","expected":{},"received":{}}}"#,
            json_string(expected),
            json_string(received)
        ),
    )
}

/// A request that failed for another reason: 0.4's `UnknownError`, 0.3's
/// `WSMessage.Error`.
pub fn error(dialect: Dialect, request: &str, message: &str) -> Frame {
    match dialect {
        Dialect::Rpc => failure(
            request,
            &format!(
                r#"{{"_tag":"UnknownError","cause":{},"note":"spike"}}"#,
                json_string(message)
            ),
        ),
        Dialect::WsMessage => Frame::from(format!(
            r#"{{"_tag":"WSMessage.Error","requestId":{},"message":{}}}"#,
            json_string(request),
            json_string(message)
        )),
    }
}

/// A pull that is not live, after its last page.
pub fn pull_done(request: &str) -> Frame {
    exit(request, r#"{"_tag":"Success"}"#)
}

/// A pull the client interrupted.
pub fn interrupted(request: &str) -> Frame {
    exit(
        request,
        r#"{"_tag":"Failure","cause":{"_tag":"Interrupt","fiberId":{"_tag":"None"}}}"#,
    )
}

/// A message that is not a request of this protocol (0.4's `Defect`).
pub fn defect(dialect: Dialect, message: &str) -> Frame {
    match dialect {
        Dialect::Rpc => Frame::from(format!(
            r#"{{"_tag":"Defect","defect":{}}}"#,
            json_string(message)
        )),
        Dialect::WsMessage => error(dialect, "", message),
    }
}

pub fn pong(dialect: Dialect) -> Frame {
    Frame::from(match dialect {
        Dialect::Rpc => r#"{"_tag":"Pong"}"#.to_string(),
        Dialect::WsMessage => r#"{"_tag":"WSMessage.Pong","requestId":"ping"}"#.to_string(),
    })
}

/// `ms` since the epoch as ISO 8601 in UTC, as JavaScript's
/// `toISOString` writes it.
pub fn iso_time(ms: u64) -> String {
    let (days, ms_of_day) = ((ms / 86_400_000) as i64, ms % 86_400_000);
    // Civil date from days since 1970-01-01 (Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, milli) = (
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1000 % 60,
        ms_of_day % 1000,
    );
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

#[cfg(test)]
mod tests;
