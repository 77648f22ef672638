//! Fuzz targets: the parsers and message handlers that take bytes from
//! clients, operators and the log, each run on arbitrary input with the
//! properties it must keep (beyond not panicking) checked by assertions.
//!
//! Driven by `fuzz/` (`spike-fuzz`: a stable mutation driver for the tests
//! and `bench/fuzz.sh`, and libFuzzer targets for `cargo fuzz`). Here, not
//! there, because the functions are the crate's own.

use std::path::Path;

use crate::rooms::protocols::livestore::wire as livestore;
use crate::rooms::protocols::text::ot::TextDoc;
use crate::rooms::protocols::yjs::sync::YjsRoom;

/// A target: a name (its seeds are in `fuzz/seeds/<name>/`) and the
/// function that takes one input.
pub type Target = (&'static str, fn(&[u8]));

pub const TARGETS: &[Target] = &[
    ("manifest", manifest),
    ("text_room", text_room),
    ("room_log", room_log),
    ("yjs", yjs),
    ("livestore", livestore_messages),
    ("token", token),
    ("range", range),
];

/// A plugin manifest as an operator (or a push) gives it.
fn manifest(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = crate::runtime::manifest::parse(Path::new("fuzz.toml"), &text);
}

/// Edits into a text room, as its owner takes them: the first line is the
/// room's text, each later line one client message. What is applied must
/// read back from the log as the same steps, and the text stays whole
/// UTF-16 under the room's limit.
fn text_room(data: &[u8]) {
    use crate::rooms::frames;
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let initial = lines.next().unwrap_or_default();
    let mut doc = TextDoc::new(initial, 0, 16).with_max_units(4096);
    for (seq, line) in (1..).zip(lines) {
        let edit = frames::parse_edit(line).and_then(|(steps, at)| {
            let steps = doc.rebase(steps, at).map_err(|e| e.to_string())?;
            doc.apply(steps.clone()).map_err(|e| e.to_string())?;
            Ok(steps)
        });
        let Ok(steps) = edit else { continue };
        let event = frames::op_event(seq, "fuzz", None, &steps).bytes();
        let logged = frames::steps_of_event(&event).expect("an applied edit reads back");
        assert_eq!(logged, Some(steps), "the log holds what was applied");
        let units = doc.text().encode_utf16().count();
        assert!(
            units <= 4096,
            "the text grew past the room's limit: {units}"
        );
    }
}

/// Events as a text room's log holds them, read back at recovery.
fn room_log(data: &[u8]) {
    let _ = crate::rooms::frames::steps_of_event(data);
}

/// y-protocols messages from three members of one document, split at
/// 0xFF bytes. Every update applied is stored; replaying what was stored
/// into a fresh document (a restart) must succeed and give the same state.
fn yjs(data: &[u8]) {
    let replay = |stored: &[bytes::Bytes]| {
        let mut replayed = YjsRoom::new();
        for update in stored {
            replayed
                .apply_stored(update)
                .expect("a stored update applies at recovery");
        }
        replayed
    };
    let mut room = YjsRoom::new();
    let mut stored = Vec::new();
    for (i, message) in data.split(|b| *b == 0xFF).enumerate() {
        if let Ok(outcome) = room.handle(i as u64 % 3, message, &mut || true) {
            stored.extend(outcome.updates);
            // As the owner does: a document that ran ahead of the log is
            // the log's again.
            if outcome.tainted {
                room = replay(&stored);
            }
        }
    }
    let replayed = replay(&stored);
    assert_eq!(
        replayed.welcome()[0],
        room.welcome()[0],
        "the replayed document has the live one's state vector"
    );
    // A snapshot, if the room would store one, applies at recovery.
    if let Ok(snapshot) = room.snapshot() {
        YjsRoom::new()
            .apply_stored(&snapshot)
            .expect("a snapshot applies at recovery");
    }
}

/// A LiveStore client message, in both dialects. A push the room would
/// accept must store events that read back.
fn livestore_messages(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for dialect in [livestore::Dialect::Rpc, livestore::Dialect::WsMessage] {
        let Ok(request) = livestore::parse(dialect, &text) else {
            continue;
        };
        let livestore::Request::Push { batch, .. } = request else {
            continue;
        };
        let head = batch.first().map_or(0, |e| e.parent_seq_num);
        if livestore::check_push(head, &batch).is_err() {
            continue;
        }
        let logged: Vec<_> = batch
            .iter()
            .map(|event| livestore::stored(event, "2026-11-24T00:00:00.000Z"))
            .collect();
        livestore::items(dialect, &logged).expect("stored events read back");
    }
}

/// The bearer token of a request, from `Authorization` or the session
/// cookie: the input is header values split at 0xFF, in turn an
/// `Authorization` and a `Cookie`.
fn token(data: &[u8]) {
    let mut headers = http::HeaderMap::new();
    for (i, value) in data.split(|b| *b == 0xFF).enumerate() {
        let Ok(value) = http::HeaderValue::from_bytes(value) else {
            continue;
        };
        let name = if i % 2 == 0 {
            http::header::AUTHORIZATION
        } else {
            http::header::COOKIE
        };
        headers.append(name, value);
    }
    if let Ok(Some(credential)) = crate::runtime::auth::credential(&headers) {
        let token = credential.token;
        assert!(!token.is_empty() && token.len() <= crate::runtime::auth::MAX_TOKEN_BYTES);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.=".contains(&b))
        );
    }
}

/// A `Range` header against a file whose length is the first byte's
/// value (0 to 255) or, past 250, a large one.
fn range(data: &[u8]) {
    use crate::assets::respond::{RangeAnswer, byte_range};
    let Some((&first, spec)) = data.split_first() else {
        return;
    };
    let len = match first {
        251.. => u64::MAX - u64::from(255 - first),
        n => u64::from(n),
    };
    let spec = String::from_utf8_lossy(spec);
    match byte_range(&spec, len) {
        RangeAnswer::Part(start, end) => {
            assert!(
                start <= end && end < len,
                "{spec:?} of {len}: {start}-{end}"
            );
        }
        RangeAnswer::Unsatisfiable | RangeAnswer::Whole => {}
    }
}
