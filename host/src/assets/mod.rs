//! Static sites, served by the host itself: a file costs no instance.
//!
//! Each site is a folder served under a URL prefix, for any host or one
//! (`--site [HOST]PREFIX=DIR`). Requests no plugin route covers are tried
//! against the sites, longest prefix first. A site answers:
//!
//! - its files, with `Content-Type` from the extension, `Range`, and a
//!   `.br` / `.gz` sibling when the client accepts it (`Vary:
//!   Accept-Encoding`; tower-http's `ServeFile` does the sending); text
//!   without a sibling is compressed on the fly above 1 KiB;
//!   file names carrying a content hash are `Cache-Control: public,
//!   max-age=31536000, immutable`, others `no-cache` with an `ETag` (304 to
//!   `If-None-Match`);
//! - `index.html` for a folder, and for unknown paths without an extension
//!   (a single-page app's routes);
//! - `/ASSET_MANIFEST` (path to content hash), and the service worker's
//!   `/swVersion.mjs`, `/swVersion.js` and `/sw-config.json`, all derived
//!   from one [`Snapshot`] of the folder.
//!
//! The folder is watched: a rebuild is scanned once it settles and the new
//! snapshot replaces the old one whole.

mod snapshot;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Request, StatusCode, header};
use notify::{RecursiveMode, Watcher};
use tower::{Layer, ServiceExt};
use tower_http::CompressionLevel;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::SizeAbove;
use tower_http::services::ServeFile;

pub use snapshot::{FileEntry, InMemory, Snapshot, compressible, is_hashed};

use crate::server::errors::ApiError;

/// How long the folder must be quiet before a rebuild is scanned.
const SETTLE: Duration = Duration::from_millis(300);

/// Large text files (not kept in memory) without a sibling are compressed
/// as they are sent, above the same size as the scan compresses.
const COMPRESS_ABOVE: u16 = snapshot::COMPRESS_ABOVE as u16;

/// The longest path a site looks up.
const MAX_PATH_BYTES: usize = 1024;

/// A file in the folder that turns the service worker's kill switch on.
const KILL_SWITCH_FILE: &str = "sw-kill-switch";

/// One site as the operator configures it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteConfig {
    /// Only requests for this host (without port), if set.
    pub host: Option<String>,
    /// The URL prefix, `/` or `/docs`.
    pub prefix: String,
    pub dir: PathBuf,
}

impl FromStr for SiteConfig {
    type Err = String;

    /// `[HOST]PREFIX=DIR`: `/=site/dist`, `/docs=docs/out`,
    /// `example.com/=dist`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (left, dir) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected [HOST]PREFIX=DIR, like /=site/dist"))?;
        let slash = left
            .find('/')
            .ok_or_else(|| format!("{s:?}: the prefix must start with /"))?;
        let (host, prefix) = left.split_at(slash);
        let prefix = prefix.trim_end_matches('/');
        if dir.is_empty() {
            return Err(format!("{s:?}: no folder"));
        }
        Ok(Self {
            host: (!host.is_empty()).then(|| host.to_ascii_lowercase()),
            prefix: if prefix.is_empty() {
                "/".into()
            } else {
                prefix.into()
            },
            dir: dir.into(),
        })
    }
}

/// A served site: its configuration and the current snapshot of its folder.
pub struct Site {
    pub config: SiteConfig,
    snapshot: ArcSwap<Snapshot>,
}

/// Every site, and the watcher that keeps their snapshots current.
pub struct Sites {
    sites: Vec<Arc<Site>>,
    _watcher: Option<Arc<Mutex<notify::RecommendedWatcher>>>,
}

impl Sites {
    /// Scans every site's folder (a missing or unreadable one is an error)
    /// and, if `watch`, keeps watching them.
    pub fn start(configs: &[SiteConfig], watch: bool) -> anyhow::Result<Self> {
        let mut sites = Vec::new();
        for config in configs {
            let snapshot = Snapshot::scan(&config.dir).map_err(|e| {
                anyhow::anyhow!(
                    "site {}: folder {}: {e}",
                    config.prefix,
                    config.dir.display()
                )
            })?;
            tracing::info!(
                prefix = %config.prefix,
                dir = %config.dir.display(),
                files = snapshot.files.len(),
                version = %snapshot.version,
                "serving a site"
            );
            sites.push(Arc::new(Site {
                config: config.clone(),
                snapshot: ArcSwap::from_pointee(snapshot),
            }));
        }
        // Longest prefix first.
        sites.sort_by_key(|s| std::cmp::Reverse(s.config.prefix.len()));
        let watcher = if watch && !sites.is_empty() {
            Some(watch_sites(&sites)?)
        } else {
            None
        };
        Ok(Self {
            sites,
            _watcher: watcher,
        })
    }

