//! Room logs: one subject per room (`P.room.<room>`) in the stream
//! `P_rooms`, one message per append holding its events (`Batch`), so an
//! append lands whole or not at all.
//!
//! Fencing: every append expects the subject's last stream sequence to be
//! the one this node last saw (`Seen`, kept per room). A node that takes a
//! room over first publishes a fence (a batch of no events): from then on
//! the appends of a stale owner, which expect the sequence before the
//! fence, are refused by JetStream itself, never interleaved.
//!
//! Compaction keeps the snapshot in the Object Store `P_snapshots` (its
//! number in the object's metadata) and how far events were dropped in the
//! KV bucket `P_room_state` under the room's own token, then purges the
//! messages whose events all lie at or before that point. A message that
//! straddles it stays, and reads skip its dropped events.

use std::collections::HashMap;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::object_store::{GetErrorKind, ObjectMetadata};
use async_nats::jetstream::stream::DirectGetErrorKind;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::AsyncReadExt;

use super::names::{scoped, token};
use super::stream::{Published, last, publish, purge, read_to_now, subject};
use super::{NatsBackend, OrFailed};
use crate::{Quota, Result, RoomLog, RoomLogHead, RoomSnapshot, StorageError};

/// What a node last saw of a room's subject.
#[derive(Debug, Clone, Copy)]
pub(super) struct Seen {
    /// The stream sequence of the subject's last message (0: none).
    seq: u64,
    /// The room's last event number.
    head: u64,
}

/// Rooms whose `Seen` a node keeps; past it, the map starts over (a room
/// missing from it costs a lookup on its next append).
const SEEN_ROOMS: usize = 100_000;
/// The largest message an append publishes; bigger appends are split.
const MAX_MESSAGE: usize = 512 * 1024;

/// One message of a room's subject: `[first u64][count u32]` then each
/// event as `[length u32][bytes]`. A fence has no events; its `first` is
/// the head plus one.
struct Batch {
    first: u64,
    events: Vec<Bytes>,
}

impl Batch {
    fn encode(first: u64, events: &[Bytes]) -> Bytes {
        let size = 12 + events.iter().map(|e| 4 + e.len()).sum::<usize>();
        let mut out = BytesMut::with_capacity(size);
        out.put_u64_le(first);
        out.put_u32_le(events.len() as u32);
        for e in events {
            out.put_u32_le(e.len() as u32);
            out.put_slice(e);
        }
        out.freeze()
    }

    fn decode(mut raw: Bytes) -> Option<Self> {
        if raw.len() < 12 {
            return None;
        }
        let first = raw.get_u64_le();
        let count = raw.get_u32_le() as usize;
        let mut events = Vec::with_capacity(count.min(4096));
        for _ in 0..count {
            if raw.len() < 4 {
                return None;
            }
            let len = raw.get_u32_le() as usize;
            if raw.len() < len {
                return None;
            }
            events.push(raw.split_to(len));
        }
        Some(Self { first, events })
    }

    /// The number of its last event (the one before `first` for a fence).
    fn last(&self) -> u64 {
        self.first + self.events.len() as u64 - 1
    }
}

fn corrupt(room: &str) -> StorageError {
    StorageError::Corrupt(format!("a message of room '{room}'"))
}

/// Splits `events` into runs that each fit one message.
fn runs(events: Vec<Bytes>) -> Vec<Vec<Bytes>> {
    let mut out: Vec<Vec<Bytes>> = vec![Vec::new()];
    let mut size = 0;
    for e in events {
        let current = out.last_mut().expect("never empty");
        if !current.is_empty() && size + 4 + e.len() > MAX_MESSAGE {
            out.push(Vec::new());
            size = 0;
        }
        size += 4 + e.len();
        out.last_mut().expect("never empty").push(e);
    }
    out
}

impl NatsBackend {
    fn room_subject(&self, room: &str) -> String {
        format!("{}.room.{}", self.inner.prefix, token(room))
    }

