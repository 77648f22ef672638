//! How a member's message becomes events: the rate limit, the room
//! handler (if the plugin has one) and what it asks for, then the
//! protocol (a relay room's event, a text room's transformed edit, a yjs
//! room's document update).

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;

use super::state::{Content, State};
use super::{Member, Owner, Pending, Publish};
use crate::bindings::exports::spike::host::room_handler::{Message, Outcome};
use crate::caps::identity::Caller;
use crate::caps::rooms::Action;
use crate::runtime::dispatch::DispatchError;
use crate::runtime::manifest::RoomProtocol;
use crate::runtime::rooms::frames::{self, Frame};
use crate::runtime::rooms::handler::{Answer, Call, Handler};
use crate::runtime::rooms::{Kick, yjs};

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
    pub(super) fn next_seq(&self, pending: &[Pending]) -> u64 {
        let head = self.state.as_ref().map_or(0, |s| s.head);
        head + pending.len() as u64 + 1
    }

    /// Makes the events of one member's message (into `pending`), or tells
    /// the member why there are none. A `yjs` or `livestore` member cannot
    /// be told in the host's JSON: where a JSON member gets an error frame,
    /// it is closed, and its client reconnects and syncs again (nothing it
    /// wrote is lost).
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
            if !self.protocol.host_frames() {
                self.kick(connection, Kick::TOO_FAST, "rate_limited");
                return;
            }
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
            if !self.protocol.host_frames() {
                self.kick(connection, Kick::UNAVAILABLE, "unavailable");
                return;
            }
            let error = format!("the room's log is unavailable: {e}");
            self.reply(connection, frames::error("unavailable", &error));
            return;
        }
        let handler = Handler::of(&self.hub.registry, &self.plugin);
        match message {
            Frame::Text(text) if self.protocol == RoomProtocol::LiveStore => {
                self.take_livestore(connection, text, pending)
            }
            Frame::Text(text) => {
                self.take_json(&origin, caller, text, handler, pending)
                    .await
            }
            Frame::Binary(data) => self.take_yjs(&origin, caller, data, handler, pending).await,
        }
    }

    /// A JSON room's message: through the handler, if any, then the
    /// protocol.
    async fn take_json(
        &mut self,
        origin: &Origin,
        caller: Option<Arc<Caller>>,
        text: &str,
        handler: Option<Handler>,
        pending: &mut Vec<Pending>,
    ) {
        let connection = origin.sender.expect("a member's message");
        let Some(handler) = handler else {
            self.push_event(origin, text, pending);
            return;
        };
        let answer = self.on_message(&handler, caller, origin, text.to_string(), pending);
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
        if let Some(event) = outcome.event
            && self.fits(&event)
        {
            self.push_event(origin, &event, pending);
        }
    }

    /// A `yjs` room's message. The handler, if any, is asked about those
    /// that may change the document (as `{"type":"yjs-update","update":
    /// <base64 of the message>}`): no `event` in its outcome refuses the
    /// change, and the client is told with y-protocols' permission denied
    /// (its `reply`, or a default, is the reason).
    async fn take_yjs(
        &mut self,
        origin: &Origin,
        caller: Option<Arc<Caller>>,
        data: &Bytes,
        handler: Option<Handler>,
        pending: &mut Vec<Pending>,
    ) {
        let connection = origin.sender.expect("a member's message");
        if let Some(handler) = handler
            && yjs::may_update(data)
        {
            let description = serde_json::json!({
                "type": "yjs-update",
                "update": base64::engine::general_purpose::STANDARD.encode(data),
            });
            let answer =
                self.on_message(&handler, caller, origin, description.to_string(), pending);
            match answer.await {
                Ok(outcome) => {
                    if outcome.event.is_none() {
                        let reason = (outcome.reply).unwrap_or_else(|| {
                            "this connection may not change the document".into()
                        });
                        self.reply(connection, Frame::Binary(yjs::denied(&reason)));
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(room = %self.name, "the room handler failed on an update: {e}");
                    self.kick(connection, Kick::HANDLER_FAILED, "handler_failed");
                    return;
                }
            }
        }
        let rate = self.limits.messages_per_s;
        let (
            Some(State {
                content: Content::Yjs(room),
                ..
            }),
            Some(member),
        ) = (&mut self.state, self.members.get_mut(&connection))
        else {
            return;
        };
        // The frame took one token (`take_message`); each further message
        // of it takes one more.
        let handled = room.handle(connection, data, &mut || member.bucket.take(rate));
        match handled {
            Ok(outcome) => {
                for reply in outcome.replies {
                    self.reply(connection, Frame::Binary(reply));
                }
                for update in outcome.updates {
                    let frame = Frame::Binary(yjs::update_message(&update));
                    pending.push(Pending {
                        sender: Some(connection),
                        stored: update,
                        publish: Publish::Frame(frame),
                    });
                }
                for relay in outcome.relays {
                    self.broadcast(&Frame::Binary(relay), &[]);
                }
                match outcome.refused {
                    None => {}
                    Some(yjs::Refusal::TooFast) => {
                        self.kick(connection, Kick::TOO_FAST, "rate_limited");
                    }
                    Some(yjs::Refusal::AwarenessFull) => {
                        self.kick(connection, Kick::AWARENESS_FULL, "awareness_full");
                    }
                    Some(yjs::Refusal::Malformed(why)) => {
                        tracing::debug!(room = %self.name, "a y-protocols message refused: {why}");
                        self.kick(connection, Kick::MALFORMED, "malformed");
                    }
                }
            }
            Err(why) => {
                tracing::debug!(room = %self.name, "a malformed y-protocols message: {why}");
                self.kick(connection, Kick::MALFORMED, "malformed");
            }
        }
    }

    /// The handler's `on-message` for `data` from `origin`: its outcome,
    /// what it asked the room to do done (appends into `pending`), or why
    /// it failed.
    async fn on_message(
        &mut self,
        handler: &Handler,
        caller: Option<Arc<Caller>>,
        origin: &Origin,
        data: String,
        pending: &mut Vec<Pending>,
    ) -> Result<Outcome, DispatchError> {
        let call = Call::Message(Message {
            room: self.id.clone(),
            connection: origin.id.to_string(),
            user: origin.user.as_deref().map(str::to_string),
            data,
        });
        let event = self.room_event(pending);
        let (answer, actions) = handler.call(caller, event, call).await;
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

    /// `data` as this room's protocol makes it an event.
    fn push_event(&mut self, origin: &Origin, data: &str, pending: &mut Vec<Pending>) {
        let seq = self.next_seq(pending);
        let state = self.state.as_mut().expect("loaded");
        let (from, user) = (&origin.id, origin.user.as_deref());
        let frame = match &mut state.content {
            Content::Text(doc) => {
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
        pending.push(Pending::json(origin.sender, frame));
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
            if !self.protocol.host_frames() {
                // A y-websocket or LiveStore client reads its protocol only.
                tracing::warn!(
                    room = %self.name,
                    "a {} room's handler cannot send frames or append; dropped",
                    self.protocol.name()
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
                    // Not an edit: a text room's numbers move on past it.
                    if let Some(State {
                        content: Content::Text(doc),
                        ..
                    }) = &mut self.state
                    {
                        doc.skip(seq);
                    }
                    pending.push(Pending::json(origin.sender, frame));
                }
            }
        }
    }
}
