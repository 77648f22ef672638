//! The `yjs` protocol: the y-websocket wire protocol (`y-protocols`: a
//! message is a varUint type, then its body) over a room, with the `yrs`
//! crate's document and awareness.
//!
//! What the reference server (`@y/websocket-server`) does, with one
//! difference: a document update is stored in the room log before it is
//! sent to anyone. On joining, a client gets sync step 1 (the room's state
//! vector) and the awareness states; its sync step 1 is answered with sync
//! step 2 (what it lacks); its sync step 2 and updates are applied, stored
//! and sent to every member; awareness updates are relayed, never stored,
//! and the states a connection set are removed when it leaves.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use yrs::block::ClientID;
use yrs::encoding::write::Write;
use yrs::sync::awareness::AwarenessUpdateEntry;
use yrs::sync::protocol::{MSG_SYNC, MSG_SYNC_UPDATE};
use yrs::sync::{AwarenessUpdate, Message, MessageReader, SyncMessage};
use yrs::updates::decoder::{Decode, DecoderV1};
use yrs::updates::encoder::{Encode, Encoder, EncoderV1};
use yrs::{ReadTxn, StateVector, Transact, Update};

/// What one client message asks of the room.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Messages for the sender alone.
    pub replies: Vec<Bytes>,
    /// Document updates (v1), applied: each to store, then to send to
    /// every member as a sync update (`update_message`).
    pub updates: Vec<Bytes>,
    /// Awareness messages to send to every member, not stored.
    pub relays: Vec<Bytes>,
    /// Why a later message of the same frame was not taken: what came
    /// before it stands (and must be stored), the connection goes.
    pub refused: Option<Refusal>,
    /// An update that failed left part of itself in the document (yrs
    /// does not undo what it integrated before the failure): the document
    /// ran ahead of the log, and is loaded from the log again.
    pub tainted: bool,
}

/// Why a message of a frame was not taken.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// It does not decode, or cannot be applied.
    Malformed(String),
    /// The sender is past its messages a second: each y-protocols message
    /// of a frame counts, not the frame.
    TooFast,
    /// It would take the room's awareness states past
    /// `MAX_AWARENESS_BYTES`.
    AwarenessFull,
}

/// The awareness states a room keeps, all clients together (a state's
/// JSON, and `AWARENESS_ENTRY_BYTES` for each client ever announced).
/// y-websocket clients announce a name, a colour and a cursor: a few
/// hundred bytes each. Without a bound, every awareness query of a frame
/// answered with half a megabyte of states took 440 MiB for a thousand
/// queries (the hostile probe).
pub const MAX_AWARENESS_BYTES: usize = 1 << 20;

/// What a client's entry costs beyond its JSON (its id and clock, in a
/// map).
const AWARENESS_ENTRY_BYTES: usize = 64;

/// A room's document and who is aware of what.
pub struct YjsRoom {
    doc: yrs::Doc,
    /// Awareness states by client: their clock, and their JSON (`None`
    /// once removed). Kept here, not in yrs' `Awareness`, whose map is
    /// sharded (about 1 KB per room before any state is set).
    states: HashMap<ClientID, (u32, Option<Arc<str>>)>,
    /// What `states` weighs, against `MAX_AWARENESS_BYTES`.
    awareness_bytes: usize,
    /// The awareness clients each member has announced.
    controlled: HashMap<u64, HashSet<u64>>,
}

/// What a frame's messages were answered with already: a frame is
/// answered once per kind, however many times it asks (600 sync step 1s
/// in one 2,400-byte frame against a 1 MiB document were 600 MiB of
/// replies).
#[derive(Default)]
struct Answered {
    sync_step1: bool,
    awareness_query: bool,
}

/// What y-protocols writes for a removed state.
const NULL_STATE: &str = "null";

impl Default for YjsRoom {
    fn default() -> Self {
        Self::new()
    }
}

impl YjsRoom {
    pub fn new() -> Self {
        Self {
            doc: yrs::Doc::new(),
            states: HashMap::new(),
            awareness_bytes: 0,
            controlled: HashMap::new(),
        }
    }

    /// Applies a stored update (a snapshot, or an event of the log).
    pub fn apply_stored(&mut self, update: &[u8]) -> Result<(), String> {
        let update = Update::decode_v1(update).map_err(|e| e.to_string())?;
        let mut txn = self.doc.transact_mut();
        txn.apply_update(update).map_err(|e| e.to_string())
    }