    /// The site that serves `host` and `path`, if any.
    fn find(&self, host: Option<&str>, path: &str) -> Option<(&Site, String)> {
        self.sites.iter().find_map(|site| {
            if let Some(want) = &site.config.host
                && host.is_none_or(|h| !h.eq_ignore_ascii_case(want))
            {
                return None;
            }
            let prefix = &site.config.prefix;
            let rest = if prefix == "/" {
                path.strip_prefix('/')?
            } else {
                let rest = path.strip_prefix(prefix.as_str())?;
                if rest.is_empty() {
                    ""
                } else {
                    rest.strip_prefix('/')?
                }
            };
            Some((site.as_ref(), rest.to_string()))
        })
    }

    /// The answer of the site that covers `req`, or `None` if no site does.
    pub async fn serve(&self, req: Request<Body>) -> Option<Response> {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| h.rsplit_once(':').map_or(h, |(name, _)| name));
        let (site, rest) = self.find(host, req.uri().path())?;
        if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
            let mut resp = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{} is not allowed here; allowed: GET, HEAD", req.method()),
            )
            .into_response();
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return Some(resp);
        }
        Some(site.serve(req, &rest).await)
    }
}

impl Site {
    async fn serve(&self, req: Request<Body>, raw: &str) -> Response {
        let rel = match checked_path(raw) {
            Ok(rel) => rel,
            Err(why) => {
                return ApiError::new(StatusCode::BAD_REQUEST, "bad_path", why).into_response();
            }
        };
        let snapshot = self.snapshot.load_full();
        if let Some(resp) = service_worker_file(&snapshot, &rel, &req) {
            return resp;
        }
        let wanted = if rel.is_empty() || rel.ends_with('/') {
            format!("{rel}index.html")
        } else {
            rel
        };
        let (path, entry) = match snapshot.files.get_key_value(&wanted) {
            Some(found) => found,
            None => {
                // A single-page app's own routes have no extension.
                let last = wanted.rsplit('/').next().unwrap_or(&wanted);
                let fallback = (!last.contains('.'))
                    .then(|| snapshot.files.get_key_value("index.html"))
                    .flatten();
                match fallback {
                    Some(found) => found,
                    None => {
                        return ApiError::not_found(format!("no file at /{wanted}"))
                            .into_response();
                    }
                }
            }
        };
        let immutable = is_hashed(path, entry);
        let cache_control = if immutable {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        };
        let etag = entry.etag();
        if !immutable && if_none_match(&req, &etag) {
            return not_modified(&etag, cache_control);
        }
        if let Some(held) = &entry.memory {
            return from_memory(&req, held, &etag, cache_control);
        }
        let mut serve = ServeFile::new(self.config.dir.join(path));
        if entry.br {
            serve = serve.precompressed_br();
        }
        if entry.gz {
            serve = serve.precompressed_gzip();
        }
        let precompressed = entry.br || entry.gz;
        let mut resp = if !precompressed && compressible(path) {
            // Text without a sibling is compressed as it is sent (not
            // ranges: a range of a compressed stream is of no use).
            let compress = CompressionLayer::new()
                .quality(CompressionLevel::Precise(5))
                .compress_when(SizeAbove::new(COMPRESS_ABOVE));
            match compress.layer(serve).oneshot(req).await {
                Ok(resp) => resp.map(Body::new),
                Err(never) => match never {},
            }
        } else {
            match serve.oneshot(req).await {
                Ok(resp) => resp.map(Body::new),
                Err(never) => match never {},
            }
        };
        if resp.status().is_success() || resp.status() == StatusCode::NOT_MODIFIED {
            let headers = resp.headers_mut();
            headers.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static(cache_control),
            );
            let coding = headers
                .get(header::CONTENT_ENCODING)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            if let Ok(v) = HeaderValue::from_str(&encoded_etag(&etag, coding.as_deref())) {
                headers.insert(header::ETAG, v);
            }
            if precompressed || compressible(path) {
                headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
            }
        }
        resp
    }
}

