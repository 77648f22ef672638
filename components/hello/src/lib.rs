//! `hello`: the first spike plugin, written to be copied.
//!
//! | request                    | what it does                                   |
//! |----------------------------|------------------------------------------------|
//! | `GET /hello`               | a greeting (`?name=` to change who is greeted) |
//! | `GET /hello/counter`       | reads the KV counter                           |
//! | `POST /hello/counter`      | adds one to a KV counter and returns it        |
//! | `PUT /hello/files/{name}`  | stores the body as a blob, streamed            |
//! | `GET /hello/files/{name}`  | returns it (with `Range` support, RFC 9110)    |
//!
//! (`HEAD` works wherever `GET` does: the host runs `GET` and sends the
//! headers only.)
//!
//! Writes (`POST`, `PUT`) need a signed-in caller (401 otherwise): a
//! public server must not take anonymous uploads. Its route is `auth =
//! "optional"`, so reads stay open; `WRITE_ACCESS = "anyone"` in the
//! manifest's `[env]` lets anyone write (a server on a private network).
//!
//! Its manifest, `plugins/hello.toml`, grants the KV namespace `hello` and
//! the blob bucket `hello-files`, and bounds what they may hold
//! (`[storage]`); anything else it tried would be refused.

use spike_sdk::access;
use spike_sdk::blob::{Bucket, ByteRange, PutOptions};
use spike_sdk::blob_io::{put_stream, user_content_headers};
use spike_sdk::exports::wasi::http::incoming_handler::Guest;
use spike_sdk::http::{Request, Response, copy, json_string, start_response};
use spike_sdk::kv::Namespace;
use spike_sdk::router::{HttpError, Params, Router};
use spike_sdk::wasi::http::types::{IncomingRequest, OutgoingBody, ResponseOutparam};

/// The KV namespace and blob bucket this plugin's manifest grants.
const KV_NAMESPACE: &str = "hello";
const BUCKET: &str = "hello-files";

struct Hello;

impl Guest for Hello {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        Router::new()
            .get("/hello", |req, _| greet(req))
            .get("/hello/counter", |_, _| read_count())
            .post("/hello/counter", |_, _| may_write().map(|()| count()))
            .put("/hello/files/:name", |req, p| {
                may_write().map(|()| put_file(req, name(p)))
            })
            .streaming("GET", "/hello/files/:name", |req, p, out| {
                get_file(req, name(p), out)
            })
            .serve(request, out);
    }
}

/// Whether this request may write: a signed-in caller, or anyone if the
/// manifest says `WRITE_ACCESS = "anyone"`.
fn may_write() -> Result<(), HttpError> {
    if std::env::var("WRITE_ACCESS").is_ok_and(|v| v == "anyone") {
        return Ok(());
    }
    access::signed_in().map(drop)
}

/// The `:name` of a files route (always there when the route matched).
fn name(params: &Params) -> &str {
    params.get("name").unwrap_or_default()
}

spike_sdk::export!(Hello);

fn greet(req: &Request) -> Response {
    let name = req.query_param("name").unwrap_or_else(|| "world".into());
    Response::text(200, format!("Hello, {name}! This is spike.\n"))
}

/// `kv.increment` is atomic: concurrent requests never lose a count.
fn count() -> Response {
    let result = Namespace::open(KV_NAMESPACE).and_then(|ns| ns.increment("counter", 1));
    match result {
        Ok(n) => Response::json(200, format!("{{\"count\":{n}}}\n")),
        Err(e) => Response::from_error(&e),
    }
}

/// The counter as stored (0 before the first count).
fn read_count() -> Response {
    let result = Namespace::open(KV_NAMESPACE).and_then(|ns| ns.get("counter"));
    match result {
        Ok(value) => {
            let n = value.map_or_else(
                || "0".to_string(),
                |v| String::from_utf8_lossy(&v).into_owned(),
            );
            Response::json(200, format!("{{\"count\":{n}}}\n"))
        }
        Err(e) => Response::from_error(&e),
    }
}

