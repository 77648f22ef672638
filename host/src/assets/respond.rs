//! Answers made from a snapshot: a file held in memory in the encoding
//! the client accepts or the range it asks, the service worker's files,
//! and conditional requests.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Request, StatusCode, header};

use super::snapshot::{InMemory, Snapshot};
use crate::server::errors::ApiError;

/// A file in the folder that turns the service worker's kill switch on.
const KILL_SWITCH_FILE: &str = "sw-kill-switch";

/// A file kept in memory: the best encoding the client accepts, or the
/// range it asks of the plain bytes.
pub(super) fn from_memory(
    req: &Request<Body>,
    held: &InMemory,
    etag: &str,
    cache_control: &'static str,
) -> Response {
    let accepts = |coding: &str| {
        req.headers()
            .get_all(header::ACCEPT_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|item| {
                let mut parts = item.split(';');
                let name = parts.next().unwrap_or("").trim();
                let refused = parts.any(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .and_then(|q| q.trim().parse::<f32>().ok())
                        == Some(0.0)
                });
                name.eq_ignore_ascii_case(coding) && !refused
            })
    };
    let (status, body, encoding, range) = match (&held.br, &held.gz) {
        (Some(br), _) if accepts("br") => (StatusCode::OK, br.clone(), Some("br"), None),
        (_, Some(gz)) if accepts("gzip") => (StatusCode::OK, gz.clone(), Some("gzip"), None),
        _ => {
            let len = held.identity.len() as u64;
            match req
                .headers()
                .get(header::RANGE)
                .and_then(|r| r.to_str().ok())
            {
                None => (StatusCode::OK, held.identity.clone(), None, None),
                Some(spec) => match byte_range(spec, len) {
                    RangeAnswer::Whole => (StatusCode::OK, held.identity.clone(), None, None),
                    RangeAnswer::Part(first, last) => (
                        StatusCode::PARTIAL_CONTENT,
                        held.identity.slice(first as usize..=last as usize),
                        None,
                        Some(format!("bytes {first}-{last}/{len}")),
                    ),
                    RangeAnswer::Unsatisfiable => {
                        let mut resp = ApiError::new(
                            StatusCode::RANGE_NOT_SATISFIABLE,
                            "range_not_satisfiable",
                            format!("the range is outside the file's {len} bytes"),
                        )
                        .into_response();
                        if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                            resp.headers_mut().insert(header::CONTENT_RANGE, v);
                        }
                        return resp;
                    }
                },
            }
        }
    };
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&held.content_type) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    if let Ok(v) = HeaderValue::from_str(&encoded_etag(etag, encoding)) {
        headers.insert(header::ETAG, v);
    }
    if held.br.is_some() || held.gz.is_some() {
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    match encoding {
        Some(coding) => {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding));
        }
        None => {
            headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        }
    }
    if let Some(range) = range.and_then(|r| HeaderValue::from_str(&r).ok()) {
        headers.insert(header::CONTENT_RANGE, range);
    }
    resp
}

/// What a `Range` header asks of a file of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RangeAnswer {
    /// No single byte range this server answers: the whole file (a server
    /// may ignore a range it does not support, RFC 9110 14.2).
    Whole,
    /// Bytes `first..=last`.
    Part(u64, u64),
    /// A range that starts past the end.
    Unsatisfiable,
}

