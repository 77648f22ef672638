//! Rooms: WebSocket rooms, one kind of owned object (`objects`). The
//! registry of open rooms (`RoomHub`), and what a connection gets when it
//! joins one.
//!
//! Each active room has one owner task (`owner`), which holds its members
//! and its state, numbers its events, makes them durable in the room log
//! (`storage::RoomLog`) before anyone sees them, and queues them to every
//! member in order. What the messages mean is the room's protocol's
//! (`protocols`: relay, text, yjs, livestore). The server owns the sockets
//! (`server::rooms`): a connection reads frames and hands them to the
//! owner, and writes what the owner queued. An owner with no members ends
//! after its idle time (5 s at most); a room reopens from its log on the
//! next join. On a cluster, a join that reaches a node that does not own
//! the room is forwarded to the node that does (`forward`). `frames` are
//! the JSON the host sends; `handler` is what rooms need of the plugins
//! (their room handlers), which the runtime provides.

mod forward;
pub(crate) mod frames;
pub mod handler;
mod limits;
mod metrics;
mod owner;
pub mod protocols;

pub use frames::Frame;
pub use handler::RoomPlugins;
pub use limits::{DEFAULT_MAX_LOG_MIB, RoomLimits};
pub use metrics::RoomMetrics;
pub use protocols::RoomProtocol;
pub use protocols::livestore::wire::Dialect;
/// A connection's end of its queue: what the owner sends it, in order,
/// bounded, never waited on by the owner (a full queue drops the member).
pub type Inbox = mailbox::Receiver<Delivery>;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::caps::identity::Caller;
use crate::metrics::Metrics;
use crate::objects::{Directory, InboxBounds, OpenError, mailbox};
use crate::storage::{Cluster, RoomLog, StorageError};
use owner::Command;
use protocols::livestore::wire as livestore;

/// How many commands may wait for an owner before connections wait to
/// hand theirs over (which slows their reading: backpressure), and their
/// bytes: without that bound, one connection of a `yjs` room (8 MiB
/// messages) could queue 32 GiB before the owner read any of it.
const OWNER_INBOX: InboxBounds = InboxBounds {
    items: 4096,
    bytes: 64 << 20,
};

/// On a cluster, how long a room's lease lasts unless its owner renews it
/// (every quarter of it): how long a room whose owner died waits before
/// another node may take it. Whole seconds (the store's TTLs are).
const ROOM_LEASE: std::time::Duration = std::time::Duration::from_secs(2);

/// Every open room of the host.
pub struct RoomHub {
    /// The rooms open on this node, each an owned object (`objects`): one
    /// owner task, on one node of a cluster.
    rooms: Arc<Directory<Command>>,
    log: Arc<dyn RoomLog>,
    /// Where room handlers and routes are found (the plugin's active
    /// version).
    plugins: Arc<dyn RoomPlugins>,
    metrics: Arc<Metrics>,
    /// Room sockets of the whole host: one permit each, held as long as it
    /// is open.
    sockets: Arc<tokio::sync::Semaphore>,
    max_sockets: std::sync::atomic::AtomicUsize,
}

/// Which room: the plugin and room route (its prefix, protocol and
/// limits) that declare it, and its id.
pub struct RoomAddress<'a> {
    pub plugin: &'a str,
    pub prefix: &'a str,
    pub protocol: RoomProtocol,
    pub limits: &'a RoomLimits,
    pub id: &'a str,
}

impl RoomAddress<'_> {
    /// The room's name in the log: plugin, prefix and id, which no two
    /// rooms share (prefixes start with `/`, ids have none).
    fn log_name(&self) -> String {
        format!("{}{}/{}", self.plugin, self.prefix, self.id)
    }
}

/// A connection's request to join.
pub struct JoinRequest {
    /// Resume after this event (`?since=`): catch-up, then live events.
    pub since: Option<u64>,
    /// The verified caller, if any (its subject is the member's user).
    pub caller: Option<Arc<Caller>>,
    /// The upgrade request's headers, for the room handler's `on-connect`
    /// (copied into its form only when there is a handler).
    pub headers: http::HeaderMap,
    /// A `livestore` connection's dialect (by the path it came to).
    pub dialect: Option<Dialect>,
}

/// Why a join was refused. Serialized as it goes back to the node that
/// forwarded the join (`forward`).
#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinError {
    #[error("the room is full ({0} connections)")]
    Full(usize),
    #[error("the server is at its limit of {0} room connections")]
    ServerFull(usize),
    #[error("the room's log is unavailable: {0}")]
    Unavailable(String),
    /// Another node of the cluster owns the room.
    #[error("the room is open on node {0}")]
    Elsewhere(String),
    /// Another node owns the room, and did not answer a forwarded join.
    #[error("the room is open on node {node}, which did not answer: {reason}")]
    Unreachable { node: String, reason: String },
    /// The room handler said no: the connection is closed with this.
    #[error("the room refused the connection: {reason}")]
    Rejected { code: u16, reason: String },
}

