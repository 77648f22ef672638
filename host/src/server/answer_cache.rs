//! Answers a plugin says never change, kept in memory and given again
//! without running the plugin, as a CDN's edge keeps a Worker's: a `GET`
//! answered `200` with `Cache-Control` holding `public`, `immutable` and a
//! `max-age`, no `Set-Cookie` and no `Vary`, of a known length up to
//! `MAX_ENTRY_BYTES`, to an anonymous request (no verified caller: what an
//! answer to one holds cannot be anyone's own) without `Range`.
//!
//! The npm plugin's modules are such answers: through the plugin, a kept
//! module cost 168 µs of server CPU where the same bytes as a static file
//! cost 15 (`bench/npm.sh`). An answer is kept per plugin version (a new
//! version answers anew), for its `max-age` at most, within
//! `--answer-cache-mib` (least recently used first out). The route's gate
//! (rate limits) still runs for every request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::series;
use crate::util::unpoisoned;

/// The largest answer kept.
pub const MAX_ENTRY_BYTES: usize = 1 << 20;

/// What an entry costs beside its body (its key, headers and place in the
/// map), counted against the budget so that many tiny answers cannot
/// hold more memory than it.
const ENTRY_OVERHEAD: usize = 512;

/// What a kept answer is found by: the plugin's version, the authority and
/// the path with its query.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Key {
    version: String,
    authority: String,
    path_and_query: String,
}

impl Key {
    /// Whether an answer to `req` may be kept or given from the cache.
    pub fn eligible<B>(req: &Request<B>, anonymous: bool) -> bool {
        let get = req.method() == Method::GET || req.method() == Method::HEAD;
        get && anonymous && !req.headers().contains_key(header::RANGE)
    }

    /// The key of `req` to plugin version `version` (its hash), if an
    /// answer to it may be kept or given from the cache.
    pub fn of<B>(req: &Request<B>, version: &str, anonymous: bool) -> Option<Key> {
        if !Self::eligible(req, anonymous) {
            return None;
        }
        let authority = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        Some(Key {
            version: version.to_string(),
            authority: authority.to_ascii_lowercase(),
            path_and_query: req.uri().path_and_query().map(|p| p.to_string())?,
        })
    }
}

struct Entry {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    expires: Instant,
    /// When it was last given, for the least recently used to go first.
    used: u64,
}

impl Entry {
    /// What it counts against the budget.
    fn cost(&self) -> usize {
        self.body.len() + ENTRY_OVERHEAD
    }
}

#[derive(Default)]
struct Entries {
    map: HashMap<Key, Entry>,
    bytes: usize,
    clock: u64,
}

/// The kept answers, within a budget of bytes (0: none kept).
pub struct AnswerCache {
    entries: Mutex<Entries>,
    budget: usize,
    metrics: AnswerCacheMetrics,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    result: &'static str,
}

series! {
    /// The host's cache of answers plugins mark immutable.
    pub struct AnswerCacheMetrics {
        /// `hit`: given from the cache; `stored`: kept after the plugin
        /// answered; `miss`: asked for and not there.
        lookups: Family<ResultLabel, Counter> = Family::default(),
            "answer_cache_lookups", "Anonymous GETs looked up in the cache of immutable answers, by result";
        bytes: Gauge = Gauge::default(),
            "answer_cache_bytes", "Memory the kept immutable answers count: their bodies and 512 bytes each";
    }
}

impl AnswerCache {
    /// A cache of `budget_bytes`, counted in `metrics` (the server's).
    pub fn new(budget_bytes: usize, metrics: &AnswerCacheMetrics) -> Self {
        AnswerCache {
            entries: Mutex::default(),
            budget: budget_bytes,
            metrics: AnswerCacheMetrics {
                lookups: metrics.lookups.clone(),
                bytes: metrics.bytes.clone(),
            },
        }
    }