fn check_name(name: &str) -> Result<(), Response> {
    if name.is_empty() || name.contains('/') {
        return Err(Response::error(
            400,
            "bad_name",
            "a file name is one non-empty path segment",
        ));
    }
    Ok(())
}

/// Streams the request body into the bucket: the host copies the bytes,
/// so a file of any size passes through a few kilobytes of guest memory.
/// Past the host's object limit the answer is 413 `too_large`.
fn put_file(req: &Request, name: &str) -> Response {
    if let Err(r) = check_name(name) {
        return r;
    }
    let options = PutOptions {
        content_type: req.header("content-type"),
        metadata: vec![],
    };
    let bucket = match Bucket::open(BUCKET) {
        Ok(b) => b,
        Err(e) => return Response::from_error(&e),
    };
    let Some((body, source)) = req.body_stream() else {
        return Response::error(400, "no_body", "the request has no body to store");
    };
    let stored = put_stream(&bucket, name, &options, &source);
    drop(source);
    drop(body);
    match stored {
        Ok(meta) => Response::json(
            201,
            format!(
                r#"{{"name":{},"size":{},"etag":{}}}"#,
                json_string(&meta.key),
                meta.size,
                json_string(&meta.etag)
            ),
        )
        .header("etag", format!("\"{}\"", meta.etag)),
        Err(e) => e.response(),
    }
}

/// Streams a stored file out, whole or one range.
fn get_file(req: &Request, name: &str, out: ResponseOutparam) {
    if let Err(r) = check_name(name) {
        return r.send(out);
    }
    let bucket = match Bucket::open(BUCKET) {
        Ok(b) => b,
        Err(e) => return Response::from_error(&e).send(out),
    };
    let not_found = || Response::error(404, "not_found", &format!("no file named '{name}'"));
    // A range needs the size to resolve against; a file without one is read
    // whole.
    let range = match req.header("range").and_then(|r| parse_range(&r)) {
        None => None,
        Some(spec) => match bucket.head(name) {
            Ok(Some(meta)) => match spec.resolve(meta.size) {
                Some(r) => Some(r),
                None => return unsatisfiable(meta.size).send(out),
            },
            Ok(None) => return not_found().send(out),
            Err(e) => return Response::from_error(&e).send(out),
        },
    };
    let object = match bucket.get(name, range) {
        Ok(Some(o)) => o,
        Ok(None) => return not_found().send(out),
        // Replaced by a shorter file since the `head` above.
        Err(e) if range.is_some() && e.status() == 400 => {
            let size = bucket.head(name).ok().flatten().map_or(0, |m| m.size);
            return unsatisfiable(size).send(out);
        }
        Err(e) => return Response::from_error(&e).send(out),
    };
    let meta = &object.meta;
    let mut headers = vec![
        (
            "content-length".to_string(),
            object.length.to_string().into_bytes(),
        ),
        (
            "etag".to_string(),
            format!("\"{}\"", meta.etag).into_bytes(),
        ),
        ("accept-ranges".to_string(), b"bytes".to_vec()),
    ];
    // Whatever was uploaded is served inert: its type as stored, never
    // run as a page of this origin.
    headers.extend(user_content_headers(meta.content_type.as_deref()));
    let status = if range.is_some() {
        let last = object.offset + object.length - 1;
        headers.push((
            "content-range".to_string(),
            format!("bytes {}-{last}/{}", object.offset, meta.size).into_bytes(),
        ));
        206
    } else {
        200
    };
    let (resp, body) = start_response(status, &headers);
    ResponseOutparam::set(out, Ok(resp));
    if let Ok(sink) = body.write() {
        // A client that hangs up mid-download ends the copy; nothing to undo.
        let _ = copy(&object.body, &sink);
        drop(sink);
    }
    let _ = OutgoingBody::finish(body, None);
}