    /// The whole document as one update, for a snapshot; `Err` if that
    /// update does not read back into the same state, so that a room is
    /// never compacted into a snapshot it cannot load.
    ///
    /// Without the updates still pending (whose dependencies never came):
    /// yrs' encoding with them merges them back through its decoder, which
    /// panics on some it accepted (found by fuzzing, `fuzz/regressions/yjs`).
    /// They are no part of the text anyone sees, nor of the state vector;
    /// a client that holds them sends them again when it syncs, as it sends
    /// whatever is past the server's state vector. And some documents yrs
    /// accepted encode to an update it cannot decode (fuzzing again): the
    /// check.
    pub fn snapshot(&self) -> Result<Bytes, String> {
        let txn = self.doc.transact();
        let snapshot = txn.encode_diff_v1(&StateVector::default());
        let mut restored = Self::new();
        restored.apply_stored(&snapshot)?;
        if restored.doc.transact().state_vector() != txn.state_vector() {
            return Err("the snapshot reads back into another state".into());
        }
        Ok(snapshot.into())
    }

    /// What a client gets on joining: sync step 1, and the awareness
    /// states if there are any.
    pub fn welcome(&self) -> Vec<Bytes> {
        let sv = self.doc.transact().state_vector();
        let mut messages = vec![encode(&Message::Sync(SyncMessage::SyncStep1(sv)))];
        let update = self.awareness_update();
        if !update.clients.is_empty() {
            messages.push(encode(&Message::Awareness(update)));
        }
        messages
    }

    /// Handles one WebSocket message of `member`: one or more y-protocols
    /// messages, decoded and taken one at a time. Each message after the
    /// first must get a token from `more` (the sender's rate limit, which
    /// counted the frame as the first). `Err` if the first message does not
    /// decode (nothing is applied); a later message that does not decode or
    /// apply, or past the rate, stops the rest (`Outcome::refused`).
    pub fn handle(
        &mut self,
        member: u64,
        data: &[u8],
        more: &mut dyn FnMut() -> bool,
    ) -> Result<Outcome, String> {
        let mut decoder = DecoderV1::from(data);
        let mut outcome = Outcome::default();
        let mut answered = Answered::default();
        let mut taken = 0usize;
        for message in MessageReader::new(&mut decoder) {
            let message = match message {
                Ok(message) => message,
                Err(e) if taken == 0 => return Err(format!("not a y-protocols message: {e}")),
                Err(e) => {
                    let why = format!("not a y-protocols message: {e}");
                    outcome.refused = Some(Refusal::Malformed(why));
                    break;
                }
            };
            if taken > 0 && !more() {
                outcome.refused = Some(Refusal::TooFast);
                break;
            }
            taken += 1;
            if let Err(refusal) = self.take(member, message, &mut outcome, &mut answered) {
                outcome.refused = Some(refusal);
                break;
            }
        }
        if taken == 0 {
            return Err("an empty message".into());
        }
        Ok(outcome)
    }

    /// One message of a frame, into `outcome`.
    fn take(
        &mut self,
        member: u64,
        message: Message,
        outcome: &mut Outcome,
        answered: &mut Answered,
    ) -> Result<(), Refusal> {
        match message {
            Message::Sync(SyncMessage::SyncStep1(sv)) => {
                if std::mem::replace(&mut answered.sync_step1, true) {
                    return Ok(());
                }
                let txn = self.doc.transact();
                // Without pending updates, as `snapshot`.
                let diff = txn.encode_diff_v1(&sv);
                outcome
                    .replies
                    .push(encode(&Message::Sync(SyncMessage::SyncStep2(diff))));
            }
            Message::Sync(SyncMessage::SyncStep2(update) | SyncMessage::Update(update)) => {
                let malformed = |e: &dyn std::fmt::Display| Refusal::Malformed(e.to_string());
                let decoded = Update::decode_v1(&update).map_err(|e| malformed(&e))?;
                // A client with nothing new answers sync step 1 with an
                // empty update: nothing to store or send.
                if decoded.is_empty() {
                    return Ok(());
                }
                let before = self.doc.transact().state_vector();
                let mut txn = self.doc.transact_mut();
                let applied = txn.apply_update(decoded);
                drop(txn);
                if let Err(e) = applied {
                    // yrs may have integrated part of the update before it
                    // failed (found by fuzzing, `fuzz/regressions/yjs`);
                    // what it left may not even encode into an update that
                    // decodes. The log is the document: it is loaded again.
                    outcome.tainted = self.doc.transact().state_vector() != before;
                    return Err(malformed(&e));
                }
                outcome.updates.push(update.into());
            }
            Message::Awareness(update) => {
                self.apply_awareness(&update)?;
                self.announce(member, &update);
                outcome.relays.push(encode(&Message::Awareness(update)));
            }
            Message::AwarenessQuery => {
                if std::mem::replace(&mut answered.awareness_query, true) {
                    return Ok(());
                }
                let update = self.awareness_update();
                outcome.replies.push(encode(&Message::Awareness(update)));
            }
            // Clients do not authenticate in-band (the auth hook ran
            // before the upgrade); other types are not the protocol's.
            Message::Auth(_) | Message::Custom(..) => {}
        }
        Ok(())
    }

