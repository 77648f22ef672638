//! A `livestore` room's owner side: a member's pulls and pushes.
//!
//! A push is checked against the store's head (its events must follow it
//! one by one), stored with the batch's other events, and only then
//! published: to each 0.4 member once per open live pull, to every 0.3
//! member, and acknowledged to its sender. A pull's stored events are read
//! by the member's connection (a `CatchUp` in its queue), so a long store
//! does not hold the room; what is pushed after the pull follows it in the
//! same queue, in order.

use std::sync::Arc;

use bytes::Bytes;

use super::state::{Content, State};
use super::{Owner, Pending, Publish};
use crate::metrics::Metrics;
use crate::runtime::rooms::livestore::{self as protocol, Dialect, Event, Pages, Request};
use crate::runtime::rooms::{CatchUp, CatchUpForm, Delivery};
use crate::storage::{RoomLog, StorageError};

/// Where a store keeps its backend id in the room's state.
const BACKEND_KEY: &str = "livestore-backend";

/// Live pulls one connection may hold open (a client holds one): each
/// push is sent once per pull, so more would multiply what a room sends.
const MAX_LIVE_PULLS: usize = 8;

/// The longest request id kept for a live pull (Effect's are short
/// decimal numbers).
const MAX_REQUEST_ID: usize = 64;

/// A member's dialect and its open live pulls (0.4 request ids).
pub(in crate::runtime::rooms) struct Subscriber {
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
pub(in crate::runtime::rooms) struct Store {
    /// Stable for the store's life: a client that knew another backend
    /// (the store was reset) starts over.
    backend: Arc<str>,
}

impl Store {
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
pub(in crate::runtime::rooms) struct Pushed {
    sender: u64,
    dialect: Dialect,
    request: Arc<str>,
}

impl Owner {
    fn count_request(&self, outcome: &'static str) {
        Metrics::count(
            &self.hub.metrics.rooms.livestore_requests,
            &self.plugin,
            outcome,
            1,
        );
    }

    fn backend(&self) -> Option<Arc<str>> {
        match &self.state {
            Some(State {
                content: Content::LiveStore(store),
                ..
            }) => Some(store.backend.clone()),
            _ => None,
        }
    }

    /// Whether a request's backend id, if it names one, is the store's;
    /// if not, the client is told with `BackendIdMismatchError`.
    fn same_backend(
        &mut self,
        connection: u64,
        request: &str,
        ours: &str,
        theirs: Option<String>,
    ) -> bool {
        match theirs {
            Some(theirs) if theirs != ours => {
                self.count_request("backend_mismatch");
                let mismatch = protocol::backend_mismatch(request, ours, &theirs);
                self.reply(connection, mismatch);
                false
            }
            _ => true,
        }
    }

