//! Room logs in redb: events by (room, number), each room's head, its
//! snapshot and its small state.
//!
//! Appends go to one writer thread, which commits every append waiting at
//! that moment in one transaction: one fsync covers many events of many
//! rooms (`group_commit`). A room's owner waits for that commit before it
//! acknowledges or broadcasts (its output gate), so the commit's latency is
//! the room's; batching is what keeps it short under load.

use std::sync::Weak;

use bytes::Bytes;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::group_commit::GroupCommit;
use super::usage::{self, Kind, USAGE};
use super::{Inner, RedbBackend, blocking};
use crate::{Quota, Result, RoomLog, RoomLogHead, RoomSnapshot, StorageError, Usage};

/// Events: (room, number) -> the event as its owner encoded it.
pub(super) const ROOM_EVENTS: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("room_events");
/// Heads: room -> (last number, compacted through).
pub(super) const ROOM_HEADS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("room_heads");
/// Snapshots: room -> (the number it covers, its bytes).
pub(super) const ROOM_SNAPSHOTS: TableDefinition<&str, (u64, &[u8])> =
    TableDefinition::new("room_snapshots");
/// Room state: (room, key) -> value.
pub(super) const ROOM_STATE: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("room_state");

/// One append waiting for the writer thread.
pub(super) struct Append {
    room: String,
    first: u64,
    events: Vec<Bytes>,
    quota: Quota,
}

/// The writer thread of appends (group commit).
pub(super) type Appender = GroupCommit<Append, ()>;

/// Starts the thread that commits appends.
pub(super) fn start_appender(inner: Weak<Inner>) -> std::io::Result<Appender> {
    GroupCommit::start("spike-room-log", "room log", inner, commit_appends)
}

/// One transaction for `batch`: each append that follows its room's head
/// is written; one that does not is refused alone. `Err`: nothing was.
fn commit_appends(inner: &Inner, batch: &[Append]) -> Result<Vec<Result<()>>> {
    let txn = inner.db.begin_write()?;
    let mut outcomes = Vec::with_capacity(batch.len());
    {
        let mut heads = txn.open_table(ROOM_HEADS)?;
        let mut events = txn.open_table(ROOM_EVENTS)?;
        let mut ledger = txn.open_table(USAGE)?;
        for append in batch {
            let room = append.room.as_str();
            let (head, compacted) = heads.get(room)?.map_or((0, 0), |v| v.value());
            if append.first != head + 1 {
                outcomes.push(Err(StorageError::RoomConflict {
                    room: append.room.clone(),
                    head,
                    expected: append.first.saturating_sub(1),
                }));
                continue;
            }
            let before = usage::get(&ledger, Kind::Room, room)?;
            let bytes: usize = append.events.iter().map(Bytes::len).sum();
            let after = usage::moved(before, bytes as i64, append.events.len() as i64);
            if let Err(refused) = append
                .quota
                .check(&Kind::Room.describe(room), before, after)
            {
                outcomes.push(Err(refused));
                continue;
            }
            usage::put(&mut ledger, Kind::Room, room, after)?;
            for (seq, event) in (append.first..).zip(&append.events) {
                events.insert((append.room.as_str(), seq), event.as_ref())?;
            }
            let last = head + append.events.len() as u64;
            heads.insert(append.room.as_str(), (last, compacted))?;
            outcomes.push(Ok(()));
        }
    }
    txn.commit()?;
    Ok(outcomes)
}

impl Inner {
    fn room_head(&self, room: &str) -> Result<RoomLogHead> {
        let txn = self.db.begin_read()?;
        let (head, compacted_through) = txn
            .open_table(ROOM_HEADS)?
            .get(room)?
            .map_or((0, 0), |v| v.value());
        let snapshot = txn.open_table(ROOM_SNAPSHOTS)?.get(room)?.map(|v| {
            let (seq, data) = v.value();
            RoomSnapshot {
                seq,
                data: Bytes::copy_from_slice(data),
            }
        });
        Ok(RoomLogHead {
            head,
            compacted_through,
            snapshot,
        })
    }

