//! A room's owner: the one task that holds a room's members and state.
//!
//! It takes the commands waiting in its inbox as one batch: the messages
//! become numbered events (the protocol decides how), which are appended
//! to the room log together and, once durable, queued to every member;
//! then joins and leaves are answered, so a joiner's welcome counts every
//! event of the batch. A member whose queue is full is dropped (a slow
//! consumer never stalls the room). With no members for `idle`, the owner
//! ends; with members but no commands for `idle`, it drops its state
//! (hibernates) and reloads it from the log on the next event.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use super::frames::{self, Frame, MemberInfo};
use super::text::TextDoc;
use super::{
    CatchUp, JoinError, JoinOutcome, JoinRequest, Joined, Kick, Membership, RoomAddress, RoomHub,
    next_connection_id,
};
use crate::metrics::PluginLabel;
use crate::runtime::manifest::{RoomLimits, RoomProtocol};
use crate::storage::{RoomSnapshot, StorageError};

/// Commands taken as one batch at most.
const MAX_BATCH: usize = 512;

pub(super) enum Command {
    Join {
        request: JoinRequest,
        reply: oneshot::Sender<JoinOutcome>,
    },
    Message {
        connection: u64,
        message: Frame,
    },
    Leave {
        connection: u64,
    },
}

struct Member {
    id: Arc<str>,
    user: Option<Arc<str>>,
    queue: mpsc::Sender<Frame>,
    kick: Option<oneshot::Sender<Kick>>,
    bucket: Bucket,
}

impl Member {
    fn info(&self) -> MemberInfo<'_> {
        MemberInfo {
            connection: &self.id,
            user: self.user.as_deref(),
        }
    }
}

