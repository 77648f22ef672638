//! Outgoing HTTP requests from a plugin, with a deadline for the whole
//! exchange and a cap on the response body: a slow or endless upstream
//! costs at most `timeout`, and a huge one at most `max_body` bytes.
//!
//! The host lets a plugin reach only the hosts its manifest grants
//! (`grants.outbound`); anything else fails with
//! [`FetchError::Refused`].
//!
//! ```ignore
//! let got = spike_sdk::client::Fetch::get("https://example.com/keys.json")?.send()?;
//! assert_eq!(got.status, 200);
//! ```

use std::time::Duration;

use crate::wasi::clocks::monotonic_clock;
use crate::wasi::http::outgoing_handler;
use crate::wasi::http::types::{
    ErrorCode, Fields, FutureIncomingResponse, IncomingResponse, Method, OutgoingBody,
    OutgoingRequest, RequestOptions, Scheme,
};
use crate::wasi::io::poll::{Pollable, poll};
use crate::wasi::io::streams::StreamError;

/// An outgoing request to build and send.
pub struct Fetch {
    method: Method,
    scheme: Scheme,
    authority: String,
    path_with_query: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    /// The whole exchange: connecting, the response and its body.
    pub timeout: Duration,
    /// The longest response body read; longer is [`FetchError::TooLarge`].
    pub max_body: usize,
}

/// A response, its body read whole.
#[derive(Debug)]
pub struct Fetched {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Fetched {
    /// The first value of header `name` (lower case), if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// The URL is not `http(s)://authority/path`.
    InvalidUrl(String),
    /// The host refused the request (not granted) or it failed on the way.
    Refused(String),
    /// The deadline passed.
    Timeout,
    /// The body is longer than `max_body`.
    TooLarge,
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::InvalidUrl(url) => write!(f, "not an http(s) URL: {url}"),
            FetchError::Refused(why) => write!(f, "the request failed: {why}"),
            FetchError::Timeout => f.write_str("no complete response in time"),
            FetchError::TooLarge => f.write_str("the response body is too large"),
        }
    }
}

impl Fetch {
    /// A `GET` of `url`, with a 10 s deadline and a 1 MiB body cap.
    pub fn get(url: &str) -> Result<Self, FetchError> {
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
            method: Method::Get,
            scheme,
            authority: authority.into(),
            path_with_query: path.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: Duration::from_secs(10),
            max_body: 1024 * 1024,
        })
    }

    pub fn method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers.push((name.into(), value.as_ref().to_vec()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Sends the request and reads the response whole, or fails by the
    /// deadline.
    pub fn send(self) -> Result<Fetched, FetchError> {
        let deadline = monotonic_clock::now().saturating_add(self.timeout.as_nanos() as u64);
        let fields = Fields::from_list(&self.headers)
            .map_err(|e| FetchError::Refused(format!("bad header: {e:?}")))?;
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
        // by the deadline even if this guest stops polling.
        let options = RequestOptions::new();
        let ns = self.timeout.as_nanos() as u64;
        let _ = options.set_connect_timeout(Some(ns));
        let _ = options.set_first_byte_timeout(Some(ns));
        let _ = options.set_between_bytes_timeout(Some(ns));
        let pending = outgoing_handler::handle(request, Some(options)).map_err(refused)?;
        if !self.body.is_empty() {
            let stream = body.write().map_err(|()| invalid("body"))?;
            crate::http::write_all(&stream, &self.body)
                .map_err(|e| FetchError::Refused(format!("writing the body: {e:?}")))?;
        }
        OutgoingBody::finish(body, None).map_err(refused)?;
        let response = wait_response(&pending, deadline)?;
        read(response, deadline, self.max_body)
    }
}

fn refused(e: ErrorCode) -> FetchError {
    match e {
        ErrorCode::ConnectionTimeout | ErrorCode::ConnectionReadTimeout => FetchError::Timeout,
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
                .map_err(refused);
        }
        if !wait(&pending.subscribe(), deadline) {
            return Err(FetchError::Timeout);
        }
    }
}

fn read(response: IncomingResponse, deadline: u64, max_body: usize) -> Result<Fetched, FetchError> {
    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    let incoming = response
        .consume()
        .map_err(|()| FetchError::Refused("body taken twice".into()))?;
    let stream = incoming
        .stream()
        .map_err(|()| FetchError::Refused("body taken twice".into()))?;
    let mut body = Vec::new();
    loop {
        match stream.read(64 * 1024) {
            Ok(chunk) if chunk.is_empty() => {
                if !wait(&stream.subscribe(), deadline) {
                    return Err(FetchError::Timeout);
                }
            }
            Ok(chunk) => {
                if body.len() + chunk.len() > max_body {
                    return Err(FetchError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(FetchError::Refused(e.to_debug_string()));
            }
        }
    }
    Ok(Fetched {
        status,
        headers,
        body,
    })
}
