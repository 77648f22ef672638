//! Document paths: what a client may name, and where it is kept.
//!
//! A path is the rest of the URL after `/my-cms/` or `/live-cms/`,
//! percent-decoded. It is refused (400) if it could escape its space or
//! confuse the keys built from it: `.` or `..` segments (also when encoded
//! as `%2e`), empty segments, backslashes, control characters (NUL
//! included), `#` (the version separator), invalid UTF-8, or more than
//! [`MAX_PATH_BYTES`].

use sha2::{Digest, Sha256};
use spike_sdk::http::percent_decode_path;
use spike_sdk::identity::Caller;

/// The longest path, decoded; keys add at most 60 bytes to it.
pub const MAX_PATH_BYTES: usize = 400;

/// Whose documents: one user's (`/my-cms/`) or everyone's (`/live-cms/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Space(String);

impl Space {
    /// The caller's own space, named by a hash of issuer and subject so no
    /// subject can spell its way into another's keys.
    pub fn of(caller: &Caller) -> Self {
        let mut h = Sha256::new();
        h.update(caller.issuer.as_bytes());
        h.update([0]);
        h.update(caller.subject.as_bytes());
        Space(format!("u/{}", &hex::encode(h.finalize())[..32]))
    }

    pub fn live() -> Self {
        Space("live".into())
    }
}

/// A checked path: a document (`notes/a.md`) or a folder (`notes/`, or
/// the empty root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocPath {
    pub path: String,
    pub is_folder: bool,
}

/// Checks the raw (still percent-encoded) rest of the URL.
pub fn parse(raw: &str) -> Result<DocPath, &'static str> {
    let decoded = percent_decode_path(raw).ok_or("the path is not valid percent-encoded UTF-8")?;
    if decoded.len() > MAX_PATH_BYTES {
        return Err("the path is too long");
    }
    if decoded
        .chars()
        .any(|c| c.is_control() || c == '\\' || c == '#')
    {
        return Err("the path holds a control character, a backslash or '#'");
    }
    let is_folder = decoded.is_empty() || decoded.ends_with('/');
    let body = decoded.strip_suffix('/').unwrap_or(&decoded);
    if !body.is_empty() {
        for segment in body.split('/') {
            if segment.is_empty() {
                return Err("the path has an empty segment");
            }
            if segment == "." || segment == ".." {
                return Err("the path has a '.' or '..' segment");
            }
        }
    }
    Ok(DocPath {
        path: decoded,
        is_folder,
    })
}

/// The KV key of a document's head (its current body and metadata).
pub fn head_key(space: &Space, path: &str) -> String {
    format!("d/{}/{path}", space.0)
}

/// The prefix of the head keys of a folder's documents.
pub fn folder_prefix(space: &Space, folder: &str) -> String {
    format!("d/{}/{folder}", space.0)
}

/// The KV key of an earlier version's body.
pub fn version_key(space: &Space, path: &str, version: u64) -> String {
    format!("v/{}/{path}#{version}", space.0)
}

/// The blob key of a body uploaded to blob storage.
pub fn blob_key(space: &Space, path: &str, upload: &str) -> String {
    format!("{}/{path}#{upload}", space.0)
}

/// The KV key writers of a document take turns on.
pub fn lock_key(space: &Space, path: &str) -> String {
    format!("l/{}/{path}", space.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_junk_are_refused() {
        for bad in [
            "..", "a/../b", "%2e%2e/x", "a/%2E%2E", "./a", "a//b", "a\\b", "a%5cb", "a%00b",
            "a%0ab", "a%23b", "%zz", "%ff%fe", "%",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse(&"a".repeat(MAX_PATH_BYTES + 1)).is_err());
    }

    #[test]
    fn documents_and_folders() {
        let doc = parse("notes/caf%C3%A9%20list.md").unwrap();
        assert_eq!(doc.path, "notes/café list.md");
        assert!(!doc.is_folder);
        assert!(parse("notes/").unwrap().is_folder);
        assert!(parse("").unwrap().is_folder);
        assert!(parse("a.b/..c/d..").is_ok());
    }

    #[test]
    fn spaces_of_two_callers_differ_and_keep_no_raw_subject() {
        let caller = |sub: &str| Caller {
            subject: sub.into(),
            session_id: None,
            issuer: "https://issuer".into(),
            claims: "{}".into(),
            expires_at_ms: None,
        };
        let a = Space::of(&caller("user_a"));
        assert_ne!(a, Space::of(&caller("user_b")));
        assert_eq!(a, Space::of(&caller("user_a")));
        assert!(!head_key(&Space::of(&caller("x/../y")), "p").contains(".."));
    }
}