    fn room_read(&self, room: &str, after: u64, limit: usize) -> Result<Vec<(u64, Bytes)>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ROOM_EVENTS)?;
        let Some(from) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in table.range((room, from)..=(room, u64::MAX))?.take(limit) {
            let (k, v) = entry?;
            out.push((k.value().1, Bytes::copy_from_slice(v.value())));
        }
        Ok(out)
    }

    fn room_compact(&self, room: &str, snapshot: &RoomSnapshot, drop_through: u64) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut heads = txn.open_table(ROOM_HEADS)?;
            let (head, compacted) = heads.get(room)?.map_or((0, 0), |v| v.value());
            if snapshot.seq > head || drop_through > snapshot.seq {
                return Err(StorageError::Backend(format!(
                    "room '{room}': a snapshot at {} dropping through {drop_through} does not fit a log at {head}",
                    snapshot.seq
                )));
            }
            let mut events = txn.open_table(ROOM_EVENTS)?;
            // The room holds its snapshot and the events after it: less
            // the events dropped and the snapshot replaced, more the new
            // one. Never refused: compaction is how a room gets smaller.
            let mut dropped = Usage::default();
            if drop_through > compacted {
                events.retain_in((room, compacted + 1)..=(room, drop_through), |_, event| {
                    dropped = usage::moved(dropped, event.len() as i64, 1);
                    false
                })?;
            }
            heads.insert(room, (head, drop_through.max(compacted)))?;
            let mut snapshots = txn.open_table(ROOM_SNAPSHOTS)?;
            let replaced = (snapshots.insert(room, (snapshot.seq, snapshot.data.as_ref()))?)
                .map_or(0, |old| old.value().1.len());
            let mut ledger = txn.open_table(USAGE)?;
            let before = usage::get(&ledger, Kind::Room, room)?;
            let bytes = snapshot.data.len() as i64 - replaced as i64 - dropped.bytes as i64;
            let after = usage::moved(before, bytes, -(dropped.items as i64));
            usage::put(&mut ledger, Kind::Room, room, after)?;
        }
        txn.commit()?;
        Ok(())
    }

    fn room_state_get(&self, room: &str, key: &str) -> Result<Option<Bytes>> {
        let txn = self.db.begin_read()?;
        let value = txn.open_table(ROOM_STATE)?.get((room, key))?;
        Ok(value.map(|v| Bytes::copy_from_slice(v.value())))
    }

    fn room_state_set(&self, room: &str, key: &str, value: Option<&[u8]>) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(ROOM_STATE)?;
            match value {
                Some(v) => {
                    table.insert((room, key), v)?;
                }
                None => {
                    table.remove((room, key))?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl RoomLog for RedbBackend {
    async fn head(&self, room: &str) -> Result<RoomLogHead> {
        self.inner.room_head(room)
    }

    async fn append(&self, room: &str, first: u64, events: Vec<Bytes>, quota: Quota) -> Result<()> {
        let append = Append {
            room: room.to_string(),
            first,
            events,
            quota,
        };
        self.appender.submit(append).await
    }

    async fn read(&self, room: &str, after: u64, limit: usize) -> Result<Vec<(u64, Bytes)>> {
        let (inner, room) = (self.inner.clone(), room.to_string());
        blocking(move || inner.room_read(&room, after, limit)).await
    }

    async fn compact(&self, room: &str, snapshot: RoomSnapshot, drop_through: u64) -> Result<()> {
        let (inner, room) = (self.inner.clone(), room.to_string());
        blocking(move || inner.room_compact(&room, &snapshot, drop_through)).await
    }

    async fn state_get(&self, room: &str, key: &str) -> Result<Option<Bytes>> {
        self.inner.room_state_get(room, key)
    }

    async fn state_set(&self, room: &str, key: &str, value: Option<Bytes>) -> Result<()> {
        let (inner, room, key) = (self.inner.clone(), room.to_string(), key.to_string());
        blocking(move || inner.room_state_set(&room, &key, value.as_deref())).await
    }
}
