//! Answers kept under a hash of what decides them, so that a repeated
//! request is answered without doing its work again: the AI router's
//! deterministic completions and the transpiler's outputs in KV
//! (`KvCache`), the renderer's renders in blob storage. `key` is the one
//! way to name such an answer.

use sha2::{Digest, Sha256};

use crate::kv::{Entry, Namespace, SetOptions};

/// The name of an answer: `prefix`, then the SHA-256 in hex of `parts` in
/// order, each hashed with its length first, so that no two different
/// lists of parts (`["ab", "c"]` and `["a", "bc"]`) name the same answer.
pub fn key(prefix: &str, parts: &[&[u8]]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    format!("{prefix}{}", hex::encode(hash.finalize()))
}

/// Answers in a KV namespace the manifest grants, each kept for a time.
/// Reading one that cannot be read is a miss: a cache only ever saves work.
pub struct KvCache<'a> {
    namespace: &'a Namespace,
    ttl_ms: u64,
}

impl<'a> KvCache<'a> {
    /// The answers in `namespace`, each kept for `ttl_s` seconds.
    pub fn new(namespace: &'a Namespace, ttl_s: u64) -> Self {
        Self {
            namespace,
            ttl_ms: ttl_s.saturating_mul(1000),
        }
    }

    /// The answer under `key`, with what was stored beside it, if it is
    /// there and alive.
    pub fn get(&self, key: &str) -> Option<Entry> {
        self.namespace.get_with_metadata(key).ok().flatten()
    }

    /// Keeps `answer` under `key`, with `metadata` (at most 1 KiB) beside
    /// it. A failure is the caller's to log or ignore: the answer itself
    /// is good.
    pub fn put(
        &self,
        key: &str,
        answer: &[u8],
        metadata: Option<String>,
    ) -> Result<(), crate::Error> {
        let options = SetOptions {
            ttl_ms: Some(self.ttl_ms),
            metadata,
        };
        self.namespace.set(key, answer, &options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_told_apart_by_their_lengths() {
        let a = key("v1/", &[b"ab", b"c"]);
        assert_ne!(a, key("v1/", &[b"a", b"bc"]));
        assert_eq!(a, key("v1/", &[b"ab", b"c"]));
        assert!(a.starts_with("v1/") && a.len() == 3 + 64, "{a}");
    }
}
