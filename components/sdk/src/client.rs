//! Outgoing HTTP requests from a plugin, with a deadline for the whole
//! exchange and a cap on the response body: a slow or endless upstream
//! costs at most `timeout`, and a huge one at most `max_body` bytes.
//!
//! [`Fetch::send`] reads the answer whole; [`Fetch::start`] hands out the
//! response once its head has come, to read its body as it arrives (a
//! stream of events, say), each wait bounded by the idle timeout. A request
//! body can be bytes ([`Fetch::body`]) or bytes followed by a stream the
//! host copies ([`Fetch::start_streaming`]), e.g. an upload passed on.
//!
//! The host lets a plugin reach only the hosts its manifest grants
//! (`grants.outbound`); anything else fails with [`FetchError::Denied`].
//!
//! ```ignore
//! let got = spike_sdk::client::Fetch::get("https://example.com/keys.json")?.send()?;
//! assert_eq!(got.status, 200);
//! ```

use std::time::Duration;

use crate::wasi::clocks::monotonic_clock;
use crate::wasi::http::outgoing_handler;
use crate::wasi::http::types::{
    ErrorCode, Fields, FutureIncomingResponse, IncomingBody, IncomingResponse, Method,
    OutgoingBody, OutgoingRequest, RequestOptions, Scheme, http_error_code,
};
use crate::wasi::io::poll::{Pollable, poll};
use crate::wasi::io::streams::{InputStream, OutputStream, StreamError};

/// An outgoing request to build and send.
pub struct Fetch {
    method: Method,
    scheme: Scheme,
    authority: String,
    path_with_query: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    /// Until the response head (and, for [`Fetch::send`], its whole body).
    pub timeout: Duration,
    /// The longest wait for the next bytes of a body read as it arrives.
    pub idle_timeout: Duration,
    /// The longest response body [`Fetch::send`] reads; longer is
    /// [`FetchError::TooLarge`].
    pub max_body: usize,
}

/// A response, its body read whole.
#[derive(Debug)]
pub struct Fetched {
    /// The HTTP status.
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The whole body.
    pub body: Vec<u8>,
}

impl Fetched {
    /// The first value of header `name` (lower case), if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

fn header<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

/// Why a request got no (more) response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// The URL is not `http(s)://authority/path`, or a part of the request
    /// cannot be sent.
    InvalidUrl(String),
    /// The host refused the request: its host is not granted, or it
    /// resolves to an address the grant does not allow.
    Denied(String),
    /// Connecting, sending or receiving failed.
    Refused(String),
    /// The deadline (or, reading a body, the idle timeout) passed.
    Timeout,
    /// The body is longer than allowed.
    TooLarge,
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::InvalidUrl(url) => write!(f, "not an http(s) URL: {url}"),
            FetchError::Denied(why) => write!(f, "the host refused the request: {why}"),
            FetchError::Refused(why) => write!(f, "the request failed: {why}"),
            FetchError::Timeout => f.write_str("no complete response in time"),
            FetchError::TooLarge => f.write_str("the response body is too large"),
        }
    }
}

/// Nanoseconds on the monotonic clock, `d` from now.
fn after(d: Duration) -> u64 {
    monotonic_clock::now().saturating_add(d.as_nanos() as u64)
}

impl Fetch {
    /// A request of `method` to `url`, with a 10 s deadline and a 1 MiB
    /// body cap.
    pub fn new(method: Method, url: &str) -> Result<Self, FetchError> {
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (Scheme::Https, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (Scheme::Http, rest)
        } else {
            return Err(FetchError::InvalidUrl(url.into()));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(FetchError::InvalidUrl(url.into()));
        }
        Ok(Self {
            method,
            scheme,
            authority: authority.into(),
            path_with_query: path.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(10),
            max_body: 1024 * 1024,
        })
    }

    /// A `GET` of `url`.
    pub fn get(url: &str) -> Result<Self, FetchError> {
        Self::new(Method::Get, url)
    }

    /// The method (`GET` unless set).
    pub fn method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers.push((name.into(), value.as_ref().to_vec()));
        self
    }

    /// The request body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// How long the whole exchange may take.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long the response body may stall between bytes.
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = idle;
        self
    }

    /// The largest response body read whole (`FetchError` beyond it).
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Sends the request and reads the response whole, or fails by the
    /// deadline.
    pub fn send(self) -> Result<Fetched, FetchError> {
        let deadline = after(self.timeout);
        let max_body = self.max_body;
        let response = self.start()?;
        let body = response.read_all(max_body, deadline)?;
        Ok(Fetched {
            status: response.status,
            headers: response.headers,
            body,
        })
    }

    /// Sends the request and waits for the response head, by the deadline;
    /// its body is read as it comes.
    pub fn start(self) -> Result<Streaming, FetchError> {
        self.exchange(None)
    }

    /// As [`Fetch::start`], the request body being this request's bytes
    /// followed by everything `rest` yields (copied by the host; it never
    /// enters this guest's memory).
    pub fn start_streaming(self, rest: &InputStream) -> Result<Streaming, FetchError> {
        self.exchange(Some(rest))
    }

    fn exchange(self, rest: Option<&InputStream>) -> Result<Streaming, FetchError> {
        let deadline = after(self.timeout);
        let fields = Fields::from_list(&self.headers)
            .map_err(|e| FetchError::InvalidUrl(format!("bad header: {e:?}")))?;
        let request = OutgoingRequest::new(fields);
        let invalid = |what: &str| FetchError::InvalidUrl(format!("{what} refused"));
        request
            .set_method(&self.method)
            .map_err(|()| invalid("method"))?;
        request
            .set_scheme(Some(&self.scheme))
            .map_err(|()| invalid("scheme"))?;
        request
            .set_authority(Some(&self.authority))
            .map_err(|()| invalid("authority"))?;
        request
            .set_path_with_query(Some(&self.path_with_query))
            .map_err(|()| invalid("path"))?;
        let body = request.body().map_err(|()| invalid("body"))?;
        // The host's own timeouts too, so a connection it holds is dropped
        // by them even if this guest stops polling. Its idle limit is a
        // second longer than ours, which is checked first.
        let options = RequestOptions::new();
        let ns = self.timeout.as_nanos() as u64;
        let _ = options.set_connect_timeout(Some(ns));
        let _ = options.set_first_byte_timeout(Some(ns));
        let idle = (self.idle_timeout + Duration::from_secs(1)).as_nanos() as u64;
        let _ = options.set_between_bytes_timeout(Some(idle));
        let pending = outgoing_handler::handle(request, Some(options)).map_err(failure)?;
        {
            let stream = body.write().map_err(|()| invalid("body"))?;
            let written = |e: StreamError| FetchError::Refused(format!("writing the body: {e:?}"));
            if !self.body.is_empty() {
                crate::http::write_all(&stream, &self.body).map_err(written)?;
            }
            if let Some(rest) = rest {
                splice_all(rest, &stream)?;
            }
        }
        OutgoingBody::finish(body, None).map_err(failure)?;
        let response = wait_response(&pending, deadline)?;
        Streaming::new(response, self.idle_timeout)
    }
}

