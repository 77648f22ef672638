//! Answers to identical, deterministic calls, kept in KV: a non-streaming
//! request with `temperature: 0` gets the same answer for `CACHE_TTL_S`
//! (`x-cache: hit`) instead of a provider's time and tokens.
//!
//! The key is a SHA-256 of the caller's format, the model and the request
//! body as sent (the same bytes ask the same question); the value is the
//! answer as the caller got it, with its token counts in the metadata.

use serde_json::Value;
use spike_sdk::cache::KvCache;

use crate::config::Format;
use crate::translate::Usage;

/// Whether the request is one the cache answers: not a stream, and
/// `temperature` given as 0.
pub fn cacheable(request: &Value) -> bool {
    request.get("stream").and_then(Value::as_bool) != Some(true)
        && request.get("temperature").and_then(Value::as_f64) == Some(0.0)
}

pub fn key(format: Format, model: &str, body: &[u8]) -> String {
    spike_sdk::cache::key(
        "cache:",
        &[format.name().as_bytes(), model.as_bytes(), body],
    )
}

/// The cached answer and its usage, if there is one.
pub fn get(cache: &KvCache<'_>, key: &str) -> Option<(Vec<u8>, Usage)> {
    let entry = cache.get(key)?;
    let usage = entry
        .metadata
        .as_deref()
        .and_then(|m| serde_json::from_str::<Value>(m).ok())
        .and_then(|m| Usage::read(&m))
        .unwrap_or_default();
    Some((entry.value, usage))
}

pub fn put(cache: &KvCache<'_>, key: &str, answer: &[u8], usage: Usage) {
    let metadata = format!(
        r#"{{"input_tokens":{},"output_tokens":{}}}"#,
        usage.input, usage.output
    );
    if let Err(e) = cache.put(key, answer, Some(metadata)) {
        eprintln!("ai: an answer could not be cached: {}", e.message());
    }
}
