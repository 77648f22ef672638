//! What rooms need of the plugins: a plugin's room handler
//! (`spike:host/room-handler`), and its room routes for a join forwarded
//! from another node. The runtime implements both (`runtime::room_handler`),
//! so that rooms never reach into its stores.

use std::sync::Arc;

use futures::future::BoxFuture;

use super::{RoomLimits, RoomProtocol};
use crate::bindings::exports::spike::host::room_handler::{Connect, Message, Outcome, Rejection};
use crate::caps::identity::Caller;
use crate::caps::rooms::{Action, RoomEvent};

/// One call of a room handler.
pub enum Call {
    Connect(Connect),
    Message(Message),
    Close { room: String, connection: String },
}

/// Its answer.
pub enum Answer {
    Connect(Result<(), Rejection>),
    Message(Outcome),
    Close,
}

/// Why a handler's call failed (a trap, a timeout, the plugin busy), as
/// the room logs it or tells the member.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HandlerFailed(pub String);

/// A plugin's room handler, as its active version is now.
pub trait RoomHandler: Send + Sync {
    /// Runs `call` for `event`'s room as `caller`: the answer, and what the
    /// handler asked the room to do (nothing if the call failed).
    fn call(
        &self,
        caller: Option<Arc<Caller>>,
        event: RoomEvent,
        call: Call,
    ) -> BoxFuture<'_, (Result<Answer, HandlerFailed>, Vec<Action>)>;
}

/// The plugins, as rooms see them.
pub trait RoomPlugins: Send + Sync {
    /// The room handler of `plugin`'s active version, if it exports one.
    fn handler(&self, plugin: &str) -> Option<Box<dyn RoomHandler>>;

    /// The protocol and limits of `plugin`'s room route `prefix`, if it
    /// has one on this node; else why not.
    fn room_route(&self, plugin: &str, prefix: &str) -> Result<(RoomProtocol, RoomLimits), String>;
}
