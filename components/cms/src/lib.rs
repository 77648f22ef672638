//! `cms`: documents over HTTP, as the seed system's CMS served them.
//!
//! | request                        | who                     | what                                  |
//! |--------------------------------|-------------------------|---------------------------------------|
//! | `GET /my-cms/{path}`           | the signed-in caller    | their document (`?version=n`: an earlier one) |
//! | `GET /my-cms/{folder}/`        | the signed-in caller    | their folder as JSON, paged (`?cursor=`, `?limit=`) |
//! | `PUT`, `DELETE /my-cms/{path}` | the signed-in caller    | write or remove their document        |
//! | `GET /live-cms/...`            | anyone                  | the public documents                  |
//! | `PUT`, `DELETE /live-cms/...`  | any signed-in caller    | write or remove a public document     |
//!
//! Every `GET` has an `ETag` (the body's SHA-256) and answers 304 to a
//! matching `If-None-Match`. `PUT` and `DELETE` honour `If-Match` (412 on
//! a mismatch) and `PUT` honours `If-None-Match: *` (create only), checked
//! while no other writer of the document runs, so two writers with the same
//! `If-Match` cannot both win. The content type is kept; a JSON document
//! must parse. See [`store`] for where documents are kept.
//!
//! Settings (the manifest's `[env]`): `MAX_VERSIONS` (versions kept,
//! default 10), `BLOB_THRESHOLD_BYTES` (bodies above it go to blob storage,
//! default 65536). The largest document is the route's `max_body_mib`.

mod path;
mod store;

use sha2::{Digest, Sha256};
use spike_sdk::Error;
use spike_sdk::access;
use spike_sdk::blob::{Bucket, ObjectWriter, PutOptions};
use spike_sdk::blob_io::user_content_headers;
use spike_sdk::exports::wasi::http::incoming_handler::Guest;
use spike_sdk::http::{CopyError, Request, Response, copy, json_string, start_response, write_all};
use spike_sdk::kv::Namespace;
use spike_sdk::wasi::http::types::{IncomingRequest, OutgoingBody, ResponseOutparam};
use spike_sdk::wasi::io::streams::{InputStream, StreamError};
use spike_sdk::wasi::random::random;

use crate::path::{DocPath, Space};
use crate::store::{Head, Lock, LockError, Meta, Version};

struct Cms;

impl Guest for Cms {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let req = Request::new(request);
        match serve(&req) {
            Ok(Reply::Response(r)) | Err(r) => r.send(out),
            Ok(Reply::Stream(object, headers)) => stream(object, &headers, out),
        }
    }
}

spike_sdk::export!(Cms);

/// What a request gets: a response in memory, or a blob body to stream.
enum Reply {
    Response(Response),
    Stream(spike_sdk::blob::ObjectBody, Vec<(String, Vec<u8>)>),
}

type Result<T> = std::result::Result<T, Response>;

struct Settings {
    max_versions: usize,
    blob_threshold: usize,
}

impl Settings {
    fn from_env() -> Result<Self> {
        let number = |name: &str, default: usize| -> Result<usize> {
            match std::env::var(name) {
                Err(_) => Ok(default),
                Ok(v) => v.trim().parse().map_err(|_| {
                    eprintln!("cms: {name} must be a whole number, not {v:?}");
                    Response::error(500, "misconfigured", "the CMS is misconfigured")
                }),
            }
        };
        Ok(Self {
            max_versions: number("MAX_VERSIONS", 10)?.clamp(1, store::MAX_VERSIONS),
            blob_threshold: number("BLOB_THRESHOLD_BYTES", 64 * 1024)?.min(16 << 20),
        })
    }
}

