//! Server-sent events as they arrive: bytes in, whole events out, each
//! with its raw bytes (to pass on unchanged) and its `event:` and `data:`
//! fields (to read or translate).

/// One event of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines, joined by `\n`.
    pub data: String,
    /// The event as it came, blank line included.
    pub raw: Vec<u8>,
}

/// An event longer than the parser holds.
#[derive(Debug, PartialEq, Eq)]
pub struct TooLong;

/// Collects bytes into events.
pub struct Parser {
    buf: Vec<u8>,
    max_event: usize,
}

impl Parser {
    pub fn new(max_event: usize) -> Self {
        Self {
            buf: Vec::new(),
            max_event,
        }
    }

    /// Takes `bytes` and returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Event>, TooLong> {
        self.buf.extend_from_slice(bytes);
        let mut events = Vec::new();
        let mut start = 0;
        while let Some(end) = event_end(&self.buf[start..]) {
            let raw = &self.buf[start..start + end];
            if let Some(event) = parse(raw) {
                events.push(event);
            }
            start += end;
        }
        self.buf.drain(..start);
        if self.buf.len() > self.max_event {
            return Err(TooLong);
        }
        Ok(events)
    }
}

/// Where the first event of `buf` ends (after its blank line), if it does.
fn event_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < buf.len() {
        if buf[i] == b'\n' || buf[i] == b'\r' {
            let after = if buf[i] == b'\r' && buf.get(i + 1) == Some(&b'\n') {
                i + 2
            } else {
                i + 1
            };
            // A line end right after a line end is the blank line.
            match buf.get(after) {
                Some(b'\n') => return Some(after + 1),
                Some(b'\r') if buf.get(after + 1) == Some(&b'\n') => return Some(after + 2),
                Some(b'\r') if after + 1 < buf.len() => return Some(after + 1),
                // A lone '\r' at the end may be the start of "\r\n".
                Some(b'\r') | None => return None,
                Some(_) => i = after,
            }
        } else {
            i += 1;
        }
    }
    None
}

fn parse(raw: &[u8]) -> Option<Event> {
    let text = String::from_utf8_lossy(raw);
    let mut event = None;
    let mut data: Option<String> = None;
    for line in text.split(['\n', '\r']) {
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => event = Some(value.to_string()),
            "data" => match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_string()),
            },
            _ => {}
        }
    }
    if event.is_none() && data.is_none() {
        // A comment (": keep-alive") or an empty event: nothing to read,
        // but the raw bytes still pass on.
        return Some(Event {
            event: None,
            data: String::new(),
            raw: raw.to_vec(),
        });
    }
    Some(Event {
        event,
        data: data.unwrap_or_default(),
        raw: raw.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks() {
        let mut p = Parser::new(1024);
        assert!(p.push(b"event: message_start\nda").unwrap().is_empty());
        let got = p.push(b"ta: {\"a\":1}\n\ndata: [DONE]\n\n").unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].event.as_deref(), Some("message_start"));
        assert_eq!(got[0].data, "{\"a\":1}");
        assert_eq!(got[0].raw, b"event: message_start\ndata: {\"a\":1}\n\n");
        assert_eq!(got[1].event, None);
        assert_eq!(got[1].data, "[DONE]");
    }

    #[test]
    fn crlf_and_multi_line_data() {
        let mut p = Parser::new(1024);
        let got = p.push(b"data: a\r\ndata: b\r\n\r\n: ping\r\n\r\n").unwrap();
        assert_eq!(got[0].data, "a\nb");
        assert_eq!(got[1].data, "");
        // "\r" then "\n" in the next chunk is one line end.
        assert!(p.push(b"data: c\r").unwrap().is_empty());
        assert!(p.push(b"\n").unwrap().is_empty());
        assert_eq!(p.push(b"\r\n").unwrap()[0].data, "c");
    }

    #[test]
    fn an_endless_event_is_refused() {
        let mut p = Parser::new(8);
        assert_eq!(p.push(b"data: 0123456789"), Err(TooLong));
    }
}