    /// A room's message at or after stream sequence `from` (its first
    /// if `None`), or its last (`last`).
    async fn room_message(
        &self,
        room: &str,
        from: Option<u64>,
        last_one: bool,
    ) -> Result<Option<(u64, Batch)>> {
        let stream = &self.inner.rooms;
        let subject = self.room_subject(room);
        let got = if last_one {
            stream.direct_get_last_for_subject(subject).await
        } else {
            stream.direct_get_next_for_subject(subject, from).await
        };
        match got {
            Ok(m) => Ok(Some((
                m.sequence,
                Batch::decode(m.payload).ok_or_else(|| corrupt(room))?,
            ))),
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).or_failed(format!("reading room '{room}'")),
        }
    }

    /// Events up to this number were dropped by compaction.
    async fn compacted_through(&self, room: &str) -> Result<u64> {
        Ok(match last(&self.inner.room_state, &token(room)).await?.0 {
            Some(raw) => std::str::from_utf8(&raw)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| corrupt(room))?,
            None => 0,
        })
    }

    /// Where the room stands now, read from the server (and remembered).
    async fn look(&self, room: &str) -> Result<Seen> {
        let seen = match self.room_message(room, None, true).await? {
            Some((seq, batch)) => Seen {
                seq,
                head: batch.last().max(self.compacted_through(room).await?),
            },
            None => Seen {
                seq: 0,
                head: self.compacted_through(room).await?,
            },
        };
        self.remember(room, seen);
        Ok(seen)
    }

    fn remember(&self, room: &str, seen: Seen) {
        let mut heads = self.inner.room_heads.lock().unwrap();
        if heads.len() >= SEEN_ROOMS && !heads.contains_key(room) {
            *heads = HashMap::new();
        }
        heads.insert(room.to_string(), seen);
    }

    fn forget(&self, room: &str) {
        self.inner.room_heads.lock().unwrap().remove(room);
    }

    /// The stream sequence of the room's first message holding an event
    /// after `after`, if any: a binary search over stream sequences.
    async fn first_after(&self, room: &str, after: u64) -> Result<Option<u64>> {
        let Some((first_seq, first)) = self.room_message(room, None, false).await? else {
            return Ok(None);
        };
        if first.last() > after {
            return Ok(Some(first_seq));
        }
        let Some((last_seq, last)) = self.room_message(room, None, true).await? else {
            return Ok(None);
        };
        if last.last() <= after {
            return Ok(None);
        }
        // Whether the first message at or after `p` holds a later event
        // rises with `p`; find the lowest `p` where it does.
        let (mut lo, mut hi) = (first_seq + 1, last_seq);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.room_message(room, Some(mid), false).await? {
                Some((_, m)) if m.last() > after => hi = mid,
                _ => lo = mid + 1,
            }
        }
        Ok(self
            .room_message(room, Some(lo), false)
            .await?
            .map(|(s, _)| s))
    }

    async fn snapshot(&self, room: &str) -> Result<Option<RoomSnapshot>> {
        let mut object = match self.inner.snapshots.get(room).await {
            Ok(object) => object,
            Err(e) if e.kind() == GetErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).or_failed(format!("reading the snapshot of '{room}'")),
        };
        let seq = object
            .info
            .metadata
            .get("seq")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| corrupt(room))?;
        let mut data = Vec::with_capacity(object.info.size);
        object
            .read_to_end(&mut data)
            .await
            .map_err(StorageError::io(format!(
                "reading the snapshot of '{room}'"
            )))?;
        Ok(Some(RoomSnapshot {
            seq,
            data: data.into(),
        }))
    }
}

#[async_trait::async_trait]
impl RoomLog for NatsBackend {
    async fn head(&self, room: &str) -> Result<RoomLogHead> {
        let seen = self.look(room).await?;
        Ok(RoomLogHead {
            head: seen.head,
            compacted_through: self.compacted_through(room).await?,
            snapshot: self.snapshot(room).await?,
        })
    }

