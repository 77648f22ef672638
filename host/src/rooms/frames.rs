//! What room connections exchange: the JSON frames the host sends, and the
//! messages of the `text` protocol it reads.
//!
//! Host to client (text frames, one JSON object each, `type` first):
//!
//! ```text
//! {"type":"welcome","room":"abc","connection":"c1x","protocol":"relay","seq":41,
//!  "members":[{"connection":"c1w","user":"user_2"}],"member_count":1,"text":"..."}
//! {"type":"text_part","text":"..."}      a long text comes in parts (below)
//! {"type":"event","seq":42,"from":"c1x","user":null,"data":"hello"}        relay
//! {"type":"op","seq":43,"from":"c1x","user":null,"ops":[{"type":"insert","position":0,"content":"a"}]}
//! {"type":"snapshot","seq":40}            events up to 40 were compacted away (relay catch-up)
//! {"type":"join","connection":"c1y","user":null,"member_count":2}        presence
//! {"type":"leave","connection":"c1y","user":null,"member_count":1}
//! {"type":"error","code":"rate_limited","message":"..."}
//! ```
//!
//! Events (`event`, `op`) are numbered and stored: the log keeps these very
//! bytes, and catch-up sends them again. Presence and errors are not
//! numbered: they are about connections, which do not outlive the host.

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use super::protocols::text::ot::Step;

/// A WebSocket data frame, shared by every connection it goes to: the
/// socket's own types (reference-counted bytes), so an event is encoded
/// once and written to every member without a copy. The JSON protocols
/// speak text; `yjs` speaks binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Text(Utf8Bytes),
    Binary(Bytes),
}

