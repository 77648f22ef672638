//! Helpers over the raw `wasi:http` types: read a request, send a response,
//! stream bodies without holding them in memory.

use crate::wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use crate::wasi::io::streams::{InputStream, OutputStream, StreamError};

/// An incoming request, with its path and query split out.
pub struct Request {
    inner: IncomingRequest,
    path: String,
    query: Option<String>,
}

impl Request {
    /// Wraps the request the handler was given.
    pub fn new(inner: IncomingRequest) -> Self {
        let full = inner.path_with_query().unwrap_or_else(|| "/".into());
        let (path, query) = match full.split_once('?') {
            Some((p, q)) => (p.to_string(), Some(q.to_string())),
            None => (full, None),
        };
        Self { inner, path, query }
    }

    /// The method, upper-case (`GET`, `POST`, ...).
    pub fn method(&self) -> String {
        match self.inner.method() {
            Method::Get => "GET".into(),
            Method::Head => "HEAD".into(),
            Method::Post => "POST".into(),
            Method::Put => "PUT".into(),
            Method::Delete => "DELETE".into(),
            Method::Connect => "CONNECT".into(),
            Method::Options => "OPTIONS".into(),
            Method::Trace => "TRACE".into(),
            Method::Patch => "PATCH".into(),
            Method::Other(m) => m,
        }
    }

    /// Whether it came over HTTPS (to this server; behind a proxy, see
    /// `X-Forwarded-Proto`).
    pub fn scheme_is_https(&self) -> bool {
        matches!(
            self.inner.scheme(),
            Some(crate::wasi::http::types::Scheme::Https)
        )
    }

    /// The path, without the query.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The raw query string, if any.
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// The first value of query parameter `name`, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k) == name).then(|| percent_decode(v))
        })
    }

    /// The first value of header `name`, if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<String> {
        let values = self.inner.headers().get(name);
        values
            .first()
            .and_then(|v| String::from_utf8(v.clone()).ok())
    }

    /// The body as a stream. Keep the returned `IncomingBody` alive while
    /// reading; drop the stream before it.
    pub fn body_stream(&self) -> Option<(IncomingBody, InputStream)> {
        let body = self.inner.consume().ok()?;
        let stream = body.stream().ok()?;
        Some((body, stream))
    }

    /// The whole body, or `Err` if it is longer than `limit` bytes.
    pub fn body_bytes(&self, limit: usize) -> Result<Vec<u8>, BodyError> {
        let Some((body, stream)) = self.body_stream() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => {
                    if out.len() + chunk.len() > limit {
                        return Err(BodyError::TooLarge);
                    }
                    out.extend_from_slice(&chunk);
                }
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(BodyError::Stream(e.to_debug_string()));
                }
            }
        }
        drop(stream);
        drop(body);
        Ok(out)
    }
}

/// Why a body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// Longer than the limit the caller gave.
    TooLarge,
    /// The stream failed (the client went away, say).
    Stream(String),
}

/// A response to send: status, headers and a body in memory.
pub struct Response {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Response {
    /// Its status.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// An empty response with `status`.
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A `text/plain` response.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self::new(status)
            .header("content-type", "text/plain; charset=utf-8")
            .body(body.into().into_bytes())
    }

    /// An `application/json` response from JSON text.
    pub fn json(status: u16, json: impl Into<String>) -> Self {
        Self::new(status)
            .header("content-type", "application/json")
            .body(json.into().into_bytes())
    }

    /// A JSON error in the host's shape: `{"error":{"code","message"}}`,
    /// ending in a newline as the host's own answers do.
    pub fn error(status: u16, code: &str, message: &str) -> Self {
        Self::json(
            status,
            format!(
                "{{\"error\":{{\"code\":{},\"message\":{}}}}}\n",
                json_string(code),
                json_string(message)
            ),
        )
    }

    /// The response for a failed capability call.
    pub fn from_error(e: &crate::Error) -> Self {
        Self::error(e.status(), e.code(), e.message())
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers
            .push((name.to_string(), value.as_ref().to_vec()));
        self
    }

    /// The body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Its headers, for a response whose body is streamed
    /// (`start_response`).
    pub fn into_headers(self) -> Vec<(String, Vec<u8>)> {
        self.headers
    }

    /// Sends the response.
    pub fn send(self, out: ResponseOutparam) {
        let len = self.body.len();
        let mut headers = self.headers;
        headers.push(("content-length".into(), len.to_string().into_bytes()));
        let (resp, body) = start_response(self.status, &headers);
        ResponseOutparam::set(out, Ok(resp));
        if let Ok(stream) = body.write() {
            // A client that went away is not this guest's failure.
            let _ = write_all(&stream, &self.body);
            drop(stream);
        }
        let _ = OutgoingBody::finish(body, None);
    }
}

/// Builds a response with `headers` and returns it with its body, to be
/// streamed after `ResponseOutparam::set`.
pub fn start_response(
    status: u16,
    headers: &[(String, Vec<u8>)],
) -> (OutgoingResponse, OutgoingBody) {
    let fields = Fields::from_list(headers).unwrap_or_else(|_| Fields::new());
    let resp = OutgoingResponse::new(fields);
    let _ = resp.set_status_code(status);
    let body = resp.body().expect("a new response has a body");
    (resp, body)
}

/// Writes all of `bytes`, waiting for the stream as needed, then flushes.
pub fn write_all(out: &OutputStream, mut bytes: &[u8]) -> Result<(), StreamError> {
    while !bytes.is_empty() {
        let permit = loop {
            let n = out.check_write()?;
            if n > 0 {
                break n as usize;
            }
            out.subscribe().block();
        };
        let (chunk, rest) = bytes.split_at(permit.min(bytes.len()));
        out.write(chunk)?;
        bytes = rest;
    }
    out.blocking_flush()
}

/// Copies `input` to `output` until `input` ends, inside the host (the bytes
/// never enter guest memory). Returns how many bytes were copied, or which
/// side failed.
pub fn copy(input: &InputStream, output: &OutputStream) -> Result<u64, CopyError> {
    let mut total = 0;
    loop {
        match output.blocking_splice(input, 1 << 20) {
            Ok(n) => total += n,
            Err(StreamError::Closed) if output_failed(output) => {
                return Err(CopyError::Write(StreamError::Closed));
            }
            Err(StreamError::Closed) => break,
            Err(e) if output_failed(output) => return Err(CopyError::Write(e)),
            Err(e) => return Err(CopyError::Read(e)),
        }
    }
    output.blocking_flush().map_err(CopyError::Write)?;
    Ok(total)
}

/// A splice fails with one error for either stream. A failed output stream
/// stays failed (or closed), so asking it tells the two apart.
fn output_failed(output: &OutputStream) -> bool {
    output.check_write().is_err()
}

/// Which side of a `copy` failed.
#[derive(Debug)]
pub enum CopyError {
    /// Reading the input failed (a request body cut off, say).
    Read(StreamError),
    /// Writing the output failed (a client gone, a blob over its limit).
    Write(StreamError),
}

/// `s` as a JSON string literal.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Decodes the `%XX` escapes of a URL path exactly: `None` for a broken
/// escape or bytes that are not UTF-8 (`+` stays `+`). For paths that name
/// things, where a lossy guess could name the wrong one.
pub fn percent_decode_path(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Decodes `%XX` escapes and `+` (as a space), for query strings.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
