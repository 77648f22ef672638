//! Small helpers every layer uses: the wall clock, hashes, names for
//! temporary files, request headers as the WIT exports take them.

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A suffix for a temporary file that no other writer in any spike process
/// uses: write to `name.<suffix>`, then rename into place.
pub fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
/// Headers as the guest exports that look at a request take them (the
/// authenticator's `request-head`, the room handler's `connect`): names in
/// lower case, values as bytes.
pub fn header_pairs(headers: &http::HeaderMap) -> Vec<(String, Vec<u8>)> {
    (headers.iter())
        .map(|(name, value)| (name.as_str().to_string(), value.as_bytes().to_vec()))
        .collect()
}
