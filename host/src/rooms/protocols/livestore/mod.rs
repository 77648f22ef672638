//! `livestore`: a LiveStore event log, spoken as `@livestore/sync-cf`
//! speaks it (`wire`: both dialects). The room is a store; its log holds
//! one entry per event and is never compacted (a new client replays every
//! event). A member's pulls and pushes are taken here.
//!
//! A push is checked against the store's head (its events must follow it
//! one by one), stored with the batch's other events, and only then
//! published: to each 0.4 member once per open live pull, to every 0.3
//! member, and acknowledged to its sender. A pull's stored events are read
//! by the member's connection (a `CatchUp` in its queue), so a long store
//! does not hold the room; what is pushed after the pull follows it in the
//! same queue, in order.

pub mod wire;

use std::sync::Arc;

use bytes::Bytes;

use super::Protocol;
use crate::metrics::Metrics;
use crate::rooms::frames::Frame;
use crate::rooms::owner::{Origin, Pending, Room};
use crate::rooms::{CatchUp, CatchUpForm, Delivery, JoinRequest, RoomLimits};
use crate::storage::{RoomLog, RoomLogHead, StorageError};
use wire::{Dialect, Event, Pages, Request};

/// The default largest message: a push of 100 events, which
/// `@livestore/sync-cf` keeps below 900 KB.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// Where a store keeps its backend id in the room's state.
const BACKEND_KEY: &str = "livestore-backend";

/// Live pulls one connection may hold open (a client holds one): each
/// push is sent once per pull, so more would multiply what a room sends.
const MAX_LIVE_PULLS: usize = 8;

/// The longest request id kept for a live pull (Effect's are short
/// decimal numbers).
const MAX_REQUEST_ID: usize = 64;

/// A member's dialect and its open live pulls (0.4 request ids).
pub struct Subscriber {
    dialect: Dialect,
    pulls: Vec<Arc<str>>,
}

impl Subscriber {
    pub fn new(dialect: Dialect) -> Self {
        Self {
            dialect,
            pulls: Vec::new(),
        }
    }
}

/// What the owner keeps of a store: its events are in the log.
pub struct LiveStore {
    /// Stable for the store's life: a client that knew another backend
    /// (the store was reset) starts over.
    backend: Arc<str>,
}

impl LiveStore {
    /// The store's backend id, made and kept on its first open.
    pub async fn open(log: &Arc<dyn RoomLog>, room: &str) -> Result<Self, StorageError> {
        let backend = match log.state_get(room, BACKEND_KEY).await? {
            Some(id) => String::from_utf8(id.to_vec())
                .map_err(|_| StorageError::Corrupt(format!("{room}: a backend id is not UTF-8")))?,
            None => {
                let seed = format!("{room}:{}:{}", std::process::id(), now_ns());
                let id = crate::util::sha256_hex(seed.as_bytes())[..20].to_string();
                log.state_set(room, BACKEND_KEY, Some(Bytes::from(id.clone())))
                    .await?;
                id
            }
        };
        Ok(Self {
            backend: backend.into(),
        })
    }
}

fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// A push whose events wait in `pending`: whom to acknowledge once stored.
pub struct Pushed {
    sender: u64,
    dialect: Dialect,
    request: Arc<str>,
}

impl Protocol for LiveStore {
    const NAME: &'static str = "livestore";
    const COMPACTS: bool = false;
    type Member = Subscriber;
    type Push = Pushed;

    fn client_path(prefix: &str) -> String {
        format!("{prefix}?storeId={{store}}")
    }

    /// A client that was offline pushes its events 100 at a time, each
    /// push waiting for the last one's acknowledgement.
    fn default_limits(limits: &mut RoomLimits) {
        limits.max_message_bytes = MAX_MESSAGE_BYTES;
        limits.messages_per_s = 1000;
    }

    fn member(request: &JoinRequest) -> Subscriber {
        Subscriber::new(request.dialect.unwrap_or(Dialect::Rpc))
    }

    async fn load(room: &Room<Self>, _: &RoomLogHead) -> Result<Self, StorageError> {
        Self::open(&room.hub.log, &room.name).await
    }

    /// Nothing: a LiveStore client speaks first, and catches up by pulling.
    fn welcome(
        &mut self,
        _: &Room<Self>,
        _: &str,
        _: Option<u64>,
    ) -> (Vec<Frame>, Option<CatchUp>) {
        (Vec::new(), None)
    }

