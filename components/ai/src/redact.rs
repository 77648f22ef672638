//! Keeps provider keys out of what callers get and what `/ai-logs` keeps.
//!
//! A provider may echo the key it was sent: in an error, in a 200's body,
//! in a stream. The hostile probe got keys through as they were in 200
//! bodies, split across the events of a stream, and base64- or
//! percent-encoded. So every answer, whole or streamed, and every log
//! record is redacted, for each key in each of these forms:
//!
//! - as it is;
//! - percent-encoded, every byte (`%73%6B…`, either case of hex);
//! - base64 (standard and URL-safe), at each of the three alignments it can
//!   have inside a longer encoded text: the part of the encoding that only
//!   the key's bytes decide.
//!
//! A stream is redacted twice: its bytes as they go out, holding back a
//! tail that may be the start of a key until the next chunk (`Stream`);
//! and its text, event by event, holding back an event whose text ends
//! with the start of a key until the text goes on (`TextHold`, in `chat`),
//! since a key split over two events is never whole in the bytes. An event
//! is held one event longer now and then (when its text ends like the
//! start of some form of a key), and goes out merged with the next.

use base64::Engine as _;
use serde_json::Value;

use crate::config::Format;
use crate::sse::Event;

/// Keys shorter than this are not looked for (they would blank out
/// ordinary text).
const MIN_KEY: usize = 8;

/// What replaces a key.
pub const REDACTED: &[u8] = b"[redacted]";

/// The forms of some keys, to blank out.
#[derive(Clone, Default)]
pub struct Redactor {
    patterns: Vec<Vec<u8>>,
}

impl Redactor {
    /// For `keys` (those too short to look for are left out).
    pub fn new<'a>(keys: impl IntoIterator<Item = &'a str>) -> Self {
        let mut patterns = Vec::new();
        for key in keys.into_iter().map(str::as_bytes) {
            if key.len() >= MIN_KEY {
                forms(key, &mut patterns);
            }
        }
        patterns.sort();
        patterns.dedup();
        // Longest first: where two forms overlap, the longer is blanked.
        patterns.sort_by_key(|p| std::cmp::Reverse(p.len()));
        Self { patterns }
    }

    /// `bytes` with every form of every key blanked out.
    pub fn bytes(&self, bytes: &[u8]) -> Vec<u8> {
        if self.patterns.is_empty() {
            return bytes.to_vec();
        }
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match self.patterns.iter().find(|p| bytes[i..].starts_with(p)) {
                Some(p) => {
                    out.extend_from_slice(REDACTED);
                    i += p.len();
                }
                None => {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
        }
        out
    }

    pub fn text(&self, text: &str) -> String {
        String::from_utf8_lossy(&self.bytes(text.as_bytes())).into_owned()
    }

    /// The length of the longest tail of `bytes` that is the start of a
    /// form (and not a whole one): what must wait for what follows.
    pub fn partial_tail(&self, bytes: &[u8]) -> usize {
        let longest = self.patterns.first().map_or(0, Vec::len);
        let from = bytes.len().saturating_sub(longest.saturating_sub(1));
        (from..bytes.len())
            .find(|&start| {
                let tail = &bytes[start..];
                self.patterns
                    .iter()
                    .any(|p| p.len() > tail.len() && p.starts_with(tail))
            })
            .map_or(0, |start| bytes.len() - start)
    }

    /// For every key a request may meet: each provider's (those whose
    /// secret is set) and the caller's own, for what `/ai-logs` keeps.
    pub fn for_request(settings: &crate::config::Settings, req: &spike_sdk::http::Request) -> Self {
        let mut keys: Vec<String> = (settings.providers.iter())
            .filter_map(|p| p.api_key_secret.as_deref())
            .filter_map(|name| spike_sdk::secrets::get(name).ok())
            .collect();
        keys.extend(crate::chat::caller_headers(req).key);
        Self::new(keys.iter().map(String::as_str))
    }

    /// A redactor of one stream of bytes.
    pub fn stream(&self) -> Stream<'_> {
        Stream {
            redactor: self,
            held: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

/// The forms of `key` (see the module's doc).
fn forms(key: &[u8], out: &mut Vec<Vec<u8>>) {
    out.push(key.to_vec());
    for hex in [b"0123456789ABCDEF", b"0123456789abcdef"] {
        let mut encoded = Vec::with_capacity(key.len() * 3);
        for b in key {
            encoded.extend_from_slice(&[b'%', hex[usize::from(b >> 4)], hex[usize::from(b & 15)]]);
        }
        out.push(encoded);
    }
    let engines = [
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    for engine in engines {
        for offset in 0..3 {
            let mut padded = vec![0u8; offset];
            padded.extend_from_slice(key);
            let encoded = engine.encode(&padded);
            // Characters before `start` hold bits of the bytes before the
            // key; from `end` on, of the bytes after it.
            let start = (offset * 8).div_ceil(6);
            let end = (padded.len() * 8) / 6;
            if end > start + 4 {
                out.push(encoded.as_bytes()[start..end].to_vec());
            }
        }
    }
}

/// One stream's bytes, redacted as they go out: what may be the start of
/// a key waits for the next chunk.
pub struct Stream<'a> {
    redactor: &'a Redactor,
    held: Vec<u8>,
}

impl Stream<'_> {
    /// What of `chunk` (after what was held) can go out now.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.redactor.is_empty() {
            return chunk.to_vec();
        }
        self.held.extend_from_slice(chunk);
        let redacted = self.redactor.bytes(&self.held);
        let keep = self.redactor.partial_tail(&redacted);
        let ready = redacted.len() - keep;
        self.held = redacted[ready..].to_vec();
        redacted[..ready].to_vec()
    }

    /// What was held back, at the stream's end.
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held)
    }
}

