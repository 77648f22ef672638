//! What the owner keeps of its log in memory, loaded from the log when the
//! room opens or wakes, and the compaction that keeps the log short.

use bytes::Bytes;

use super::Owner;
use crate::runtime::manifest::RoomProtocol;
use crate::runtime::rooms::frames;
use crate::runtime::rooms::text::TextDoc;
use crate::storage::{RoomSnapshot, StorageError};

/// The room's place in its log, and the protocol's state.
pub(super) struct State {
    pub head: u64,
    pub compacted_through: u64,
    pub snapshot_seq: u64,
    /// The text of a `text` room.
    pub doc: Option<TextDoc>,
}

impl Owner {
    /// Loads the state from the log if it is not in memory.
    pub(super) async fn load(&mut self) -> Result<(), StorageError> {
        if self.state.is_some() {
            return Ok(());
        }
        let log = &self.hub.log;
        let head = log.head(&self.name).await?;
        let snapshot_seq = head.snapshot.as_ref().map_or(0, |s| s.seq);
        let doc = match self.protocol {
            RoomProtocol::Relay => None,
            RoomProtocol::Text => {
                let text = match &head.snapshot {
                    Some(s) => std::str::from_utf8(&s.data).map_err(|_| {
                        StorageError::Corrupt("a text snapshot is not UTF-8".into())
                    })?,
                    None => "",
                };
                let keep = self.limits.compact_every as usize;
                let mut doc = TextDoc::new(text, snapshot_seq, keep);
                loop {
                    let page = log.read(&self.name, doc.head(), 1024).await?;
                    if page.is_empty() {
                        break;
                    }
                    for (seq, event) in page {
                        let corrupt = |why: String| {
                            StorageError::Corrupt(format!("{}: event {seq}: {why}", self.name))
                        };
                        if seq != doc.head() + 1 {
                            return Err(corrupt(format!("follows {}", doc.head())));
                        }
                        match frames::steps_of_event(&event).map_err(corrupt)? {
                            Some(steps) => doc.apply(steps).map_err(|e| corrupt(e.to_string()))?,
                            None => doc.skip(seq),
                        }
                    }
                }
                Some(doc)
            }
        };
        self.state = Some(State {
            head: head.head,
            compacted_through: head.compacted_through,
            snapshot_seq,
            doc,
        });
        Ok(())
    }

    /// Every `compact_every` events: a snapshot at the head, and the log
    /// trimmed to the last `compact_every` events (for catch-up).
    pub(super) async fn compact_if_due(&mut self) {
        let every = self.limits.compact_every;
        let Some(state) = &mut self.state else {
            return;
        };
        if state.head - state.snapshot_seq < every {
            return;
        }
        let data = match &state.doc {
            Some(doc) => Bytes::from(doc.text()),
            None => Bytes::new(),
        };
        let snapshot = RoomSnapshot {
            seq: state.head,
            data,
        };
        let drop_through = state
            .head
            .saturating_sub(every)
            .max(state.compacted_through);
        match self
            .hub
            .log
            .compact(&self.name, snapshot, drop_through)
            .await
        {
            Ok(()) => {
                state.snapshot_seq = state.head;
                state.compacted_through = drop_through;
            }
            Err(e) => tracing::warn!(room = %self.name, "room log not compacted: {e}"),
        }
    }
}