    fn announce(&mut self, member: u64, update: &AwarenessUpdate) {
        let mine = self.controlled.entry(member).or_default();
        for (client, entry) in &update.clients {
            if &*entry.json == "null" {
                mine.remove(&client.get());
            } else {
                mine.insert(client.get());
            }
        }
    }

    /// Applies a client's awareness update as y-protocols does: a state
    /// replaces one with an older clock; a removal (`null`) with the same
    /// clock removes it too. Refused whole if it would take the room's
    /// states past `MAX_AWARENESS_BYTES`.
    fn apply_awareness(&mut self, update: &AwarenessUpdate) -> Result<(), Refusal> {
        let weight =
            |data: &Option<Arc<str>>| AWARENESS_ENTRY_BYTES + data.as_ref().map_or(0, |d| d.len());
        let mut changes = Vec::new();
        let mut total = self.awareness_bytes;
        for (client, entry) in &update.clients {
            let new = (&*entry.json != NULL_STATE).then(|| entry.json.clone());
            let before = match self.states.get(client) {
                Some((clock, data)) => {
                    let removal = *clock == entry.clock && new.is_none() && data.is_some();
                    if !(*clock < entry.clock || removal) {
                        continue;
                    }
                    weight(data)
                }
                None => 0,
            };
            total = total - before + weight(&new);
            changes.push((*client, entry.clock, new));
        }
        if total > MAX_AWARENESS_BYTES {
            return Err(Refusal::AwarenessFull);
        }
        self.awareness_bytes = total;
        for (client, clock, data) in changes {
            self.states.insert(client, (clock, data));
        }
        Ok(())
    }

    /// Every state set now.
    fn awareness_update(&self) -> AwarenessUpdate {
        let clients = (self.states.iter())
            .filter_map(|(client, (clock, data))| {
                let json = data.clone()?;
                Some((
                    *client,
                    AwarenessUpdateEntry {
                        clock: *clock,
                        json,
                    },
                ))
            })
            .collect();
        AwarenessUpdate { clients }
    }

    /// `member` left: removes the awareness states it set (a newer clock,
    /// no state); the message that tells the others, if it set any.
    pub fn leave(&mut self, member: u64) -> Option<Bytes> {
        let clients = self.controlled.remove(&member)?;
        let mut removed = HashMap::new();
        for client in clients.into_iter().map(ClientID::new) {
            if let Some((clock, data)) = self.states.get_mut(&client) {
                *clock += 1;
                let json_bytes = data.take().map_or(0, |d| d.len());
                self.awareness_bytes -= json_bytes;
                let json: Arc<str> = NULL_STATE.into();
                removed.insert(
                    client,
                    AwarenessUpdateEntry {
                        clock: *clock,
                        json,
                    },
                );
            }
        }
        if removed.is_empty() {
            return None;
        }
        Some(encode(&Message::Awareness(AwarenessUpdate {
            clients: removed,
        })))
    }
}

/// A stored update as the message members get.
pub fn update_message(update: &[u8]) -> Bytes {
    let mut encoder = EncoderV1::new();
    encoder.write_var(MSG_SYNC);
    encoder.write_var(MSG_SYNC_UPDATE);
    encoder.write_buf(update);
    encoder.to_vec().into()
}

fn encode(message: &Message) -> Bytes {
    let mut encoder = EncoderV1::new();
    message.encode(&mut encoder);
    encoder.to_vec().into()
}

/// Whether `data` starts as a message that may change the document (sync
/// step 2 or an update): what a room handler is asked about.
pub fn may_update(data: &[u8]) -> bool {
    data.first() == Some(&MSG_SYNC) && matches!(data.get(1), Some(1 | 2))
}