    async fn take(
        &mut self,
        room: &mut Room<Self>,
        from: &Origin,
        message: &Frame,
        pending: &mut Vec<Pending<Pushed>>,
    ) {
        if let Frame::Text(text) = message {
            self.take_request(room, from.connection(), text, pending);
        }
    }

    /// A push's events go out together once stored: to each 0.4 member
    /// once per open live pull, to every 0.3 member; and the push is
    /// acknowledged.
    fn publish(&mut self, room: &mut Room<Self>, stored: Vec<Pending<Pushed>>) {
        let mut events = Vec::new();
        for event in stored {
            events.push(event.stored);
            if let Some(push) = event.push {
                self.publish_push(room, *push, std::mem::take(&mut events));
            }
        }
    }

    fn snapshot(&self) -> Option<Result<Bytes, String>> {
        None
    }
}

fn count_request(room: &Room<LiveStore>, outcome: &'static str) {
    let metrics = &room.hub.metrics.rooms;
    Metrics::count(&metrics.livestore_requests, &room.plugin, outcome, 1);
}

/// A member's dialect and open live pulls.
fn subscriber(room: &mut Room<LiveStore>, connection: u64) -> Option<&mut Subscriber> {
    (room.members.get_mut(&connection)).map(|m| &mut m.protocol)
}

impl LiveStore {
    /// A request's sender, dialect and id, if the backend id it names (if
    /// any) is the store's; if not, the client is told with
    /// `BackendIdMismatchError`.
    fn ours(&self, room: &mut Room<Self>, asked: Asked) -> Option<(u64, Dialect, Arc<str>)> {
        if let Some(theirs) = &asked.backend
            && **theirs != *self.backend
        {
            count_request(room, "backend_mismatch");
            let mismatch = wire::backend_mismatch(&asked.id, &self.backend, theirs);
            room.reply(asked.connection, mismatch);
            return None;
        }
        Some((asked.connection, asked.dialect, asked.id))
    }

    /// One message of a member.
    fn take_request(
        &mut self,
        room: &mut Room<Self>,
        connection: u64,
        text: &str,
        pending: &mut Vec<Pending<Pushed>>,
    ) {
        let Some(dialect) = subscriber(room, connection).map(|s| s.dialect) else {
            return;
        };
        let request = match wire::parse(dialect, text) {
            Ok(request) => request,
            Err(why) => {
                count_request(room, "bad_message");
                room.reply(connection, wire::defect(dialect, &why));
                return;
            }
        };
        let store_of = |request: &Request| match request {
            Request::Pull { id, store, .. } | Request::Push { id, store, .. } => {
                store.as_deref().map(|s| (id.clone(), s.to_string()))
            }
            _ => None,
        };
        if let Some((id, store)) = store_of(&request)
            && store != room.id
        {
            count_request(room, "refused");
            let store: String = store.chars().take(128).collect();
            let why = format!("this connection is to store '{}', not '{store}'", room.id);
            room.reply(connection, wire::error(dialect, &id, &why));
            return;
        }
        match request {
            Request::Ping => room.reply(connection, wire::pong(dialect)),
            Request::Ack | Request::Eof => {}
            Request::Interrupt { id } => {
                if let Some(s) = subscriber(room, connection) {
                    s.pulls.retain(|p| **p != *id);
                }
                room.reply(connection, wire::interrupted(&id));
            }
            Request::Unsupported { id, what } => {
                count_request(room, "bad_message");
                let why = format!("{what} is not served here");
                room.reply(connection, wire::error(dialect, &id, &why));
            }
            Request::Pull {
                id,
                cursor,
                backend,
                live,
                ..
            } => {
                let asked = Asked::new(connection, dialect, id, backend);
                self.pull(room, asked, cursor, live)
            }
            Request::Push {
                id, batch, backend, ..
            } => {
                let asked = Asked::new(connection, dialect, id, backend);
                self.push(room, asked, batch, pending)
            }
        }
    }

