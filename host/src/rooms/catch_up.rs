//! What a joiner is owed from the log: stored events read by the
//! connection itself, a page at a time, so that the room does not wait on
//! it.

use std::sync::Arc;

use bytes::Bytes;

use super::frames::{self, Frame};
use super::protocols::livestore::wire::{self as livestore, Dialect};
use crate::storage::{RoomLog, StorageError};

/// Stored events a connection is owed, read from the log by the
/// connection itself so that the room does not wait on it.
pub struct CatchUp {
    pub(super) log: Arc<dyn RoomLog>,
    pub(super) room: Arc<str>,
    /// Sent before the events (events before it were compacted away).
    pub(super) snapshot: Option<Frame>,
    pub(super) after: u64,
    pub(super) through: u64,
    pub(super) form: CatchUpForm,
}

/// How stored events are sent.
pub(super) enum CatchUpForm {
    /// Each as it is stored (a JSON room's event frames).
    Stored,
    /// As pages of a LiveStore pull.
    LiveStore {
        dialect: Dialect,
        request: Arc<str>,
        backend: Arc<str>,
    },
}

impl CatchUp {
    /// Every frame owed, the snapshot first, the events read from the log
    /// a page at a time as the stream is polled (by whoever sends them: a
    /// socket, or a link to another node).
    pub fn frames(mut self) -> impl futures::Stream<Item = Result<Frame, StorageError>> + Send {
        use futures::{StreamExt, TryStreamExt};
        let snapshot = self.snapshot.take().map(Ok);
        let pages = futures::stream::try_unfold(self, |mut catch_up| async move {
            let page = catch_up.next_page().await?;
            let more = !page.is_empty();
            let frames = futures::stream::iter(page.into_iter().map(Ok));
            Ok::<_, StorageError>(more.then_some((frames, catch_up)))
        });
        futures::stream::iter(snapshot).chain(pages.try_flatten())
    }

    /// The next frames, empty when caught up.
    async fn next_page(&mut self) -> Result<Vec<Frame>, StorageError> {
        let page_size = match self.form {
            CatchUpForm::Stored => 256,
            CatchUpForm::LiveStore { .. } => livestore::MAX_EVENTS_PER_CHUNK,
        };
        if self.after >= self.through {
            return Ok(Vec::new());
        }
        let mut page = self.log.read(&self.room, self.after, page_size).await?;
        page.retain(|(seq, _)| *seq <= self.through);
        let Some(&(last, _)) = page.last() else {
            // The log ends before `through`: nothing more to read.
            self.after = self.through;
            return Ok(Vec::new());
        };
        self.after = last;
        match &self.form {
            CatchUpForm::Stored => page.into_iter().map(|(_, b)| stored_frame(b)).collect(),
            CatchUpForm::LiveStore {
                dialect,
                request,
                backend,
            } => {
                let events: Vec<Bytes> = page.into_iter().map(|(_, b)| b).collect();
                let items = livestore::items(*dialect, &events).map_err(StorageError::Corrupt)?;
                let pages = livestore::Pages {
                    dialect: *dialect,
                    backend,
                    request,
                    pulled: true,
                };
                Ok(pages.frames(&items, self.through - last))
            }
        }
    }
}

fn stored_frame(bytes: Bytes) -> Result<Frame, StorageError> {
    frames::stored(bytes).ok_or_else(|| StorageError::Corrupt("a room event is not UTF-8".into()))
}