/// The message telling a client its update was refused (y-protocols'
/// permission denied, which y-websocket reports).
pub fn denied(reason: &str) -> Bytes {
    encode(&Message::Auth(Some(reason.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{GetString, Text};

    /// A client document's messages: its sync step 1, and an update.
    fn client_with(text: &str) -> (yrs::Doc, Bytes) {
        let doc = yrs::Doc::new();
        let t = doc.get_or_insert_text("text");
        let mut txn = doc.transact_mut();
        t.insert(&mut txn, 0, text);
        let update = txn.encode_update_v1();
        drop(txn);
        let message = encode(&Message::Sync(SyncMessage::Update(update)));
        (doc, message)
    }

    fn text_of(room: &YjsRoom) -> String {
        let doc = &room.doc;
        let text = doc.get_or_insert_text("text");
        text.get_string(&doc.transact())
    }

    #[test]
    fn updates_are_applied_and_handed_back_to_store() {
        let mut room = YjsRoom::new();
        let (_, hello) = client_with("hello");
        assert!(may_update(&hello));
        let outcome = room.handle(1, &hello, &mut || true).unwrap();
        assert_eq!(outcome.updates.len(), 1);
        assert_eq!(text_of(&room), "hello");
        // An empty sync step 2 stores nothing.
        let empty = encode(&Message::Sync(SyncMessage::SyncStep2(
            yrs::Doc::new().transact_mut().encode_update_v1(),
        )));
        assert_eq!(
            room.handle(2, &empty, &mut || true).unwrap(),
            Outcome::default()
        );

        // A new client's sync step 1 gets everything.
        let fresh = yrs::Doc::new();
        let sv = fresh.transact().state_vector();
        let step1 = encode(&Message::Sync(SyncMessage::SyncStep1(sv)));
        let outcome = room.handle(2, &step1, &mut || true).unwrap();
        assert_eq!(outcome.replies.len(), 1);
        let mut decoder = DecoderV1::from(outcome.replies[0].as_ref());
        let Ok(Message::Sync(SyncMessage::SyncStep2(diff))) = Message::decode(&mut decoder) else {
            panic!("a sync step 2");
        };
        let mut copy = YjsRoom::new();
        copy.apply_stored(&diff).unwrap();
        assert_eq!(text_of(&copy), "hello");

        // The snapshot rebuilds the same text; bad bytes change nothing.
        let mut restored = YjsRoom::new();
        restored.apply_stored(&room.snapshot().unwrap()).unwrap();
        assert_eq!(text_of(&restored), "hello");
        assert!(room.handle(1, &[0, 2, 200], &mut || true).is_err());
        assert!(room.handle(1, &[], &mut || true).is_err());
        assert_eq!(text_of(&room), "hello");
        // A good update then one that decodes as a message but not as an
        // update: the first stands, to be stored; the rest is refused.
        let (_, more) = client_with("!");
        let mut frame = more.to_vec();
        frame.extend_from_slice(&[0, 2, 1, 0xff]);
        let outcome = room.handle(1, &frame, &mut || true).unwrap();
        assert_eq!(outcome.updates.len(), 1);
        assert!(outcome.refused.is_some());
    }

    #[test]
    fn awareness_is_relayed_and_removed_on_leave() {
        let mut room = YjsRoom::new();
        let doc = yrs::Doc::new();
        let mut theirs = yrs::sync::Awareness::new(doc);
        theirs.set_local_state_raw(r#"{"user":"ann"}"#);
        let message = encode(&Message::Awareness(theirs.update().unwrap()));
        let outcome = room.handle(7, &message, &mut || true).unwrap();
        assert_eq!(outcome.relays.len(), 1);
        assert!(outcome.updates.is_empty());
        assert!(!may_update(&outcome.relays[0]));
        // A joiner sees it.
        assert_eq!(room.welcome().len(), 2);
        let removal = room.leave(7).expect("a removal");
        let mut decoder = DecoderV1::from(removal.as_ref());
        let Ok(Message::Awareness(update)) = Message::decode(&mut decoder) else {
            panic!("an awareness message");
        };
        assert!(update.clients.values().all(|e| &*e.json == "null"));
        assert_eq!(room.welcome().len(), 1, "no states left");
        assert_eq!(room.leave(7), None);
    }

    fn awareness(client: u64, clock: u32, json: &str) -> Vec<u8> {
        let entry = AwarenessUpdateEntry {
            clock,
            json: json.into(),
        };
        let clients = [(ClientID::new(client), entry)].into_iter().collect();
        encode(&Message::Awareness(AwarenessUpdate { clients })).to_vec()
    }

    fn states(room: &YjsRoom) -> Vec<(u32, String)> {
        let update = room.awareness_update();
        (update.clients.values())
            .map(|e| (e.clock, e.json.to_string()))
            .collect()
    }

    #[test]
    fn awareness_clocks_order_states_as_y_protocols_does() {
        let mut room = YjsRoom::new();
        room.handle(1, &awareness(9, 2, r#"{"a":2}"#), &mut || true)
            .unwrap();
        // Older: ignored.
        room.handle(1, &awareness(9, 1, r#"{"a":1}"#), &mut || true)
            .unwrap();
        assert_eq!(states(&room), [(2, r#"{"a":2}"#.to_string())]);
        room.handle(1, &awareness(9, 3, r#"{"a":3}"#), &mut || true)
            .unwrap();
        assert_eq!(states(&room), [(3, r#"{"a":3}"#.to_string())]);
        // A removal with the same clock removes.
        room.handle(1, &awareness(9, 3, "null"), &mut || true)
            .unwrap();
        assert!(states(&room).is_empty());
    }

    #[test]
    fn a_frame_of_repeated_queries_is_answered_once_and_counted_per_message() {
        let mut room = YjsRoom::new();
        let (_, hello) = client_with(&"x".repeat(10_000));
        room.handle(1, &hello, &mut || true).unwrap();
        room.handle(1, &awareness(9, 1, r#"{"user":"ann"}"#), &mut || true)
            .unwrap();
        // 600 sync step 1s and 600 awareness queries in one frame.
        let sv = yrs::Doc::new().transact().state_vector();
        let step1 = encode(&Message::Sync(SyncMessage::SyncStep1(sv)));
        let mut frame = Vec::new();
        for _ in 0..600 {
            frame.extend_from_slice(&step1);
            frame.push(3); // an awareness query
        }
        let outcome = room.handle(2, &frame, &mut || true).unwrap();
        assert_eq!(outcome.replies.len(), 2, "one answer of each kind");
        assert_eq!(outcome.refused, None);
        // Each message after the first takes a token of the sender's rate.
        let mut tokens = 99;
        let mut more = || {
            tokens -= 1;
            tokens >= 0
        };
        let outcome = room.handle(2, &frame, &mut more).unwrap();
        assert_eq!(outcome.refused, Some(Refusal::TooFast));
        assert_eq!(tokens, -1, "100 messages taken, the 101st refused");
    }

    #[test]
    fn awareness_states_are_bounded_per_room() {
        let mut room = YjsRoom::new();
        let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(300 << 10));
        for client in 0..3 {
            let outcome = room
                .handle(1, &awareness(client, 1, &big), &mut || true)
                .unwrap();
            assert_eq!(outcome.refused, None, "client {client}");
        }
        let outcome = room
            .handle(1, &awareness(3, 1, &big), &mut || true)
            .unwrap();
        assert_eq!(outcome.refused, Some(Refusal::AwarenessFull));
        assert!(outcome.relays.is_empty(), "a refused state is not relayed");
        assert_eq!(states(&room).len(), 3);
        // Replacing a state with a smaller one, or removing it, makes room.
        room.handle(1, &awareness(0, 2, "null"), &mut || true)
            .unwrap();
        let outcome = room
            .handle(1, &awareness(3, 1, &big), &mut || true)
            .unwrap();
        assert_eq!(outcome.refused, None);
        // A member's leave gives its states' bytes back.
        room.leave(1);
        assert_eq!(room.awareness_bytes, 4 * AWARENESS_ENTRY_BYTES);
    }

    #[test]
    fn a_document_whose_snapshot_would_not_read_back_is_not_snapshotted() {
        // Found by fuzzing: updates from three members, split at 0xFF.
        let input =
            include_bytes!("../../../../../fuzz/regressions/yjs/snapshot-that-does-not-decode");
        let mut room = YjsRoom::new();
        let mut stored = Vec::new();
        for (i, message) in input.split(|b| *b == 0xFF).enumerate() {
            if let Ok(outcome) = room.handle(i as u64 % 3, message, &mut || true) {
                stored.extend(outcome.updates);
            }
        }
        assert!(room.snapshot().is_err());
        // Its log still rebuilds it.
        let mut replayed = YjsRoom::new();
        for update in &stored {
            replayed.apply_stored(update).unwrap();
        }
        assert_eq!(replayed.welcome()[0], room.welcome()[0]);
    }
}
