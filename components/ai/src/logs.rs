//! The record of recent calls behind `GET /ai-logs`.
//!
//! Each call is one KV key, `log:<20-digit reversed time>:<random>`, so an
//! ascending listing reads the newest first; the record itself is the
//! key's metadata (read by the listing, no `get` per call) and lives
//! `LOG_TTL_S`. Prompts and answers are kept, in the value, only if the
//! operator sets `LOG_PROMPTS`. A record never holds a key or a caller's
//! credentials: it is written from the fields below only.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use spike_sdk::kv::{Namespace, SetOptions};

/// Prompts and answers kept per call, at most.
const MAX_KEPT_BYTES: usize = 64 * 1024;

/// The longest model or error text recorded (metadata holds 1 KiB).
const MAX_FIELD_CHARS: usize = 160;

/// One call, as `/ai-logs` lists it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Call {
    /// When it began, Unix ms.
    pub time_ms: u64,
    pub route: String,
    /// The provider that answered (or was tried last); empty if none was.
    pub provider: String,
    pub model: String,
    pub status: u16,
    pub latency_ms: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub cache_hit: bool,
    pub stream: bool,
    /// Tries of the provider, the first included.
    pub attempts: u32,
    /// The model first asked for, when a fallback answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn clip(s: &mut String) {
    if s.chars().count() > MAX_FIELD_CHARS {
        *s = s.chars().take(MAX_FIELD_CHARS).collect::<String>() + "…";
    }
}

fn clip_bytes(b: &[u8]) -> String {
    let end = b.len().min(MAX_KEPT_BYTES);
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Stores `call`; `exchange` (prompt, answer) only when prompts are logged.
pub fn record(ns: &Namespace, mut call: Call, ttl_s: u64, exchange: Option<(&[u8], &[u8])>) {
    clip(&mut call.model);
    clip(&mut call.route);
    if let Some(e) = &mut call.error {
        clip(e);
    }
    let Ok(metadata) = serde_json::to_string(&call) else {
        return;
    };
    let value = match exchange {
        Some((prompt, answer)) => {
            json!({"prompt": clip_bytes(prompt), "answer": clip_bytes(answer)}).to_string()
        }
        None => String::new(),
    };
    let suffix = spike_sdk::wasi::random::random::get_random_u64() & 0xffff_ffff;
    let key = format!("log:{:020}:{suffix:08x}", u64::MAX - call.time_ms);
    let options = SetOptions {
        ttl_ms: Some(ttl_s.saturating_mul(1000)),
        metadata: Some(metadata),
    };
    if let Err(e) = ns.set(&key, value.as_bytes(), &options) {
        eprintln!("ai: a call could not be logged: {}", e.message());
    }
}

/// The newest `limit` calls, with prompts if they were kept.
pub fn recent(
    ns: &Namespace,
    limit: u32,
    with_prompts: bool,
) -> Result<Vec<Value>, spike_sdk::Error> {
    let page = ns.list("log:", None, limit)?;
    let mut calls = Vec::with_capacity(page.keys.len());
    for key in page.keys {
        let Some(mut call) = key
            .metadata
            .as_deref()
            .and_then(|m| serde_json::from_str::<Value>(m).ok())
        else {
            continue;
        };
        if with_prompts
            && let Ok(Some(value)) = ns.get(&key.name)
            && let Ok(Value::Object(kept)) = serde_json::from_slice::<Value>(&value)
        {
            for (k, v) in kept {
                call[k] = v;
            }
        }
        calls.push(call);
    }
    Ok(calls)
}