fn serve(req: &Request) -> Result<Reply> {
    let (space, rest, public_read) = if let Some(rest) = req.path().strip_prefix("/my-cms") {
        let caller = access::signed_in()?;
        (Space::of(&caller), rest, false)
    } else if let Some(rest) = req.path().strip_prefix("/live-cms") {
        (Space::live(), rest, true)
    } else {
        return Err(Response::error(
            404,
            "not_found",
            "the CMS serves /my-cms/ and /live-cms/",
        ));
    };
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    let doc = path::parse(rest).map_err(|why| Response::error(400, "bad_path", why))?;
    let method = req.method();
    if public_read && method != "GET" && method != "HEAD" {
        access::signed_in()?;
    }
    let settings = Settings::from_env()?;
    let ns = Namespace::open(store::NAMESPACE).map_err(storage)?;
    let operation = match (method.as_str(), doc.is_folder) {
        ("GET" | "HEAD", true) => "list",
        ("GET" | "HEAD", false) => "read",
        ("PUT", _) => "write",
        ("DELETE", _) => "delete",
        _ => "other",
    };
    let space_kind = if public_read { "live" } else { "private" };
    let labels = [("operation", operation), ("space", space_kind)];
    let mut span = spike_sdk::telemetry::Span::start("cms");
    span.attr("cms.operation", operation)
        .attr("cms.space", space_kind);
    let reply = dispatch(req, &ns, &space, &doc, &settings);
    let outcome = match &reply {
        Ok(_) => "ok",
        Err(r) if r.status() < 500 => "refused",
        Err(_) => "failed",
    };
    if outcome == "failed" {
        span.error("the operation failed");
    }
    drop(span);
    let labels = [labels[0], labels[1], ("outcome", outcome)];
    spike_sdk::telemetry::count("cms_operations", 1, &labels);
    reply
}

fn dispatch(
    req: &Request,
    ns: &Namespace,
    space: &Space,
    doc: &DocPath,
    settings: &Settings,
) -> Result<Reply> {
    let method = req.method();
    match (method.as_str(), doc.is_folder) {
        ("GET" | "HEAD", true) => list(req, ns, space, doc).map(Reply::Response),
        ("GET" | "HEAD", false) => get(req, ns, space, doc),
        ("PUT", false) => put(req, ns, space, doc, settings).map(Reply::Response),
        ("DELETE", false) => delete(req, ns, space, doc).map(Reply::Response),
        ("PUT" | "DELETE", true) => Err(Response::error(
            400,
            "bad_path",
            "a folder cannot be written; name a document",
        )),
        _ => Err(
            Response::error(405, "method_not_allowed", "use GET, PUT or DELETE")
                .header("allow", "GET, HEAD, PUT, DELETE"),
        ),
    }
}

fn get(req: &Request, ns: &Namespace, space: &Space, doc: &DocPath) -> Result<Reply> {
    let head = store::head(ns, space, &doc.path)
        .map_err(storage)?
        .ok_or_else(|| not_found(doc))?;
    let meta = &head.meta;
    let version = match req.query_param("version") {
        None => meta.version,
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| Response::error(400, "bad_version", "?version= takes a version number"))?,
    };
    let Some(entry) = meta.find(version) else {
        return Err(Response::error(
            404,
            "no_such_version",
            &format!("'{}' keeps versions {:?}", doc.path, meta.numbers()),
        ));
    };
    let current = version == meta.version;
    // An earlier version's ETag is not kept: only the current one answers
    // conditional requests.
    if current && matches_any(req.header("if-none-match"), &meta.etag) {
        return Ok(Reply::Response(
            Response::new(304).header("etag", meta.etag_header()),
        ));
    }
    // A document is served inert whatever its type: a signed-in writer's
    // HTML must not run as a page of this origin for its readers.
    let mut headers = user_content_headers(Some(&meta.content_type));
    headers.extend([
        (
            "x-cms-version".to_string(),
            version.to_string().into_bytes(),
        ),
        ("cache-control".to_string(), b"no-cache".to_vec()),
    ]);
    if current {
        headers.push(("etag".to_string(), meta.etag_header().into_bytes()));
    }
    let in_memory = |body: Vec<u8>| {
        let mut resp = Response::new(200).body(body);
        for (k, v) in &headers {
            resp = resp.header(k, v);
        }
        Reply::Response(resp)
    };
    let Some(upload) = &entry.blob else {
        if current {
            return Ok(in_memory(head.body));
        }
        let body = ns
            .get(&path::version_key(space, &doc.path, version))
            .map_err(storage)?
            // Pruned by a writer since the head was read.
            .ok_or_else(|| not_found(doc))?;
        return Ok(in_memory(body));
    };
    let bucket = Bucket::open(store::BUCKET).map_err(storage)?;
    let object = bucket
        .get(&path::blob_key(space, &doc.path, upload), None)
        .map_err(storage)?
        .ok_or_else(|| not_found(doc))?;
    headers.push((
        "content-length".into(),
        object.length.to_string().into_bytes(),
    ));
    Ok(Reply::Stream(object, headers))
}

