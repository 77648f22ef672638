//! A connection joining: the room's capacity, the handler's `on-connect`,
//! then the welcome and what the connection is owed from the log.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::events::Origin;
use super::state::Content;
use super::{Bucket, Command, Member, Owner, Pending, livestore};
use crate::bindings::exports::spike::host::room_handler::Connect;
use crate::metrics::Metrics;
use crate::objects::mailbox;
use crate::runtime::manifest::RoomProtocol;
use crate::runtime::rooms::frames::{self, Frame, MemberInfo, WelcomeText};
use crate::runtime::rooms::handler::{Answer, Call, Handler};
use crate::runtime::rooms::livestore::Dialect;
use crate::runtime::rooms::{
    CatchUp, CatchUpForm, JoinError, JoinRequest, Joined, Line, Membership, next_connection_id,
};

/// The close codes a handler may refuse with: policy violation, or the
/// range left to applications.
fn rejection_code(code: u16) -> u16 {
    if code == 1008 || (4000..=4999).contains(&code) {
        code
    } else {
        1008
    }
}

/// A close reason fits in a control frame: at most 123 bytes.
fn rejection_reason(mut reason: String) -> String {
    const MAX: usize = 120;
    if reason.len() > MAX {
        let mut end = MAX;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}

impl Owner {
    /// Joins a connection: the room's capacity, the handler's
    /// `on-connect`, then the welcome and what the connection is owed from
    /// the log.
    pub(super) async fn join(
        &mut self,
        request: JoinRequest,
        pending: &mut Vec<Pending>,
    ) -> Result<Joined, JoinError> {
        let owner = self.admit()?;
        self.load()
            .await
            .map_err(|e| JoinError::Unavailable(e.to_string()))?;
        let id = next_connection_id();
        let user: Option<Arc<str>> = request.caller.as_ref().map(|c| c.subject.as_str().into());
        if let Some(handler) = Handler::of(&self.hub.registry, &self.plugin) {
            self.on_connect(&handler, &id, &user, &request, pending)
                .await?;
        }
        let (text, catch_up) = self.owed(request.since);
        let hello = self.hello(&id, text);
        let info = MemberInfo {
            connection: &id,
            user: user.as_deref(),
        };
        if self.protocol.host_frames() {
            let count = self.members.len() + 1;
            self.broadcast(&frames::presence("join", &info, count), &[]);
        }
        Ok(self.add_member(id, user, request, owner, hello, catch_up))
    }

    /// A place in the room, and this owner's inbox for the member's line.
    fn admit(&self) -> Result<mailbox::Sender<Command>, JoinError> {
        let max = self.limits.max_connections;
        if self.members.len() >= max {
            Metrics::count(&self.hub.metrics.rooms.closes, &self.plugin, "full", 1);
            return Err(JoinError::Full(max));
        }
        (self.inbox.upgrade()).ok_or_else(|| JoinError::Unavailable("the room is closing".into()))
    }

    /// The handler's `on-connect`: a refusal, or what it asked of the room
    /// done and stored before the welcome counts it.
    async fn on_connect(
        &mut self,
        handler: &Handler,
        id: &Arc<str>,
        user: &Option<Arc<str>>,
        request: &JoinRequest,
        pending: &mut Vec<Pending>,
    ) -> Result<(), JoinError> {
        let call = Call::Connect(Connect {
            room: self.id.clone(),
            connection: id.to_string(),
            headers: crate::util::header_pairs(&request.headers),
        });
        let event = self.room_event(pending);
        let (answer, actions) = handler.call(request.caller.clone(), event, call).await;
        match answer {
            Ok(Answer::Connect(Ok(()))) => {}
            Ok(Answer::Connect(Err(rejection))) => {
                Metrics::count(&self.hub.metrics.rooms.closes, &self.plugin, "rejected", 1);
                return Err(JoinError::Rejected {
                    code: rejection_code(rejection.code),
                    reason: rejection_reason(rejection.reason),
                });
            }
            Ok(_) => unreachable!("on-connect answers accept or reject"),
            Err(e) => {
                return Err(JoinError::Unavailable(format!(
                    "the room's handler failed: {e}"
                )));
            }
        }
        let origin = Origin {
            sender: None,
            id: id.clone(),
            user: user.clone(),
        };
        self.apply(actions, &origin, pending);
        self.commit(std::mem::take(pending)).await;
        self.load()
            .await
            .map_err(|e| JoinError::Unavailable(e.to_string()))
    }

    /// What a joiner resuming after `since` is owed: a text room's text
    /// (shared with the other joiners of its version), or stored events to
    /// catch up on. A `yjs` client catches up by syncing and a `livestore`
    /// client by pulling, not from the log; events compacted away start a
    /// text room over from its text and a relay room from its oldest kept
    /// event.
    fn owed(&mut self, since: Option<u64>) -> (Option<Arc<WelcomeText>>, Option<CatchUp>) {
        let state = self.state.as_mut().expect("loaded");
        let head = state.head;
        let mut text = || match &state.content {
            Content::Text(doc) => {
                let cached = (state.welcome_text)
                    .as_ref()
                    .filter(|t| t.head == head)
                    .cloned();
                let text = cached.unwrap_or_else(|| Arc::new(WelcomeText::new(head, doc.text())));
                state.welcome_text = Some(text.clone());
                Some(text)
            }
            _ => None,
        };
        let catch_up = |after, snapshot| {
            Some(CatchUp {
                log: self.hub.log.clone(),
                room: self.name.clone(),
                snapshot,
                after,
                through: head,
                form: CatchUpForm::Stored,
            })
        };
        let compacted_through = state.compacted_through;
        match since {
            None => (text(), None),
            Some(since) if since >= head => (None, None),
            Some(_) if !self.protocol.host_frames() => (None, None),
            Some(since) if since < compacted_through => match self.protocol {
                RoomProtocol::Relay => (
                    None,
                    catch_up(compacted_through, Some(frames::snapshot(compacted_through))),
                ),
                _ => (text(), None),
            },
            Some(since) => (None, catch_up(since, None)),
        }
    }

    /// What a joiner is sent first: a `yjs` room's sync step 1 and
    /// awareness, nothing for a `livestore` client (it speaks first), else
    /// the welcome with the members and the text.
    fn hello(&self, id: &str, text: Option<Arc<WelcomeText>>) -> Vec<Frame> {
        let state = self.state.as_ref().expect("loaded");
        match &state.content {
            Content::Yjs(room) => room.welcome().into_iter().map(Frame::Binary).collect(),
            Content::LiveStore(_) => Vec::new(),
            _ => {
                let others: Vec<MemberInfo<'_>> = (self.members.values())
                    .take(frames::MAX_LISTED_MEMBERS)
                    .map(|m| m.info())
                    .collect();
                let welcome = frames::welcome(
                    &self.id,
                    id,
                    self.protocol.name(),
                    state.head,
                    &others,
                    self.members.len() + 1,
                    text.as_deref(),
                );
                let parts = text.iter().flat_map(|t| t.parts().iter().cloned());
                std::iter::once(welcome).chain(parts).collect()
            }
        }
    }

    /// The member, in the room: its queue, its kick, its line.
    fn add_member(
        &mut self,
        id: Arc<str>,
        user: Option<Arc<str>>,
        request: JoinRequest,
        owner: mailbox::Sender<Command>,
        hello: Vec<Frame>,
        catch_up: Option<CatchUp>,
    ) -> Joined {
        let livestore = (self.protocol == RoomProtocol::LiveStore)
            .then(|| livestore::Subscriber::new(request.dialect.unwrap_or(Dialect::Rpc)));
        let (queue_tx, queue) =
            mailbox::channel(self.limits.send_queue, self.limits.send_queue_bytes);
        let (kick_tx, kicked) = oneshot::channel();
        let connection = self.next_member;
        self.next_member += 1;
        self.members.insert(
            connection,
            Box::new(Member {
                id: id.clone(),
                user,
                caller: request.caller,
                queue: queue_tx,
                kick: Some(kick_tx),
                bucket: Bucket::full(self.limits.messages_per_s),
                livestore,
            }),
        );
        self.listed = None;
        self.hub.metrics.rooms.connections.inc();
        Joined {
            connection: id,
            hello,
            binary: self.protocol.binary(),
            catch_up,
            queue,
            kicked,
            membership: Membership {
                line: Line::Local { connection, owner },
                _socket: None,
            },
            limits: self.limits.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_are_closes_a_client_can_read() {
        assert_eq!(rejection_code(4001), 4001);
        assert_eq!(rejection_code(1008), 1008);
        for odd in [1000, 1001, 1011, 3000, 5000, 0] {
            assert_eq!(rejection_code(odd), 1008);
        }
        assert_eq!(rejection_reason("é".repeat(100)).len(), 120);
        assert_eq!(rejection_reason("short".into()), "short");
    }
}
