//! `yjs`: a Yjs document spoken as y-websocket speaks it (`sync`: the
//! wire protocol, the document and the awareness states). The log holds
//! the document's updates; a snapshot is the whole document. Its clients
//! read y-protocols only: the host's JSON frames never reach them.

pub mod sync;

use base64::Engine;
use bytes::Bytes;

use super::Protocol;
use crate::rooms::frames::Frame;
use crate::rooms::handler::RoomHandler;
use crate::rooms::owner::{Origin, Pending, Room};
use crate::rooms::{CatchUp, JoinRequest, Kick, RoomLimits};
use crate::storage::{RoomLogHead, StorageError};
use sync::{Refusal, YjsRoom};

/// The default largest message: a client that was offline sends its whole
/// state as one message.
pub const MAX_MESSAGE_BYTES: usize = 8 << 20;

pub struct Yjs(YjsRoom);

impl Protocol for Yjs {
    const NAME: &'static str = "yjs";
    const BINARY: bool = true;
    type Member = ();
    type Push = ();

    fn client_path(prefix: &str) -> String {
        format!("{prefix}/{{doc}}")
    }

    fn default_limits(limits: &mut RoomLimits) {
        limits.max_message_bytes = MAX_MESSAGE_BYTES;
    }

    fn member(_: &JoinRequest) {}

    /// The snapshot's document, with every update after it.
    async fn load(room: &Room<Self>, head: &RoomLogHead) -> Result<Self, StorageError> {
        let mut doc = YjsRoom::new();
        let mut after = 0;
        if let Some(s) = &head.snapshot {
            doc.apply_stored(&s.data)
                .map_err(|e| room.corrupt(s.seq, e))?;
            after = s.seq;
        }
        room.replay(after, |seq, update| {
            doc.apply_stored(&update).map_err(|e| room.corrupt(seq, e))
        })
        .await?;
        Ok(Self(doc))
    }

    /// Sync step 1 and the awareness states: the client catches up by
    /// syncing, not from the log.
    fn welcome(
        &mut self,
        _: &Room<Self>,
        _: &str,
        _: Option<u64>,
    ) -> (Vec<Frame>, Option<CatchUp>) {
        let hello = self.0.welcome().into_iter().map(Frame::Binary).collect();
        (hello, None)
    }

    /// A y-protocols message. The handler, if any, is asked about those
    /// that may change the document (as `{"type":"yjs-update","update":
    /// <base64 of the message>}`): no `event` in its outcome refuses the
    /// change, and the client is told with y-protocols' permission denied
    /// (its `reply`, or a default, is the reason).
    async fn take(
        &mut self,
        room: &mut Room<Self>,
        from: &Origin,
        message: &Frame,
        pending: &mut Vec<Pending<()>>,
    ) {
        let Frame::Binary(data) = message else { return };
        let connection = from.connection();
        if let Some(handler) = room.handler()
            && sync::may_update(data)
            && !allowed(room, &*handler, from, data, pending).await
        {
            return;
        }
        let rate = room.limits.messages_per_s;
        let Some(member) = room.members.get_mut(&connection) else {
            return;
        };
        // The frame took one token (`take_message`); each further message
        // of it takes one more.
        let handled = self
            .0
            .handle(connection, data, &mut || member.bucket.take(rate));
        let outcome = match handled {
            Ok(outcome) => outcome,
            Err(why) => {
                tracing::debug!(room = %room.name, "a malformed y-protocols message: {why}");
                return room.kick(connection, Kick::MALFORMED, "malformed");
            }
        };
        for reply in outcome.replies {
            room.reply(connection, Frame::Binary(reply));
        }
        for update in outcome.updates {
            let frame = Frame::Binary(sync::update_message(&update));
            pending.push(Pending {
                sender: Some(connection),
                stored: update,
                frame: Some(frame),
                push: None,
            });
        }
        for relay in outcome.relays {
            room.broadcast(&Frame::Binary(relay), &[]);
        }
        if outcome.tainted {
            room.reload_state();
        }
        match outcome.refused {
            None => {}
            Some(Refusal::TooFast) => room.kick(connection, Kick::TOO_FAST, "rate_limited"),
            Some(Refusal::AwarenessFull) => {
                room.kick(connection, Kick::AWARENESS_FULL, "awareness_full")
            }
            Some(Refusal::Malformed(why)) => {
                tracing::debug!(room = %room.name, "a y-protocols message refused: {why}");
                room.kick(connection, Kick::MALFORMED, "malformed");
            }
        }
    }

    /// The awareness states the member set go, and every member is told.
    fn leave(&mut self, room: &mut Room<Self>, member: u64) {
        if let Some(removal) = self.0.leave(member) {
            room.broadcast(&Frame::Binary(removal), &[]);
        }
    }

    fn snapshot(&self) -> Option<Result<Bytes, String>> {
        Some(self.0.snapshot())
    }
}

/// Whether the handler lets `from` change the document with `data`; if
/// not, the member has been told (or closed, if the handler failed).
async fn allowed(
    room: &mut Room<Yjs>,
    handler: &dyn RoomHandler,
    from: &Origin,
    data: &Bytes,
    pending: &mut Vec<Pending<()>>,
) -> bool {
    let connection = from.connection();
    let description = serde_json::json!({
        "type": "yjs-update",
        "update": base64::engine::general_purpose::STANDARD.encode(data),
    });
    match (room.on_message(handler, from, description.to_string(), pending)).await {
        Ok(outcome) if outcome.event.is_some() => true,
        Ok(outcome) => {
            let reason = (outcome.reply)
                .unwrap_or_else(|| "this connection may not change the document".into());
            room.reply(connection, Frame::Binary(sync::denied(&reason)));
            false
        }
        Err(e) => {
            tracing::warn!(room = %room.name, "the room handler failed on an update: {e}");
            room.kick(connection, Kick::HANDLER_FAILED, "handler_failed");
            false
        }
    }
}