pub(crate) fn byte_range(spec: &str, len: u64) -> RangeAnswer {
    let Some(set) = spec.trim().strip_prefix("bytes=") else {
        return RangeAnswer::Whole;
    };
    if set.contains(',') {
        return RangeAnswer::Whole;
    }
    let Some((first, last)) = set.trim().split_once('-') else {
        return RangeAnswer::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let parsed = |n: &str| n.parse::<u64>().ok();
    match (first.is_empty(), last.is_empty()) {
        // The last n bytes.
        (true, false) => match parsed(last) {
            Some(0) | None => RangeAnswer::Whole,
            Some(_) if len == 0 => RangeAnswer::Unsatisfiable,
            Some(n) => RangeAnswer::Part(len.saturating_sub(n), len - 1),
        },
        (false, _) => match (
            parsed(first),
            if last.is_empty() {
                Some(u64::MAX)
            } else {
                parsed(last)
            },
        ) {
            (Some(f), Some(l)) if f <= l => {
                if f >= len {
                    RangeAnswer::Unsatisfiable
                } else {
                    RangeAnswer::Part(f, l.min(len - 1))
                }
            }
            _ => RangeAnswer::Whole,
        },
        (true, true) => RangeAnswer::Whole,
    }
}

/// The files the service worker reads, made from the snapshot: `None` for
/// any other path.
pub(super) fn service_worker_file(
    snapshot: &Snapshot,
    rel: &str,
    req: &Request<Body>,
) -> Option<Response> {
    let version = &snapshot.version;
    let (content_type, body): (&str, Vec<u8>) = match rel {
        "ASSET_MANIFEST" => ("application/json", snapshot.manifest.to_vec()),
        "swVersion.mjs" => (
            "text/javascript; charset=utf-8",
            format!("export const swVersion = \"{version}\";\n").into_bytes(),
        ),
        "swVersion.js" => {
            let files: Vec<&str> = snapshot.files.keys().map(String::as_str).collect();
            let files = serde_json::to_string(&files).expect("names serialize");
            (
                "text/javascript; charset=utf-8",
                format!("self.swVersion = \"{version}\";\nself.swFiles = {files};\n").into_bytes(),
            )
        }
        "sw-config.json" => {
            let config = serde_json::json!({
                "killSwitch": snapshot.files.contains_key(KILL_SWITCH_FILE),
                "version": version,
                "swVersion": version,
                "valid": !snapshot.files.is_empty(),
            });
            ("application/json", config.to_string().into_bytes())
        }
        _ => return None,
    };
    let etag = format!("\"{version}\"");
    if if_none_match(req, &etag) {
        return Some(not_modified(&etag, "no-cache"));
    }
    let mut resp = Response::new(Body::from(body));
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, v);
    }
    Some(resp)
}

/// The `ETag` of one encoding of a file: each content coding is its own
/// representation, so its tag differs (`"<hash>-br"`).
pub(super) fn encoded_etag(etag: &str, coding: Option<&str>) -> String {
    match coding {
        Some(coding) => format!("{}-{coding}\"", etag.trim_end_matches('"')),
        None => etag.to_string(),
    }
}

/// Whether `If-None-Match` names `etag`, in any of its encodings: the
/// client holds a representation of this very content.
pub(super) fn if_none_match(req: &Request<Body>, etag: &str) -> bool {
    let base = etag.trim_matches('"');
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| {
            let tag = tag.trim();
            let opaque = tag.trim_start_matches("W/").trim_matches('"');
            let opaque = opaque
                .strip_suffix("-br")
                .or_else(|| opaque.strip_suffix("-gzip"))
                .unwrap_or(opaque);
            tag == "*" || opaque == base
        })
}

pub(super) fn not_modified(etag: &str, cache_control: &'static str) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::NOT_MODIFIED;
    let headers = resp.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    if let Ok(v) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_ranges() {
        use RangeAnswer::*;
        assert_eq!(byte_range("bytes=0-6", 100), Part(0, 6));
        assert_eq!(byte_range("bytes=90-", 100), Part(90, 99));
        assert_eq!(byte_range("bytes=90-500", 100), Part(90, 99));
        assert_eq!(byte_range("bytes=-10", 100), Part(90, 99));
        assert_eq!(byte_range("bytes=-500", 100), Part(0, 99));
        assert_eq!(byte_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(byte_range("bytes=5-1", 100), Whole);
        assert_eq!(byte_range("bytes=0-1,5-6", 100), Whole);
        assert_eq!(byte_range("items=0-1", 100), Whole);
        assert_eq!(byte_range("bytes=x-1", 100), Whole);
    }
}