/// 416, with the size the client should have asked within.
fn unsatisfiable(size: u64) -> Response {
    Response::error(
        416,
        "range_not_satisfiable",
        &format!("the range is outside the file's {size} bytes"),
    )
    .header("content-range", format!("bytes */{size}"))
}

/// One `Range: bytes=...` range, before the file's size is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeSpec {
    /// `bytes=first-last` or `bytes=first-` (`last` none).
    From { first: u64, last: Option<u64> },
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
}

/// Parses a `Range` header as RFC 9110 section 14.1.2 reads it. A header
/// this plugin does not serve (another unit, several ranges) or cannot
/// read is ignored: the answer is then the whole file, as the RFC allows.
fn parse_range(header: &str) -> Option<RangeSpec> {
    let spec = header.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if first.is_empty() {
        // More digits than a u64 holds still means "the last n bytes",
        // that is all of them.
        return digits(last).then(|| RangeSpec::Suffix(last.parse().unwrap_or(u64::MAX)));
    }
    if !digits(first) || !(last.is_empty() || digits(last)) {
        return None;
    }
    // A first byte past what a u64 holds is past the end of any file.
    let first = first.parse().unwrap_or(u64::MAX);
    // A last byte past the end means "to the end".
    let last = match last {
        "" => None,
        l => Some(l.parse().unwrap_or(u64::MAX)),
    };
    if last.is_some_and(|l| l < first) {
        return None; // invalid, so ignored
    }
    Some(RangeSpec::From { first, last })
}

impl RangeSpec {
    /// The bytes to send of a file of `size` bytes, or `None` when none
    /// of them is in the range (416).
    fn resolve(self, size: u64) -> Option<ByteRange> {
        let (offset, end) = match self {
            RangeSpec::From { first, last } => {
                (first, last.map_or(size, |l| l.saturating_add(1).min(size)))
            }
            RangeSpec::Suffix(n) => (size - n.min(size), size),
        };
        (offset < end).then(|| ByteRange {
            offset,
            length: Some(end - offset),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(header: &str, size: u64) -> Option<Option<(u64, u64)>> {
        parse_range(header).map(|spec| spec.resolve(size).map(|r| (r.offset, r.length.unwrap())))
    }

    #[test]
    fn ranges_resolve_as_rfc_9110_says() {
        // Satisfiable: (offset, length).
        assert_eq!(resolve("bytes=0-99", 1000), Some(Some((0, 100))));
        assert_eq!(resolve("bytes=990-", 1000), Some(Some((990, 10))));
        assert_eq!(resolve("bytes=-10", 1000), Some(Some((990, 10))));
        assert_eq!(resolve("bytes=-5000", 1000), Some(Some((0, 1000))));
        // A last byte past the end, even past u64: to the end.
        assert_eq!(resolve("bytes=990-5000", 1000), Some(Some((990, 10))));
        assert_eq!(
            resolve("bytes=0-18446744073709551615", 1000),
            Some(Some((0, 1000)))
        );
        assert_eq!(
            resolve("bytes=0-99999999999999999999999", 1000),
            Some(Some((0, 1000)))
        );
        // Unsatisfiable: 416.
        assert_eq!(resolve("bytes=1000-", 1000), Some(None));
        assert_eq!(resolve("bytes=18446744073709551615-", 1000), Some(None));
        assert_eq!(resolve("bytes=99999999999999999999-", 1000), Some(None));
        assert_eq!(resolve("bytes=-0", 1000), Some(None));
        assert_eq!(resolve("bytes=0-", 0), Some(None));
        assert_eq!(resolve("bytes=0-0", 0), Some(None));
        assert_eq!(resolve("bytes=-1", 0), Some(None));
        // Ignored (the whole file is sent).
        for header in [
            "bytes=5-1",
            "bytes=0-1,4-5",
            "items=0-1",
            "bytes=a-b",
            "bytes=-",
            "bytes=+1-2",
        ] {
            assert_eq!(resolve(header, 1000), None, "{header}");
        }
    }
}
