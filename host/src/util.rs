//! Small helpers every layer uses: the wall clock, hashes, names for
//! temporary files and private folders (the storage crate's, which is the
//! bottom layer), request headers as the WIT exports take them.

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
