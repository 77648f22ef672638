//! What every KV backend does the same way: the byte layout of a stored
//! entry, whether it is live, the arithmetic of `increment`, and what a
//! compare-and-swap expects and finds.

use super::{KvEntry, StorageError};

/// The byte layout of a stored entry:
/// `[version=1][expires_at u64 LE, 0 = never][metadata length u32 LE, MAX = none][metadata][value]`.
pub mod codec {
    use crate::KvEntry;

    const VERSION: u8 = 1;
    const HEADER: usize = 1 + 8 + 4;

    pub fn encode(e: &KvEntry) -> Vec<u8> {
        let meta = e.metadata.as_deref().map(str::as_bytes);
        let mut out = Vec::with_capacity(HEADER + meta.map_or(0, <[u8]>::len) + e.value.len());
        out.push(VERSION);
        out.extend_from_slice(&e.expires_at_ms.unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&meta.map_or(u32::MAX, |m| m.len() as u32).to_le_bytes());
        out.extend_from_slice(meta.unwrap_or_default());
        out.extend_from_slice(&e.value);
        out
    }

    /// Reads only the expiry, without copying the value.
    pub fn expires_at(bytes: &[u8]) -> Option<u64> {
        let t = u64::from_le_bytes(bytes.get(1..9)?.try_into().ok()?);
        (t != 0).then_some(t)
    }

    pub fn decode(bytes: &[u8]) -> Option<KvEntry> {
        if bytes.len() < HEADER || bytes[0] != VERSION {
            return None;
        }
        let expires_at_ms = expires_at(bytes);
        let meta_len = u32::from_le_bytes(bytes[9..13].try_into().ok()?);
        let (metadata, rest) = if meta_len == u32::MAX {
            (None, &bytes[HEADER..])
        } else {
            let end = HEADER.checked_add(meta_len as usize)?;
            let meta = std::str::from_utf8(bytes.get(HEADER..end)?).ok()?;
            (Some(meta.to_string()), &bytes[end..])
        };
        Some(KvEntry {
            value: rest.to_vec(),
            metadata,
            expires_at_ms,
        })
    }

    /// Reads the metadata only (for listings).
    pub fn metadata(bytes: &[u8]) -> Option<String> {
        let meta_len = u32::from_le_bytes(bytes.get(9..13)?.try_into().ok()?);
        if meta_len == u32::MAX {
            return None;
        }
        let meta = bytes.get(13..13 + meta_len as usize)?;
        std::str::from_utf8(meta).ok().map(str::to_string)
    }
}

/// The value a compare-and-swap expects under its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// No live value: the key is absent or expired.
    Absent,
    /// This value, byte for byte.
    Value(Vec<u8>),
    /// A value whose SHA-256 is this: what a holder of many compare-and-swap
    /// handles keeps instead of their values (`wasi:keyvalue`'s `cas`).
    Sha256([u8; 32]),
}

impl Expected {
    /// What a swap that found `value` (`None`: no live value) expects next.
    pub fn digest_of(value: Option<&[u8]>) -> Self {
        use sha2::Digest as _;
        match value {
            None => Expected::Absent,
            Some(v) => Expected::Sha256(sha2::Sha256::digest(v).into()),
        }
    }

    /// Whether `live` (the live value, if any) is the one expected.
    pub fn matches(&self, live: Option<&[u8]>) -> bool {
        use sha2::Digest as _;
        match (self, live) {
            (Expected::Absent, None) => true,
            (Expected::Value(x), Some(v)) => x == v,
            (Expected::Sha256(d), Some(v)) => sha2::Sha256::digest(v).as_slice() == d,
            _ => false,
        }
    }
}

/// What `KvBackend::compare_and_swap` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Swap {
    /// The live value was the expected one; the new entry replaced it.
    Done,
    /// It was not: the live entry found instead (`None`: absent or
    /// expired), left as it was.
    Changed(Option<KvEntry>),
}

/// Whether `entry` has not expired at `now`.
pub fn live(entry: &KvEntry, now: u64) -> bool {
    entry.expires_at_ms.is_none_or(|t| t > now)
}

/// What a compare-and-swap finds in `old` (the stored entry, live or
/// not): `None` if the live value is `expected`, so the swap may write;
/// else the live entry, which the swap leaves alone.
pub fn swap_refused(
    old: Option<KvEntry>,
    expected: &Expected,
    now: u64,
) -> Option<Option<KvEntry>> {
    let current = old.filter(|e| live(e, now));
    let matches = expected.matches(current.as_ref().map(|e| e.value.as_slice()));
    (!matches).then_some(current)
}

/// The entry `increment` writes over `old` (the stored entry, live or not),
/// and the new number; refused, having computed nothing to write, when the
/// live value is not a decimal integer or the sum overflows. A live key
/// keeps its metadata and expiry (a counter per time window, a lock that
/// must lapse if its holder dies); an absent or expired one starts at 0.
pub fn incremented(
    old: Option<&KvEntry>,
    key: &str,
    delta: i64,
    now: u64,
) -> Result<(KvEntry, i64), StorageError> {
    let (current, metadata, expires_at_ms) = match old {
        Some(e) if live(e, now) => {
            let parsed = std::str::from_utf8(&e.value)
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok());
            let Some(n) = parsed else {
                return Err(StorageError::NotAnInteger { key: key.into() });
            };
            (n, e.metadata.clone(), e.expires_at_ms)
        }
        _ => (0, None, None),
    };
    let Some(next) = current.checked_add(delta) else {
        return Err(StorageError::Overflow { key: key.into() });
    };
    let entry = KvEntry {
        value: next.to_string().into_bytes(),
        metadata,
        expires_at_ms,
    };
    Ok((entry, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_round_trips() {
        for e in [
            KvEntry {
                value: b"v".to_vec(),
                metadata: None,
                expires_at_ms: None,
            },
            KvEntry {
                value: vec![],
                metadata: Some("{}".into()),
                expires_at_ms: Some(5),
            },
            KvEntry {
                value: vec![0; 1000],
                metadata: Some(String::new()),
                expires_at_ms: None,
            },
        ] {
            let bytes = codec::encode(&e);
            assert_eq!(codec::decode(&bytes), Some(e.clone()));
            assert_eq!(codec::metadata(&bytes), e.metadata);
            assert_eq!(codec::expires_at(&bytes), e.expires_at_ms);
        }
        assert_eq!(codec::decode(&[9, 9]), None);
    }
}
