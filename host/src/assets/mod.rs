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
//! - `Access-Control-Allow-Origin: *` on every answer: the files are
//!   public, and a module script of another origin needs it to load them;
//! - `index.html` for a folder, and for a browser's navigation to an
//!   unknown path without an extension (a single-page app's routes), but
//!   never under `api/`, `vendor/`, `npm/` or `_spike/`: a fetch, a module import
//!   or a typo of an API path gets 404 `not_found`, not the app's HTML;
//! - `/ASSET_MANIFEST` (path to content hash), and the service worker's
//!   `/swVersion.mjs`, `/swVersion.js` and `/sw-config.json`, all derived
//!   from one [`Snapshot`] of the folder.
//!
//! The folder is watched: a rebuild is scanned once it settles and the new
//! snapshot replaces the old one whole.

pub(crate) mod respond;
mod snapshot;
mod watch;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Request, StatusCode, header};
use tower::{Layer, ServiceExt};
use tower_http::CompressionLevel;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::SizeAbove;
use tower_http::services::ServeFile;

pub use snapshot::{FileEntry, InMemory, Snapshot};

use respond::{encoded_etag, from_memory, if_none_match, not_modified, service_worker_file};

use crate::server::errors::ApiError;

/// Large text files (not kept in memory) without a sibling are compressed
/// as they are sent, above the same size as the scan compresses.
const COMPRESS_ABOVE: u16 = snapshot::COMPRESS_ABOVE as u16;

/// The longest path a site looks up.
const MAX_PATH_BYTES: usize = 1024;

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
            Some(watch::watch_sites(&sites)?)
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
        let mut resp = site.serve(req, &rest).await;
        // The files are public: any page may read them, also one of an
        // opaque origin, such as the renderer's inline pages importing a
        // site's modules (module scripts are always fetched with CORS).
        resp.headers_mut().insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        Some(resp)
    }
}

/// Folders whose missing files are never the app's routes: its API, the
/// modules it imports, the host's own.
const NO_APP_ROUTES_UNDER: &[&str] = &["api", "vendor", "npm", "_spike"];

/// Whether a request for the missing file `wanted` is a navigation to one
/// of the single-page app's own routes, answered with its `index.html`:
/// no extension, not under `NO_APP_ROUTES_UNDER`, and a browser's page
/// load (`Sec-Fetch-Mode: navigate`; without that header, an `Accept` that
/// asks for HTML). Anything else that nothing serves is a 404, so a
/// module or a fetch that fails says so instead of parsing HTML.
fn app_route(wanted: &str, headers: &http::HeaderMap) -> bool {
    let last = wanted.rsplit('/').next().unwrap_or(wanted);
    let first = wanted.split('/').next().unwrap_or(wanted);
    if last.contains('.') || NO_APP_ROUTES_UNDER.contains(&first) {
        return false;
    }
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    match header("sec-fetch-mode") {
        Some(mode) => mode == "navigate",
        None => header("accept").is_some_and(|a| a.contains("text/html")),
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
                let fallback = app_route(&wanted, req.headers())
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
        let immutable = entry.immutable;
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
        let mut resp = if !precompressed && entry.text {
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
            if precompressed || entry.text {
                headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
            }
        }
        resp
    }
}

/// The path below the site, percent-decoded, or why it is refused: `.` or
/// `..` segments (encoded or not), empty segments, backslashes, control
/// characters, invalid UTF-8, or more than 1 KiB.
fn checked_path(raw: &str) -> Result<String, &'static str> {
    let decoded =
        crate::util::percent_decode(raw).ok_or("the path is not valid percent-encoded UTF-8")?;
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