fn stream(
    object: spike_sdk::blob::ObjectBody,
    headers: &[(String, Vec<u8>)],
    out: ResponseOutparam,
) {
    let (resp, body) = start_response(200, headers);
    ResponseOutparam::set(out, Ok(resp));
    if let Ok(sink) = body.write() {
        // A client that hangs up mid-download ends the copy; nothing to undo.
        let _ = copy(&object.body, &sink);
        drop(sink);
    }
    let _ = OutgoingBody::finish(body, None);
}

fn put(
    req: &Request,
    ns: &Namespace,
    space: &Space,
    doc: &DocPath,
    settings: &Settings,
) -> Result<Response> {
    let content_type = req
        .header("content-type")
        .unwrap_or_else(|| "application/octet-stream".into());
    if content_type.len() > 200 || content_type.chars().any(|c| c.is_control()) {
        return Err(Response::error(
            400,
            "bad_content_type",
            "the content type is malformed",
        ));
    }
    let Some((incoming, source)) = req.body_stream() else {
        return Err(Response::error(
            400,
            "body_incomplete",
            "the request body cannot be read",
        ));
    };
    // Up to the threshold the body is read here and kept in KV; past it,
    // it streams to blob storage.
    let (prefix, ended) = read_up_to(&source, settings.blob_threshold + 1)?;
    let small = ended && prefix.len() <= settings.blob_threshold;
    if small
        && is_json(&content_type)
        && serde_json::from_slice::<serde_json::Value>(&prefix).is_err()
    {
        return Err(Response::error(
            400,
            "invalid_json",
            "the body is not valid JSON",
        ));
    }

    // A large body goes to blob storage before this writer takes its turn:
    // the turn covers only the check and the head.
    let (etag, size, upload) = if small {
        (
            hex::encode(Sha256::digest(&prefix)),
            prefix.len() as u64,
            None,
        )
    } else {
        let upload = format!("{:016x}", random::get_random_u64());
        let object = upload_blob(space, doc, &upload, &content_type, &prefix, &source)?;
        (object.etag, object.size, Some(upload))
    };
    drop(source);
    drop(incoming);
    let discard_upload = || {
        if let (Some(upload), Ok(bucket)) = (&upload, Bucket::open(store::BUCKET)) {
            let _ = bucket.delete(&path::blob_key(space, &doc.path, upload));
        }
    };

    let turn = take_turn(ns, space, doc).inspect_err(|_| discard_upload())?;
    let old = store::head(ns, space, &doc.path).map_err(storage)?;
    if let Err(refusal) = check_preconditions(req, old.as_ref().map(|h| &h.meta), true) {
        discard_upload();
        return Err(refusal);
    }
    let version = old.as_ref().map_or(1, |h| h.meta.version + 1);
    // Keep the replaced version's body if it was in the head (a blob one
    // stays where it is) before the head moves on.
    let mut versions = old
        .as_ref()
        .map_or_else(Vec::new, |h| h.meta.versions.clone());
    if let Some(Head { meta, body }) = &old
        && meta.current().blob.is_none()
        && settings.max_versions > 1
    {
        let options = spike_sdk::kv::SetOptions {
            ttl_ms: None,
            metadata: None,
        };
        ns.set(
            &path::version_key(space, &doc.path, meta.version),
            body,
            &options,
        )
        .map_err(storage)?;
    }
    versions.push(Version {
        n: version,
        blob: upload.clone(),
    });
    let pruned: Vec<Version> = versions
        .drain(..versions.len().saturating_sub(settings.max_versions))
        .collect();
    let meta = Meta {
        version,
        etag,
        content_type,
        size,
        updated_at_ms: spike_sdk::now_ms(),
        versions,
    };
    let inline: &[u8] = if small { &prefix } else { &[] };
    if let Err(e) = store::write_head(ns, space, &doc.path, &meta, inline) {
        discard_upload();
        return Err(storage(e));
    }
    drop(turn);
    remove_versions(ns, space, &doc.path, &pruned);

    let status = if old.is_some() { 200 } else { 201 };
    Ok(Response::json(
        status,
        format!(
            r#"{{"path":{},"etag":{},"version":{version},"size":{size}}}"#,
            json_string(&doc.path),
            json_string(&meta.etag_header()),
        ),
    )
    .header("etag", meta.etag_header())
    .header("x-cms-version", version.to_string()))
}

