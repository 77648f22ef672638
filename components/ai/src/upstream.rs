//! One HTTP exchange with a provider, through the host's outgoing HTTP
//! (which lets the plugin reach only the hosts its manifest grants).
//!
//! Unlike `spike_sdk::client::Fetch`, the response body is handed out as it
//! arrives, so that a stream can be passed on event by event: every wait
//! has a deadline, and a wait for the next bytes of a stream has the idle
//! limit.

use spike_sdk::wasi::clocks::monotonic_clock;
use spike_sdk::wasi::http::outgoing_handler;
use spike_sdk::wasi::http::types::{
    ErrorCode, Fields, FutureIncomingResponse, IncomingBody, Method, OutgoingBody, OutgoingRequest,
    RequestOptions, Scheme, http_error_code,
};
use spike_sdk::wasi::io::poll::{Pollable, poll};
use spike_sdk::wasi::io::streams::{InputStream, OutputStream, StreamError};

/// Nanoseconds on the monotonic clock.
pub type Instant = u64;

pub fn now() -> Instant {
    monotonic_clock::now()
}

pub fn after_ms(ms: u64) -> Instant {
    now().saturating_add(ms.saturating_mul(1_000_000))
}

/// Milliseconds from now until `deadline` (0 if it has passed).
pub fn ms_until(deadline: Instant) -> u64 {
    deadline.saturating_sub(now()) / 1_000_000
}

/// Sleeps for `ms`.
pub fn sleep_ms(ms: u64) {
    if ms > 0 {
        monotonic_clock::subscribe_duration(ms.saturating_mul(1_000_000)).block();
    }
}

/// Why an exchange produced no (more) response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The host refused the request: the URL's host is not granted.
    Denied(String),
    /// Connecting or sending failed (refused, reset, DNS).
    Connection(String),
    /// The deadline (or the idle limit of a stream) passed.
    Timeout,
    /// The body is longer than allowed.
    TooLarge,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Denied(why) => write!(f, "the host refused the request: {why}"),
            Failure::Connection(why) => write!(f, "the connection to the provider failed: {why}"),
            Failure::Timeout => f.write_str("the provider did not answer in time"),
            Failure::TooLarge => f.write_str("the provider's answer is too large"),
        }
    }
}

fn failure(e: ErrorCode) -> Failure {
    match e {
        ErrorCode::ConnectionTimeout | ErrorCode::ConnectionReadTimeout => Failure::Timeout,
        ErrorCode::HttpRequestDenied => {
            Failure::Denied("the manifest does not grant this host (grants.outbound)".into())
        }
        e => Failure::Connection(format!("{e:?}")),
    }
}

/// A request to send.
pub struct Outgoing<'a> {
    pub method: Method,
    pub url: &'a str,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// What the request's body is.
pub enum Body<'a> {
    Bytes(&'a [u8]),
    /// `prefix`, then everything `rest` yields (copied by the host).
    Stream {
        prefix: &'a [u8],
        rest: &'a InputStream,
    },
}

/// A response whose body is still to be read.
pub struct Incoming {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, Vec<u8>)>,
    // Field order: the stream is dropped before the body it came from.
    stream: InputStream,
    _body: IncomingBody,
}

/// Splits `url` into scheme, authority and path.
fn split_url(url: &str) -> Result<(Scheme, &str, &str), Failure> {
    let bad = || Failure::Denied(format!("not an http(s) URL: {url}"));
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else {
        return Err(bad());
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(bad());
    }
    Ok((scheme, authority, path))
}

/// Sends `request` with `body`, and waits for the response head until
/// `deadline`. `idle_ms` bounds each later wait of the host for the body.
pub fn send(
    request: Outgoing<'_>,
    body: Body<'_>,
    deadline: Instant,
    idle_ms: u64,
) -> Result<Incoming, Failure> {
    let (scheme, authority, path) = split_url(request.url)?;
    let fields = Fields::from_list(&request.headers)
        .map_err(|e| Failure::Denied(format!("a header cannot be sent: {e:?}")))?;
    let outgoing = OutgoingRequest::new(fields);
    let refused = |what: &str| Failure::Denied(format!("the {what} was refused"));
    outgoing
        .set_method(&request.method)
        .map_err(|()| refused("method"))?;
    outgoing
        .set_scheme(Some(&scheme))
        .map_err(|()| refused("scheme"))?;
    outgoing
        .set_authority(Some(authority))
        .map_err(|()| refused("authority"))?;
    outgoing
        .set_path_with_query(Some(path))
        .map_err(|()| refused("path"))?;
    let out_body = outgoing.body().map_err(|()| refused("body"))?;
    // The host's own limits too: a connection it holds ends by them even
    // while this guest is not polling.
    let options = RequestOptions::new();
    let head_ns = ms_until(deadline).max(1) * 1_000_000;
    let _ = options.set_connect_timeout(Some(head_ns));
    let _ = options.set_first_byte_timeout(Some(head_ns));
    // A second more than the guest's own idle limit, which is checked first
    // and answered with the provider's error event.
    let _ = options.set_between_bytes_timeout(Some((idle_ms + 1_000) * 1_000_000));
    let pending = outgoing_handler::handle(outgoing, Some(options)).map_err(failure)?;
    write_body(&out_body, body)?;
    OutgoingBody::finish(out_body, None).map_err(failure)?;
    let response = wait_response(&pending, deadline)?;
    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    let body = response
        .consume()
        .map_err(|()| Failure::Connection("the response body was taken twice".into()))?;
    let stream = body
        .stream()
        .map_err(|()| Failure::Connection("the response body was taken twice".into()))?;
    Ok(Incoming {
        status,
        headers,
        stream,
        _body: body,
    })
}