/// An owner's answer to a join.
enum JoinOutcome {
    Joined(Box<Joined>),
    Refused(JoinError),
    /// The owner was ending: the request, for a new owner.
    Closing(Box<JoinRequest>),
}

/// Why the host closes a connection, with the WebSocket close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kick {
    pub code: u16,
    pub reason: &'static str,
}

impl Kick {
    pub const SLOW_CONSUMER: Self = Self {
        code: 1008,
        reason: "slow consumer: too many messages waiting",
    };
    /// Past `messages_per_s` in a room that cannot answer with an error
    /// frame (`yjs`).
    pub const TOO_FAST: Self = Self {
        code: 1008,
        reason: "too many messages a second",
    };
    /// A `yjs` member's awareness states would take the room's past
    /// `protocols::yjs::sync::MAX_AWARENESS_BYTES`.
    pub const AWARENESS_FULL: Self = Self {
        code: 1008,
        reason: "the room's awareness states are full",
    };
    /// The room's log is at its quota (`max_log_mib`): what the member
    /// sent was not stored.
    pub const LOG_FULL: Self = Self {
        code: 1008,
        reason: "the room's log is full",
    };
    /// The room's log failed (the client may come back and sync again).
    pub const UNAVAILABLE: Self = Self {
        code: 1011,
        reason: "the room's log is unavailable",
    };
    /// The room handler failed on an update of a `yjs` room.
    pub const HANDLER_FAILED: Self = Self {
        code: 1011,
        reason: "the room's handler failed",
    };
    /// A binary message that is not the protocol's.
    pub const MALFORMED: Self = Self {
        code: 1007,
        reason: "not a message of this room's protocol",
    };
    /// The room's lease went to another node (this one was paused, or cut
    /// off from the store): the client reconnects, with `since`.
    pub const MOVED: Self = Self {
        code: 1012,
        reason: "the room moved to another node: reconnect with since",
    };
    /// The host is stopping; the client may reconnect (with `since`).
    pub const STOPPING: Self = Self {
        code: 1001,
        reason: "the server is stopping: reconnect with since",
    };
}

/// What a connection gets on joining: what to send first, where its
/// events arrive, and its membership.
pub struct Joined {
    pub connection: Arc<str>,
    /// What to send first: the welcome (a `yjs` room's sync step 1 and
    /// awareness).
    pub hello: Vec<Frame>,
    /// Whether the room's protocol speaks binary frames (`yjs`) or text.
    pub binary: bool,
    /// Stored events to send after the welcome and before `queue`.
    pub catch_up: Option<CatchUp>,
    /// Events and presence, in order, from the owner.
    pub queue: Inbox,
    /// Fires when the owner drops this connection.
    pub kicked: oneshot::Receiver<Kick>,
    pub membership: Membership,
    pub limits: RoomLimits,
}

/// What the owner queues to a connection.
pub enum Delivery {
    Frame(Frame),
    /// Stored events to read from the log and send before what follows in
    /// the queue (a LiveStore pull): the connection reads them at its own
    /// pace, the room does not wait.
    CatchUp(Box<CatchUp>),
}

impl mailbox::Weigh for Delivery {
    fn weight(&self) -> usize {
        match self {
            Delivery::Frame(frame) => frame.len(),
            // Read from the log as it is sent, a page at a time.
            Delivery::CatchUp(_) => 0,
        }
    }
}

/// A member's line to its room's owner; leaving when dropped.
pub struct Membership {
    line: Line,
    /// The socket's place under the host's cap.
    _socket: Option<tokio::sync::OwnedSemaphorePermit>,
}

enum Line {
    /// To the room's owner task on this node.
    Local {
        connection: u64,
        owner: mailbox::Sender<Command>,
    },
    /// To the owner on another node, over a link (`forward`).
    Remote(forward::Up),
}

/// The room is gone (its owner stopped: the host is stopping).
#[derive(Debug)]
pub struct RoomGone;

