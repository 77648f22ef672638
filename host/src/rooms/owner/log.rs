//! The owner and its log: the room's state loaded from it when the room
//! opens or wakes (the protocol's part by `Protocol::load`), and the
//! compaction that keeps it short.

use bytes::Bytes;

use super::{LogPlace, Owner, Room};
use crate::rooms::protocols::Protocol;
use crate::storage::{RoomSnapshot, StorageError};

impl<P: Protocol> Owner<P> {
    /// Loads the state from the log if it is not in memory.
    pub(super) async fn load(&mut self) -> Result<(), StorageError> {
        if self.content.is_some() {
            return Ok(());
        }
        let room = &mut self.room;
        let log = &room.hub.log;
        if !room.tenure.fenced {
            // Appends another node prepared as this room's owner fail from
            // here on (a no-op where one process writes the log).
            log.fence(&room.name).await?;
            room.tenure.fenced = true;
        }
        let head = log.head(&room.name).await?;
        let content = P::load(room, &head).await?;
        room.place = LogPlace {
            head: head.head,
            compacted_through: head.compacted_through,
            snapshot_seq: head.snapshot.as_ref().map_or(0, |s| s.seq),
        };
        self.content = Some(content);
        Ok(())
    }

    /// Every `compact_every` events: a snapshot at the head, and the log
    /// trimmed to the last `compact_every` events (for catch-up).
    pub(super) async fn compact_if_due(&mut self) {
        let (room, Some(content)) = (&mut self.room, &self.content) else {
            return;
        };
        let every = room.limits.compact_every;
        let place = &mut room.place;
        if place.head - place.snapshot_seq < every {
            return;
        }
        let data = match content.snapshot() {
            None => return,
            Some(Ok(data)) => data,
            Some(Err(why)) => {
                // The log holds every event: nothing is lost, the room is
                // compacted again after `every` more events.
                tracing::warn!(room = %room.name, "not compacted: {why}");
                place.snapshot_seq = place.head;
                return;
            }
        };
        let snapshot = RoomSnapshot {
            seq: place.head,
            data,
        };
        let drop_through = (place.head.saturating_sub(every)).max(place.compacted_through);
        match room
            .hub
            .log
            .compact(&room.name, snapshot, drop_through)
            .await
        {
            Ok(()) => {
                let place = &mut room.place;
                place.snapshot_seq = place.head;
                place.compacted_through = drop_through;
            }
            Err(e) => tracing::warn!(room = %room.name, "room log not compacted: {e}"),
        }
    }
}

impl<P: Protocol> Room<P> {
    /// An error for a stored event that cannot be read.
    pub fn corrupt(&self, seq: u64, why: impl std::fmt::Display) -> StorageError {
        StorageError::Corrupt(format!("{}: event {seq}: {why}", self.name))
    }

    /// Every stored event after `after`, in order, a page at a time.
    pub async fn replay(
        &self,
        after: u64,
        mut each: impl FnMut(u64, Bytes) -> Result<(), StorageError> + Send,
    ) -> Result<(), StorageError> {
        let mut after = after;
        loop {
            let page = self.hub.log.read(&self.name, after, 1024).await?;
            let Some(&(last, _)) = page.last() else {
                return Ok(());
            };
            for (seq, event) in page {
                each(seq, event)?;
            }
            after = last;
        }
    }
}