/// A stream's text, redacted across its events: an event whose text ends
/// with the start of a key waits for the next event with text, and goes
/// out merged with it (the text whole, the key blanked if it came whole).
/// Events in the provider's format, before any translation.
pub struct TextHold<'a> {
    redactor: &'a Redactor,
    format: Format,
    held: Option<Event>,
    text: String,
}

impl<'a> TextHold<'a> {
    pub fn new(redactor: &'a Redactor, format: Format) -> Self {
        Self {
            redactor,
            format,
            held: None,
            text: String::new(),
        }
    }

    /// The events that can go on now, `event` among them or held.
    pub fn take(&mut self, event: Event) -> Vec<Event> {
        let Some((mut data, text)) = text_of(self.format, &event) else {
            let mut out = self.finish();
            out.push(event);
            return out;
        };
        let combined = std::mem::take(&mut self.text) + &text;
        let redacted = self.redactor.text(&combined);
        let keep = self.redactor.partial_tail(redacted.as_bytes());
        let was_held = self.held.take().is_some();
        if keep > 0 {
            self.text = redacted;
            self.held = Some(event);
            return Vec::new();
        }
        if !was_held && redacted == text {
            return vec![event];
        }
        set_text(self.format, &mut data, &redacted);
        vec![with_data(&event, &data)]
    }

    /// What is held, at the end of the stream or before an event without
    /// text.
    pub fn finish(&mut self) -> Vec<Event> {
        let Some(event) = self.held.take() else {
            return Vec::new();
        };
        let text = std::mem::take(&mut self.text);
        match text_of(self.format, &event) {
            Some((mut data, _)) => {
                set_text(self.format, &mut data, &text);
                vec![with_data(&event, &data)]
            }
            None => vec![event],
        }
    }
}

/// The text an event adds (OpenAI: the one choice's `delta.content`;
/// Anthropic: a `text_delta`), with its parsed data.
fn text_of(format: Format, event: &Event) -> Option<(Value, String)> {
    if !event.data.starts_with('{') {
        return None;
    }
    let data: Value = serde_json::from_str(&event.data).ok()?;
    let text = match format {
        Format::OpenAi => {
            let choices = data["choices"].as_array()?;
            (choices.len() == 1)
                .then(|| choices[0]["delta"]["content"].as_str())
                .flatten()?
        }
        Format::Anthropic => (data["delta"]["type"] == "text_delta")
            .then(|| data["delta"]["text"].as_str())
            .flatten()?,
    };
    let text = text.to_string();
    Some((data, text))
}

fn set_text(format: Format, data: &mut Value, text: &str) {
    match format {
        Format::OpenAi => data["choices"][0]["delta"]["content"] = text.into(),
        Format::Anthropic => data["delta"]["text"] = text.into(),
    }
}

