//! How documents are kept, in the plugin's KV namespace and blob bucket.
//!
//! - The **head** of a document (KV `d/<space>/<path>`) holds its current
//!   body when that is small, and its [`Meta`] as the key's metadata: one
//!   `get-with-metadata` answers a `GET`, and a folder listing reads the
//!   metadata without the bodies.
//! - A body above the threshold streams to blob storage first, under a
//!   key of its own (`<space>/<path>#<upload id>`), with no lock held; the
//!   head then names it and holds no body.
//! - Earlier small versions live in KV (`v/<space>/<path>#<n>`), written
//!   when the next version replaces them.
//! - Writers of one document take turns through a KV counter (`l/...`,
//!   [`Lock`]) for the short step of checking preconditions and writing the
//!   new head, so no other writer comes in between. A writer that crashes
//!   holding it delays the document's next write by [`LOCK_TTL_MS`] at
//!   most.
//!
//! Writing the head is the commit: whatever was written before it (a blob
//! object, an earlier version's copy) is invisible until then, so a crash
//! at any point leaves the previous version whole.

use serde::{Deserialize, Serialize};
use spike_sdk::Error;
use spike_sdk::kv::{Namespace, SetOptions};
use spike_sdk::wasi::clocks::monotonic_clock;

use crate::path::{self, Space};

/// The KV namespace and blob bucket the manifest grants.
pub const NAMESPACE: &str = "cms";
pub const BUCKET: &str = "cms";

/// How long a writer waits for its turn before answering 503.
const LOCK_WAIT_NS: u64 = 5_000_000_000;
/// A lock outlives a writer that crashed by at most this long (the step it
/// guards takes milliseconds).
pub const LOCK_TTL_MS: u64 = 10_000;

/// The most versions kept: the metadata that lists them is at most 1 KiB.
pub const MAX_VERSIONS: usize = 20;

/// A document's metadata, kept as its head key's metadata (at most 1 KiB).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    /// The current version, from 1.
    #[serde(rename = "v")]
    pub version: u64,
    /// SHA-256 of the body, hex.
    pub etag: String,
    #[serde(rename = "ct")]
    pub content_type: String,
    pub size: u64,
    /// When it was written, Unix ms.
    #[serde(rename = "at")]
    pub updated_at_ms: u64,
    /// The versions kept, oldest first; the last is the current one.
    #[serde(rename = "vs")]
    pub versions: Vec<Version>,
}

/// One kept version, and where its body is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Version {
    pub n: u64,
    /// The blob upload holding it; none for a body in KV (the head's, or
    /// `v/<space>/<path>#<n>` once replaced).
    #[serde(rename = "b", default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<String>,
}

impl Meta {
    pub fn from_json(s: &str) -> Option<Self> {
        serde_json::from_str(s).ok()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("meta serializes")
    }

    /// The `ETag` header value.
    pub fn etag_header(&self) -> String {
        format!("\"{}\"", self.etag)
    }

    /// The current version's entry.
    pub fn current(&self) -> &Version {
        self.versions.last().expect("a document has a version")
    }

    pub fn find(&self, n: u64) -> Option<&Version> {
        self.versions.iter().find(|v| v.n == n)
    }

    /// The version numbers kept, for messages.
    pub fn numbers(&self) -> Vec<u64> {
        self.versions.iter().map(|v| v.n).collect()
    }
}

/// A document's head as read: its metadata and, if small, its body.
pub struct Head {
    pub meta: Meta,
    pub body: Vec<u8>,
}

/// Reads the head of `path` in `space`.
pub fn head(ns: &Namespace, space: &Space, path: &str) -> Result<Option<Head>, Error> {
    let Some(entry) = ns.get_with_metadata(&path::head_key(space, path))? else {
        return Ok(None);
    };
    let meta = entry
        .metadata
        .as_deref()
        .and_then(Meta::from_json)
        .ok_or_else(|| Error::Internal(format!("the metadata of '{path}' is unreadable")))?;
    Ok(Some(Head {
        meta,
        body: entry.value,
    }))
}

/// Writes the head: the commit point of a write.
pub fn write_head(
    ns: &Namespace,
    space: &Space,
    path: &str,
    meta: &Meta,
    inline_body: &[u8],
) -> Result<(), Error> {
    let options = SetOptions {
        ttl_ms: None,
        metadata: Some(meta.to_json()),
    };
    ns.set(&path::head_key(space, path), inline_body, &options)
}

/// A writer's turn on one document; given back when dropped.
pub struct Lock<'a> {
    ns: &'a Namespace,
    key: String,
}

/// Why there was no turn.
pub enum LockError {
    Busy,
    Storage(Error),
}

impl<'a> Lock<'a> {
    /// Waits up to 5 s for the turn on `path`. The first writer to count
    /// the lock's counter to 1 has it; the counter expires if its holder
    /// crashes.
    pub fn take(ns: &'a Namespace, space: &Space, path: &str) -> Result<Self, LockError> {
        let key = path::lock_key(space, path);
        let deadline = monotonic_clock::now() + LOCK_WAIT_NS;
        let mut pause_ns = 1_000_000;
        loop {
            match ns.increment(&key, 1) {
                Ok(1) => {
                    // Whoever counts after this still counts past 1.
                    let expiry = SetOptions {
                        ttl_ms: Some(LOCK_TTL_MS),
                        metadata: None,
                    };
                    ns.set(&key, b"1", &expiry).map_err(LockError::Storage)?;
                    return Ok(Self { ns, key });
                }
                Ok(_) => {}
                Err(e) => return Err(LockError::Storage(e)),
            }
            if monotonic_clock::now() >= deadline {
                return Err(LockError::Busy);
            }
            monotonic_clock::subscribe_duration(pause_ns).block();
            pause_ns = (pause_ns * 2).min(20_000_000);
        }
    }
}

impl Drop for Lock<'_> {
    fn drop(&mut self) {
        let _ = self.ns.delete(&self.key);
    }
}
