//! A room's owner: the one task that holds a room's members and state, the
//! same for every protocol (`Owner<P>`, where `P` is the room's
//! `Protocol`).
//!
//! It takes the commands waiting in its inbox as one batch: the messages
//! become numbered events (`messages`: the protocol, and the plugin's room
//! handler if it has one, decide how), which are appended to the room log
//! together and, once durable, queued to every member; then joins
//! (`join`) and leaves are answered, so a joiner's welcome counts every
//! event of the batch. A member whose queue is full is dropped (a slow
//! consumer never stalls the room). With no members for `idle`, the owner
//! ends; with members but no commands for `idle`, it drops its state
//! (hibernates) and reloads it from the log (`log`) on the next event.
//!
//! `Owner<P>` is the room (`Room<P>`: what every room keeps) and the
//! protocol's state (`P`), two fields so that a protocol's methods get
//! both at once: `&mut self` for its state, `&mut Room<P>` to reply,
//! broadcast, call the handler and make events.
//!
//! On a cluster the owner holds the room's lease (`Lease`), renews it, and
//! fences the log before it first reads it; if the lease goes to another
//! node, or an append finds another node's writes, the owner closes every
//! member with 1012 (`Kick::MOVED`: reconnect) and ends.

mod join;
mod log;
mod messages;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::oneshot;
use tracing::Instrument;

use super::frames::{self, Frame, MemberInfo};
use super::handler::Call;
use super::protocols::Protocol;
use super::{Delivery, JoinOutcome, JoinRequest, Kick, RoomAddress, RoomHub, RoomLimits};
use crate::caps::identity::Caller;
use crate::caps::rooms::{MemberEntry, RoomEvent};
use crate::metrics::{Metrics, PluginLabel};
use crate::objects::{self, Ending, Lease, Object, mailbox};
pub use messages::Origin;

/// How long a room with no members stays open (for a reconnect) before
/// its owner ends, if its `idle` is longer: empty rooms must not pile up
/// when clients join many rooms and leave.
const EMPTY_ROOM_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

pub enum Command {
    /// Boxed: a command waits in an inbox whose slots are as big as the
    /// biggest command, in every open room.
    Join {
        request: Box<JoinRequest>,
        reply: oneshot::Sender<JoinOutcome>,
    },
    Message {
        connection: u64,
        message: Frame,
        /// The message's trace, from its arrival to its broadcast
        /// (`Span::none()` when it is not traced).
        span: tracing::Span,
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

/// A member of a room, with what its protocol keeps of it (`M`).
pub struct Member<M> {
    pub id: Arc<str>,
    pub user: Option<Arc<str>>,
    /// Its caller, for the room handler's `identity`.
    pub caller: Option<Arc<Caller>>,
    queue: mailbox::Sender<Delivery>,
    kick: Option<oneshot::Sender<Kick>>,
    pub bucket: Bucket,
    pub protocol: M,
}

impl<M> Member<M> {
    fn info(&self) -> MemberInfo<'_> {
        MemberInfo {
            connection: &self.id,
            user: self.user.as_deref(),
        }
    }
}

/// Messages a member may send: `rate` a second, in bursts of `rate`.
pub struct Bucket {
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

