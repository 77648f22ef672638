//! Answers to identical, deterministic calls, kept in KV: a non-streaming
//! request with `temperature: 0` gets the same answer for `CACHE_TTL_S`
//! (`x-cache: hit`) instead of a provider's time and tokens.
//!
//! The key is a SHA-256 of the caller's format, the model and the request
//! body as sent (the same bytes ask the same question); the value is the
//! answer as the caller got it, with its token counts in the metadata.

use serde_json::Value;
use sha2::{Digest, Sha256};
use spike_sdk::kv::{Namespace, SetOptions};

use crate::config::Format;
use crate::translate::Usage;

/// Whether the request is one the cache answers: not a stream, and
/// `temperature` given as 0.
pub fn cacheable(request: &Value) -> bool {
    request.get("stream").and_then(Value::as_bool) != Some(true)
        && request.get("temperature").and_then(Value::as_f64) == Some(0.0)
}

pub fn key(format: Format, model: &str, body: &[u8]) -> String {
    let mut hash = Sha256::new();
    for part in [format.name().as_bytes(), model.as_bytes(), body] {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    format!("cache:{}", hex::encode(hash.finalize()))
}

/// The cached answer and its usage, if there is one.
pub fn get(ns: &Namespace, key: &str) -> Option<(Vec<u8>, Usage)> {
    let entry = ns.get_with_metadata(key).ok()??;
    let usage = entry
        .metadata
        .as_deref()
        .and_then(|m| serde_json::from_str::<Value>(m).ok())
        .and_then(|m| Usage::read(&m))
        .unwrap_or_default();
    Some((entry.value, usage))
}

pub fn put(ns: &Namespace, key: &str, answer: &[u8], usage: Usage, ttl_s: u64) {
    let options = SetOptions {
        ttl_ms: Some(ttl_s.saturating_mul(1000)),
        metadata: Some(format!(
            r#"{{"input_tokens":{},"output_tokens":{}}}"#,
            usage.input, usage.output
        )),
    };
    if let Err(e) = ns.set(key, answer, &options) {
        eprintln!("ai: an answer could not be cached: {}", e.message());
    }
}