impl Frame {
    /// The frame's bytes, as a room log stores them.
    pub fn bytes(&self) -> Bytes {
        match self {
            Frame::Text(text) => Bytes::from(text.clone()),
            Frame::Binary(bytes) => bytes.clone(),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Frame::Text(text) => text.len(),
            Frame::Binary(bytes) => bytes.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<String> for Frame {
    fn from(text: String) -> Self {
        Frame::Text(text.into())
    }
}

/// A member, as listed in a welcome and in presence frames.
pub struct MemberInfo<'a> {
    pub connection: &'a str,
    pub user: Option<&'a str>,
}

fn frame(value: &Value) -> Frame {
    Frame::from(value.to_string())
}

/// A stored JSON event as a frame again (catch-up).
pub fn stored(bytes: Bytes) -> Option<Frame> {
    Utf8Bytes::try_from(bytes).ok().map(Frame::Text)
}

/// Presence frames list at most this many members in a welcome; the count
/// is always there.
pub const MAX_LISTED_MEMBERS: usize = 100;

/// A text room's text up to this many bytes (UTF-8) is in its welcome.
pub const WELCOME_TEXT_INLINE: usize = 256 << 10;

/// A longer text follows the welcome in parts of about this many bytes.
const TEXT_PART_BYTES: usize = 256 << 10;

/// A text room's text as a joiner gets it, encoded once per version of the
/// room and shared by every joiner of that version.
///
/// Up to `WELCOME_TEXT_INLINE` bytes it is the welcome's `text`. A longer
/// one (up to 8 Mi UTF-16 units: 24 MB of JSON) is not: the welcome says
/// `"text_parts": n` and `n` frames `{"type":"text_part","text":"…"}`
/// follow it, whose texts joined are the room's. The socket copies a
/// frame into its write buffer until the client reads it, so a whole text
/// in one frame cost every joiner that did not read a copy of it (60 such
/// joiners of an 8 M-character room took 476 MiB); in parts, such a joiner
/// holds one part, the parts themselves shared.
pub struct WelcomeText {
    /// The room's `seq` this is the text of.
    pub head: u64,
    inline: Option<String>,
    parts: Vec<Frame>,
}

impl WelcomeText {
    pub fn new(head: u64, text: String) -> Self {
        if text.len() <= WELCOME_TEXT_INLINE {
            return Self {
                head,
                inline: Some(text),
                parts: Vec::new(),
            };
        }
        let mut parts = Vec::new();
        let mut rest = text.as_str();
        while !rest.is_empty() {
            let mut end = TEXT_PART_BYTES.min(rest.len());
            while !rest.is_char_boundary(end) {
                end += 1;
            }
            let (part, after) = rest.split_at(end);
            parts.push(frame(&json!({ "type": "text_part", "text": part })));
            rest = after;
        }
        Self {
            head,
            inline: None,
            parts,
        }
    }

    /// The frames that follow the welcome (none for a short text).
    pub fn parts(&self) -> &[Frame] {
        &self.parts
    }
}

/// The first frame a connection gets.
pub fn welcome(
    room: &str,
    connection: &str,
    protocol: &str,
    seq: u64,
    members: &[MemberInfo<'_>],
    member_count: usize,
    text: Option<&WelcomeText>,
) -> Frame {
    let members: Vec<Value> = (members.iter().take(MAX_LISTED_MEMBERS))
        .map(|m| json!({ "connection": m.connection, "user": m.user }))
        .collect();
    let mut value = json!({
        "type": "welcome",
        "room": room,
        "connection": connection,
        "protocol": protocol,
        "seq": seq,
        "members": members,
        "member_count": member_count,
    });
    match text {
        Some(WelcomeText {
            inline: Some(text), ..
        }) => value["text"] = Value::from(text.as_str()),
        Some(WelcomeText { parts, .. }) => value["text_parts"] = Value::from(parts.len()),
        None => {}
    }
    frame(&value)
}

/// A relayed message, numbered.
pub fn relay_event(seq: u64, from: &str, user: Option<&str>, data: &str) -> Frame {
    frame(&json!({ "type": "event", "seq": seq, "from": from, "user": user, "data": data }))
}

/// A text edit, numbered, as the owner applied it.
pub fn op_event(seq: u64, from: &str, user: Option<&str>, steps: &[Step]) -> Frame {
    frame(&json!({
        "type": "op",
        "seq": seq,
        "from": from,
        "user": user,
        "ops": ops_json(steps),
    }))
}

/// Catch-up that starts after compaction dropped the events a client
/// asked for.
pub fn snapshot(seq: u64) -> Frame {
    frame(&json!({ "type": "snapshot", "seq": seq }))
}

/// `join` or `leave`.
pub fn presence(kind: &str, member: &MemberInfo<'_>, member_count: usize) -> Frame {
    frame(&json!({
        "type": kind,
        "connection": member.connection,
        "user": member.user,
        "member_count": member_count,
    }))
}

pub fn error(code: &str, message: &str) -> Frame {
    frame(&json!({ "type": "error", "code": code, "message": message }))
}

/// Steps in the seed's shapes; a delete followed by an insert at the same
/// place is a `replace`.
fn ops_json(steps: &[Step]) -> Vec<Value> {
    let mut out = Vec::with_capacity(steps.len());
    let mut i = 0;
    while i < steps.len() {
        match (&steps[i], steps.get(i + 1)) {
            (Step::Delete { at, len }, Some(Step::Insert { at: at2, text })) if at == at2 => {
                out.push(json!({
                    "type": "replace",
                    "position": at,
                    "length": len,
                    "content": String::from_utf16_lossy(text),
                }));
                i += 2;
                continue;
            }
            (Step::Insert { at, text }, _) => out.push(json!({
                "type": "insert",
                "position": at,
                "content": String::from_utf16_lossy(text),
            })),
            (Step::Delete { at, len }, _) => {
                out.push(json!({ "type": "delete", "position": at, "length": len }))
            }
        }
        i += 1;
    }
    out
}

/// One operation in the seed's shape.
#[derive(Deserialize)]
struct Op {
    #[serde(rename = "type")]
    kind: String,
    position: usize,
    content: Option<String>,
    length: Option<usize>,
}

/// Reads a client's message in a `text` room: an `insert`, `delete` or
/// `replace` and the `seq` it was made at.
pub fn parse_edit(message: &str) -> Result<(Vec<Step>, u64), String> {
    /// One operation and the last `seq` the client had seen.
    #[derive(Deserialize)]
    struct Edit {
        #[serde(flatten)]
        op: Op,
        seq: Option<u64>,
    }
    let edit: Edit = serde_json::from_str(message).map_err(|e| {
        format!(
            "expected {{\"type\":\"insert\"|\"delete\"|\"replace\",\"position\",\"content\"?,\"length\"?,\"seq\"}}: {e}"
        )
    })?;
    let seq = edit
        .seq
        .ok_or("seq is required: the last seq this client has seen")?;
    Ok((steps_of(&edit.op)?, seq))
}

fn steps_of(op: &Op) -> Result<Vec<Step>, String> {
    let content = || {
        op.content
            .as_deref()
            .map(|c| c.encode_utf16().collect::<Vec<u16>>())
            .ok_or_else(|| format!("{} needs content", op.kind))
    };
    let length = || op.length.ok_or_else(|| format!("{} needs length", op.kind));
    let at = op.position;
    // Past any text a room may hold; bounded here, the positions of
    // concurrent edits can be added together when they are transformed.
    let max = super::protocols::text::ot::MAX_TEXT_UNITS;
    if at > max || op.length.is_some_and(|n| n > max) {
        return Err(format!(
            "position and length are at most {max}, a room's longest text"
        ));
    }
    let steps = match op.kind.as_str() {
        "insert" => vec![Step::Insert {
            at,
            text: content()?,
        }],
        "delete" => vec![Step::Delete { at, len: length()? }],
        "replace" => vec![
            Step::Delete { at, len: length()? },
            Step::Insert {
                at,
                text: content()?,
            },
        ],
        other => {
            return Err(format!(
                "type \"{other}\": write \"insert\", \"delete\" or \"replace\""
            ));
        }
    };
    // Empty steps change nothing; keep the edit (it still gets a number)
    // but not the empty steps.
    Ok(steps
        .into_iter()
        .filter(|s| match s {
            Step::Insert { text, .. } => !text.is_empty(),
            Step::Delete { len, .. } => *len > 0,
        })
        .collect())
}

/// The steps of a stored `op` event (to rebuild a text from its log);
/// `None` for any other event.
pub fn steps_of_event(event: &[u8]) -> Result<Option<Vec<Step>>, String> {
    #[derive(Deserialize)]
    struct Stored {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        ops: Vec<Op>,
    }
    let stored: Stored =
        serde_json::from_slice(event).map_err(|e| format!("a stored event is not JSON: {e}"))?;
    if stored.kind != "op" {
        return Ok(None);
    }
    let mut steps = Vec::new();
    for op in &stored.ops {
        steps.extend(steps_of(op)?);
    }
    Ok(Some(steps))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_read_and_stored_ops_round_trip() {
        let (steps, seq) =
            parse_edit(r#"{"type":"replace","position":2,"length":3,"content":"é😀","seq":7}"#)
                .unwrap();
        assert_eq!(seq, 7);
        assert_eq!(
            steps,
            vec![
                Step::Delete { at: 2, len: 3 },
                Step::Insert {
                    at: 2,
                    text: "é😀".encode_utf16().collect()
                }
            ]
        );
        let stored = op_event(8, "c1", None, &steps).bytes();
        let json = std::str::from_utf8(&stored).unwrap();
        assert!(json.contains(r#""type":"replace""#), "{json}");
        assert_eq!(steps_of_event(&stored).unwrap(), Some(steps));
        let relay = relay_event(9, "c1", Some("u"), "hi").bytes();
        assert_eq!(steps_of_event(&relay).unwrap(), None);
    }

    #[test]
    fn a_long_text_comes_in_parts_that_join_into_it() {
        let short = WelcomeText::new(3, "héllo".into());
        let first = welcome("r", "c1", "text", 3, &[], 1, Some(&short));
        let value: Value = serde_json::from_slice(&first.bytes()).unwrap();
        assert_eq!(value["text"], "héllo");
        assert!(short.parts().is_empty());

        let text: String = "ab€😀".repeat(100_000); // 1 MB, characters of 1 to 4 bytes
        let long = WelcomeText::new(4, text.clone());
        let first = welcome("r", "c1", "text", 4, &[], 1, Some(&long));
        let value: Value = serde_json::from_slice(&first.bytes()).unwrap();
        assert_eq!(value["text"], Value::Null);
        assert_eq!(value["text_parts"], long.parts().len());
        let mut joined = String::new();
        for part in long.parts() {
            assert!(part.len() < TEXT_PART_BYTES + 64, "{}", part.len());
            let value: Value = serde_json::from_slice(&part.bytes()).unwrap();
            assert_eq!(value["type"], "text_part");
            joined.push_str(value["text"].as_str().unwrap());
        }
        assert_eq!(joined, text);
    }

    #[test]
    fn bad_edits_say_why() {
        for (message, needle) in [
            (
                r#"{"type":"insert","position":0,"content":"x"}"#,
                "seq is required",
            ),
            (r#"{"type":"insert","position":0,"seq":1}"#, "needs content"),
            (r#"{"type":"delete","position":0,"seq":1}"#, "needs length"),
            (r#"{"type":"move","position":0,"seq":1}"#, "\"move\""),
            (
                r#"{"type":"insert","position":-1,"content":"x","seq":1}"#,
                "expected",
            ),
            ("not json", "expected"),
            // Found by fuzzing: transformed against a concurrent edit,
            // such a position overflowed.
            (
                r#"{"type":"replace","position":18446744073709551615,"length":3,"content":"x","seq":1}"#,
                "at most 8388608",
            ),
            (
                r#"{"type":"delete","position":0,"length":8388609,"seq":1}"#,
                "at most 8388608",
            ),
        ] {
            let e = parse_edit(message).unwrap_err();
            assert!(e.contains(needle), "{message}: {e}");
        }
    }
}