/// Copies `input` into `output` until `input` ends.
fn splice_all(input: &InputStream, output: &OutputStream) -> Result<(), FetchError> {
    loop {
        match output.blocking_splice(input, 1 << 20) {
            Ok(_) => {}
            Err(StreamError::Closed) => return Ok(()),
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(FetchError::Refused(format!(
                    "streaming the body: {}",
                    e.to_debug_string()
                )));
            }
        }
    }
}

fn failure(e: ErrorCode) -> FetchError {
    match e {
        ErrorCode::ConnectionTimeout | ErrorCode::ConnectionReadTimeout => FetchError::Timeout,
        ErrorCode::HttpRequestDenied | ErrorCode::DestinationIpProhibited => FetchError::Denied(
            "not granted to this plugin (grants.outbound), or an address the grant does not allow"
                .into(),
        ),
        e => FetchError::Refused(format!("{e:?}")),
    }
}

/// Waits for `pollable` until `deadline`; false if the deadline came first.
fn wait(pollable: &Pollable, deadline: u64) -> bool {
    let timer = monotonic_clock::subscribe_instant(deadline);
    let ready = poll(&[pollable, &timer]);
    ready.contains(&0)
}

fn wait_response(
    pending: &FutureIncomingResponse,
    deadline: u64,
) -> Result<IncomingResponse, FetchError> {
    loop {
        if let Some(got) = pending.get() {
            return got
                .map_err(|()| FetchError::Refused("response taken twice".into()))?
                .map_err(failure);
        }
        if !wait(&pending.subscribe(), deadline) {
            return Err(FetchError::Timeout);
        }
    }
}

/// A response whose body is read as it arrives.
pub struct Streaming {
    /// The HTTP status.
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, Vec<u8>)>,
    idle_timeout: Duration,
    // Field order: the stream is dropped before the body it came from.
    stream: InputStream,
    _body: IncomingBody,
}

impl Streaming {
    fn new(response: IncomingResponse, idle_timeout: Duration) -> Result<Self, FetchError> {
        let status = response.status();
        let headers = response
            .headers()
            .entries()
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        let taken = || FetchError::Refused("body taken twice".into());
        let body = response.consume().map_err(|()| taken())?;
        let stream = body.stream().map_err(|()| taken())?;
        Ok(Self {
            status,
            headers,
            idle_timeout,
            stream,
            _body: body,
        })
    }

    /// The first value of header `name` (lower case), if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// The next bytes of the body, `None` at its end; fails if nothing
    /// comes within the idle timeout.
    pub fn next_chunk(&self) -> Result<Option<Vec<u8>>, FetchError> {
        self.next_chunk_by(after(self.idle_timeout))
    }

    /// The next bytes of the body, `None` at its end; fails if nothing
    /// comes by `deadline` (monotonic clock nanoseconds).
    pub fn next_chunk_by(&self, deadline: u64) -> Result<Option<Vec<u8>>, FetchError> {
        loop {
            match self.stream.read(64 * 1024) {
                Ok(chunk) if chunk.is_empty() => {
                    if !wait(&self.stream.subscribe(), deadline) {
                        return Err(FetchError::Timeout);
                    }
                }
                Ok(chunk) => return Ok(Some(chunk)),
                Err(StreamError::Closed) => return Ok(None),
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(match http_error_code(&e) {
                        Some(code) => failure(code),
                        None => FetchError::Refused(e.to_debug_string()),
                    });
                }
            }
        }
    }

    /// Reads what is left of the body, once its content is no longer needed
    /// (a stream after its last event), and drops it: a body read to its
    /// end lets the host keep its connection for the next request, one left
    /// unread closes it. At most 64 KiB and one second are spent on it.
    pub fn finish(&self) {
        let _ = self.read_all(64 * 1024, after(Duration::from_secs(1)));
    }

    /// The rest of the body, at most `max` bytes, by `deadline`.
    pub fn read_all(&self, max: usize, deadline: u64) -> Result<Vec<u8>, FetchError> {
        let mut body = Vec::new();
        while let Some(chunk) = self.next_chunk_by(deadline)? {
            if body.len() + chunk.len() > max {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}
