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
use super::{Delivery, JoinOutcome, JoinRequest, Kick, RoomAddress, RoomHub};
use crate::caps::identity::Caller;
use crate::caps::rooms::{MemberEntry, RoomEvent};
use crate::metrics::{Metrics, PluginLabel};
use crate::objects::{self, Ending, Lease, Object, mailbox};
use crate::runtime::manifest::{RoomLimits, RoomProtocol};
use state::{Content, State};

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
    /// On a cluster (its owner task holds the room's lease).
    clustered: bool,
    /// Another node owns the room now (it appended to the log): close
    /// everyone and end.
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

/// Starts the owner of the room `name`.
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
    metrics.rooms.open.inc();
    let owner = Owner {
        clustered: lease.is_some(),
        moved: false,
        fenced: false,
        events: metrics.rooms.events.get_or_create_owned(&label),
        deliveries: metrics.rooms.deliveries.get_or_create_owned(&label),
        hub: hub.clone(),
        name: name.clone(),
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
    objects::spawn(hub.rooms.clone(), name, owner, inbox, lease);
}

impl Object for Owner {
    type Command = Command;

    fn idle(&self) -> std::time::Duration {
        if self.members.is_empty() {
            self.limits.idle.min(EMPTY_ROOM_GRACE)
        } else {
            self.limits.idle
        }
    }

    fn in_use(&self) -> bool {
        !self.members.is_empty()
    }

    fn handle(&mut self, batch: &mut Vec<Command>) -> impl Future<Output = ()> + Send {
        self.take_batch(batch)
    }

    fn hibernate(&mut self) {
        self.state = None; // it is all in the log
    }

    fn moved(&self) -> bool {
        self.moved
    }

    fn end(&mut self, why: Ending) {
        let (kick, kind) = match why {
            Ending::Moved => (Kick::MOVED, "moved"),
            Ending::Stopping => (Kick::STOPPING, "stopping"),
        };
        let all: Vec<u64> = self.members.keys().copied().collect();
        for n in all {
            self.kick(n, kick, kind);
        }
    }

    /// A join the owner did not take goes back to the hub, to a new owner.
    fn hand_back(command: Command) {
        if let Command::Join { request, reply } = command {
            let _ = reply.send(JoinOutcome::Closing(request));
        }
    }

    async fn ended(self) {
        let metrics = &self.hub.metrics;
        metrics.rooms.connections.dec_by(self.departed.len() as i64);
        metrics.rooms.open.dec();
    }
}

impl Owner {
    async fn take_batch(&mut self, batch: &mut Vec<Command>) {
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
        (metrics.rooms.append_seconds).observe(started.elapsed().as_secs_f64());
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
                if self.clustered && matches!(e, crate::storage::StorageError::RoomConflict { .. })
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
        Metrics::count(&self.hub.metrics.rooms.closes, &self.plugin, kind, 1);
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
            self.hub.metrics.rooms.connections.dec();
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
