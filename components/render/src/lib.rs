//! `render`: the seed system's renderer worker as a plugin, over the host's
//! headless Chromium (the `render` import).
//!
//! | request                                  | answer                         |
//! |------------------------------------------|--------------------------------|
//! | `GET\|POST /render/screenshot`           | PNG, JPEG or WebP              |
//! | `GET\|POST /render/pdf`                  | PDF                            |
//! | `GET\|POST /render/html`                 | the page's HTML after its scripts ran |
//! | `GET /render?url=…&sleep=…`              | the old renderer's full-page JPEG |
//!
//! Options come in the query string (`GET`) or a JSON object (`POST`) with
//! the same names (see `request`): `url` or `html`; `width`, `height`,
//! `deviceScaleFactor`; `waitUntil` (`load`, `networkidle`),
//! `waitForSelector`, `delay` (or `sleep`) in ms, `timeout` in ms;
//! screenshots: `format`, `quality`, `fullPage`, `clip` (a selector); PDFs:
//! `paper` or `paperWidth`/`paperHeight`, `margin` or `marginTop`..., in
//! inches or with a unit, `landscape`, `printBackground`, `headerTemplate`,
//! `footerTemplate`; `cache` (`no`, or a lifetime in seconds).
//!
//! Results are cached in blob storage (`cache`) for `CACHE_TTL_S` (3600 by
//! default), with `x-cache: hit|miss` (or `bypass`). The answer also says
//! `x-render-final-url`, `x-render-status` (the page's own HTTP status) and
//! `x-render-blocked` (requests of the page the guard refused).

mod cache;
mod request;

use spike_sdk::blob_io::user_content_headers;
use spike_sdk::exports::wasi::http::incoming_handler::Guest;
use spike_sdk::http::{Request, Response, copy, start_response};
use spike_sdk::render::{self, RenderError, Rendered};
use spike_sdk::router::{HttpError, Params, Router};
use spike_sdk::telemetry;
use spike_sdk::wasi::http::types::{IncomingRequest, OutgoingBody, ResponseOutparam};

use request::{CachePolicy, Kind, RenderRequest};

/// Largest `POST` body: an inline document of up to 5 MiB, with room for
/// the JSON around it.
const MAX_BODY: usize = 6 << 20;

struct Renderer;

impl Guest for Renderer {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        // Every route may answer from the cache, streamed from blob storage.
        let route = |kind: Kind| {
            move |req: &Request, _: &Params, out: ResponseOutparam| match serve(req, kind) {
                Ok(Reply::Fresh(r)) | Err(r) => r.send(out),
                Ok(Reply::Cached(hit)) => stream(hit, out),
            }
        };
        let mut router = Router::new().streaming("GET", "/render", route(Kind::Legacy));
        for (path, kind) in [
            ("/render/screenshot", Kind::Screenshot),
            ("/render/pdf", Kind::Pdf),
            ("/render/html", Kind::Html),
        ] {
            router =
                router
                    .streaming("GET", path, route(kind))
                    .streaming("POST", path, route(kind));
        }
        router.serve(request, out);
    }
}

spike_sdk::export!(Renderer);

enum Reply {
    Fresh(Response),
    Cached(cache::Hit),
}