/// Messages a member may send: `rate` a second, in bursts of `rate`.
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(rate: u32) -> Self {
        Self {
            tokens: f64::from(rate),
            at: Instant::now(),
        }
    }

    fn take(&mut self, rate: u32) -> bool {
        let now = Instant::now();
        let rate = f64::from(rate);
        let refill = now.duration_since(self.at).as_secs_f64() * rate;
        self.tokens = (self.tokens + refill).min(rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What the owner knows of its log, and the protocol's state.
struct State {
    head: u64,
    compacted_through: u64,
    snapshot_seq: u64,
    /// The text of a `text` room.
    doc: Option<TextDoc>,
}

struct Owner {
    hub: Arc<RoomHub>,
    name: Arc<str>,
    id: String,
    plugin: Arc<str>,
    protocol: RoomProtocol,
    limits: RoomLimits,
    /// To hand members their line to this owner, without keeping the
    /// inbox open itself.
    inbox: mpsc::WeakSender<Command>,
    members: HashMap<u64, Member>,
    next_member: u64,
    /// `None` until loaded, while hibernating, and after a failed append.
    state: Option<State>,
    /// Members dropped during a broadcast, to announce after it.
    departed: Vec<Member>,
    events: Counter,
    deliveries: Counter,
}

pub(super) fn spawn(
    hub: Arc<RoomHub>,
    name: Arc<str>,
    room: &RoomAddress<'_>,
    inbox: mpsc::Receiver<Command>,
    inbox_tx: &mpsc::Sender<Command>,
) {
    let plugin: Arc<str> = room.plugin.into();
    let label = PluginLabel {
        plugin: plugin.clone(),
    };
    let metrics = &hub.metrics;
    metrics.rooms_open.inc();
    let owner = Owner {
        events: metrics.room_events.get_or_create_owned(&label),
        deliveries: metrics.room_deliveries.get_or_create_owned(&label),
        hub: hub.clone(),
        name,
        id: room.id.to_string(),
        plugin,
        protocol: room.route.protocol,
        limits: room.route.limits.clone(),
        inbox: inbox_tx.downgrade(),
        members: HashMap::new(),
        next_member: 0,
        state: None,
        departed: Vec::new(),
    };
    tokio::spawn(owner.run(inbox));
}

impl Owner {
    async fn run(mut self, mut inbox: mpsc::Receiver<Command>) {
        let mut batch = Vec::new();
        let mut stopping = self.hub.stopping.subscribe();
        loop {
            let next = tokio::select! {
                next = tokio::time::timeout(self.limits.idle, inbox.recv()) => next,
                _ = stopping.wait_for(|stop| *stop) => {
                    let all: Vec<u64> = self.members.keys().copied().collect();
                    for n in all {
                        self.kick(n, Kick::STOPPING, "stopping");
                    }
                    self.hub.retire_now(&self.name);
                    break;
                }
            };
            match next {
                Ok(Some(command)) => batch.push(command),
                Ok(None) => break,
                Err(_idle) if self.members.is_empty() => {
                    if self.hub.retire(&self.name, &inbox) {
                        break;
                    }
                    continue;
                }
                Err(_idle) => {
                    self.state = None; // hibernate: it is all in the log
                    continue;
                }
            }
            while batch.len() < MAX_BATCH
                && let Ok(command) = inbox.try_recv()
            {
                batch.push(command);
            }
            self.handle(&mut batch).await;
        }
        // Joins that reached the inbox as it closed go to a new owner.
        inbox.close();
        while let Ok(command) = inbox.try_recv() {
            if let Command::Join { request, reply } = command {
                let _ = reply.send(JoinOutcome::Closing(request));
            }
        }
        self.hub
            .metrics
            .room_connections
            .dec_by(self.departed.len() as i64);
        self.hub.metrics.rooms_open.dec();
    }

    async fn handle(&mut self, batch: &mut Vec<Command>) {
        let mut pending: Vec<(u64, Frame)> = Vec::new();
        let mut after = Vec::new();
        for command in batch.drain(..) {
            match command {
                Command::Message {
                    connection,
                    message,
                } => {
                    if let Some(event) = self.event_of(connection, &message, pending.len()).await {
                        pending.push((connection, event));
                    }
                }
                other => after.push(other),
            }
        }
        if !pending.is_empty() {
            self.commit(pending).await;
        }
        for command in after {
            match command {
                Command::Join { request, reply } => {
                    let outcome = match self.join(request).await {
                        Ok(joined) => JoinOutcome::Joined(Box::new(joined)),
                        Err(e) => JoinOutcome::Refused(e),
                    };
                    let _ = reply.send(outcome);
                }
                Command::Leave { connection } => {
                    if let Some(member) = self.members.remove(&connection) {
                        self.departed.push(member);
                    }
                }
                Command::Message { .. } => unreachable!("messages were taken first"),
            }
        }
        self.announce_departures();
        self.compact_if_due().await;
    }

    /// The event a member's message becomes, numbered after `pending`
    /// others of this batch; `None` (the sender told why) if none.
    async fn event_of(
        &mut self,
        connection: u64,
        message: &Frame,
        pending: usize,
    ) -> Option<Frame> {
        let rate = self.limits.messages_per_s;
        let member = self.members.get_mut(&connection)?;
        if !member.bucket.take(rate) {
            let error = frames::error(
                "rate_limited",
                &format!("at most {rate} messages a second; this one was dropped"),
            );
            self.reply(connection, error);
            return None;
        }
        let (from, user) = (member.id.clone(), member.user.clone());
        if let Err(e) = self.load().await {
            self.reply(connection, unavailable(&e));
            return None;
        }
        let state = self.state.as_mut().expect("loaded");
        let seq = state.head + pending as u64 + 1;
        match (self.protocol, state.doc.as_mut()) {
            (RoomProtocol::Text, Some(doc)) => {
                let edit = frames::parse_edit(message).and_then(|(steps, at)| {
                    let steps = doc.rebase(steps, at).map_err(|e| e.to_string())?;
                    doc.apply(steps.clone()).map_err(|e| e.to_string())?;
                    Ok(steps)
                });
                match edit {
                    Ok(steps) => Some(frames::op_event(seq, &from, user.as_deref(), &steps)),
                    Err(why) => {
                        self.reply(connection, frames::error("bad_edit", &why));
                        None
                    }
                }
            }
            _ => Some(frames::relay_event(seq, &from, user.as_deref(), message)),
        }
    }

    /// Appends `pending` to the log, then queues each event to every
    /// member; if the append fails, tells each sender and drops the state
    /// (it ran ahead of the log).
    async fn commit(&mut self, pending: Vec<(u64, Frame)>) {
        let state = self
            .state
            .as_mut()
            .expect("events come from a loaded state");
        let first = state.head + 1;
        let events: Vec<Bytes> = pending
            .iter()
            .map(|(_, e)| Bytes::from(e.clone()))
            .collect();
        let started = Instant::now();
        let appended = self.hub.log.append(&self.name, first, events).await;
        let metrics = &self.hub.metrics;
        metrics
            .room_append_seconds
            .observe(started.elapsed().as_secs_f64());
        match appended {
            Ok(()) => {
                state.head += pending.len() as u64;
                self.events.inc_by(pending.len() as u64);
                for (_, event) in pending {
                    self.broadcast(&event);
                }
            }
            Err(e) => {
                tracing::error!(room = %self.name, "room events not stored: {e}");
                self.state = None;
                let error =
                    frames::error("not_stored", "the message was not stored: send it again");
                for (connection, _) in pending {
                    self.reply(connection, error.clone());
                }
            }
        }
    }

    /// Queues `frame` to every member; drops those that cannot take it.
    fn broadcast(&mut self, frame: &Frame) {
        let mut slow = Vec::new();
        for (&n, member) in &self.members {
            if let Err(TrySendError::Full(_)) = member.queue.try_send(frame.clone()) {
                slow.push(n);
            }
        }
        self.deliveries.inc_by(self.members.len() as u64);
        for n in slow {
            self.kick(n, Kick::SLOW_CONSUMER, "slow_consumer");
        }
    }

    /// Queues `frame` to one member.
    fn reply(&mut self, connection: u64, frame: Frame) {
        let Some(member) = self.members.get(&connection) else {
            return;
        };
        if let Err(TrySendError::Full(_)) = member.queue.try_send(frame) {
            self.kick(connection, Kick::SLOW_CONSUMER, "slow_consumer");
        }
    }

    fn kick(&mut self, connection: u64, kick: Kick, kind: &'static str) {
        if let Some(mut member) = self.members.remove(&connection) {
            if let Some(tx) = member.kick.take() {
                let _ = tx.send(kick);
            }
            let metrics = &self.hub.metrics;
            crate::metrics::Metrics::count(&metrics.room_closes, &self.plugin, kind, 1);
            self.departed.push(member);
        }
    }

    /// Tells the members who left (announcing may drop more slow ones,
    /// who are announced in turn).
    fn announce_departures(&mut self) {
        while let Some(member) = self.departed.pop() {
            self.hub.metrics.room_connections.dec();
            let count = self.members.len();
            self.broadcast(&frames::presence("leave", &member.info(), count));
        }
    }

    async fn join(&mut self, request: JoinRequest) -> Result<Joined, JoinError> {
        let max = self.limits.max_connections;
        if self.members.len() >= max {
            crate::metrics::Metrics::count(&self.hub.metrics.room_closes, &self.plugin, "full", 1);
            return Err(JoinError::Full(max));
        }
        let owner = self
            .inbox
            .upgrade()
            .ok_or_else(|| JoinError::Unavailable("the room is closing".into()))?;
        self.load()
            .await
            .map_err(|e| JoinError::Unavailable(e.to_string()))?;
        let state = self.state.as_ref().expect("loaded");
        let head = state.head;
        let text = || state.doc.as_ref().map(TextDoc::text);
        let catch_up = |after, snapshot| {
            Some(CatchUp {
                log: self.hub.log.clone(),
                room: self.name.clone(),
                snapshot,
                after,
                through: head,
            })
        };
        let (text, catch_up) = match request.since {
            None => (text(), None),
            Some(since) if since >= head => (None, None),
            // Compacted away: a text room starts over from its text, a
            // relay room from its oldest kept event.
            Some(since) if since < state.compacted_through => match self.protocol {
                RoomProtocol::Text => (text(), None),
                RoomProtocol::Relay => {
                    let through = state.compacted_through;
                    (None, catch_up(through, Some(frames::snapshot(through))))
                }
            },
            Some(since) => (None, catch_up(since, None)),
        };
        let id = next_connection_id();
        let user: Option<Arc<str>> = request.user.map(Into::into);
        let count = self.members.len() + 1;
        let others: Vec<MemberInfo<'_>> = self
            .members
            .values()
            .take(frames::MAX_LISTED_MEMBERS)
            .map(Member::info)
            .collect();
        let protocol = self.protocol.name();
        let hello = frames::welcome(
            &self.id,
            &id,
            protocol,
            head,
            &others,
            count,
            text.as_deref(),
        );
        let info = MemberInfo {
            connection: &id,
            user: user.as_deref(),
        };
        self.broadcast(&frames::presence("join", &info, count));
        let (queue_tx, queue) = mpsc::channel(self.limits.send_queue);
        let (kick_tx, kicked) = oneshot::channel();
        let connection = self.next_member;
        self.next_member += 1;
        self.members.insert(
            connection,
            Member {
                id: id.clone(),
                user,
                queue: queue_tx,
                kick: Some(kick_tx),
                bucket: Bucket::full(self.limits.messages_per_s),
            },
        );
        self.hub.metrics.room_connections.inc();
        Ok(Joined {
            connection: id,
            hello,
            catch_up,
            queue,
            kicked,
            membership: Membership { connection, owner },
            limits: self.limits.clone(),
        })
    }

    /// Loads the state from the log if it is not in memory.
    async fn load(&mut self) -> Result<(), StorageError> {
        if self.state.is_some() {
            return Ok(());
        }
        let log = &self.hub.log;
        let head = log.head(&self.name).await?;
        let snapshot_seq = head.snapshot.as_ref().map_or(0, |s| s.seq);
        let doc = match self.protocol {
            RoomProtocol::Relay => None,
            RoomProtocol::Text => {
                let text = match &head.snapshot {
                    Some(s) => std::str::from_utf8(&s.data).map_err(|_| {
                        StorageError::Corrupt("a text snapshot is not UTF-8".into())
                    })?,
                    None => "",
                };
                let keep = self.limits.compact_every as usize;
                let mut doc = TextDoc::new(text, snapshot_seq, keep);
                loop {
                    let page = log.read(&self.name, doc.head(), 1024).await?;
                    if page.is_empty() {
                        break;
                    }
                    for (seq, event) in page {
                        let corrupt = |why: String| {
                            StorageError::Corrupt(format!("{}: event {seq}: {why}", self.name))
                        };
                        if seq != doc.head() + 1 {
                            return Err(corrupt(format!("follows {}", doc.head())));
                        }
                        match frames::steps_of_event(&event).map_err(corrupt)? {
                            Some(steps) => doc.apply(steps).map_err(|e| corrupt(e.to_string()))?,
                            None => doc.skip(seq),
                        }
                    }
                }
                Some(doc)
            }
        };
        self.state = Some(State {
            head: head.head,
            compacted_through: head.compacted_through,
            snapshot_seq,
            doc,
        });
        Ok(())
    }

    /// Every `compact_every` events: a snapshot at the head, and the log
    /// trimmed to the last `compact_every` events (for catch-up).
    async fn compact_if_due(&mut self) {
        let every = self.limits.compact_every;
        let Some(state) = &mut self.state else {
            return;
        };
        if state.head - state.snapshot_seq < every {
            return;
        }
        let data = match &state.doc {
            Some(doc) => Bytes::from(doc.text()),
            None => Bytes::new(),
        };
        let snapshot = RoomSnapshot {
            seq: state.head,
            data,
        };
        let drop_through = state
            .head
            .saturating_sub(every)
            .max(state.compacted_through);
        match self
            .hub
            .log
            .compact(&self.name, snapshot, drop_through)
            .await
        {
            Ok(()) => {
                state.snapshot_seq = state.head;
                state.compacted_through = drop_through;
            }
            Err(e) => tracing::warn!(room = %self.name, "room log not compacted: {e}"),
        }
    }
}

fn unavailable(e: &StorageError) -> Frame {
    frames::error(
        "unavailable",
        &format!("the room's log is unavailable: {e}"),
    )
}
