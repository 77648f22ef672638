//! Answers kept in KV (namespace `transpile`) under a hash of everything
//! that decides them: the transpiler's version, the mode, the options, the
//! caller's origin and the sources. A repeated request is answered without
//! running swc.
//!
//! A request with `Cache-Control: no-cache` is compiled again (and its
//! answer stored); `no-store` neither reads nor writes; the manifest's
//! `CACHE = "off"` turns the cache off. `CACHE_TTL_S` (default a day) is
//! how long an answer is kept.

use sha2::{Digest, Sha256};
use spike_sdk::kv::{Namespace, SetOptions};

const NAMESPACE: &str = "transpile";

/// What the caller allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub read: bool,
    pub write: bool,
}

impl Policy {
    /// Whether the cache is read or written at all.
    pub fn used(self) -> bool {
        self.read || self.write
    }

    pub fn for_request(cache_control: Option<&str>) -> Self {
        if crate::setting("CACHE").is_some_and(|v| v.eq_ignore_ascii_case("off")) {
            return Policy {
                read: false,
                write: false,
            };
        }
        let has = |directive: &str| {
            cache_control.is_some_and(|v| {
                v.split(',')
                    .any(|d| d.trim().eq_ignore_ascii_case(directive))
            })
        };
        Policy {
            read: !has("no-cache") && !has("no-store"),
            write: !has("no-store"),
        }
    }
}

/// The key for a request: `parts` are hashed in order, each with its
/// length so that no two different lists hash alike.
pub fn key(parts: &[&[u8]]) -> String {
    let mut hash = Sha256::new();
    hash.update(crate::swc_version().as_bytes());
    for part in parts {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    format!("v1/{}", hex::encode(hash.finalize()))
}

/// The stored answer, if any. A storage failure is a miss: the cache only
/// ever saves work.
pub fn get(key: &str) -> Option<Vec<u8>> {
    let ns = Namespace::open(NAMESPACE).ok()?;
    ns.get(key).ok().flatten()
}

pub fn put(key: &str, value: &[u8]) {
    let ttl_s: u64 = crate::number_setting("CACHE_TTL_S", 86_400);
    let Ok(ns) = Namespace::open(NAMESPACE) else {
        return;
    };
    let options = SetOptions {
        ttl_ms: Some(ttl_s.saturating_mul(1000)),
        metadata: None,
    };
    // Not stored is only not cached: the answer itself is good.
    let _ = ns.set(key, value, &options);
}
