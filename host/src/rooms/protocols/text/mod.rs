//! `text`: a shared text document. A member's message is an edit made
//! against the text at some number (`frames::parse_edit`), transformed
//! past the edits ordered since (`ot`), applied, stored and broadcast as an
//! `op` event; a joiner gets the whole text in its welcome, or the events
//! it missed.

pub mod ot;

use std::sync::Arc;

use bytes::Bytes;

use super::Protocol;
use crate::rooms::frames::{self, Frame, WelcomeText};
use crate::rooms::owner::{Origin, Pending, Room};
use crate::rooms::{CatchUp, JoinRequest};
use crate::storage::{RoomLogHead, StorageError};
use ot::TextDoc;

pub struct Text {
    doc: TextDoc,
    /// The text as its last joiners got it, shared with the next joiners
    /// while the head has not moved.
    welcome_text: Option<Arc<WelcomeText>>,
}

impl Text {
    /// The text at `head`, as the welcome sends it (made once a version).
    fn welcome_text(&mut self, head: u64) -> Arc<WelcomeText> {
        let cached = (self.welcome_text.as_ref()).filter(|t| t.head == head);
        let text = match cached {
            Some(text) => text.clone(),
            None => Arc::new(WelcomeText::new(head, self.doc.text())),
        };
        self.welcome_text = Some(text.clone());
        text
    }

    /// Makes `data` an edit numbered `seq`: transformed, applied, and its
    /// event; or why it cannot be.
    fn edit(&mut self, seq: u64, data: &str) -> Result<Vec<ot::Step>, String> {
        // Numbers the handler's appends took are not edits.
        if self.doc.head() + 1 < seq {
            self.doc.skip(seq - 1);
        }
        let (steps, at) = frames::parse_edit(data)?;
        let steps = self.doc.rebase(steps, at).map_err(|e| e.to_string())?;
        self.doc.apply(steps.clone()).map_err(|e| e.to_string())?;
        Ok(steps)
    }
}

impl Protocol for Text {
    const NAME: &'static str = "text";
    const HOST_FRAMES: bool = true;
    type Member = ();
    type Push = ();

    fn client_path(prefix: &str) -> String {
        format!("{prefix}/{{doc}}")
    }

    fn member(_: &JoinRequest) {}

    /// The snapshot's text, then every edit after it.
    async fn load(room: &Room<Self>, head: &RoomLogHead) -> Result<Self, StorageError> {
        let (text, snapshot_seq) = match &head.snapshot {
            Some(s) => {
                let text = std::str::from_utf8(&s.data)
                    .map_err(|_| room.corrupt(s.seq, "a text snapshot is not UTF-8"))?;
                (text, s.seq)
            }
            None => ("", 0),
        };
        let keep = room.limits.compact_every as usize;
        let mut doc = TextDoc::new(text, snapshot_seq, keep);
        room.replay(snapshot_seq, |seq, event| {
            if seq != doc.head() + 1 {
                return Err(room.corrupt(seq, format!("follows {}", doc.head())));
            }
            match frames::steps_of_event(&event).map_err(|e| room.corrupt(seq, e))? {
                Some(steps) => doc.apply(steps).map_err(|e| room.corrupt(seq, e)),
                None => {
                    doc.skip(seq);
                    Ok(())
                }
            }
        })
        .await?;
        Ok(Self {
            doc,
            welcome_text: None,
        })
    }

    /// The welcome with the text, or only the events after `since` while
    /// the log still has them all.
    fn welcome(
        &mut self,
        room: &Room<Self>,
        joiner: &str,
        since: Option<u64>,
    ) -> (Vec<Frame>, Option<CatchUp>) {
        let place = &room.place;
        match since {
            Some(since) if since >= place.head => (room.json_welcome(joiner, None), None),
            Some(since) if since >= place.compacted_through => {
                let catch_up = room.catch_up(since, None);
                (room.json_welcome(joiner, None), Some(catch_up))
            }
            _ => {
                let text = self.welcome_text(place.head);
                (room.json_welcome(joiner, Some(text)), None)
            }
        }
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
        let event = |seq, data: &str| {
            let steps = self.edit(seq, data)?;
            Ok(frames::op_event(seq, id, user, &steps))
        };
        room.take_json(from, text, pending, event).await;
    }

    fn snapshot(&self) -> Option<Result<Bytes, String>> {
        Some(Ok(Bytes::from(self.doc.text())))
    }
}