/// A file kept in memory: the best encoding the client accepts, or the
/// range it asks of the plain bytes.
fn from_memory(
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
enum RangeAnswer {
    /// No single byte range this server answers: the whole file (a server
    /// may ignore a range it does not support, RFC 9110 14.2).
    Whole,
    /// Bytes `first..=last`.
    Part(u64, u64),
    /// A range that starts past the end.
    Unsatisfiable,
}

fn byte_range(spec: &str, len: u64) -> RangeAnswer {
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
fn service_worker_file(snapshot: &Snapshot, rel: &str, req: &Request<Body>) -> Option<Response> {
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
fn encoded_etag(etag: &str, coding: Option<&str>) -> String {
    match coding {
        Some(coding) => format!("{}-{coding}\"", etag.trim_end_matches('"')),
        None => etag.to_string(),
    }
}

/// Whether `If-None-Match` names `etag`, in any of its encodings: the
/// client holds a representation of this very content.
fn if_none_match(req: &Request<Body>, etag: &str) -> bool {
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

fn not_modified(etag: &str, cache_control: &'static str) -> Response {
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

/// The path below the site, percent-decoded, or why it is refused: `.` or
/// `..` segments (encoded or not), empty segments, backslashes, control
/// characters, invalid UTF-8, or more than 1 KiB.
fn checked_path(raw: &str) -> Result<String, &'static str> {
    let decoded = percent_decode(raw).ok_or("the path is not valid percent-encoded UTF-8")?;
    if decoded.len() > MAX_PATH_BYTES {
        return Err("the path is too long");
    }
    if decoded.chars().any(|c| c.is_control() || c == '\\') {
        return Err("the path holds a control character or a backslash");
    }
    let body = decoded.strip_suffix('/').unwrap_or(&decoded);
    if !body.is_empty()
        && body
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err("the path has an empty, '.' or '..' segment");
    }
    Ok(decoded)
}

fn percent_decode(s: &str) -> Option<String> {
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

/// Watches every site's folder, and the folder above it so that a folder
/// deleted and made anew (`rm -rf dist && build`) is watched again; a
/// change rescans that site once the folder has been quiet for [`SETTLE`].
fn watch_sites(sites: &[Arc<Site>]) -> notify::Result<Arc<Mutex<notify::RecommendedWatcher>>> {
    let roots: Vec<(PathBuf, Arc<Site>)> = sites
        .iter()
        .map(|site| {
            let dir = &site.config.dir;
            (
                std::path::absolute(dir).unwrap_or_else(|_| dir.clone()),
                site.clone(),
            )
        })
        .collect();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
    let watched: Vec<PathBuf> = roots.iter().map(|(root, _)| root.clone()).collect();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        // The parent's other entries are none of our business (and a busy
        // parent would never let the folder settle).
        for path in event.paths {
            if watched.iter().any(|root| path.starts_with(root)) {
                let _ = tx.send(path);
            }
        }
    })?;
    let watcher = Arc::new(Mutex::new(watcher));
    for (root, _) in &roots {
        let mut w = watcher.lock().expect("watcher lock");
        w.watch(root, RecursiveMode::Recursive)?;
        if let Some(parent) = root.parent() {
            // Best effort: a site at / has no parent to watch.
            let _ = w.watch(parent, RecursiveMode::NonRecursive);
        }
    }
    let rewatch = watcher.clone();
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut changed = vec![first];
            // Settle: gather everything until the folder is quiet.
            while let Ok(Some(path)) = tokio::time::timeout(SETTLE, rx.recv()).await {
                changed.push(path);
            }
            for (root, site) in &roots {
                if changed.iter().any(|p| p.starts_with(root)) {
                    if changed.iter().any(|p| p == root) {
                        // The folder itself came or went: watch what is there now.
                        let mut w = rewatch.lock().expect("watcher lock");
                        let _ = w.unwatch(root);
                        let _ = w.watch(root, RecursiveMode::Recursive);
                    }
                    rescan(site.clone()).await;
                }
            }
        }
    });
    Ok(watcher)
}

async fn rescan(site: Arc<Site>) {
    let dir: PathBuf = site.config.dir.clone();
    let scanned = tokio::task::spawn_blocking(move || Snapshot::scan(Path::new(&dir))).await;
    match scanned {
        Ok(Ok(snapshot)) => {
            tracing::info!(
                prefix = %site.config.prefix,
                files = snapshot.files.len(),
                version = %snapshot.version,
                "site rebuilt"
            );
            site.snapshot.store(Arc::new(snapshot));
        }
        // A folder in the middle of being replaced: the next event rescans.
        Ok(Err(e)) => tracing::warn!(prefix = %site.config.prefix, "site scan failed: {e}"),
        Err(e) => tracing::error!("site scan panicked: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_flags_name_host_prefix_and_folder() {
        let s: SiteConfig = "/=site/dist".parse().unwrap();
        assert_eq!(
            (s.host, s.prefix.as_str(), s.dir),
            (None, "/", PathBuf::from("site/dist"))
        );
        let s: SiteConfig = "Example.com/docs/=out".parse().unwrap();
        assert_eq!(
            (s.host.as_deref(), s.prefix.as_str()),
            (Some("example.com"), "/docs")
        );
        assert!("site/dist".parse::<SiteConfig>().is_err());
        assert!("docs=out".parse::<SiteConfig>().is_err());
        assert!("/=".parse::<SiteConfig>().is_err());
    }

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

    #[test]
    fn paths_cannot_leave_the_folder() {
        for bad in [
            "..", "a/../b", "%2e%2e/x", "a%00", "a\\b", "a%5cb", "a//b", "%ff", "./x",
        ] {
            assert!(checked_path(bad).is_err(), "{bad}");
        }
        assert_eq!(
            checked_path("assets/caf%C3%A9.js").unwrap(),
            "assets/café.js"
        );
        assert_eq!(checked_path("").unwrap(), "");
        assert_eq!(checked_path("docs/").unwrap(), "docs/");
    }
}