/// Streams `prefix` and the rest of `source` into a new blob object.
fn upload_blob(
    space: &Space,
    doc: &DocPath,
    upload: &str,
    content_type: &str,
    prefix: &[u8],
    source: &InputStream,
) -> Result<spike_sdk::blob::ObjectMeta> {
    let bucket = Bucket::open(store::BUCKET).map_err(storage)?;
    let options = PutOptions {
        content_type: Some(content_type.into()),
        metadata: Vec::new(),
    };
    let writer = bucket
        .put(&path::blob_key(space, &doc.path, upload), &options)
        .map_err(storage)?;
    let sink = writer.body().map_err(storage)?;
    let written = write_all(&sink, prefix)
        .map_err(CopyError::Write)
        .and_then(|()| copy(source, &sink).map(|_| ()));
    drop(sink);
    match written {
        // Dropping the writer unfinished stores nothing.
        Err(CopyError::Read(_)) => Err(Response::error(
            400,
            "body_incomplete",
            "the request body ended before it was complete",
        )),
        // A write that failed (past the object limit, say) fails `finish`
        // with the reason.
        Ok(()) | Err(CopyError::Write(_)) => ObjectWriter::finish(writer).map_err(storage),
    }
}

fn delete(req: &Request, ns: &Namespace, space: &Space, doc: &DocPath) -> Result<Response> {
    let _turn = take_turn(ns, space, doc)?;
    let old = store::head(ns, space, &doc.path)
        .map_err(storage)?
        .ok_or_else(|| not_found(doc))?;
    check_preconditions(req, Some(&old.meta), false)?;
    ns.delete(&path::head_key(space, &doc.path))
        .map_err(storage)?;
    remove_versions(ns, space, &doc.path, &old.meta.versions);
    Ok(Response::new(204))
}

/// Removes the bodies of `versions`, wherever they are. Best effort: once
/// the head no longer names them, nothing reads them.
fn remove_versions(ns: &Namespace, space: &Space, path: &str, versions: &[Version]) {
    let bucket = Bucket::open(store::BUCKET).ok();
    for v in versions {
        match (&v.blob, &bucket) {
            (Some(upload), Some(bucket)) => {
                let _ = bucket.delete(&path::blob_key(space, path, upload));
            }
            _ => {
                let _ = ns.delete(&path::version_key(space, path, v.n));
            }
        }
    }
}

