//! Small helpers every layer uses: the wall clock, hashes, names for
//! temporary files and private folders (the storage crate's, which is the
//! bottom layer), request headers as the WIT exports take them, percent-decoding.

pub use crate::storage::util::{
    now_ms, private_dir, private_file, sha256_hex, unique_suffix, unpoisoned,
};

/// Headers as the guest exports that look at a request take them (the
/// authenticator's `request-head`, the room handler's `connect`): names in
/// lower case, values as bytes.
pub fn header_pairs(headers: &http::HeaderMap) -> Vec<(String, Vec<u8>)> {
    (headers.iter())
        .map(|(name, value)| (name.as_str().to_string(), value.as_bytes().to_vec()))
        .collect()
}

/// `s` with its `%XX` escapes decoded; `None` for a bad escape or bytes
/// that are not UTF-8 (`+` stays `+`): a lossy guess could name the wrong
/// file, or the wrong attribute.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A background task that ends when its owner drops this.
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
