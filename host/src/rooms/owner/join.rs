//! A connection joining: the room's capacity, the handler's `on-connect`,
//! then the welcome and what the connection is owed from the log.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::messages::Origin;
use super::{Bucket, Command, Member, Owner, Pending, Room};
use crate::bindings::exports::spike::host::room_handler::Connect;
use crate::metrics::Metrics;
use crate::objects::mailbox;
use crate::rooms::frames::{self, Frame, MemberInfo, WelcomeText};
use crate::rooms::handler::{Answer, Call, RoomHandler};
use crate::rooms::protocols::Protocol;
use crate::rooms::{
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

impl<P: Protocol> Owner<P> {
    /// Joins a connection: the room's capacity, the handler's
    /// `on-connect`, then the welcome and what the connection is owed from
    /// the log.
    pub(super) async fn join(
        &mut self,
        request: JoinRequest,
        pending: &mut Vec<Pending<P::Push>>,
    ) -> Result<Joined, JoinError> {
        let owner = self.room.admit()?;
        let unavailable = |e: crate::storage::StorageError| JoinError::Unavailable(e.to_string());
        self.load().await.map_err(unavailable)?;
        let id = next_connection_id();
        let user: Option<Arc<str>> = request.caller.as_ref().map(|c| c.subject.as_str().into());
        if let Some(handler) = self.room.handler() {
            let origin = Origin {
                sender: None,
                id: id.clone(),
                user: user.clone(),
                caller: request.caller.clone(),
            };
            let room = &mut self.room;
            room.on_connect(&*handler, &origin, &request, pending)
                .await?;
            self.commit(std::mem::take(pending)).await;
            self.load().await.map_err(unavailable)?;
        }
        let content = self.content.as_mut().expect("loaded");
        let (hello, catch_up) = content.welcome(&self.room, &id, request.since);
        let room = &mut self.room;
        if P::HOST_FRAMES {
            let info = MemberInfo {
                connection: &id,
                user: user.as_deref(),
            };
            let count = room.members.len() + 1;
            room.broadcast(&frames::presence("join", &info, count), &[]);
        }
        Ok(room.add_member(id, user, request, owner, hello, catch_up))
    }
}

impl<P: Protocol> Room<P> {
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
    /// done (into `pending`, which the owner stores before the welcome
    /// counts it).
    async fn on_connect(
        &mut self,
        handler: &dyn RoomHandler,
        joiner: &Origin,
        request: &JoinRequest,
        pending: &mut Vec<Pending<P::Push>>,
    ) -> Result<(), JoinError> {
        let call = Call::Connect(Connect {
            room: self.id.clone(),
            connection: joiner.id.to_string(),
            headers: crate::util::header_pairs(&request.headers),
        });
        let event = self.room_event(pending);
        let (answer, actions) = handler.call(joiner.caller.clone(), event, call).await;
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
        self.apply(actions, joiner, pending);
        Ok(())
    }

    /// Stored events after `after` through the head, for a joiner to read
    /// from the log (a JSON room's events, as stored), after `snapshot`.
    pub fn catch_up(&self, after: u64, snapshot: Option<Frame>) -> CatchUp {
        CatchUp {
            log: self.hub.log.clone(),
            room: self.name.clone(),
            snapshot,
            after,
            through: self.place.head,
            form: CatchUpForm::Stored,
        }
    }

    /// A JSON room's welcome for the joiner `id`: the members, the head,
    /// and `text` (its parts follow the welcome).
    pub fn json_welcome(&self, id: &str, text: Option<Arc<WelcomeText>>) -> Vec<Frame> {
        let others: Vec<MemberInfo<'_>> = (self.members.values())
            .take(frames::MAX_LISTED_MEMBERS)
            .map(|m| m.info())
            .collect();
        let welcome = frames::welcome(
            &self.id,
            id,
            P::NAME,
            self.place.head,
            &others,
            self.members.len() + 1,
            text.as_deref(),
        );
        let parts = text.iter().flat_map(|t| t.parts().iter().cloned());
        std::iter::once(welcome).chain(parts).collect()
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
                protocol: P::member(&request),
                caller: request.caller,
                queue: queue_tx,
                kick: Some(kick_tx),
                bucket: Bucket::full(self.limits.messages_per_s),
            }),
        );
        self.listed = None;
        self.hub.metrics.rooms.connections.inc();
        Joined {
            connection: id,
            hello,
            binary: P::BINARY,
            catch_up,
            queue,
            kicked,
            membership: Membership {
                joined_in: None,
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