    async fn append(
        &self,
        room: &str,
        first: u64,
        events: Vec<Bytes>,
        _quota: Quota,
    ) -> Result<()> {
        let known = self.inner.room_heads.lock().unwrap().get(room).copied();
        let mut seen = match known {
            Some(seen) => seen,
            None => self.look(room).await?,
        };
        let refused = |head| StorageError::RoomConflict {
            room: room.to_string(),
            head,
            expected: first.saturating_sub(1),
        };
        if seen.head.checked_add(1) != Some(first) {
            return Err(refused(seen.head));
        }
        let subject = self.room_subject(room);
        for run in runs(events) {
            let n = run.len() as u64;
            let next = seen.head + 1;
            let message = Batch::encode(next, &run);
            match publish(
                &self.inner.js,
                subject.clone(),
                message,
                Some(seen.seq),
                None,
            )
            .await
            {
                Ok(Published::Stored(seq)) => {
                    seen = Seen {
                        seq,
                        head: seen.head + n,
                    };
                    self.remember(room, seen);
                }
                Ok(Published::Conflict) => {
                    // Another node wrote (a fence, or its events): this
                    // node no longer owns the room's log.
                    self.forget(room);
                    let now = self.look(room).await?;
                    return Err(refused(now.head));
                }
                Err(e) => {
                    self.forget(room);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    async fn read(&self, room: &str, after: u64, limit: usize) -> Result<Vec<(u64, Bytes)>> {
        let after = after.max(self.compacted_through(room).await?);
        let Some(start) = self.first_after(room, after).await? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        read_to_now(
            &self.inner.client,
            &self.inner.rooms,
            self.room_subject(room),
            DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            |m| {
                let batch = Batch::decode(m.payload).ok_or_else(|| corrupt(room))?;
                for (n, event) in (batch.first..).zip(batch.events) {
                    if n > after && out.len() < limit {
                        out.push((n, event));
                    }
                }
                Ok(out.len() < limit)
            },
        )
        .await?;
        Ok(out)
    }

    async fn compact(&self, room: &str, snapshot: RoomSnapshot, drop_through: u64) -> Result<()> {
        let seen = self.look(room).await?;
        if snapshot.seq > seen.head || drop_through > snapshot.seq {
            return Err(StorageError::Backend(format!(
                "room '{room}': a snapshot at {} dropping through {drop_through} does not fit a log at {}",
                snapshot.seq, seen.head
            )));
        }
        let meta = ObjectMetadata {
            name: room.to_string(),
            metadata: HashMap::from([("seq".to_string(), snapshot.seq.to_string())]),
            ..Default::default()
        };
        self.inner
            .snapshots
            .put(meta, &mut snapshot.data.as_ref())
            .await
            .or_failed(format!("storing the snapshot of '{room}'"))?;
        let compacted = self.compacted_through(room).await?;
        if drop_through <= compacted {
            return Ok(());
        }
        let subject = subject(&self.inner.room_state, &token(room));
        let mark = Bytes::from(drop_through.to_string());
        publish(&self.inner.js, subject, mark, None, None).await?;
        let purge_messages = self.inner.rooms.purge().filter(self.room_subject(room));
        match self.first_after(room, drop_through).await? {
            Some(keep_from) => purge_messages.sequence(keep_from).await,
            None => purge_messages.await,
        }
        .or_failed(format!("dropping the events of '{room}'"))?;
        // Purging every message resets the subject's last sequence.
        self.look(room).await?;
        Ok(())
    }

    async fn fence(&self, room: &str) -> Result<()> {
        loop {
            let seen = self.look(room).await?;
            let fence = Batch::encode(seen.head + 1, &[]);
            let subject = self.room_subject(room);
            if let Published::Stored(seq) =
                publish(&self.inner.js, subject, fence, Some(seen.seq), None).await?
            {
                self.remember(room, Seen { seq, ..seen });
                return Ok(());
            }
        }
    }

    async fn state_get(&self, room: &str, key: &str) -> Result<Option<Bytes>> {
        Ok(last(&self.inner.room_state, &scoped(room, key)).await?.0)
    }

    async fn state_set(&self, room: &str, key: &str, value: Option<Bytes>) -> Result<()> {
        let subject = subject(&self.inner.room_state, &scoped(room, key));
        match value {
            Some(value) => publish(&self.inner.js, subject, value, None, None).await?,
            None => purge(&self.inner.js, subject, None).await?,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_and_split() {
        let events = vec![
            Bytes::from_static(b"a"),
            Bytes::new(),
            Bytes::from(vec![7; 300]),
        ];
        let batch = Batch::decode(Batch::encode(5, &events)).unwrap();
        assert_eq!((batch.first, batch.last()), (5, 7));
        assert_eq!(batch.events, events);
        let fence = Batch::decode(Batch::encode(8, &[])).unwrap();
        assert_eq!(fence.last(), 7);
        assert!(Batch::decode(Bytes::from_static(b"short")).is_none());
        let mut truncated = Batch::encode(1, &events).to_vec();
        truncated.pop();
        assert!(Batch::decode(truncated.into()).is_none());
        let big = vec![Bytes::from(vec![0; MAX_MESSAGE / 2]); 5];
        let split = runs(big);
        assert_eq!(
            split.iter().map(Vec::len).collect::<Vec<_>>(),
            [1, 1, 1, 1, 1]
        );
        assert_eq!(runs(vec![]).len(), 1);
    }
}
