//! What the owner keeps of its log in memory, loaded from the log when the
//! room opens or wakes, and the compaction that keeps the log short.

use bytes::Bytes;

use super::Owner;
use crate::runtime::manifest::RoomProtocol;
use crate::runtime::rooms::frames;
use crate::runtime::rooms::text::TextDoc;
use crate::runtime::rooms::yjs::YjsRoom;
use crate::storage::{RoomSnapshot, StorageError};

/// The room's place in its log, and the protocol's state.
pub(super) struct State {
    pub head: u64,
    pub compacted_through: u64,
    pub snapshot_seq: u64,
    pub content: Content,
    /// A text room's text as its last joiners got it (`WelcomeText`).
    pub welcome_text: Option<std::sync::Arc<frames::WelcomeText>>,
}

/// What a protocol keeps of a room beyond its events.
pub(super) enum Content {
    /// A relay room keeps nothing: its events are its state.
    Relay,
    Text(TextDoc),
    Yjs(YjsRoom),
    /// A LiveStore store: its events are its state; it keeps its backend
    /// id, which tells clients whether the store is the one they knew.
    LiveStore(super::livestore::Store),
}

impl Owner {
    /// Loads the state from the log if it is not in memory.
    pub(super) async fn load(&mut self) -> Result<(), StorageError> {
        if self.state.is_some() {
            return Ok(());
        }
        let log = &self.hub.log;
        if !self.fenced {
            // Appends another node prepared as this room's owner fail from
            // here on (a no-op where one process writes the log).
            log.fence(&self.name).await?;
            self.fenced = true;
        }
        let head = log.head(&self.name).await?;
        let snapshot_seq = head.snapshot.as_ref().map_or(0, |s| s.seq);
        let corrupt = |seq: u64, why: String| {
            StorageError::Corrupt(format!("{}: event {seq}: {why}", self.name))
        };
        let content = match self.protocol {
            RoomProtocol::Relay => Content::Relay,
            RoomProtocol::LiveStore => {
                Content::LiveStore(super::livestore::Store::open(log, &self.name).await?)
            }
            RoomProtocol::Yjs => {
                let mut room = YjsRoom::new();
                if let Some(s) = &head.snapshot {
                    room.apply_stored(&s.data).map_err(|e| corrupt(s.seq, e))?;
                }
                let mut after = snapshot_seq;
                loop {
                    let page = log.read(&self.name, after, 1024).await?;
                    let Some(&(last, _)) = page.last() else { break };
                    for (seq, update) in page {
                        room.apply_stored(&update).map_err(|e| corrupt(seq, e))?;
                    }
                    after = last;
                }
                Content::Yjs(room)
            }
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
                        if seq != doc.head() + 1 {
                            return Err(corrupt(seq, format!("follows {}", doc.head())));
                        }
                        match frames::steps_of_event(&event).map_err(|e| corrupt(seq, e))? {
                            Some(steps) => {
                                doc.apply(steps).map_err(|e| corrupt(seq, e.to_string()))?
                            }
                            None => doc.skip(seq),
                        }
                    }
                }
                Content::Text(doc)
            }
        };
        self.state = Some(State {
            head: head.head,
            compacted_through: head.compacted_through,
            welcome_text: None,
            snapshot_seq,
            content,
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
        let data = match &state.content {
            // A new LiveStore client replays every event: none is dropped.
            Content::LiveStore(_) => return,
            Content::Relay => Bytes::new(),
            Content::Text(doc) => Bytes::from(doc.text()),
            Content::Yjs(room) => match room.snapshot() {
                Ok(data) => data,
                Err(why) => {
                    // The log holds every update: nothing is lost, the
                    // room is compacted again after `every` more events.
                    tracing::warn!(room = %self.name, "not compacted: {why}");
                    state.snapshot_seq = state.head;
                    return;
                }
            },
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