impl Membership {
    /// Hands a client's message to the owner; waits while the owner is
    /// behind.
    pub async fn send(&self, message: Frame) -> Result<(), RoomGone> {
        match &self.line {
            Line::Local { connection, owner } => {
                let command = Command::Message {
                    connection: *connection,
                    message,
                };
                owner.send(command).await.map_err(|_| RoomGone)
            }
            Line::Remote(up) => up.send(message).await,
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        // A remote member's line tells its owner itself, when dropped.
        let Line::Local { connection, owner } = &self.line else {
            return;
        };
        let leave = Command::Leave {
            connection: *connection,
        };
        // A full inbox: hand the leave over from a task (dropped outside a
        // runtime, the host is stopping and the room goes anyway).
        if let Err(mailbox::TrySendError::Full(leave)) = owner.try_send(leave)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let owner = owner.clone();
            runtime.spawn(async move { owner.send(leave).await });
        }
    }
}

/// Stored events a connection is owed, read from the log by the
/// connection itself so that the room does not wait on it.
pub struct CatchUp {
    log: Arc<dyn RoomLog>,
    room: Arc<str>,
    /// Sent before the events (events before it were compacted away).
    snapshot: Option<Frame>,
    after: u64,
    through: u64,
    form: CatchUpForm,
}

/// How stored events are sent.
enum CatchUpForm {
    /// Each as it is stored (a JSON room's event frames).
    Stored,
    /// As pages of a LiveStore pull.
    LiveStore {
        dialect: Dialect,
        request: Arc<str>,
        backend: Arc<str>,
    },
}

impl CatchUp {
    /// Every frame owed, the snapshot first, the events read from the log
    /// a page at a time as the stream is polled (by whoever sends them: a
    /// socket, or a link to another node).
    pub fn frames(mut self) -> impl futures::Stream<Item = Result<Frame, StorageError>> + Send {
        use futures::{StreamExt, TryStreamExt};
        let snapshot = self.snapshot.take().map(Ok);
        let pages = futures::stream::try_unfold(self, |mut catch_up| async move {
            let page = catch_up.next_page().await?;
            let more = !page.is_empty();
            let frames = futures::stream::iter(page.into_iter().map(Ok));
            Ok::<_, StorageError>(more.then_some((frames, catch_up)))
        });
        futures::stream::iter(snapshot).chain(pages.try_flatten())
    }

    /// The next frames, empty when caught up.
    async fn next_page(&mut self) -> Result<Vec<Frame>, StorageError> {
        let page_size = match self.form {
            CatchUpForm::Stored => 256,
            CatchUpForm::LiveStore { .. } => livestore::MAX_EVENTS_PER_CHUNK,
        };
        if self.after >= self.through {
            return Ok(Vec::new());
        }
        let mut page = self.log.read(&self.room, self.after, page_size).await?;
        page.retain(|(seq, _)| *seq <= self.through);
        let Some(&(last, _)) = page.last() else {
            // The log ends before `through`: nothing more to read.
            self.after = self.through;
            return Ok(Vec::new());
        };
        self.after = last;
        match &self.form {
            CatchUpForm::Stored => page.into_iter().map(|(_, b)| stored_frame(b)).collect(),
            CatchUpForm::LiveStore {
                dialect,
                request,
                backend,
            } => {
                let events: Vec<Bytes> = page.into_iter().map(|(_, b)| b).collect();
                let items = livestore::items(*dialect, &events).map_err(StorageError::Corrupt)?;
                let pages = livestore::Pages {
                    dialect: *dialect,
                    backend,
                    request,
                    pulled: true,
                };
                Ok(pages.frames(&items, self.through - last))
            }
        }
    }
}

fn stored_frame(bytes: Bytes) -> Result<Frame, StorageError> {
    frames::stored(bytes).ok_or_else(|| StorageError::Corrupt("a room event is not UTF-8".into()))
}

/// Connection ids: unique across restarts of the host (they appear in
/// stored events), short in frames.
fn next_connection_id() -> Arc<str> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let start = *START.get_or_init(|| crate::util::now_ms() << 20);
    let n = start + NEXT.fetch_add(1, Ordering::Relaxed);
    let mut digits = Vec::new();
    let mut rest = n;
    while rest > 0 {
        digits.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(rest % 36) as usize]);
        rest /= 36;
    }
    digits.push(b'c');
    digits.reverse();
    String::from_utf8(digits)
        .expect("the digits are ASCII")
        .into()
}