fn list(req: &Request, ns: &Namespace, space: &Space, doc: &DocPath) -> Result<Response> {
    let limit = match req.query_param("limit") {
        None => 100,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=1000).contains(l))
            .ok_or_else(|| Response::error(400, "bad_limit", "?limit= is 1 to 1000"))?,
    };
    let prefix = path::folder_prefix(space, &doc.path);
    let page = ns
        .list(&prefix, req.query_param("cursor").as_deref(), limit)
        .map_err(storage)?;
    let mut entries = Vec::new();
    let mut last_folder: Option<String> = None;
    for key in page.keys {
        let name = &key.name[prefix.len()..];
        match name.split_once('/') {
            // Deeper down: its folder, once.
            Some((folder, _)) => {
                if last_folder.as_deref() != Some(folder) {
                    entries.push(format!(
                        r#"{{"name":{},"type":"folder"}}"#,
                        json_string(&format!("{folder}/"))
                    ));
                    last_folder = Some(folder.to_string());
                }
            }
            None => {
                let Some(meta) = key.metadata.as_deref().and_then(Meta::from_json) else {
                    continue;
                };
                entries.push(format!(
                    r#"{{"name":{},"type":"document","etag":{},"version":{},"size":{},"content_type":{},"updated_at_ms":{}}}"#,
                    json_string(name),
                    json_string(&meta.etag_header()),
                    meta.version,
                    meta.size,
                    json_string(&meta.content_type),
                    meta.updated_at_ms
                ));
            }
        }
    }
    let cursor = page.cursor.map_or("null".into(), |c| json_string(&c));
    Ok(Response::json(
        200,
        format!(
            r#"{{"path":{},"entries":[{}],"cursor":{cursor}}}"#,
            json_string(&doc.path),
            entries.join(",")
        ),
    )
    .header("cache-control", "no-cache"))
}

/// `If-Match` and `If-None-Match` against the document as it is now
/// (`None`: absent). `writing`: a `PUT`, where `If-None-Match: *` means
/// create only.
fn check_preconditions(req: &Request, current: Option<&Meta>, writing: bool) -> Result<()> {
    let failed = |why: &str| Response::error(412, "precondition_failed", why);
    if let Some(if_match) = req.header("if-match") {
        let ok = current.is_some_and(|m| matches_any(Some(if_match), &m.etag));
        if !ok {
            return Err(failed("the document is not the version If-Match names"));
        }
    }
    if writing
        && let Some(none_match) = req.header("if-none-match")
        && let Some(m) = current
        && (none_match.trim() == "*" || matches_any(Some(none_match), &m.etag))
    {
        return Err(failed("the document exists (If-None-Match)"));
    }
    Ok(())
}

/// Whether an `If-Match` / `If-None-Match` value names `etag` (or is `*`).
/// Weak tags compare by their opaque part, as RFC 9110 allows for these.
fn matches_any(header: Option<String>, etag: &str) -> bool {
    header.is_some_and(|h| {
        h.split(',').any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.trim_start_matches("W/").trim_matches('"') == etag
        })
    })
}

/// This writer's turn on the document, or 503 after a wait.
fn take_turn<'a>(ns: &'a Namespace, space: &Space, doc: &DocPath) -> Result<Lock<'a>> {
    Lock::take(ns, space, &doc.path).map_err(|e| match e {
        LockError::Busy => Response::error(
            503,
            "busy",
            "another write to this document is taking long; try again",
        )
        .header("retry-after", "1"),
        LockError::Storage(e) => storage(e),
    })
}

/// Reads up to `limit` bytes; true if the stream ended within them.
fn read_up_to(source: &InputStream, limit: usize) -> Result<(Vec<u8>, bool)> {
    let mut out = Vec::new();
    while out.len() < limit {
        match source.blocking_read((limit - out.len()).min(64 * 1024) as u64) {
            Ok(chunk) => out.extend_from_slice(&chunk),
            Err(StreamError::Closed) => return Ok((out, true)),
            Err(StreamError::LastOperationFailed(_)) => {
                return Err(Response::error(
                    400,
                    "body_incomplete",
                    "the request body ended before it was complete",
                ));
            }
        }
    }
    Ok((out, false))
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

fn not_found(doc: &DocPath) -> Response {
    Response::error(404, "not_found", &format!("no document at '{}'", doc.path))
}

fn storage(e: Error) -> Response {
    Response::from_error(&e)
}