    /// One message of a `livestore` member (the state is loaded).
    pub(super) fn take_livestore(
        &mut self,
        connection: u64,
        text: &str,
        pending: &mut Vec<Pending>,
    ) {
        let Some(dialect) = (self.members.get(&connection))
            .and_then(|m| m.livestore.as_ref())
            .map(|s| s.dialect)
        else {
            return;
        };
        let request = match protocol::parse(dialect, text) {
            Ok(request) => request,
            Err(why) => {
                self.count_request("bad_message");
                self.reply(connection, protocol::defect(dialect, &why));
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
            && store != self.id
        {
            self.count_request("refused");
            let store: String = store.chars().take(128).collect();
            let why = format!("this connection is to store '{}', not '{store}'", self.id);
            self.reply(connection, protocol::error(dialect, &id, &why));
            return;
        }
        match request {
            Request::Ping => self.reply(connection, protocol::pong(dialect)),
            Request::Ack | Request::Eof => {}
            Request::Interrupt { id } => {
                if let Some(s) =
                    (self.members.get_mut(&connection)).and_then(|m| m.livestore.as_mut())
                {
                    s.pulls.retain(|p| **p != *id);
                }
                self.reply(connection, protocol::interrupted(&id));
            }
            Request::Unsupported { id, what } => {
                self.count_request("bad_message");
                let why = format!("{what} is not served here");
                self.reply(connection, protocol::error(dialect, &id, &why));
            }
            Request::Pull {
                id,
                cursor,
                backend,
                live,
                ..
            } => self.pull(connection, dialect, id.into(), cursor, backend, live),
            Request::Push {
                id, batch, backend, ..
            } => self.push(connection, dialect, id.into(), batch, backend, pending),
        }
    }

    /// The stored events after `cursor` (pages read by the connection),
    /// then, for a live pull, every push as it is stored.
    fn pull(
        &mut self,
        connection: u64,
        dialect: Dialect,
        id: Arc<str>,
        cursor: Option<u64>,
        backend: Option<String>,
        live: bool,
    ) {
        let (Some(ours), Some(head)) = (self.backend(), self.state.as_ref().map(|s| s.head)) else {
            return;
        };
        if !self.same_backend(connection, &id, &ours, backend) {
            return;
        }
        let after = cursor.unwrap_or(0);
        let live = live && dialect == Dialect::Rpc;
        let pulls = (self.members.get(&connection))
            .and_then(|m| m.livestore.as_ref())
            .map_or(0, |s| s.pulls.len());
        if live && (pulls >= MAX_LIVE_PULLS || id.len() > MAX_REQUEST_ID) {
            self.count_request("refused");
            let why = format!(
                "at most {MAX_LIVE_PULLS} live pulls a connection, their ids at most {MAX_REQUEST_ID} bytes"
            );
            self.reply(connection, protocol::error(dialect, &id, &why));
            return;
        }
        self.count_request("pull");
        if after >= head {
            let pages = Pages {
                dialect,
                backend: &ours,
                request: &id,
                pulled: true,
            };
            for frame in pages.frames(&[], 0) {
                self.reply(connection, frame);
            }
        } else {
            let catch_up = CatchUp {
                log: self.hub.log.clone(),
                room: self.name.clone(),
                snapshot: None,
                after,
                through: head,
                form: CatchUpForm::LiveStore {
                    dialect,
                    request: id.clone(),
                    backend: ours,
                },
            };
            self.deliver(connection, Delivery::CatchUp(Box::new(catch_up)));
        }
        match dialect {
            // 0.3 connections get every push anyway.
            Dialect::WsMessage => {}
            Dialect::Rpc if live => {
                if let Some(s) =
                    (self.members.get_mut(&connection)).and_then(|m| m.livestore.as_mut())
                {
                    s.pulls.push(id);
                }
            }
            Dialect::Rpc => self.reply(connection, protocol::pull_done(&id)),
        }
    }

    /// Checks a push against the head (counting events of this batch not
    /// yet stored) and adds its events to `pending`.
    fn push(
        &mut self,
        connection: u64,
        dialect: Dialect,
        id: Arc<str>,
        batch: Vec<Event>,
        backend: Option<String>,
        pending: &mut Vec<Pending>,
    ) {
        let Some(ours) = self.backend() else {
            return;
        };
        if !self.same_backend(connection, &id, &ours, backend) {
            return;
        }
        if batch.is_empty() {
            self.reply(connection, protocol::push_ack(dialect, &id));
            return;
        }
        let head = self.next_seq(pending) - 1;
        if let Err(refusal) = protocol::check_push(head, &batch) {
            self.count_request(match refusal {
                protocol::PushRefusal::ServerAhead { .. } => "server_ahead",
                protocol::PushRefusal::Malformed(_) => "refused",
            });
            self.reply(connection, protocol::push_refused(dialect, &id, &refusal));
            return;
        }
        self.count_request("push");
        let created_at = protocol::iso_time(crate::util::now_ms());
        let mut done = Some(Box::new(Pushed {
            sender: connection,
            dialect,
            request: id,
        }));
        let last = batch.len() - 1;
        for (i, event) in batch.iter().enumerate() {
            pending.push(Pending {
                sender: Some(connection),
                stored: protocol::stored(event, &created_at),
                publish: Publish::LiveStore(if i == last { done.take() } else { None }),
            });
        }
    }

    /// Sends a stored push's `events` to the members that get them, and
    /// acknowledges it (0.3 acknowledges first, 0.4 after, as their
    /// servers do).
    pub(super) fn publish_push(&mut self, push: Pushed, events: Vec<Bytes>) {
        let Some(backend) = self.backend() else {
            return;
        };
        if push.dialect == Dialect::WsMessage {
            self.reply(push.sender, protocol::push_ack(push.dialect, &push.request));
        }
        // 0.4 pages name each live pull, so they are framed per pull; 0.3
        // pages name the push, the same for every 0.3 connection.
        let (mut rpc_items, mut ws_frames) = (None, None);
        let mut frames = Vec::new();
        for (&n, member) in &self.members {
            let Some(s) = &member.livestore else { continue };
            let page = |request| Pages {
                dialect: s.dialect,
                backend: &backend,
                request,
                pulled: false,
            };
            let items = |dialect| protocol::items(dialect, &events).unwrap_or_default();
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
            self.reply(n, frame);
        }
        if push.dialect == Dialect::Rpc {
            self.reply(push.sender, protocol::push_ack(push.dialect, &push.request));
        }
    }
}