    fn count(&self, result: &'static str) {
        self.metrics
            .lookups
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// The answer kept under `key`, if it is there and fresh.
    pub fn get(&self, key: &Key) -> Option<Response<Body>> {
        if self.budget == 0 {
            return None;
        }
        let mut guard = unpoisoned(self.entries.lock());
        let entries = &mut *guard;
        entries.clock += 1;
        let now = Instant::now();
        let found = match entries.map.get_mut(key) {
            Some(entry) if entry.expires > now => {
                entry.used = entries.clock;
                let mut resp = Response::new(Body::from(entry.body.clone()));
                *resp.status_mut() = entry.status;
                *resp.headers_mut() = entry.headers.clone();
                Some(resp)
            }
            Some(_) => {
                let gone = entries.map.remove(key).expect("just found");
                entries.bytes -= gone.cost();
                None
            }
            None => None,
        };
        self.metrics.bytes.set(entries.bytes as i64);
        drop(guard);
        self.count(if found.is_some() { "hit" } else { "miss" });
        found
    }

    /// Keeps `resp`, the plugin's answer under `key`, if it says it never
    /// changes; gives it back whole either way. A body that fails while it
    /// is read here is a 502.
    pub async fn keep(&self, key: Key, resp: Response<Body>) -> Response<Body> {
        let Some(max_age) = keepable(&resp, self.budget) else {
            return resp;
        };
        let (parts, body) = resp.into_parts();
        let body = match axum::body::to_bytes(body, MAX_ENTRY_BYTES).await {
            Ok(body) => body,
            Err(e) => {
                tracing::warn!("an immutable answer failed while it was read: {e}");
                let mut failed = Response::new(Body::empty());
                *failed.status_mut() = StatusCode::BAD_GATEWAY;
                return failed;
            }
        };
        self.insert(key, &parts, body.clone(), max_age);
        Response::from_parts(parts, Body::from(body))
    }

    fn insert(&self, key: Key, parts: &http::response::Parts, body: Bytes, max_age: Duration) {
        let mut guard = unpoisoned(self.entries.lock());
        let entries = &mut *guard;
        entries.clock += 1;
        if let Some(old) = entries.map.remove(&key) {
            entries.bytes -= old.cost();
        }
        let entry = Entry {
            status: parts.status,
            headers: parts.headers.clone(),
            body,
            expires: Instant::now() + max_age,
            used: entries.clock,
        };
        let cost = entry.cost();
        while entries.bytes + cost > self.budget {
            let Some(oldest) = entries
                .map
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            let gone = entries.map.remove(&oldest).expect("just found");
            entries.bytes -= gone.cost();
        }
        entries.bytes += cost;
        entries.map.insert(key, entry);
        self.metrics.bytes.set(entries.bytes as i64);
        drop(guard);
        self.count("stored");
    }

    /// Whether `resp` says it never changes (and fits).
    pub fn keepable(&self, resp: &Response<Body>) -> bool {
        keepable(resp, self.budget).is_some()
    }
}

/// How long `resp` may be kept, if it may.
fn keepable(resp: &Response<Body>, budget: usize) -> Option<Duration> {
    if resp.status() != StatusCode::OK {
        return None;
    }
    let headers = resp.headers();
    if headers.contains_key(header::SET_COOKIE) || headers.contains_key(header::VARY) {
        return None;
    }
    let length: usize = headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    if length > MAX_ENTRY_BYTES || length > budget / 8 {
        return None;
    }
    let control = headers
        .get(header::CACHE_CONTROL)?
        .to_str()
        .ok()?
        .to_ascii_lowercase();
    let directives: Vec<&str> = control.split(',').map(str::trim).collect();
    if !directives.contains(&"public") || !directives.contains(&"immutable") {
        return None;
    }
    let max_age = directives.iter().find_map(|d| d.strip_prefix("max-age="))?;
    let seconds: u64 = max_age.parse().ok().filter(|s| *s > 0)?;
    Some(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(cache_control: &str, body: &'static str) -> Response<Body> {
        Response::builder()
            .header(header::CACHE_CONTROL, cache_control)
            .header(header::CONTENT_LENGTH, body.len())
            .body(Body::from(body))
            .unwrap()
    }

    fn key(path: &str) -> Key {
        let req = Request::get(path)
            .header("host", "a.example")
            .body(())
            .unwrap();
        Key::of(&req, "v1", true).unwrap()
    }

    #[tokio::test]
    async fn immutable_answers_are_kept_and_others_are_not() {
        let cache = AnswerCache::new(1 << 20, &AnswerCacheMetrics::default());
        let immutable = "public, max-age=31536000, immutable";
        let got = cache.keep(key("/a"), answer(immutable, "module a")).await;
        assert_eq!(
            axum::body::to_bytes(got.into_body(), 100).await.unwrap(),
            "module a"
        );
        let hit = cache.get(&key("/a")).expect("kept");
        assert_eq!(hit.headers()[header::CACHE_CONTROL], immutable);
        assert_eq!(
            axum::body::to_bytes(hit.into_body(), 100).await.unwrap(),
            "module a"
        );
        for control in [
            "no-store",
            "public, max-age=60",
            "private, max-age=60, immutable",
            "public, immutable",
        ] {
            cache.keep(key("/b"), answer(control, "b")).await;
            assert!(cache.get(&key("/b")).is_none(), "{control}");
        }
        let mut cookie = answer(immutable, "c");
        cookie
            .headers_mut()
            .insert(header::SET_COOKIE, "s=1".parse().unwrap());
        cache.keep(key("/c"), cookie).await;
        assert!(cache.get(&key("/c")).is_none());
    }

    #[tokio::test]
    async fn the_budget_pushes_out_the_least_recently_used() {
        // Eight entries of 100 bytes (and the overhead) fill the budget;
        // none may be over an eighth of it.
        let cache = AnswerCache::new(8 * (100 + ENTRY_OVERHEAD), &AnswerCacheMetrics::default());
        let body: &'static str = Box::leak("x".repeat(100).into_boxed_str());
        let immutable = "public, max-age=60, immutable";
        for i in 0..8 {
            cache
                .keep(key(&format!("/{i}")), answer(immutable, body))
                .await;
        }
        assert!(cache.get(&key("/0")).is_some(), "0 used again");
        cache.keep(key("/8"), answer(immutable, body)).await;
        assert!(
            cache.get(&key("/1")).is_none(),
            "the least recently used went"
        );
        assert!(cache.get(&key("/0")).is_some() && cache.get(&key("/8")).is_some());
    }

    #[test]
    fn only_anonymous_whole_gets_are_looked_up() {
        let get = |method: Method, range: bool| {
            let mut req = Request::builder().method(method).uri("/a?x=1");
            if range {
                req = req.header(header::RANGE, "bytes=0-1");
            }
            req.body(()).unwrap()
        };
        assert!(Key::of(&get(Method::GET, false), "v", true).is_some());
        assert!(Key::of(&get(Method::GET, false), "v", false).is_none());
        assert!(Key::of(&get(Method::POST, false), "v", true).is_none());
        assert!(Key::of(&get(Method::GET, true), "v", true).is_none());
        assert!(
            Key::of(&get(Method::GET, false), "v", true)
                != Key::of(&get(Method::GET, false), "w", true)
        );
    }
}
