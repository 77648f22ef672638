//! How a member's message becomes events: the rate limit, the room
//! handler (if the plugin has one) and what it asks for, then the
//! protocol (a relay room's event, a text room's transformed edit).

use std::sync::Arc;

use super::{Member, Owner, Pending};
use crate::bindings::exports::spike::host::room_handler::Message;
use crate::caps::rooms::Action;
use crate::runtime::manifest::RoomProtocol;
use crate::runtime::rooms::frames::{self, Frame};
use crate::runtime::rooms::handler::{Answer, Call, Handler};

/// Whom events made on a member's behalf are from, and whom to tell if
/// they fail.
pub(super) struct Origin {
    pub sender: Option<u64>,
    pub id: Arc<str>,
    pub user: Option<Arc<str>>,
}

impl Origin {
    pub fn of(member: &Member, sender: Option<u64>) -> Self {
        Self {
            sender,
            id: member.id.clone(),
            user: member.user.clone(),
        }
    }
}

impl Owner {
    /// The number the next event gets, with `pending` made already.
    fn next_seq(&self, pending: &[Pending]) -> u64 {
        let head = self.state.as_ref().map_or(0, |s| s.head);
        head + pending.len() as u64 + 1
    }

    /// Makes the events of one member's message (into `pending`), or tells
    /// the member why there are none.
    pub(super) async fn take_message(
        &mut self,
        connection: u64,
        message: &Frame,
        pending: &mut Vec<Pending>,
    ) {
        let rate = self.limits.messages_per_s;
        let Some(member) = self.members.get_mut(&connection) else {
            return;
        };
        if !member.bucket.take(rate) {
            let error = frames::error(
                "rate_limited",
                &format!("at most {rate} messages a second; this one was dropped"),
            );
            self.reply(connection, error);
            return;
        }
        let origin = Origin::of(member, Some(connection));
        let caller = member.caller.clone();
        if let Err(e) = self.load().await {
            let error = format!("the room's log is unavailable: {e}");
            self.reply(connection, frames::error("unavailable", &error));
            return;
        }
        let Some(handler) = Handler::of(&self.hub.registry, &self.plugin) else {
            self.push_event(&origin, message, pending);
            return;
        };
        let call = Call::Message(Message {
            room: self.id.clone(),
            connection: origin.id.to_string(),
            user: origin.user.as_deref().map(str::to_string),
            data: message.to_string(),
        });
        let event = self.room_event(pending);
        let (answer, actions) = handler.call(caller, event, call).await;
        let outcome = match answer {
            Ok(Answer::Message(outcome)) => outcome,
            Ok(_) => unreachable!("on-message answers with an outcome"),
            Err(e) => {
                let why = format!("the room's handler failed on this message: {e}");
                self.reply(connection, frames::error("handler_failed", &why));
                return;
            }
        };
        self.apply(actions, &origin, pending);
        if let Some(reply) = outcome.reply
            && self.fits(&reply)
        {
            self.reply(connection, Frame::from(reply));
        }
        if let Some(event) = outcome.event
            && self.fits(&event)
        {
            self.push_event(&origin, &event, pending);
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

    /// `data` as this room's protocol makes it an event.
    fn push_event(&mut self, origin: &Origin, data: &str, pending: &mut Vec<Pending>) {
        let seq = self.next_seq(pending);
        let state = self.state.as_mut().expect("loaded");
        let (from, user) = (&origin.id, origin.user.as_deref());
        let frame = match (self.protocol, state.doc.as_mut()) {
            (RoomProtocol::Text, Some(doc)) => {
                let edit = frames::parse_edit(data).and_then(|(steps, at)| {
                    let steps = doc.rebase(steps, at).map_err(|e| e.to_string())?;
                    doc.apply(steps.clone()).map_err(|e| e.to_string())?;
                    Ok(steps)
                });
                match edit {
                    Ok(steps) => frames::op_event(seq, from, user, &steps),
                    Err(why) => {
                        if let Some(sender) = origin.sender {
                            self.reply(sender, frames::error("bad_edit", &why));
                        }
                        return;
                    }
                }
            }
            _ => frames::relay_event(seq, from, user, data),
        };
        pending.push(Pending {
            sender: origin.sender,
            frame,
        });
    }

    /// Does what a handler asked for: frames now, appends as events after
    /// those already `pending`.
    pub(super) fn apply(
        &mut self,
        actions: Vec<Action>,
        origin: &Origin,
        pending: &mut Vec<Pending>,
    ) {
        for action in actions {
            match action {
                Action::Send { to, message } => {
                    if let Some(&n) = self.ids.get(to.as_str()) {
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
                    // Not an edit: a text room's numbers move on past it.
                    if let Some(doc) = self.state.as_mut().and_then(|s| s.doc.as_mut()) {
                        doc.skip(seq);
                    }
                    pending.push(Pending {
                        sender: origin.sender,
                        frame,
                    });
                }
            }
        }
    }
}
