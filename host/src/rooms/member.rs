//! A member's side of a room: what a connection gets on joining (its
//! welcome, its queue, its membership), what the owner queues to it, and
//! why the host closes it.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::catch_up::CatchUp;
use super::forward;
use super::frames::Frame;
use super::limits::RoomLimits;
use super::owner::Command;
use crate::objects::mailbox;

/// A connection's end of its queue: what the owner sends it, in order,
/// bounded, never waited on by the owner (a full queue drops the member).
pub type Inbox = mailbox::Receiver<Delivery>;

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
    pub(super) line: Line,
    /// The socket's place under the host's cap.
    pub(super) _socket: Option<tokio::sync::OwnedSemaphorePermit>,
    /// The join's span, if it was traced: each message's trace links to
    /// it.
    pub(super) joined_in: Option<opentelemetry::trace::SpanContext>,
}

pub(super) enum Line {
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
                let span =
                    crate::telemetry::room_message_span(self.joined_in.as_ref(), message.len());
                let command = Command::Message {
                    connection: *connection,
                    message,
                    span,
                };
                owner.send(command).await.map_err(|_| RoomGone)
            }
            Line::Remote(up) => up.send(message).await,
        }
    }
}

impl Membership {
    /// Links the trace of each message this member sends to the join's
    /// span `joined_in` (when the join was traced).
    pub fn set_joined_in(&mut self, joined_in: Option<opentelemetry::trace::SpanContext>) {
        self.joined_in = joined_in;
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