impl RoomHub {
    pub fn new(
        log: Arc<dyn RoomLog>,
        cluster: Option<Arc<dyn Cluster>>,
        plugins: Arc<dyn RoomPlugins>,
        metrics: &Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            rooms: Directory::new("room", cluster, ROOM_LEASE, OWNER_INBOX),
            log,
            plugins,
            metrics: metrics.clone(),
            sockets: Arc::new(tokio::sync::Semaphore::new(
                crate::config::DEFAULT_MAX_ROOM_CONNECTIONS,
            )),
            max_sockets: crate::config::DEFAULT_MAX_ROOM_CONNECTIONS.into(),
        })
    }

    /// Sets the cap of room sockets (at start, before any join).
    pub fn set_max_connections(&self, max: usize) {
        let current = self.max_sockets.swap(max, Ordering::Relaxed);
        if max > current {
            self.sockets.add_permits(max - current);
        } else {
            self.sockets.forget_permits(current - max);
        }
    }

    /// Closes every room (its members get 1001) and waits, up to
    /// `deadline`, for their owners to end.
    pub async fn stop(&self, deadline: std::time::Duration) {
        self.rooms.stop(deadline).await;
    }

    /// Joins `room`, opening it if it is not open; on a cluster, through
    /// the node that owns it if that is another.
    pub async fn join(
        self: &Arc<Self>,
        room: &RoomAddress<'_>,
        request: JoinRequest,
    ) -> Result<Joined, JoinError> {
        self.join_as(room, request, true).await
    }

    /// Serves joins that other nodes forward to this one (on a cluster).
    pub fn serve_other_nodes(self: &Arc<Self>) {
        if let Some(cluster) = self.rooms.cluster() {
            tokio::spawn(forward::serve(self.clone(), cluster.clone()));
        }
    }

    /// Joins `room` on this node, or not at all (a join another node
    /// forwarded).
    async fn join_here(
        self: &Arc<Self>,
        room: &RoomAddress<'_>,
        request: JoinRequest,
    ) -> Result<Joined, JoinError> {
        self.join_as(room, request, false).await
    }

    async fn join_as(
        self: &Arc<Self>,
        room: &RoomAddress<'_>,
        request: JoinRequest,
        may_forward: bool,
    ) -> Result<Joined, JoinError> {
        if self.rooms.stopping() {
            return Err(JoinError::Unavailable("the server is stopping".into()));
        }
        let Ok(permit) = self.sockets.clone().try_acquire_owned() else {
            let max = self.max_sockets.load(Ordering::Relaxed);
            Metrics::count(
                &self.metrics.rooms.closes,
                &room.plugin.into(),
                "server_full",
                1,
            );
            return Err(JoinError::ServerFull(max));
        };
        let name: Arc<str> = room.log_name().into();
        let mut request = Box::new(request);
        // An owner that is ending hands joins back (or has closed its
        // inbox): try a new one. A few tries: an owner ends only when idle.
        for _ in 0..8 {
            let owner = match (self.open(&name, room).await, self.rooms.cluster()) {
                (Ok(owner), _) => owner,
                (Err(OpenError::Elsewhere(node)), Some(cluster)) if may_forward => {
                    let mut joined = forward::join(self, cluster, node, room, *request).await?;
                    joined.membership._socket = Some(permit);
                    return Ok(joined);
                }
                (Err(OpenError::Elsewhere(node)), _) => return Err(JoinError::Elsewhere(node)),
                (Err(OpenError::Unavailable(why)), _) => return Err(JoinError::Unavailable(why)),
            };
            let (reply, outcome) = oneshot::channel();
            let join = Command::Join { request, reply };
            request = match owner.send(join).await {
                Err(mailbox::SendError(Command::Join { request, .. })) => {
                    self.rooms.forget(&name, &owner);
                    request
                }
                Err(_) => unreachable!("the command sent was a join"),
                Ok(()) => match outcome.await {
                    Ok(JoinOutcome::Joined(mut joined)) => {
                        joined.membership._socket = Some(permit);
                        return Ok(*joined);
                    }
                    Ok(JoinOutcome::Refused(e)) => return Err(e),
                    Ok(JoinOutcome::Closing(request)) => request,
                    Err(_) => return Err(JoinError::Unavailable("the room stopped".into())),
                },
            };
        }
        Err(JoinError::Unavailable("the room kept closing".into()))
    }

    /// The owner of `name`, opening the room on this node if it is not
    /// open: on a cluster, once its lease is this node's.
    async fn open(
        self: &Arc<Self>,
        name: &Arc<str>,
        room: &RoomAddress<'_>,
    ) -> Result<mailbox::Sender<Command>, OpenError> {
        let start = |inbox, inbox_tx: &_, lease| {
            let protocol = room.protocol;
            protocol.spawn_owner(self.clone(), name.clone(), room, inbox, inbox_tx, lease);
        };
        self.rooms.open(name, start).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_ids_are_unique_and_short() {
        let (a, b) = (next_connection_id(), next_connection_id());
        assert_ne!(a, b);
        assert!(a.starts_with('c') && a.len() < 16, "{a}");
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
    }
}
