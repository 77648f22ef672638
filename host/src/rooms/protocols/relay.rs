//! `relay`: every message is stored and broadcast as a numbered event
//! (`{"type":"event",...}`); a room keeps nothing but its log.

use bytes::Bytes;

use super::Protocol;
use crate::rooms::frames::{self, Frame};
use crate::rooms::owner::{Origin, Pending, Room};
use crate::rooms::{CatchUp, JoinRequest};
use crate::storage::{RoomLogHead, StorageError};

pub struct Relay;

impl Protocol for Relay {
    const NAME: &'static str = "relay";
    const HOST_FRAMES: bool = true;
    type Member = ();
    type Push = ();

    fn member(_: &JoinRequest) {}

    async fn load(_: &Room<Self>, _: &RoomLogHead) -> Result<Self, StorageError> {
        Ok(Relay)
    }

    /// The welcome, then the events after `since`; events compacted away
    /// start the joiner at the oldest kept one, after a `snapshot` frame
    /// that says so.
    fn welcome(
        &mut self,
        room: &Room<Self>,
        joiner: &str,
        since: Option<u64>,
    ) -> (Vec<Frame>, Option<CatchUp>) {
        let place = &room.place;
        let catch_up = match since {
            None => None,
            Some(since) if since >= place.head => None,
            Some(since) if since < place.compacted_through => {
                let kept = place.compacted_through;
                Some(room.catch_up(kept, Some(frames::snapshot(kept))))
            }
            Some(since) => Some(room.catch_up(since, None)),
        };
        (room.json_welcome(joiner, None), catch_up)
    }

    async fn take(
        &mut self,
        room: &mut Room<Self>,
        from: &Origin,
        message: &Frame,
        pending: &mut Vec<Pending<()>>,
    ) {
        let Frame::Text(text) = message else { return };
        let (id, user) = (&from.id, from.user.as_deref());
        let event = |seq, data: &str| Ok(frames::relay_event(seq, id, user, data));
        room.take_json(from, text, pending, event).await;
    }

    /// Its events are its state: the snapshot only marks where the kept
    /// events start.
    fn snapshot(&self) -> Option<Result<Bytes, String>> {
        Some(Ok(Bytes::new()))
    }
}
