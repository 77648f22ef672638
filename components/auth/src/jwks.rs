//! The issuer's key set (JWKS), cached in KV so every instance shares it.
//!
//! Each authentication runs in a fresh instance, so the cache lives in the
//! plugin's KV namespace: one record per key set URL with the keys, when
//! they were fetched, how long they stay fresh (the response's
//! `Cache-Control: max-age`) and when a fetch was last tried.
//!
//! - Fresh keys are used as they are.
//! - Stale keys are fetched again; if that fails, the old keys go on
//!   verifying for `JWKS_STALE_S`, so an outage of the issuer does not sign
//!   everyone out.
//! - A `kid` the set does not hold fetches again (a rotation), but at most
//!   once per `JWKS_MIN_REFETCH_S`: tokens with made-up `kid`s cannot turn
//!   into a flood of fetches.
//! - A failed fetch is not retried for [`RETRY_AFTER_FAILURE_MS`], so a
//!   down or slow issuer costs one request its deadline, not every request.
//!
//! Concurrent instances agree on who fetches through a KV counter per time
//! window ([`claim`]): the first to count 1 fetches, the others use what
//! the cache holds.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use spike_sdk::client::Fetch;
use spike_sdk::kv::{Namespace, SetOptions};

use crate::config::JwksSettings;

/// The KV namespace the manifest grants this plugin.
pub const NAMESPACE: &str = "auth";

/// How long a failed fetch holds off the next one.
pub const RETRY_AFTER_FAILURE_MS: u64 = 5_000;

/// At most one fetch of a stale key set per this window, however many
/// instances find it stale at once.
const STALE_FETCH_WINDOW_MS: u64 = 1_000;

/// The largest key set read; Clerk's is about 1 KiB.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Longest a key set stays fresh, whatever its `Cache-Control` says.
const MAX_AGE_CEILING_S: u64 = 86_400;

/// Why no key came out.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyError {
    /// The set does not hold the `kid`.
    Unknown,
    /// The set cannot be had now.
    Unavailable,
}

/// What the KV holds for one key set URL.
#[derive(Serialize, Deserialize)]
struct Record {
    url: String,
    /// When the keys were fetched (Unix ms); 0 if never.
    fetched_at_ms: u64,
    /// How long they are fresh from then.
    max_age_s: u64,
    /// When a fetch was last tried, whatever came of it.
    attempted_at_ms: u64,
    /// The JWKs, as the issuer sent them.
    keys: Vec<Value>,
}

impl Record {
    fn fresh(&self, now: u64) -> bool {
        self.fetched_at_ms > 0 && now < self.fetched_at_ms + self.max_age_s * 1000
    }

    /// Whether the keys may still verify, fresh or not.
    fn usable(&self, now: u64, settings: &JwksSettings) -> bool {
        let limit_s = self.max_age_s.max(settings.stale_s);
        self.fetched_at_ms > 0 && now < self.fetched_at_ms + limit_s * 1000
    }

    fn find(&self, kid: &str) -> Option<Value> {
        self.keys
            .iter()
            .find(|k| k.get("kid").and_then(Value::as_str) == Some(kid))
            .cloned()
    }
}

/// The JWK named `kid` in the key set at `url`.
pub fn key(url: &str, kid: &str, settings: &JwksSettings) -> Result<Value, KeyError> {
    let ns = Namespace::open(NAMESPACE).map_err(|e| {
        eprintln!(
            "auth: the KV namespace '{NAMESPACE}' is not granted: {}",
            e.message()
        );
        KeyError::Unavailable
    })?;
    let id = hex::encode(&Sha256::digest(url.as_bytes())[..8]);
    let record_key = format!("jwks:{id}");
    let now = spike_sdk::now_ms();
    let mut record = load(&ns, &record_key, url);

    // Stale or never fetched: fetch, unless a fetch failed moments ago.
    let stale = !record.as_ref().is_some_and(|r| r.fresh(now));
    let held_off = record.as_ref().is_some_and(|r| {
        r.attempted_at_ms > r.fetched_at_ms && now < r.attempted_at_ms + RETRY_AFTER_FAILURE_MS
    });
    if stale && !held_off && claim(&ns, &id, "stale", now, STALE_FETCH_WINDOW_MS) {
        record = Some(refresh(&ns, &record_key, url, record, settings, now).0);
    }

    let Some(current) = record.as_ref().filter(|r| r.usable(now, settings)) else {
        return Err(KeyError::Unavailable);
    };
    if let Some(jwk) = current.find(kid) {
        return Ok(jwk);
    }
    // An unknown kid: the issuer may have rotated its keys.
    let window_ms = settings.min_refetch_s * 1000;
    let recently = record
        .as_ref()
        .is_some_and(|r| now < r.attempted_at_ms + window_ms);
    if recently || !claim(&ns, &id, "kid", now, window_ms) {
        return Err(KeyError::Unknown);
    }
    let (refreshed, fetched) = refresh(&ns, &record_key, url, record, settings, now);
    match refreshed.find(kid) {
        Some(jwk) => Ok(jwk),
        None if fetched => Err(KeyError::Unknown),
        // The fetch failed: the key may exist, so this cannot be told now.
        None => Err(KeyError::Unavailable),
    }
}

