//! A room's owner: the one task that holds a room's members and state.
//!
//! It takes the commands waiting in its inbox as one batch: the messages
//! become numbered events (`events`: the protocol, and the plugin's room
//! handler if it has one, decide how), which are appended to the room log
//! together and, once durable, queued to every member; then joins
//! (`join`) and leaves are answered, so a joiner's welcome counts every
//! event of the batch. A member whose queue is full is dropped (a slow
//! consumer never stalls the room). With no members for `idle`, the owner
//! ends; with members but no commands for `idle`, it drops its state
//! (hibernates) and reloads it from the log (`state`) on the next event.
//! A `livestore` room's pulls and pushes are `livestore`'s.
//!
//! On a cluster the owner holds the room's lease (`Lease`), renews it, and
//! fences the log before it first reads it; if the lease goes to another
//! node, or an append finds another node's writes, the owner closes every
//! member with 1012 (`Kick::MOVED`: reconnect) and ends.

mod events;
mod join;
mod lease;
mod livestore;
mod state;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::oneshot;

use super::frames::{self, Frame, MemberInfo};
use super::handler::{Call, Handler};
use super::mailbox;
use super::{Delivery, JoinOutcome, JoinRequest, Kick, RoomAddress, RoomHub};
use crate::caps::identity::Caller;
use crate::caps::rooms::{MemberEntry, RoomEvent};
use crate::metrics::{Metrics, PluginLabel};
use crate::runtime::manifest::{RoomLimits, RoomProtocol};
pub(super) use lease::Lease;
use state::{Content, State};

/// Commands taken as one batch at most.
const MAX_BATCH: usize = 512;

/// How long a room with no members stays open (for a reconnect) before
/// its owner ends, if its `idle` is longer: empty rooms must not pile up
/// when clients join many rooms and leave.
const EMPTY_ROOM_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