fn serve(req: &Request, kind: Kind) -> Result<Reply, Response> {
    let fields = match req.method().as_str() {
        "POST" => {
            let body = req.body_bytes(MAX_BODY).map_err(|_| {
                let why = format!(
                    "the body is over {} MiB or did not arrive whole",
                    MAX_BODY >> 20
                );
                HttpError::new(413, "too_large", why)
            })?;
            request::from_json(&body)
        }
        _ => request::from_query(req.query().unwrap_or("")),
    }
    .map_err(HttpError::bad_request)?;
    let r = request::parse(kind, fields, default_ttl_s()).map_err(HttpError::bad_request)?;
    let key = r.cache_key();
    let now = spike_sdk::now_ms();
    let bucket = match r.cache {
        CachePolicy::Use { .. } => Some(cache::open().map_err(|e| Response::from_error(&e))?),
        CachePolicy::Bypass => None,
    };
    if let Some(bucket) = &bucket {
        match cache::get(bucket, &key, now) {
            Ok(Some(hit)) => {
                telemetry::count("render_cache", 1, &[("result", "hit")]);
                return Ok(Reply::Cached(hit));
            }
            Ok(None) => {}
            // A cache that fails is not the caller's problem: render.
            Err(e) => eprintln!("render: reading the cache: {}", e.message()),
        }
    }
    let mut span = telemetry::Span::start("render");
    span.attr("render.kind", r.kind.name());
    let started = spike_sdk::now_ms();
    let rendered = run(&r).map_err(|e| {
        let e = HttpError::from(e);
        span.error(&e.code);
        telemetry::count("render_cache", 1, &[("result", "error")]);
        e
    })?;
    let browser_s = spike_sdk::now_ms().saturating_sub(started) as f64 / 1000.0;
    span.attr("render.bytes", rendered.body.len());
    drop(span);
    let kind = [("kind", r.kind.name())];
    telemetry::histogram_seconds("render_browser_seconds", browser_s, &kind);
    let facts = cache::Facts::of(&rendered);
    let (label, max_age) = match (&bucket, r.cache) {
        (Some(bucket), CachePolicy::Use { ttl_s }) => {
            if let Err(e) = cache::put(bucket, &key, &facts, &rendered.body, ttl_s, now) {
                eprintln!("render: storing in the cache: {}", e.message());
            }
            ("miss", ttl_s)
        }
        _ => ("bypass", 0),
    };
    telemetry::count("render_cache", 1, &[("result", label)]);
    let response = headers(Response::new(200), &facts, label, max_age);
    Ok(Reply::Fresh(response.body(rendered.body)))
}

fn run(r: &RenderRequest) -> Result<Rendered, RenderError> {
    match r.kind {
        Kind::Screenshot | Kind::Legacy => render::screenshot(&r.page, &r.screenshot),
        Kind::Pdf => render::pdf(&r.page, &r.pdf),
        Kind::Html => render::html(&r.page),
    }
}

fn headers(response: Response, facts: &cache::Facts, label: &str, max_age: u64) -> Response {
    let cache_control = match max_age {
        0 => "no-store".to_string(),
        s => format!("public, max-age={s}"),
    };
    // A rendered page's HTML is the page's, whoever wrote it: inert here.
    let mut response = response;
    for (name, value) in user_content_headers(Some(&facts.content_type)) {
        response = response.header(&name, value);
    }
    let mut response = response
        .header("x-cache", label)
        .header("cache-control", cache_control)
        .header("x-render-blocked", facts.blocked.to_string());
    // A final URL is ASCII (the browser encodes it); anything else is left
    // out rather than sent as a malformed header.
    if !facts.final_url.is_empty() && facts.final_url.bytes().all(|b| b.is_ascii_graphic()) {
        response = response.header("x-render-final-url", &facts.final_url);
    }
    if let Some(status) = facts.status {
        response = response.header("x-render-status", status.to_string());
    }
    response
}

/// Sends a cached render from blob storage.
fn stream(hit: cache::Hit, out: ResponseOutparam) {
    let mut list = vec![(
        "content-length".to_string(),
        hit.body.length.to_string().into_bytes(),
    )];
    let response = headers(
        Response::new(200),
        &hit.facts,
        "hit",
        hit.fresh_for_s.max(1),
    );
    list.extend(response.into_headers());
    let (resp, body) = start_response(200, &list);
    ResponseOutparam::set(out, Ok(resp));
    if let Ok(sink) = body.write() {
        // A client that hangs up mid-download ends the copy.
        let _ = copy(&hit.body.body, &sink);
        drop(sink);
    }
    let _ = OutgoingBody::finish(body, None);
}

/// `CACHE_TTL_S` from the manifest's `[env]` (3600 by default; 0 turns the
/// cache off).
fn default_ttl_s() -> u64 {
    std::env::var("CACHE_TTL_S")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(3600)
}
