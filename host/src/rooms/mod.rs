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

mod catch_up;
mod forward;
pub(crate) mod frames;
pub mod handler;
mod limits;
mod member;
mod metrics;
mod owner;
pub mod protocols;

pub use catch_up::CatchUp;
pub use frames::Frame;
pub use handler::RoomPlugins;
pub use limits::{DEFAULT_MAX_LOG_MIB, RoomLimits};
pub use member::{Delivery, Inbox, Joined, Kick, Membership, RoomGone};
pub use metrics::RoomMetrics;
pub use protocols::RoomProtocol;
pub use protocols::livestore::wire::Dialect;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::oneshot;

use crate::caps::identity::Caller;
use crate::metrics::Metrics;
use crate::objects::{Directory, InboxBounds, OpenError, mailbox};
use crate::storage::{Cluster, RoomLog};
use catch_up::CatchUpForm;
use member::Line;
use owner::Command;

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
