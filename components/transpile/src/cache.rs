//! Answers kept in KV (namespace `transpile`) under a hash of everything
//! that decides them: the transpiler's version, the mode, the options, the
//! caller's origin and the sources. A repeated request is answered without
//! running swc.
//!
//! A request with `Cache-Control: no-cache` is compiled again (and its
//! answer stored); `no-store` neither reads nor writes; the manifest's
//! `CACHE = "off"` turns the cache off. `CACHE_TTL_S` (default a day) is
//! how long an answer is kept.

use spike_sdk::cache::KvCache;
use spike_sdk::kv::Namespace;

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

/// The key for a request: the transpiler's version, then `parts`.
pub fn key(parts: &[&[u8]]) -> String {
    let mut all = vec![crate::swc_version().as_bytes()];
    all.extend_from_slice(parts);
    spike_sdk::cache::key("v2/", &all)
}

/// The stored answer, if any. A storage failure is a miss: the cache only
/// ever saves work.
pub fn get(key: &str) -> Option<Vec<u8>> {
    let ns = Namespace::open(NAMESPACE).ok()?;
    // (How long an answer is kept is the writer's business.)
    KvCache::new(&ns, 0).get(key).map(|entry| entry.value)
}

pub fn put(key: &str, value: &[u8]) {
    let ttl_s: u64 = crate::number_setting("CACHE_TTL_S", 86_400);
    let Ok(ns) = Namespace::open(NAMESPACE) else {
        return;
    };
    // Not stored is only not cached: the answer itself is good.
    let _ = KvCache::new(&ns, ttl_s).put(key, value, None);
}