/// `event` with `data` instead of its own.
fn with_data(event: &Event, data: &Value) -> Event {
    let data = data.to_string();
    let mut raw = Vec::new();
    if let Some(name) = &event.event {
        raw.extend_from_slice(format!("event: {name}\n").as_bytes());
    }
    raw.extend_from_slice(format!("data: {data}\n\n").as_bytes());
    Event {
        event: event.event.clone(),
        data,
        raw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-live-0123456789abcdefXYZ";

    #[test]
    fn every_form_is_blanked() {
        let r = Redactor::new([KEY]);
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("key={KEY}&x=1"));
        let b64_url = base64::engine::general_purpose::URL_SAFE.encode(format!("k:{KEY}"));
        let percent: String = KEY.bytes().map(|b| format!("%{b:02X}")).collect();
        let percent_lower = percent.to_lowercase();
        for text in [
            format!("your key is {KEY}."),
            format!("{{\"echo\":\"{b64}\"}}"),
            format!("blob {b64_url} end"),
            format!("q={percent}&z"),
            format!("q={percent_lower}"),
        ] {
            let out = r.text(&text);
            assert!(out.contains("[redacted]"), "{text} -> {out}");
            assert!(!out.contains(KEY) && !out.contains(&percent), "{out}");
        }
        for offset in 0..3 {
            let mut raw = vec![b'x'; offset];
            raw.extend_from_slice(KEY.as_bytes());
            raw.extend_from_slice(b"tail");
            let encoded = base64::engine::general_purpose::STANDARD.encode(&raw);
            assert!(r.text(&encoded).contains("[redacted]"), "offset {offset}");
        }
        assert_eq!(r.text("nothing to see"), "nothing to see");
        // Too short to look for: not blanked.
        assert_eq!(Redactor::new(["abc"]).text("abc abc"), "abc abc");
    }

    #[test]
    fn a_stream_holds_back_what_may_be_a_key() {
        let r = Redactor::new([KEY]);
        let mut s = r.stream();
        let (a, b) = KEY.split_at(10);
        let mut out = s.push(format!("data: {{\"x\":\"{a}").as_bytes());
        assert!(
            !String::from_utf8_lossy(&out).contains(a),
            "the start waits"
        );
        out.extend(s.push(format!("{b}\"}}\n\n").as_bytes()));
        out.extend(s.finish());
        let out = String::from_utf8(out).unwrap();
        assert_eq!(out, "data: {\"x\":\"[redacted]\"}\n\n");
        // Ordinary text is not held.
        let mut s = r.stream();
        assert_eq!(s.push(b"hello world"), b"hello world");
        let mut s = r.stream();
        assert_eq!(s.push(b"ends with sk-li"), b"ends with ");
        assert_eq!(s.finish(), b"sk-li");
    }

    #[test]
    fn a_key_split_across_events_is_held_and_blanked() {
        let raw = Redactor::new([KEY]);
        let chunk = |text: &str| Event {
            event: None,
            data: serde_json::json!({"choices": [{"index": 0, "delta": {"content": text}}]})
                .to_string(),
            raw: Vec::new(),
        };
        let mut hold = TextHold::new(&raw, Format::OpenAi);
        let mut got = Vec::new();
        for text in ["Your key: sk-li", "ve-0123456", "789abcdefXYZ and more"] {
            got.extend(hold.take(chunk(text)));
        }
        got.extend(hold.finish());
        let texts: Vec<String> = (got.iter())
            .map(|e| text_of(Format::OpenAi, e).unwrap().1)
            .collect();
        assert_eq!(texts.concat(), "Your key: [redacted] and more");
        // Text that is no key goes on as it came, event by event.
        let mut hold = TextHold::new(&raw, Format::OpenAi);
        let plain = hold.take(chunk("hello"));
        assert_eq!(plain.len(), 1);
        assert_eq!(plain[0].data, chunk("hello").data);
        // Anthropic's text deltas too.
        let delta = |text: &str| Event {
            event: Some("content_block_delta".into()),
            data: serde_json::json!({"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "text_delta", "text": text}})
            .to_string(),
            raw: Vec::new(),
        };
        let mut hold = TextHold::new(&raw, Format::Anthropic);
        assert!(hold.take(delta("sk-live-01")).is_empty());
        let out = hold.take(delta("23456789abcdefXYZ!"));
        assert_eq!(
            text_of(Format::Anthropic, &out[0]).unwrap().1,
            "[redacted]!"
        );
        assert!(
            String::from_utf8_lossy(&out[0].raw).starts_with("event: content_block_delta\ndata: ")
        );
    }
}