fn write_body(out_body: &OutgoingBody, body: Body<'_>) -> Result<(), Failure> {
    let stream = out_body
        .write()
        .map_err(|()| Failure::Connection("the request body cannot be written".into()))?;
    let written = |r: Result<(), StreamError>| {
        r.map_err(|e| Failure::Connection(format!("sending the request body: {e:?}")))
    };
    match body {
        Body::Bytes([]) => {}
        Body::Bytes(bytes) => written(spike_sdk::http::write_all(&stream, bytes))?,
        Body::Stream { prefix, rest } => {
            written(spike_sdk::http::write_all(&stream, prefix))?;
            splice_all(rest, &stream)?;
        }
    }
    Ok(())
}

/// Copies `input` into `output` until `input` ends (the host moves the
/// bytes; they never enter this guest's memory).
fn splice_all(input: &InputStream, output: &OutputStream) -> Result<(), Failure> {
    loop {
        match output.blocking_splice(input, 1 << 20) {
            Ok(_) => {}
            Err(StreamError::Closed) => return Ok(()),
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(Failure::Connection(format!(
                    "streaming the request body: {}",
                    e.to_debug_string()
                )));
            }
        }
    }
}

/// Waits for `pollable` until `deadline`; false if the deadline came first.
pub fn wait(pollable: &Pollable, deadline: Instant) -> bool {
    let timer = monotonic_clock::subscribe_instant(deadline);
    poll(&[pollable, &timer]).contains(&0)
}

fn wait_response(
    pending: &FutureIncomingResponse,
    deadline: Instant,
) -> Result<spike_sdk::wasi::http::types::IncomingResponse, Failure> {
    loop {
        if let Some(got) = pending.get() {
            return got
                .map_err(|()| Failure::Connection("the response was taken twice".into()))?
                .map_err(failure);
        }
        if !wait(&pending.subscribe(), deadline) {
            return Err(Failure::Timeout);
        }
    }
}

impl Incoming {
    /// The first value of header `name` (lower case), if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// The next bytes of the body, `None` at its end; fails if nothing
    /// comes by `deadline`.
    pub fn next_chunk(&self, deadline: Instant) -> Result<Option<Vec<u8>>, Failure> {
        loop {
            match self.stream.read(64 * 1024) {
                Ok(chunk) if chunk.is_empty() => {
                    if !wait(&self.stream.subscribe(), deadline) {
                        return Err(Failure::Timeout);
                    }
                }
                Ok(chunk) => return Ok(Some(chunk)),
                Err(StreamError::Closed) => return Ok(None),
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(match http_error_code(&e) {
                        Some(code) => failure(code),
                        None => Failure::Connection(e.to_debug_string()),
                    });
                }
            }
        }
    }

    /// The whole body, at most `max` bytes, by `deadline`.
    pub fn read_all(&self, max: usize, deadline: Instant) -> Result<Vec<u8>, Failure> {
        let mut body = Vec::new();
        while let Some(chunk) = self.next_chunk(deadline)? {
            if body.len() + chunk.len() > max {
                return Err(Failure::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// How long the provider asks to wait before trying again: OpenAI's
    /// `retry-after-ms`, or `Retry-After` in seconds.
    pub fn retry_after_ms(&self) -> Option<u64> {
        if let Some(ms) = self
            .header("retry-after-ms")
            .and_then(|v| v.trim().parse().ok())
        {
            return Some(ms);
        }
        let secs: f64 = self.header("retry-after")?.trim().parse().ok()?;
        (secs.is_finite() && secs >= 0.0).then_some((secs * 1000.0) as u64)
    }
}
