//! How a member's message becomes events: the rate limit and the room's
//! state here, then the protocol (`Protocol::take`), which may ask the
//! room handler (`Room::on_message`) and make JSON events
//! (`Room::take_json`); what the handler asks for is done by `apply`.

use std::sync::Arc;

use super::{Member, Owner, Pending, Room};
use crate::bindings::exports::spike::host::room_handler::{Message, Outcome};
use crate::caps::identity::Caller;
use crate::caps::rooms::Action;
use crate::rooms::Kick;
use crate::rooms::frames::{self, Frame};
use crate::rooms::handler::{Answer, Call, HandlerFailed, RoomHandler};
use crate::rooms::protocols::Protocol;

/// Whom events made on a member's behalf are from, and whom to tell if
/// they fail.
pub struct Origin {
    /// The member's number, if the events answer its message.
    pub sender: Option<u64>,
    pub id: Arc<str>,
    pub user: Option<Arc<str>>,
    /// Its caller, for the room handler's `identity`.
    pub caller: Option<Arc<Caller>>,
}

impl Origin {
    pub fn of<M>(member: &Member<M>, sender: Option<u64>) -> Self {
        Self {
            sender,
            id: member.id.clone(),
            user: member.user.clone(),
            caller: member.caller.clone(),
        }
    }

    /// The member whose message this is.
    pub fn connection(&self) -> u64 {
        self.sender.expect("a member's message")
    }
}

impl<P: Protocol> Owner<P> {
    /// Makes the events of one member's message (into `pending`), or tells
    /// the member why there are none. A member of a protocol that does not
    /// read the host's frames is closed where a JSON member gets an error
    /// frame; its client reconnects and syncs again (nothing it wrote is
    /// lost).
    pub(super) async fn take_message(
        &mut self,
        connection: u64,
        message: &Frame,
        pending: &mut Vec<Pending<P::Push>>,
    ) {
        let room = &mut self.room;
        let rate = room.limits.messages_per_s;
        let Some(member) = room.members.get_mut(&connection) else {
            return;
        };
        if !member.bucket.take(rate) {
            if !P::HOST_FRAMES {
                room.kick(connection, Kick::TOO_FAST, "rate_limited");
                return;
            }
            let error = frames::error(
                "rate_limited",
                &format!("at most {rate} messages a second; this one was dropped"),
            );
            room.reply(connection, error);
            return;
        }
        let origin = Origin::of(member, Some(connection));
        if let Err(e) = self.load().await {
            if !P::HOST_FRAMES {
                self.room.kick(connection, Kick::UNAVAILABLE, "unavailable");
                return;
            }
            let error = format!("the room's log is unavailable: {e}");
            (self.room).reply(connection, frames::error("unavailable", &error));
            return;
        }
        let content = self.content.as_mut().expect("loaded");
        content
            .take(&mut self.room, &origin, message, pending)
            .await;
    }
}

impl<P: Protocol> Room<P> {
    /// The plugin's room handler, if its active version has one.
    pub fn handler(&self) -> Option<Box<dyn RoomHandler>> {
        self.hub.plugins.handler(&self.plugin)
    }

    /// A JSON room's message: through the handler, if any (its reply sent,
    /// its event kept), then made an event by `event` (given the event's
    /// number and data; its error is sent back as `bad_edit`).
    pub async fn take_json(
        &mut self,
        origin: &Origin,
        text: &str,
        pending: &mut Vec<Pending<P::Push>>,
        event: impl FnOnce(u64, &str) -> Result<Frame, String> + Send,
    ) {
        let connection = origin.connection();
        let data = match self.handler() {
            None => text.to_string(),
            Some(handler) => {
                let answer = self.on_message(&*handler, origin, text.to_string(), pending);
                let outcome = match answer.await {
                    Ok(outcome) => outcome,
                    Err(e) => {
                        let why = format!("the room's handler failed on this message: {e}");
                        self.reply(connection, frames::error("handler_failed", &why));
                        return;
                    }
                };
                if let Some(reply) = outcome.reply
                    && self.fits(&reply)
                {
                    self.reply(connection, Frame::from(reply));
                }
                match outcome.event {
                    Some(event) if self.fits(&event) => event,
                    _ => return,
                }
            }
        };
        match event(self.next_seq(pending), &data) {
            Ok(frame) => pending.push(Pending::json(origin.sender, frame)),
            Err(why) => self.reply(connection, frames::error("bad_edit", &why)),
        }
    }

    /// The handler's `on-message` for `data` from `origin`: its outcome,
    /// what it asked the room to do done (appends into `pending`), or why
    /// it failed.
    pub async fn on_message(
        &mut self,
        handler: &dyn RoomHandler,
        origin: &Origin,
        data: String,
        pending: &mut Vec<Pending<P::Push>>,
    ) -> Result<Outcome, HandlerFailed> {
        let call = Call::Message(Message {
            room: self.id.clone(),
            connection: origin.id.to_string(),
            user: origin.user.as_deref().map(str::to_string),
            data,
        });
        let event = self.room_event(pending);
        let (answer, actions) = handler.call(origin.caller.clone(), event, call).await;
        match answer? {
            Answer::Message(outcome) => {
                self.apply(actions, origin, pending);
                Ok(outcome)
            }
            _ => unreachable!("on-message answers with an outcome"),
        }
    }

    /// Whether a frame the handler made fits the room's limit (a bigger
    /// one is dropped, and logged: it is the plugin's bug).
    fn fits(&self, frame: &str) -> bool {
        let fits = frame.len() <= self.limits.max_message_bytes;
        if !fits {
            tracing::warn!(
                room = %self.name,
                bytes = frame.len(),
                "the room handler made a frame larger than max_message_kib; dropped"
            );
        }
        fits
    }

    /// Does what a handler asked for: frames now, appends as events after
    /// those already `pending` (a text room's numbers move on past them:
    /// `text::Text` skips the numbers it did not make).
    pub(super) fn apply(
        &mut self,
        actions: Vec<Action>,
        origin: &Origin,
        pending: &mut Vec<Pending<P::Push>>,
    ) {
        for action in actions {
            if !P::HOST_FRAMES {
                // A y-websocket or LiveStore client reads its protocol only.
                tracing::warn!(
                    room = %self.name,
                    "a {} room's handler cannot send frames or append; dropped",
                    P::NAME
                );
                continue;
            }
            match action {
                Action::Send { to, message } => {
                    // By its connection id: a scan, as a handler's sends to
                    // one member are rare next to broadcasts.
                    let to = (self.members.iter()).find(|(_, m)| *m.id == *to);
                    if let Some((&n, _)) = to {
                        self.reply(n, Frame::from(message));
                    }
                }
                Action::Broadcast { message, except } => {
                    self.broadcast(&Frame::from(message), &except);
                }
                Action::Append { data } => {
                    let seq = self.next_seq(pending);
                    let (from, user) = (&origin.id, origin.user.as_deref());
                    let frame = frames::relay_event(seq, from, user, &data);
                    pending.push(Pending::json(origin.sender, frame));
                }
            }
        }
    }
}