fn load(ns: &Namespace, key: &str, url: &str) -> Option<Record> {
    let bytes = ns.get(key).ok()??;
    serde_json::from_slice::<Record>(&bytes)
        .ok()
        .filter(|r| r.url == url)
}

/// Fetches the key set and stores what came of it: the new keys, or the
/// old ones with the time of the failed try. True if the fetch succeeded.
fn refresh(
    ns: &Namespace,
    key: &str,
    url: &str,
    old: Option<Record>,
    settings: &JwksSettings,
    now: u64,
) -> (Record, bool) {
    let mut span = spike_sdk::telemetry::Span::start("jwks fetch");
    let fetched = fetch(url, settings);
    let ok = fetched.is_ok();
    let outcome = if ok { "ok" } else { "failed" };
    if !ok {
        span.error("the key set could not be fetched");
    }
    drop(span);
    spike_sdk::telemetry::count("auth_jwks_fetches", 1, &[("outcome", outcome)]);
    let record = match fetched {
        Ok((keys, max_age_s)) => Record {
            url: url.into(),
            fetched_at_ms: now,
            max_age_s,
            attempted_at_ms: now,
            keys,
        },
        Err(why) => {
            eprintln!("auth: fetching the key set {url} failed: {why}");
            let mut record = old.unwrap_or(Record {
                url: url.into(),
                fetched_at_ms: 0,
                max_age_s: 0,
                attempted_at_ms: 0,
                keys: Vec::new(),
            });
            record.attempted_at_ms = now;
            record
        }
    };
    let bytes = serde_json::to_vec(&record).expect("a record serializes");
    if let Err(e) = ns.set(
        key,
        &bytes,
        &SetOptions {
            ttl_ms: None,
            metadata: None,
        },
    ) {
        eprintln!("auth: caching the key set failed: {}", e.message());
    }
    (record, ok)
}

/// The keys at `url` and how long they are fresh, in seconds.
fn fetch(url: &str, settings: &JwksSettings) -> Result<(Vec<Value>, u64), String> {
    let got = Fetch::get(url)
        .map_err(|e| e.to_string())?
        .header("accept", "application/json")
        .timeout(settings.timeout)
        .max_body(MAX_JWKS_BYTES)
        .send()
        .map_err(|e| e.to_string())?;
    if got.status != 200 {
        return Err(format!("status {}", got.status));
    }
    #[derive(Deserialize)]
    struct Jwks {
        keys: Vec<Value>,
    }
    let set: Jwks =
        serde_json::from_slice(&got.body).map_err(|e| format!("not a JWKS document: {e}"))?;
    if !set.keys.iter().all(Value::is_object) {
        return Err("not a JWKS document: a key is not an object".into());
    }
    let max_age_s = got
        .header("cache-control")
        .map(|cc| max_age(cc, settings.default_max_age_s))
        .unwrap_or(settings.default_max_age_s);
    Ok((set.keys, max_age_s))
}

/// The freshness a `Cache-Control` value gives, in seconds.
fn max_age(cache_control: &str, default_s: u64) -> u64 {
    let mut age = default_s;
    for directive in cache_control.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return 0;
        }
        if let Some(n) = lower.strip_prefix("max-age=") {
            age = n.trim_matches('"').parse().unwrap_or(0);
        }
    }
    age.min(MAX_AGE_CEILING_S)
}

/// Whether this instance is the one to fetch for `purpose` in the current
/// window of `window_ms`: the first to count the window's KV counter. If
/// the KV fails, it fetches: a lost claim must not stop verification.
fn claim(ns: &Namespace, id: &str, purpose: &str, now: u64, window_ms: u64) -> bool {
    let window_ms = window_ms.max(1);
    let key = format!("claim:{id}:{purpose}:{}", now / window_ms);
    match ns.increment(&key, 1) {
        Ok(1) => {
            // Give the counter an expiry so old windows do not pile up.
            // Whoever counts after this still counts past 1.
            let expiry = SetOptions {
                ttl_ms: Some(2 * window_ms + 1000),
                metadata: None,
            };
            let _ = ns.set(&key, b"1", &expiry);
            true
        }
        Ok(_) => false,
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_sets_freshness() {
        assert_eq!(max_age("public, max-age=600", 300), 600);
        assert_eq!(max_age("max-age=0", 300), 0);
        assert_eq!(max_age("no-store", 300), 0);
        assert_eq!(max_age("public", 300), 300);
        assert_eq!(max_age("max-age=junk", 300), 0);
        assert_eq!(max_age("max-age=99999999", 300), MAX_AGE_CEILING_S);
    }
}
