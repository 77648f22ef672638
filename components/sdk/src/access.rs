//! Who is calling and what they may do, as answers a handler can return
//! with `?`: a signed-in caller or 401, a quota or 429, a secret or 503
//! saying how to set it.
//!
//! ```ignore
//! use spike_sdk::access;
//!
//! router.post("/generate", |req, _| -> Result<Response, HttpError> {
//!     let caller = access::signed_in()?;
//!     access::within_quota("generate", &access::caller_key(true), 1)?;
//!     let key = access::secret("PROVIDER_KEY")?;
//!     ...
//! })
//! ```

use std::net::IpAddr;

use crate::identity::{self, Caller};
use crate::rate_limit::{self, Decision};
use crate::router::HttpError;
use crate::{Error, secrets};

/// The verified caller, or 401 `missing_token` with
/// `WWW-Authenticate: Bearer` (the host's own answer to a route that
/// needs a caller). On a route whose manifest says
/// `auth = "required"` the host has answered 401 before the plugin runs;
/// this is for `auth = "optional"` routes where some methods need a caller.
pub fn signed_in() -> Result<Caller, HttpError> {
    identity::current().ok_or_else(|| {
        HttpError::new(
            401,
            "missing_token",
            "this needs a signed-in caller (Authorization: Bearer, or the __session cookie)",
        )
        .with_header("www-authenticate", "Bearer")
    })
}

/// Whether `caller` is the server's operator: the caller the host gives a
/// route whose manifest says `auth = "operator"` (who sent the operator's
/// token). No authenticator's caller is: the host refuses one of issuer
/// `spike`.
pub fn is_operator(caller: &Caller) -> bool {
    caller.issuer == "spike" && caller.subject == "operator"
}

/// A key for per-caller limits: `user:<subject>` for a signed-in caller
/// when `prefer_user`, else the client's address, an IPv6 address by its
/// /64 (one host holds all of it): `ip:203.0.113.7`,
/// `ip:2001:db8:0:1::/64`; `anonymous` when the request has no client
/// (room events, authentication).
pub fn caller_key(prefer_user: bool) -> String {
    if prefer_user && let Some(caller) = identity::current() {
        return format!("user:{}", caller.subject);
    }
    match identity::client_address().and_then(|a| a.parse::<IpAddr>().ok()) {
        Some(ip) => address_key(ip),
        None => "anonymous".into(),
    }
}

fn address_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("ip:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        IpAddr::V4(v4) => format!("ip:{v4}"),
    }
}

/// Counts `cost` calls against `quota` for `key`. When they do not fit:
/// 429 `rate_limited` with `Retry-After` (whole seconds, at least 1). A
/// quota the manifest does not declare: 503 `misconfigured`, naming the
/// `[quotas.<name>]` table to add.
pub fn within_quota(quota: &str, key: &str, cost: u32) -> Result<Decision, HttpError> {
    match rate_limit::check(quota, key, cost) {
        Ok(d) if d.allowed => Ok(d),
        Ok(d) => Err(over_quota(&d)),
        Err(e) => Err(HttpError::new(
            503,
            "misconfigured",
            format!(
                "the quota '{quota}' cannot be checked ({}): declare [quotas.{quota}] in the manifest",
                e.message()
            ),
        )),
    }
}

/// The 429 for a refused `decision`.
pub fn over_quota(decision: &Decision) -> HttpError {
    let seconds = retry_after_s(decision);
    HttpError::new(
        429,
        "rate_limited",
        format!(
            "rate limit reached: {} calls per period; try again in {seconds} s",
            decision.limit
        ),
    )
    .with_header("retry-after", seconds.to_string())
}

/// Whole seconds until a refused call would fit, at least 1 (what
/// `Retry-After` says).
pub fn retry_after_s(decision: &Decision) -> u64 {
    decision.retry_after_ms.div_ceil(1000).max(1)
}

/// The secret `name`, or 503 `misconfigured` saying how to provide it (see
/// [`secret_hint`]).
pub fn secret(name: &str) -> Result<String, HttpError> {
    secrets::get(name).map_err(|e| {
        HttpError::new(
            503,
            "misconfigured",
            format!(
                "the secret '{name}' is not available: {}",
                secret_hint(name, &e)
            ),
        )
    })
}

/// What an operator does about a secret that `secrets::get` refused: grant
/// it in the manifest, or set it.
pub fn secret_hint(name: &str, error: &Error) -> String {
    match error {
        Error::AccessDenied(_) => {
            format!("the manifest does not grant the secret '{name}' (grants.secrets)")
        }
        _ => format!(
            "set the secret '{name}' (in the secrets file, or {})",
            secret_env_var(name)
        ),
    }
}

/// The environment variable the host reads secret `name` from:
/// `SPIKE_SECRET_` and the name upper-cased, other characters as `_`.
pub fn secret_env_var(name: &str) -> String {
    let tail: String = name
        .chars()
        .map(|c| match c.is_ascii_alphanumeric() {
            true => c.to_ascii_uppercase(),
            false => '_',
        })
        .collect();
    format!("SPIKE_SECRET_{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_keys_hold_a_v6_host_by_its_64() {
        assert_eq!(
            address_key("203.0.113.7".parse().unwrap()),
            "ip:203.0.113.7"
        );
        assert_eq!(
            address_key("2001:db8:0:1:aaaa::7".parse().unwrap()),
            "ip:2001:db8:0:1::/64"
        );
    }

    #[test]
    fn quota_answers() {
        let d = Decision {
            allowed: false,
            limit: 5,
            remaining: 0,
            retry_after_ms: 1001,
        };
        let e = over_quota(&d);
        assert_eq!((e.status, e.code.as_str()), (429, "rate_limited"));
        assert_eq!(e.headers, vec![("retry-after".into(), "2".into())]);
        let d = Decision {
            retry_after_ms: 0,
            ..d
        };
        assert_eq!(retry_after_s(&d), 1);
    }

    #[test]
    fn secret_hints() {
        assert_eq!(secret_env_var("turn.key-1"), "SPIKE_SECRET_TURN_KEY_1");
        let denied = secret_hint("k", &Error::AccessDenied(String::new()));
        assert!(denied.contains("grants.secrets"), "{denied}");
        let missing = secret_hint("k", &Error::InvalidInput(String::new()));
        assert!(missing.contains("SPIKE_SECRET_K"), "{missing}");
    }
}
