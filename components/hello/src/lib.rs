//! `hello`: the first spike plugin, written to be copied.
//!
//! | request                    | what it does                                   |
//! |----------------------------|------------------------------------------------|
//! | `GET /hello`               | a greeting (`?name=` to change who is greeted) |
//! | `POST /hello/counter`      | adds one to a KV counter and returns it        |
//! | `PUT /hello/files/{name}`  | stores the body as a blob, streamed            |
//! | `GET /hello/files/{name}`  | returns it (with `Range: bytes=a-b` support)   |
//!
//! Its manifest, `plugins/hello.toml`, grants the KV namespace `hello` and
//! the blob bucket `hello-files`; anything else it tried would be refused.

use spike_sdk::blob::{Bucket, ByteRange, PutOptions};
use spike_sdk::exports::wasi::http::incoming_handler::Guest;
use spike_sdk::http::{Request, Response, copy, json_string, start_response};
use spike_sdk::kv::Namespace;
use spike_sdk::wasi::http::types::{IncomingRequest, OutgoingBody, ResponseOutparam};

/// The KV namespace and blob bucket this plugin's manifest grants.
const KV_NAMESPACE: &str = "hello";
const BUCKET: &str = "hello-files";

struct Hello;

impl Guest for Hello {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let req = Request::new(request);
        let method = req.method();
        let path = req.path().to_string();
        match (method.as_str(), path.as_str()) {
            ("GET", "/hello") => greet(&req).send(out),
            ("POST", "/hello/counter") => count().send(out),
            ("PUT", p) if p.starts_with("/hello/files/") => put_file(&req, &p[13..]).send(out),
            ("GET", p) if p.starts_with("/hello/files/") => get_file(&req, &p[13..], out),
            _ => Response::error(
                404,
                "not_found",
                &format!("hello has nothing at {method} {path}"),
            )
            .send(out),
        }
    }
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
        Ok(n) => Response::json(200, format!(r#"{{"count":{n}}}"#)),
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
fn put_file(req: &Request, name: &str) -> Response {
    if let Err(r) = check_name(name) {
        return r;
    }
    let options = PutOptions {
        content_type: req.header("content-type"),
        metadata: vec![],
    };
    let writer = match Bucket::open(BUCKET).and_then(|b| b.put(name, &options)) {
        Ok(w) => w,
        Err(e) => return Response::from_error(&e),
    };
    let Ok(sink) = writer.body() else {
        return Response::error(500, "internal", "no upload stream");
    };
    if let Some((body, source)) = req.body_stream() {
        if let Err(e) = copy(&source, &sink) {
            // Dropping the writer without `finish` discards the upload.
            return Response::error(400, "upload_failed", &format!("reading the body: {e:?}"));
        }
        drop(source);
        drop(body);
    }
    drop(sink);
    match spike_sdk::blob::ObjectWriter::finish(writer) {
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
        Err(e) => Response::from_error(&e),
    }
}

/// Streams a stored file out, whole or one `Range: bytes=a-b`.
fn get_file(req: &Request, name: &str, out: ResponseOutparam) {
    if let Err(r) = check_name(name) {
        return r.send(out);
    }
    let bucket = match Bucket::open(BUCKET) {
        Ok(b) => b,
        Err(e) => return Response::from_error(&e).send(out),
    };
    let range = match req.header("range").map(|r| parse_range(&r)) {
        None => None,
        Some(Some(r)) => Some(r),
        Some(None) => {
            return Response::error(416, "bad_range", "only one 'bytes=a-b' range is supported")
                .send(out);
        }
    };
    let object = match bucket.get(name, range) {
        Ok(Some(o)) => o,
        Ok(None) => {
            return Response::error(404, "not_found", &format!("no file named '{name}'")).send(out);
        }
        Err(e) if range.is_some() && e.status() == 400 => {
            return Response::error(416, "bad_range", e.message()).send(out);
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
        (
            "content-type".to_string(),
            meta.content_type
                .clone()
                .unwrap_or_else(|| "application/octet-stream".into())
                .into_bytes(),
        ),
    ];
    let status = if range.is_some() {
        let last = (object.offset + object.length).saturating_sub(1);
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

/// `bytes=a-b`, `bytes=a-` or `bytes=-n` (the last n bytes need the size,
/// so they are read as "from a" only when a is given).
fn parse_range(header: &str) -> Option<ByteRange> {
    let spec = header.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    let offset: u64 = start.trim().parse().ok()?;
    let length = match end.trim() {
        "" => None,
        e => {
            let end: u64 = e.parse().ok()?;
            Some(end.checked_sub(offset)? + 1)
        }
    };
    Some(ByteRange { offset, length })
}