    pub fn take(&mut self, rate: u32) -> bool {
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
/// fails. `X` is what the protocol publishes with it (`Protocol::Push`).
pub struct Pending<X> {
    pub sender: Option<u64>,
    pub stored: Bytes,
    /// The frame every member gets (by `Protocol::publish`'s default).
    pub frame: Option<Frame>,
    pub push: Option<Box<X>>,
}

impl<X> Pending<X> {
    /// A JSON event: the log keeps the frame itself (catch-up sends it
    /// again).
    pub fn json(sender: Option<u64>, frame: Frame) -> Self {
        Self {
            sender,
            stored: frame.bytes(),
            frame: Some(frame),
            push: None,
        }
    }
}

/// Where the room's log stands, as the owner last loaded or appended it.
#[derive(Default)]
pub struct LogPlace {
    pub head: u64,
    pub compacted_through: u64,
    pub snapshot_seq: u64,
}

/// The owner's hold on the room on a cluster.
struct Tenure {
    /// On a cluster (its owner task holds the room's lease).
    clustered: bool,
    /// Another node owns the room now (it appended to the log): close
    /// everyone and end.
    moved: bool,
    /// Whether the log was fenced (before the first read of it).
    fenced: bool,
}

pub(super) struct Owner<P: Protocol> {
    room: Room<P>,
    /// The protocol's state: `None` until loaded, while hibernating, and
    /// after a failed append.
    content: Option<P>,
}

/// What every room keeps, whatever its protocol: its members, its place in
/// the log, its limits. A protocol gets it to reply, broadcast, call the
/// room handler and make events.
pub struct Room<P: Protocol> {
    pub hub: Arc<RoomHub>,
    /// The room's name in the log.
    pub name: Arc<str>,
    /// Its id within its route (a LiveStore store's id).
    pub id: String,
    pub plugin: Arc<str>,
    pub limits: RoomLimits,
    /// To hand members their line to this owner, without keeping the
    /// inbox open itself.
    inbox: mailbox::WeakSender<Command>,
    /// Boxed: a room of one member then holds a few pointers, not a table
    /// of whole members (which hashbrown sizes for several).
    pub members: HashMap<u64, Box<Member<P::Member>>>,
    /// The members as the handler sees them, made when it asks.
    listed: Option<Arc<[MemberEntry]>>,
    next_member: u64,
    /// The protocol's state ran ahead of the log (`reload_state`).
    stale: bool,
    /// Members dropped (by number), to announce (and tell the handler)
    /// after the broadcast that dropped them.
    departed: Vec<(u64, Box<Member<P::Member>>)>,
    pub place: LogPlace,
    tenure: Tenure,
    events: Counter,
    deliveries: Counter,
}

/// Starts the owner of the room `name`, of protocol `P`.
pub(super) fn spawn<P: Protocol>(
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
    let room = Room::<P> {
        tenure: Tenure {
            clustered: lease.is_some(),
            moved: false,
            fenced: false,
        },
        events: metrics.rooms.events.get_or_create_owned(&label),
        deliveries: metrics.rooms.deliveries.get_or_create_owned(&label),
        hub: hub.clone(),
        name: name.clone(),
        id: room.id.to_string(),
        plugin,
        limits: room.limits.clone(),
        inbox: inbox_tx.downgrade(),
        members: HashMap::new(),
        listed: None,
        next_member: 0,
        stale: false,
        departed: Vec::new(),
        place: LogPlace::default(),
    };
    let owner = Owner {
        room,
        content: None,
    };
    objects::spawn(hub.rooms.clone(), name, owner, inbox, lease);
}

impl<P: Protocol> Object for Owner<P> {
    type Command = Command;

    fn idle(&self) -> std::time::Duration {
        let limits = &self.room.limits;
        if self.room.members.is_empty() {
            limits.idle.min(EMPTY_ROOM_GRACE)
        } else {
            limits.idle
        }
    }

    fn in_use(&self) -> bool {
        !self.room.members.is_empty()
    }

    fn handle(&mut self, batch: &mut Vec<Command>) -> impl Future<Output = ()> + Send {
        self.take_batch(batch)
    }

    fn hibernate(&mut self) {
        self.content = None; // it is all in the log
    }

    fn moved(&self) -> bool {
        self.room.tenure.moved
    }

    fn end(&mut self, why: Ending) {
        let (kick, kind) = match why {
            Ending::Moved => (Kick::MOVED, "moved"),
            Ending::Stopping => (Kick::STOPPING, "stopping"),
        };
        let all: Vec<u64> = self.room.members.keys().copied().collect();
        for n in all {
            self.room.kick(n, kick, kind);
        }
    }

    /// A join the owner did not take goes back to the hub, to a new owner.
    fn hand_back(command: Command) {
        if let Command::Join { request, reply } = command {
            let _ = reply.send(JoinOutcome::Closing(request));
        }
    }

    async fn ended(self) {
        let metrics = &self.room.hub.metrics;
        (metrics.rooms.connections).dec_by(self.room.departed.len() as i64);
        metrics.rooms.open.dec();
    }
}

impl<P: Protocol> Owner<P> {
    async fn take_batch(&mut self, batch: &mut Vec<Command>) {
        let mut pending = Vec::new();
        let mut after = Vec::new();
        // The traced messages whose events wait for the next commit.
        let mut traced = Vec::new();
        for command in batch.drain(..) {
            match command {
                Command::Message {
                    connection,
                    message,
                    span,
                } => {
                    let taken = self.take_message(connection, &message, &mut pending);
                    taken.instrument(span.clone()).await;
                    if !span.is_none() {
                        span.record("spike.room", &*self.room.name);
                        traced.push(span);
                    }
                    if std::mem::take(&mut self.room.stale) {
                        // What came before it is stored; then the state
                        // is the log's again for the next message.
                        let stored = self.commit(std::mem::take(&mut pending)).await;
                        crate::telemetry::room_messages_done(&mut traced, stored);
                        self.content = None;
                    }
                }
                other => after.push(other),
            }
        }
        let stored = self.commit(std::mem::take(&mut pending)).await;
        crate::telemetry::room_messages_done(&mut traced, stored);
        for command in after {
            match command {
                Command::Join { request, reply } => {
                    let outcome = match self.join(*request, &mut pending).await {
                        Ok(joined) => JoinOutcome::Joined(Box::new(joined)),
                        Err(e) => JoinOutcome::Refused(e),
                    };
                    let _ = reply.send(outcome);
                }
                Command::Leave { connection } => self.room.remove(connection, None),
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

    /// Appends `pending` to the log, then has the protocol publish each
    /// event; if the append fails, tells each sender and drops the state
    /// (it ran ahead of the log). Whether the events were stored.
    async fn commit(&mut self, pending: Vec<Pending<P::Push>>) -> bool {
        if pending.is_empty() {
            return true;
        }
        let room = &mut self.room;
        let first = room.place.head + 1;
        let events: Vec<Bytes> = pending.iter().map(|p| p.stored.clone()).collect();
        let started = Instant::now();
        let quota = crate::storage::Quota {
            bytes: room.limits.max_log_bytes,
            items: None,
        };
        let appended = room.hub.log.append(&room.name, first, events, quota).await;
        let metrics = &room.hub.metrics;
        (metrics.rooms.append_seconds).observe(started.elapsed().as_secs_f64());
        match appended {
            Ok(()) => {
                room.place.head += pending.len() as u64;
                room.events.inc_by(pending.len() as u64);
                let content = self
                    .content
                    .as_mut()
                    .expect("events come from a loaded state");
                content.publish(room, pending);
                true
            }
            Err(e) => {
                self.content = None;
                room.not_stored(&e, &pending);
                false
            }
        }
    }

    /// Tells the members who left, the protocol, and the handler (whose
    /// appends go to `pending`); announcing may drop more slow members,
    /// who are announced in turn.
    async fn depart(&mut self, pending: &mut Vec<Pending<P::Push>>) {
        while let Some((number, member)) = self.room.departed.pop() {
            let room = &mut self.room;
            room.hub.metrics.rooms.connections.dec();
            let count = room.members.len();
            if P::HOST_FRAMES {
                room.broadcast(&frames::presence("leave", &member.info(), count), &[]);
            }
            if let Some(content) = &mut self.content {
                content.leave(room, number);
            }
            if let Some(handler) = self.room.handler()
                && self.load().await.is_ok()
            {
                let room = &mut self.room;
                let call = Call::Close {
                    room: room.id.clone(),
                    connection: member.id.to_string(),
                };
                let event = room.room_event(pending);
                let (answer, actions) = handler.call(member.caller.clone(), event, call).await;
                if let Err(e) = answer {
                    tracing::warn!(room = %room.name, "the room handler failed on a leave: {e}");
                }
                let origin = Origin::of(&member, None);
                room.apply(actions, &origin, pending);
            }
        }
    }
}

impl<P: Protocol> Room<P> {
    /// The number the next event gets, with `pending` made already.
    pub fn next_seq<X>(&self, pending: &[Pending<X>]) -> u64 {
        self.place.head + pending.len() as u64 + 1
    }

    /// Tells the senders of events that were not stored: a JSON member
    /// gets an error and may send again; a member of a protocol that does
    /// not read the host's frames is closed, and syncs again on its
    /// reconnect (what it sent was not acknowledged).
    fn not_stored<X>(&mut self, e: &crate::storage::StorageError, pending: &[Pending<X>]) {
        use crate::storage::StorageError;
        let full = matches!(e, StorageError::QuotaExceeded(_));
        if full {
            tracing::warn!(room = %self.name, "room events not stored: {e}");
        } else {
            crate::metrics::STORAGE_ERRORS.inc();
            tracing::error!(room = %self.name, "room events not stored: {e}");
        }
        if self.tenure.clustered && matches!(e, StorageError::RoomConflict { .. }) {
            // Another node appended: it owns the room now.
            self.tenure.moved = true;
        }
        let error = if full {
            let why = format!("the message was not stored: {e}");
            frames::error("quota_exceeded", &why)
        } else {
            frames::error("not_stored", "the message was not stored: send it again")
        };
        let (kick, kind) = if full {
            (Kick::LOG_FULL, "log_full")
        } else {
            (Kick::UNAVAILABLE, "unavailable")
        };
        for sender in pending.iter().filter_map(|p| p.sender) {
            if P::HOST_FRAMES {
                self.reply(sender, error.clone());
            } else {
                self.kick(sender, kick, kind);
            }
        }
    }

    /// Queues `frame` to every member but those in `except`; drops those
    /// that cannot take it.
    pub fn broadcast(&mut self, frame: &Frame, except: &[String]) {
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
    pub fn reply(&mut self, connection: u64, frame: Frame) {
        self.deliver(connection, Delivery::Frame(frame));
    }

    /// Queues `delivery` to one member; drops it if it cannot take it.
    pub fn deliver(&mut self, connection: u64, delivery: Delivery) {
        let Some(member) = self.members.get(&connection) else {
            return;
        };
        self.deliveries.inc();
        if member.queue.try_send(delivery).is_err() {
            self.kick(connection, Kick::SLOW_CONSUMER, "slow_consumer");
        }
    }

    /// Closes `connection` with `kick`, counted as `kind`.
    /// The protocol's state ran ahead of the log (a message it could not
    /// undo changed it): once the events before are stored, it is dropped
    /// and loaded from the log for the next message.
    pub fn reload_state(&mut self) {
        self.stale = true;
    }

    pub fn kick(&mut self, connection: u64, kick: Kick, kind: &'static str) {
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

    /// The room as the handler sees it during one call: the members now,
    /// and the number its first append would get.
    fn room_event<X>(&mut self, pending: &[Pending<X>]) -> RoomEvent {
        let members = self.listed.get_or_insert_with(|| {
            (self.members.values())
                .map(|m| MemberEntry {
                    connection: m.id.clone(),
                    user: m.user.clone(),
                })
                .collect()
        });
        RoomEvent {
            log_name: self.name.clone(),
            log: self.hub.log.clone(),
            members: members.clone(),
            next_seq: self.place.head + pending.len() as u64 + 1,
            max_message_bytes: self.limits.max_message_bytes,
            // A yjs room's log holds document updates only, a livestore
            // room's the store's events.
            appends: P::HOST_FRAMES,
            actions: Default::default(),
        }
    }
}