    /// The stored events after `cursor` (pages read by the connection),
    /// then, for a live pull, every push as it is stored.
    fn pull(&mut self, room: &mut Room<Self>, asked: Asked, cursor: Option<u64>, live: bool) {
        let Some((connection, dialect, id)) = self.ours(room, asked) else {
            return;
        };
        let head = room.place.head;
        let after = cursor.unwrap_or(0);
        let live = live && dialect == Dialect::Rpc;
        let pulls = subscriber(room, connection).map_or(0, |s| s.pulls.len());
        if live && (pulls >= MAX_LIVE_PULLS || id.len() > MAX_REQUEST_ID) {
            count_request(room, "refused");
            let why = format!(
                "at most {MAX_LIVE_PULLS} live pulls a connection, their ids at most {MAX_REQUEST_ID} bytes"
            );
            room.reply(connection, wire::error(dialect, &id, &why));
            return;
        }
        count_request(room, "pull");
        if after >= head {
            let pages = Pages {
                dialect,
                backend: &self.backend,
                request: &id,
                pulled: true,
            };
            for frame in pages.frames(&[], 0) {
                room.reply(connection, frame);
            }
        } else {
            let catch_up = CatchUp {
                form: CatchUpForm::LiveStore {
                    dialect,
                    request: id.clone(),
                    backend: self.backend.clone(),
                },
                ..room.catch_up(after, None)
            };
            room.deliver(connection, Delivery::CatchUp(Box::new(catch_up)));
        }
        match dialect {
            // 0.3 connections get every push anyway.
            Dialect::WsMessage => {}
            Dialect::Rpc if live => {
                if let Some(s) = subscriber(room, connection) {
                    s.pulls.push(id);
                }
            }
            Dialect::Rpc => room.reply(connection, wire::pull_done(&id)),
        }
    }

    /// Checks a push against the head (counting events of this batch not
    /// yet stored) and adds its events to `pending`.
    fn push(
        &mut self,
        room: &mut Room<Self>,
        asked: Asked,
        batch: Vec<Event>,
        pending: &mut Vec<Pending<Pushed>>,
    ) {
        let Some((connection, dialect, id)) = self.ours(room, asked) else {
            return;
        };
        if batch.is_empty() {
            room.reply(connection, wire::push_ack(dialect, &id));
            return;
        }
        let head = room.next_seq(pending) - 1;
        if let Err(refusal) = wire::check_push(head, &batch) {
            count_request(
                room,
                match refusal {
                    wire::PushRefusal::ServerAhead { .. } => "server_ahead",
                    wire::PushRefusal::Malformed(_) => "refused",
                },
            );
            room.reply(connection, wire::push_refused(dialect, &id, &refusal));
            return;
        }
        count_request(room, "push");
        let created_at = wire::iso_time(crate::util::now_ms());
        let mut done = Some(Box::new(Pushed {
            sender: connection,
            dialect,
            request: id,
        }));
        let last = batch.len() - 1;
        for (i, event) in batch.iter().enumerate() {
            pending.push(Pending {
                sender: Some(connection),
                stored: wire::stored(event, &created_at),
                frame: None,
                push: if i == last { done.take() } else { None },
            });
        }
    }

    /// Sends a stored push's `events` to the members that get them, and
    /// acknowledges it (0.3 acknowledges first, 0.4 after, as their
    /// servers do).
    fn publish_push(&self, room: &mut Room<Self>, push: Pushed, events: Vec<Bytes>) {
        let backend = &self.backend;
        if push.dialect == Dialect::WsMessage {
            room.reply(push.sender, wire::push_ack(push.dialect, &push.request));
        }
        // 0.4 pages name each live pull, so they are framed per pull; 0.3
        // pages name the push, the same for every 0.3 connection.
        let (mut rpc_items, mut ws_frames) = (None, None);
        let mut frames = Vec::new();
        for (&n, member) in &room.members {
            let s = &member.protocol;
            let page = |request| Pages {
                dialect: s.dialect,
                backend,
                request,
                pulled: false,
            };
            let items = |dialect| wire::items(dialect, &events).unwrap_or_default();
            match s.dialect {
                Dialect::Rpc => {
                    for request in &s.pulls {
                        let items = rpc_items.get_or_insert_with(|| items(Dialect::Rpc));
                        frames.extend(page(request).frames(items, 0).into_iter().map(|f| (n, f)));
                    }
                }
                Dialect::WsMessage => {
                    let shared = ws_frames.get_or_insert_with(|| {
                        page(&push.request).frames(&items(Dialect::WsMessage), 0)
                    });
                    frames.extend(shared.iter().map(|f| (n, f.clone())));
                }
            }
        }
        for (n, frame) in frames {
            room.reply(n, frame);
        }
        if push.dialect == Dialect::Rpc {
            room.reply(push.sender, wire::push_ack(push.dialect, &push.request));
        }
    }
}

/// A pull's or push's sender, request id, and the backend id it names.
struct Asked {
    connection: u64,
    dialect: Dialect,
    id: Arc<str>,
    backend: Option<String>,
}

impl Asked {
    fn new(connection: u64, dialect: Dialect, id: String, backend: Option<String>) -> Self {
        Self {
            connection,
            dialect,
            id: id.into(),
            backend,
        }
    }
}