pub(super) enum Command {
    /// Boxed: a command waits in an inbox whose slots are as big as the
    /// biggest command, in every open room.
    Join {
        request: Box<JoinRequest>,
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

impl mailbox::Weigh for Command {
    fn weight(&self) -> usize {
        match self {
            Command::Message { message, .. } => message.len(),
            Command::Join { .. } | Command::Leave { .. } => 0,
        }
    }
}

struct Member {
    id: Arc<str>,
    user: Option<Arc<str>>,
    /// Its caller, for the room handler's `identity`.
    caller: Option<Arc<Caller>>,
    queue: mailbox::Sender<Delivery>,
    kick: Option<oneshot::Sender<Kick>>,
    bucket: Bucket,
    /// A `livestore` member's dialect and open pulls.
    livestore: Option<livestore::Subscriber>,
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

/// An event made in this batch, not yet stored: what the log keeps, what
/// members get once it is stored, and the member to tell if storing it
/// fails.
struct Pending {
    sender: Option<u64>,
    stored: Bytes,
    publish: Publish,
}

/// What members get of a stored event.
enum Publish {
    /// One frame for every member.
    Frame(Frame),
    /// One event of a LiveStore push, sent as pages formatted for each
    /// member; the push's last event carries the push, to publish its
    /// events together and acknowledge it.
    LiveStore(Option<Box<livestore::Pushed>>),
}

impl Pending {
    /// A JSON event: the log keeps the frame itself (catch-up sends it
    /// again).
    fn json(sender: Option<u64>, frame: Frame) -> Self {
        Self {
            sender,
            stored: frame.bytes(),
            publish: Publish::Frame(frame),
        }
    }
}

struct Owner {
    hub: Arc<RoomHub>,
    /// On a cluster: the lease, and when it was last renewed.
    lease: Option<(Lease, Instant)>,
    /// Another node owns the room now: close everyone and end.
    moved: bool,
    /// Whether the log was fenced (before the first read of it).
    fenced: bool,
    name: Arc<str>,
    id: String,
    plugin: Arc<str>,
    protocol: RoomProtocol,
    limits: RoomLimits,
    /// To hand members their line to this owner, without keeping the
    /// inbox open itself.
    inbox: mailbox::WeakSender<Command>,
    /// Boxed: a room of one member then holds a few pointers, not a table
    /// of whole members (which hashbrown sizes for several).
    members: HashMap<u64, Box<Member>>,
    /// The members as the handler sees them, made when it asks.
    listed: Option<Arc<[MemberEntry]>>,
    next_member: u64,
    /// `None` until loaded, while hibernating, and after a failed append.
    state: Option<State>,
    /// Members dropped (by number), to announce (and tell the handler)
    /// after the broadcast that dropped them.
    departed: Vec<(u64, Box<Member>)>,
    events: Counter,
    deliveries: Counter,
}

pub(super) fn spawn(
    hub: Arc<RoomHub>,
    name: Arc<str>,
    room: &RoomAddress<'_>,
    inbox: mailbox::Receiver<Command>,
    inbox_tx: &mailbox::Sender<Command>,
    lease: Option<Lease>,
) {
    let plugin: Arc<str> = room.plugin.into();
    let label = PluginLabel {
        plugin: plugin.clone(),
    };
    let metrics = &hub.metrics;
    metrics.rooms_open.inc();
    let owner = Owner {
        lease: lease.map(|l| (l, Instant::now())),
        moved: false,
        fenced: false,
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
        listed: None,
        next_member: 0,
        state: None,
        departed: Vec::new(),
    };
    // Boxed, and the batch's work boxed when it runs (`run`): an open
    // room's task then holds a small future while it waits.
    tokio::spawn(Box::new(owner).run(inbox));
}

/// Joins an ending owner did not take: each goes back to the hub, to a
/// new owner.
fn hand_back_joins(commands: impl Iterator<Item = Command>) {
    for command in commands {
        if let Command::Join { request, reply } = command {
            let _ = reply.send(JoinOutcome::Closing(request));
        }
    }
}

impl Owner {
    async fn run(mut self: Box<Self>, mut inbox: mailbox::Receiver<Command>) {
        let mut stopping = self.hub.stopping.subscribe();
        let renew_every = (self.lease.as_ref())
            .map_or(std::time::Duration::from_secs(86_400), |(l, _)| l.ttl / 4);
        let mut renew =
            tokio::time::interval_at(tokio::time::Instant::now() + renew_every, renew_every);
        let mut active_at = tokio::time::Instant::now();
        loop {
            // A batch's own vector: one kept across batches would keep the
            // largest batch's size in every open room.
            let mut batch = Vec::new();
            let wait = if self.members.is_empty() {
                self.limits.idle.min(EMPTY_ROOM_GRACE)
            } else {
                self.limits.idle
            };
            // What woke the owner; acted on once the select is over (the
            // stop signal's guard must not be held across an await).
            enum Woke<T> {
                Inbox(T),
                Renew,
                Stopping,
            }
            let woke = tokio::select! {
                next = tokio::time::timeout_at(active_at + wait, inbox.recv()) => Woke::Inbox(next),
                _ = renew.tick(), if self.lease.is_some() => Woke::Renew,
                _ = stopping.wait_for(|stop| *stop) => Woke::Stopping,
            };
            let next = match woke {
                Woke::Inbox(next) => next,
                Woke::Renew => {
                    self.renew_lease().await;
                    if self.moved {
                        self.close_all(Kick::MOVED, "moved");
                        break;
                    }
                    continue;
                }
                Woke::Stopping => {
                    self.close_all(Kick::STOPPING, "stopping");
                    break;
                }
            };
            active_at = tokio::time::Instant::now();
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
                && let Some(command) = inbox.try_recv()
            {
                batch.push(command);
            }
            if self.lease_may_have_lapsed() {
                self.renew_lease().await;
                if self.moved {
                    hand_back_joins(batch.drain(..));
                    self.close_all(Kick::MOVED, "moved");
                    break;
                }
            }
            // Boxed: its state (joins, handler calls, appends) is several KB,
            // which a waiting room would otherwise carry.
            Box::pin(self.handle(&mut batch)).await;
            if self.moved {
                self.close_all(Kick::MOVED, "moved");
                break;
            }
        }
        // Joins that reached the inbox as it closed go to a new owner.
        inbox.close();
        hand_back_joins(std::iter::from_fn(|| inbox.try_recv()));
        let metrics = &self.hub.metrics;
        metrics.room_connections.dec_by(self.departed.len() as i64);
        metrics.rooms_open.dec();
    }

    /// Closes every member with `kick` and leaves the hub's table.
    fn close_all(&mut self, kick: Kick, kind: &'static str) {
        let all: Vec<u64> = self.members.keys().copied().collect();
        for n in all {
            self.kick(n, kick, kind);
        }
        self.hub.retire_now(&self.name);
    }

    async fn handle(&mut self, batch: &mut Vec<Command>) {
        let mut pending = Vec::new();
        let mut after = Vec::new();
        for command in batch.drain(..) {
            match command {
                Command::Message {
                    connection,
                    message,
                } => self.take_message(connection, &message, &mut pending).await,
                other => after.push(other),
            }
        }
        self.commit(std::mem::take(&mut pending)).await;
        for command in after {
            match command {
                Command::Join { request, reply } => {
                    let outcome = match self.join(*request, &mut pending).await {
                        Ok(joined) => JoinOutcome::Joined(Box::new(joined)),
                        Err(e) => JoinOutcome::Refused(e),
                    };
                    let _ = reply.send(outcome);
                }
                Command::Leave { connection } => self.remove(connection, None),
                Command::Message { .. } => unreachable!("messages were taken first"),
            }
        }
        // Departures may append (the handler's `on-close`), and storing
        // may drop slow members, who depart in turn.
        loop {
            self.depart(&mut pending).await;
            if pending.is_empty() {
                break;
            }
            self.commit(std::mem::take(&mut pending)).await;
        }
        self.compact_if_due().await;
    }

    /// Appends `pending` to the log, then queues each event to every
    /// member; if the append fails, tells each sender and drops the state
    /// (it ran ahead of the log).
    async fn commit(&mut self, pending: Vec<Pending>) {
        if pending.is_empty() {
            return;
        }
        let state = self
            .state
            .as_mut()
            .expect("events come from a loaded state");
        let first = state.head + 1;
        let events: Vec<Bytes> = pending.iter().map(|p| p.stored.clone()).collect();
        let started = Instant::now();
        let quota = crate::storage::Quota {
            bytes: self.limits.max_log_bytes,
            items: None,
        };
        let appended = self.hub.log.append(&self.name, first, events, quota).await;
        let metrics = &self.hub.metrics;
        metrics
            .room_append_seconds
            .observe(started.elapsed().as_secs_f64());
        match appended {
            Ok(()) => {
                state.head += pending.len() as u64;
                self.events.inc_by(pending.len() as u64);
                let mut pushed = Vec::new();
                for p in pending {
                    match p.publish {
                        Publish::Frame(frame) => self.broadcast(&frame, &[]),
                        Publish::LiveStore(push) => {
                            pushed.push(p.stored);
                            if let Some(push) = push {
                                self.publish_push(*push, std::mem::take(&mut pushed));
                            }
                        }
                    }
                }
            }
            Err(e) => {
                if matches!(e, crate::storage::StorageError::QuotaExceeded(_)) {
                    tracing::warn!(room = %self.name, "room events not stored: {e}");
                } else {
                    tracing::error!(room = %self.name, "room events not stored: {e}");
                }
                self.state = None;
                if self.lease.is_some()
                    && matches!(e, crate::storage::StorageError::RoomConflict { .. })
                {
                    // Another node appended: it owns the room now.
                    self.moved = true;
                }
                // A JSON member is told and may send again; a yjs or
                // livestore client is closed, and syncs again on its
                // reconnect (what it sent was not acknowledged).
                let full = matches!(e, crate::storage::StorageError::QuotaExceeded(_));
                let error = if full {
                    frames::error(
                        "quota_exceeded",
                        &format!("the message was not stored: {e}"),
                    )
                } else {
                    frames::error("not_stored", "the message was not stored: send it again")
                };
                let (kick, kind) = if full {
                    (Kick::LOG_FULL, "log_full")
                } else {
                    (Kick::UNAVAILABLE, "unavailable")
                };
                for sender in pending.iter().filter_map(|p| p.sender) {
                    if self.protocol.host_frames() {
                        self.reply(sender, error.clone());
                    } else {
                        self.kick(sender, kick, kind);
                    }
                }
            }
        }
    }

    /// Queues `frame` to every member but those in `except`; drops those
    /// that cannot take it. (The host's JSON frames go to rooms whose
    /// clients read them: `RoomProtocol::host_frames`.)
    fn broadcast(&mut self, frame: &Frame, except: &[String]) {
        let mut slow = Vec::new();
        let mut sent = 0;
        for (&n, member) in &self.members {
            if except.iter().any(|e| **e == *member.id) {
                continue;
            }
            sent += 1;
            if member
                .queue
                .try_send(Delivery::Frame(frame.clone()))
                .is_err()
            {
                slow.push(n);
            }
        }
        self.deliveries.inc_by(sent);
        for n in slow {
            self.kick(n, Kick::SLOW_CONSUMER, "slow_consumer");
        }
    }

    /// Queues `frame` to one member.
    fn reply(&mut self, connection: u64, frame: Frame) {
        self.deliver(connection, Delivery::Frame(frame));
    }

    /// Queues `delivery` to one member; drops it if it cannot take it.
    fn deliver(&mut self, connection: u64, delivery: Delivery) {
        let Some(member) = self.members.get(&connection) else {
            return;
        };
        self.deliveries.inc();
        if member.queue.try_send(delivery).is_err() {
            self.kick(connection, Kick::SLOW_CONSUMER, "slow_consumer");
        }
    }

    fn kick(&mut self, connection: u64, kick: Kick, kind: &'static str) {
        // Counted first: once the kick is sent, the client may read its
        // close (and the metrics) before this task runs again.
        Metrics::count(&self.hub.metrics.room_closes, &self.plugin, kind, 1);
        self.remove(connection, Some(kick));
    }

    /// Takes `connection` out of the room (telling it why, if the host
    /// closes it); announced by `depart`.
    fn remove(&mut self, connection: u64, kick: Option<Kick>) {
        if let Some(mut member) = self.members.remove(&connection) {
            self.listed = None;
            if let (Some(tx), Some(kick)) = (member.kick.take(), kick) {
                let _ = tx.send(kick);
            }
            self.departed.push((connection, member));
        }
    }

    /// Tells the members who left, and the handler (whose appends go to
    /// `pending`); announcing may drop more slow members, who are
    /// announced in turn.
    async fn depart(&mut self, pending: &mut Vec<Pending>) {
        while let Some((number, member)) = self.departed.pop() {
            self.hub.metrics.room_connections.dec();
            let count = self.members.len();
            if self.protocol.host_frames() {
                self.broadcast(&frames::presence("leave", &member.info(), count), &[]);
            }
            // A yjs room's presence is awareness: the states it set go.
            if let Some(State {
                content: Content::Yjs(room),
                ..
            }) = &mut self.state
                && let Some(removal) = room.leave(number)
            {
                self.broadcast(&Frame::Binary(removal), &[]);
            }
            if let Some(handler) = Handler::of(&self.hub.registry, &self.plugin)
                && self.load().await.is_ok()
            {
                let call = Call::Close {
                    room: self.id.clone(),
                    connection: member.id.to_string(),
                };
                let event = self.room_event(pending);
                let (answer, actions) = handler.call(member.caller.clone(), event, call).await;
                if let Err(e) = answer {
                    tracing::warn!(room = %self.name, "the room handler failed on a leave: {e}");
                }
                let origin = events::Origin::of(&member, None);
                self.apply(actions, &origin, pending);
            }
        }
    }

    /// The room as the handler sees it during one call: the members now,
    /// and the number its first append would get.
    fn room_event(&mut self, pending: &[Pending]) -> RoomEvent {
        let members = self.listed.get_or_insert_with(|| {
            (self.members.values())
                .map(|m| MemberEntry {
                    connection: m.id.clone(),
                    user: m.user.clone(),
                })
                .collect()
        });
        let head = self.state.as_ref().map_or(0, |s| s.head);
        RoomEvent {
            log_name: self.name.clone(),
            log: self.hub.log.clone(),
            members: members.clone(),
            next_seq: head + pending.len() as u64 + 1,
            max_message_bytes: self.limits.max_message_bytes,
            // A yjs room's log holds document updates only, a livestore
            // room's the store's events.
            appends: self.protocol.host_frames(),
            actions: Default::default(),
        }
    }
}
