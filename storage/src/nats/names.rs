//! Names as NATS subject tokens. A KV key or a subject is a list of tokens
//! separated by `.`, each made of a few safe characters; spike's names
//! (namespaces, keys, rooms) may hold any character. Each name becomes one
//! token: letters, digits, `-`, `_` and `/` as they are, every other byte
//! of its UTF-8 as `=XX`, and the empty name as `=`. A name's prefix stays
//! a prefix of its token, which keeps encoding cheap to reason about; order
//! is restored by sorting the decoded names.

fn passes(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'/')
}

/// `name` as one token.
pub fn token(name: &str) -> String {
    if name.is_empty() {
        return "=".into();
    }
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if passes(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    out
}

/// The name a token holds; `None` if it is not one `token` made.
pub fn name(token: &str) -> Option<String> {
    if token == "=" {
        return Some(String::new());
    }
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else if passes(bytes[i]) {
            out.push(bytes[i]);
            i += 1;
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

/// The KV key of `key` within `scope` (a namespace, a bucket, a room).
pub fn scoped(scope: &str, key: &str) -> String {
    format!("{}.{}", token(scope), token(key))
}

/// The name of the key within its scope, from a KV key `scoped` made.
pub fn unscoped(kv_key: &str) -> Option<String> {
    name(kv_key.split_once('.')?.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_as_one_token() {
        for n in [
            "",
            "plain-key_1/2",
            "a.b",
            "with space",
            "=",
            "*>",
            "ünïcødé 🙂",
            "user:42",
        ] {
            let t = token(n);
            assert!(!t.contains('.') && !t.contains(' ') && !t.is_empty(), "{t}");
            assert!(
                t.bytes().all(|b| passes(b) || b == b'='),
                "{t} is not a valid token"
            );
            assert_eq!(name(&t).as_deref(), Some(n));
        }
        assert!(token("user:4").len() < token("user:42").len());
        assert!(token("user:42").starts_with(&token("user:4")));
        assert_eq!(name("=4"), None);
        assert_eq!(name("a.b"), None);
        assert_eq!(unscoped(&scoped("ns", "a.b")).as_deref(), Some("a.b"));
    }
}
