//! The auth hook: before a route with `auth` runs, the host asks the
//! route's authenticator plugin (one that exports `spike:host/authenticator`,
//! such as `components/auth`) who is calling, and hands the answer to the
//! route's plugin through `identity`.
//!
//! Credentials are a bearer token, from `Authorization: Bearer` or the
//! `__session` cookie (as Clerk sends them), read here and nowhere else
//! (`credential`): a request that is ambiguous about it (several
//! `Authorization` headers, several `__session` cookies, a header that is
//! not ASCII) is refused before any guest runs, and the authenticator is
//! handed that one credential, in the place it was found, with no other
//! (`head`). So the token it verified is the token the verdict is cached
//! under: when each side read the request its own way, a request with a
//! garbage cookie and another user's token in a second `Authorization`
//! header made the garbage authenticate as that user for an hour.
//!
//! A request without a credential is anonymous without any guest running.
//! A verified token is cached by its SHA-256, with the authenticator's
//! name, manifest and version, until the token expires (an hour at most),
//! so a repeated token costs a hash and a lookup instead of an instance
//! and a signature check. The cache is bounded; what falls out is verified
//! again.

use std::sync::Arc;
use std::time::Duration;

use futures::TryFutureExt;
use http::HeaderMap;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use sha2::{Digest, Sha256};
use tracing::Instrument;
use tracing::field::Empty;

use crate::telemetry;

use super::PluginRegistry;
use super::dispatch::{DispatchError, classify, instantiate};
use super::state::RequestState;
use crate::bindings::exports::spike::host::authenticator::{Outcome, RequestHead};
use crate::caps::identity::{Caller, OPERATOR_ISSUER};
use crate::metrics::{KindLabels, Metrics, PluginMetrics};
use crate::util::now_ms;

/// Verified tokens kept by default.
pub const DEFAULT_CACHE_ENTRIES: usize = 10_000;

/// The longest token looked at; Clerk's are 1 to 2 KiB.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Longest a verification is trusted without asking again, whatever the
/// token's `exp` says.
const MAX_CACHE_TIME: Duration = Duration::from_secs(3600);

/// The cookie Clerk keeps its session token in.
const SESSION_COOKIE: &str = "__session";

/// What the hook concluded about a request.
pub enum AuthOutcome {
    /// Valid credentials.
    Verified(Arc<Caller>),
    /// No credentials were sent.
    Missing,
    /// Credentials were sent and refused; the reason is for the caller.
    Rejected(String),
    /// Credentials could not be checked now; the reason is for the caller.
    Unavailable(String),
}

/// The cache of verified tokens, and the calls to authenticators.
pub struct AuthHook {
    /// `None` when the operator keeps no cache.
    verified: Option<quick_cache::sync::Cache<[u8; 32], Verified>>,
    metrics: Arc<Metrics>,
}

#[derive(Clone)]
struct Verified {
    caller: Arc<Caller>,
    /// Until when (Unix milliseconds) it may be used.
    until_ms: u64,
}

impl AuthHook {
    /// A hook keeping up to `entries` verified tokens (0: none).
    pub fn new(entries: usize, metrics: &Arc<Metrics>) -> Self {
        Self {
            verified: (entries > 0).then(|| quick_cache::sync::Cache::new(entries)),
            metrics: metrics.clone(),
        }
    }

    /// Who sent `method path` with `headers`, as the plugin `authenticator`
    /// of `registry` sees it.
    pub async fn authenticate(
        &self,
        registry: &PluginRegistry,
        authenticator: &str,
        method: &str,
        path: &str,
        headers: &HeaderMap,
    ) -> AuthOutcome {
        let credential = match credential(headers) {
            Ok(Some(credential)) => credential,
            Ok(None) => return AuthOutcome::Missing,
            Err(reason) => return AuthOutcome::Rejected(reason.into()),
        };
        let token = credential.token;
        let Some(slot) = registry.slot(authenticator) else {
            tracing::error!(
                authenticator,
                "a route names an authenticator that is no plugin"
            );
            return unavailable();
        };
        let Some(plugin) = slot.active() else {
            tracing::warn!(authenticator, "the authenticator plugin is not serving");
            return unavailable();
        };
        let key = cache_key(authenticator, &slot.manifest.sha256, &plugin.sha256, token);
        let span = telemetry::span!(
            "auth",
            spike.authenticator = authenticator,
            spike.auth.cache = Empty
        );
        let counted = |kind| {
            span.record("spike.auth.cache", kind);
            Metrics::count(&self.metrics.auth.cache, slot.context.name(), kind, 1)
        };
        if let Some(cache) = &self.verified
            && let Some(hit) = cache.get(&key)
        {
            if hit.until_ms > now_ms() {
                counted("hit");
                return AuthOutcome::Verified(hit.caller);
            }
            cache.remove(&key);
        }
        counted("miss");
        let head = head(method, path, headers, &credential);
        let called = call(registry, &slot, &plugin, &head);
        let outcome = match called.instrument(span.clone()).await {
            Ok(outcome) => outcome,
            Err(e) => {
                e.count(&slot.context.metrics);
                telemetry::failed(&span, e.kind());
                tracing::warn!(authenticator, "the authenticator failed: {e}");
                return unavailable();
            }
        };
        match outcome {
            // The operator's issuer is the host's to give (`auth =
            // "operator"` routes), never an authenticator's.
            Outcome::Verified(caller) if caller.issuer == OPERATOR_ISSUER => {
                tracing::warn!(
                    authenticator,
                    "the authenticator verified a caller of issuer '{OPERATOR_ISSUER}', which only \
                     the host gives: refused"
                );
                AuthOutcome::Rejected(format!(
                    "a token of issuer '{OPERATOR_ISSUER}' is not accepted"
                ))
            }
            Outcome::Verified(caller) => {
                let ceiling = now_ms().saturating_add(MAX_CACHE_TIME.as_millis() as u64);
                let until_ms = caller.expires_at_ms.unwrap_or(ceiling).min(ceiling);
                let caller = Arc::new(caller);
                if let Some(cache) = &self.verified {
                    let verified = Verified {
                        caller: caller.clone(),
                        until_ms,
                    };
                    cache.insert(key, verified);
                }
                AuthOutcome::Verified(caller)
            }
            // It saw no credentials where the host did: a cookie it does not
            // read, say. Refused, not anonymous: something was sent.
            Outcome::NoCredentials => {
                AuthOutcome::Rejected("the credentials are not a token this server reads".into())
            }
            Outcome::Rejected(reason) => AuthOutcome::Rejected(reason),
            Outcome::Unavailable(reason) => AuthOutcome::Unavailable(reason),
        }
    }
}

fn unavailable() -> AuthOutcome {
    AuthOutcome::Unavailable("authentication is unavailable; try again shortly".into())
}

/// Runs the authenticator's `authenticate` in a fresh instance, under the
/// plugin's limits: its concurrency, memory and CPU, and `timeout_ms` for
/// the whole call.
async fn call(
    registry: &PluginRegistry,
    slot: &super::PluginSlot,
    plugin: &super::LoadedPlugin,
    head: &RequestHead,
) -> Result<Outcome, DispatchError> {
    let indices = plugin.exports.authenticator.as_ref().ok_or_else(|| {
        DispatchError::Internal(format!(
            "plugin '{}' does not export spike:host/authenticator",
            slot.manifest.name
        ))
    })?;
    let _permit = slot
        .try_admit()
        .ok_or(DispatchError::Busy(super::dispatch::Busy::Plugin(
            slot.max_concurrent,
        )))?;
    let limits = &slot.context.limits;
    let mut store = RequestState::new_store(registry.engine(), &slot.context, Default::default());
    let metrics: &PluginMetrics = &slot.context.metrics;
    let span = super::dispatch::guest_span(&slot.manifest.name, plugin, "authenticate", true);
    let run = async {
        let instance = instantiate(&plugin.pre, &mut store, metrics).await?;
        let guest = indices.load(&mut store, &instance)?;
        store.data_mut().begin_call();
        guest.call_authenticate(&mut store, head).await
    };
    let run = telemetry::traced(span, run.map_err(|e| classify(&e)));
    match tokio::time::timeout(limits.timeout, run).await {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(DispatchError::Timeout {
            timeout_ms: limits.timeout.as_millis(),
        }),
    }
}

/// Where a request's bearer token was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Header,
    Cookie,
}

/// A request's one bearer token, and where it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Credential<'a> {
    pub token: &'a str,
    pub source: Source,
}

/// The bearer token of a request: from `Authorization: Bearer`, else from
/// the `__session` cookie. `Err` for a request that is ambiguous about it
/// (several `Authorization` headers, several `__session` cookies, or one
/// of those headers not ASCII, which a reader could take or skip) or a
/// token that cannot be one.
pub(crate) fn credential(headers: &HeaderMap) -> Result<Option<Credential<'_>>, &'static str> {
    let mut authorization = headers.get_all(http::header::AUTHORIZATION).iter();
    let header = authorization.next();
    if authorization.next().is_some() {
        return Err("several Authorization headers: send one");
    }
    let from_header = match header {
        None => None,
        Some(value) => {
            let value = value
                .to_str()
                .map_err(|_| "the Authorization header is not ASCII")?;
            value.trim().split_once(' ').and_then(|(scheme, token)| {
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
        }
    };
    let mut from_cookie = None;
    for value in headers.get_all(http::header::COOKIE) {
        let value = value.to_str().map_err(|_| "a Cookie header is not ASCII")?;
        for pair in value.split(';') {
            let Some((name, value)) = pair.trim().split_once('=') else {
                continue;
            };
            if name.trim() == SESSION_COOKIE {
                if from_cookie.is_some() {
                    return Err("several __session cookies: send one");
                }
                from_cookie = Some(value.trim().trim_matches('"'));
            }
        }
    }
    let credential = match (from_header, from_cookie) {
        (Some(token), _) => Credential {
            token,
            source: Source::Header,
        },
        (None, Some(token)) => Credential {
            token,
            source: Source::Cookie,
        },
        (None, None) => return Ok(None),
    };
    match credential.token {
        "" => Ok(None),
        t if t.len() > MAX_TOKEN_BYTES => Err("the token is too long"),
        // A JWT is base64url segments and dots.
        t if !t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.=".contains(&b)) =>
        {
            Err("the token is malformed")
        }
        _ => Ok(Some(credential)),
    }
}

/// The request as the authenticator sees it: its headers but for the
/// credentials, and the one credential read, where it was found
/// (`Authorization: Bearer`, or a `__session` cookie beside the request's
/// other cookies).
fn head(method: &str, path: &str, headers: &HeaderMap, credential: &Credential<'_>) -> RequestHead {
    let mut pairs: Vec<(String, Vec<u8>)> = Vec::with_capacity(headers.len() + 1);
    let mut cookies: Vec<&str> = Vec::new();
    for (name, value) in headers {
        if name == http::header::AUTHORIZATION {
            continue;
        }
        if name == http::header::COOKIE {
            // ASCII: `credential` refused the request otherwise.
            let value = value.to_str().unwrap_or_default();
            cookies.extend(value.split(';').map(str::trim).filter(|pair| {
                !pair.is_empty()
                    && pair
                        .split_once('=')
                        .is_none_or(|(name, _)| name.trim() != SESSION_COOKIE)
            }));
            continue;
        }
        pairs.push((name.as_str().to_string(), value.as_bytes().to_vec()));
    }
    let session;
    match credential.source {
        Source::Header => {
            let value = format!("Bearer {}", credential.token).into_bytes();
            pairs.push(("authorization".into(), value));
        }
        Source::Cookie => {
            session = format!("{SESSION_COOKIE}={}", credential.token);
            cookies.push(&session);
        }
    }
    if !cookies.is_empty() {
        pairs.push(("cookie".into(), cookies.join("; ").into_bytes()));
    }
    RequestHead {
        method: method.into(),
        path: path.into(),
        headers: pairs,
    }
}

/// The cache key of a token under one authenticator, manifest and version:
/// a new edit or version of the authenticator verifies again.
fn cache_key(authenticator: &str, manifest: &str, version: &str, token: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [authenticator, manifest, version, token] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.finalize().into()
}

crate::metrics::series! {
    /// The auth hook's series.
    pub struct AuthMetrics {
        /// What the auth hook concluded, by the route's plugin: `verified`,
        /// `anonymous`, `missing`, `rejected`, `unavailable`.
        outcomes: Family<KindLabels, Counter> = Family::default(),
            "auth_outcomes", "What the auth hook concluded, by the route's plugin";
        /// Lookups of a token: `hit` (cached) or `miss` (the authenticator
        /// ran).
        cache: Family<KindLabels, Counter> = Family::default(),
            "auth_cache", "Auth hook token lookups: hit (cached) or miss";
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn token_of(pairs: &[(&str, &str)]) -> Result<Option<String>, &'static str> {
        credential(&headers(pairs)).map(|c| c.map(|c| c.token.to_string()))
    }

    #[test]
    fn tokens_come_from_the_header_or_the_session_cookie() {
        let t = token_of;
        assert_eq!(t(&[]), Ok(None));
        assert_eq!(
            t(&[("authorization", "Bearer a.b.c")]),
            Ok(Some("a.b.c".into()))
        );
        assert_eq!(
            t(&[("authorization", "bearer  a.b.c ")]),
            Ok(Some("a.b.c".into()))
        );
        assert_eq!(t(&[("authorization", "Basic dXNlcjpwdw==")]), Ok(None));
        assert_eq!(
            t(&[("cookie", "theme=dark; __session=x.y.z; other=1")]),
            Ok(Some("x.y.z".into()))
        );
        assert_eq!(
            t(&[("cookie", "a=1"), ("cookie", "__session=\"q.r.s\"")]),
            Ok(Some("q.r.s".into()))
        );
        // The header wins over the cookie.
        assert_eq!(
            t(&[
                ("cookie", "__session=c.c.c"),
                ("authorization", "Bearer h.h.h")
            ]),
            Ok(Some("h.h.h".into()))
        );
        assert_eq!(t(&[("cookie", "__session=")]), Ok(None));
        assert!(t(&[("cookie", "__session=<script>")]).is_err());
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert!(t(&[("authorization", long.as_str())]).is_err());
    }

    #[test]
    fn a_request_ambiguous_about_its_credential_is_refused() {
        let t = token_of;
        // The probe's request: which token would each reader take?
        assert!(
            t(&[
                ("authorization", "Basic dXNlcjpwdw=="),
                ("authorization", "Bearer a.a.a"),
                ("cookie", "__session=garbage"),
            ])
            .is_err()
        );
        assert!(
            t(&[
                ("authorization", "Bearer a.a.a"),
                ("authorization", "Bearer b.b.b")
            ])
            .is_err()
        );
        assert!(t(&[("cookie", "__session=a.a.a"), ("cookie", "__session=b.b.b")]).is_err());
        assert!(t(&[("cookie", "__session=a.a.a; __session=b.b.b")]).is_err());
        let mut h = headers(&[("cookie", "__session=a.a.a")]);
        h.append(
            http::header::COOKIE,
            http::HeaderValue::from_bytes("x=é".as_bytes()).unwrap(),
        );
        assert!(credential(&h).is_err(), "a cookie header that is not ASCII");
        let mut h = HeaderMap::new();
        h.append(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_bytes("Bearer é".as_bytes()).unwrap(),
        );
        assert!(credential(&h).is_err());
    }

    #[test]
    fn the_authenticator_sees_only_the_credential_read() {
        let find = |head: &RequestHead, name: &str| -> Vec<String> {
            (head.headers.iter())
                .filter(|(k, _)| k == name)
                .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
                .collect()
        };
        // From the header: the session cookie goes, other cookies stay.
        let h = headers(&[
            ("authorization", "Bearer h.h.h"),
            ("cookie", "theme=dark; __session=c.c.c"),
            ("x-other", "1"),
        ]);
        let seen = head("GET", "/p", &h, &credential(&h).unwrap().unwrap());
        assert_eq!(find(&seen, "authorization"), ["Bearer h.h.h"]);
        assert_eq!(find(&seen, "cookie"), ["theme=dark"]);
        assert_eq!(find(&seen, "x-other"), ["1"]);
        // From the cookie: no Authorization header (a Basic one goes).
        let h = headers(&[
            ("authorization", "Basic dXNlcjpwdw=="),
            ("cookie", "a=1"),
            ("cookie", "__session=\"c.c.c\"; b=2"),
        ]);
        let seen = head("GET", "/p", &h, &credential(&h).unwrap().unwrap());
        assert!(find(&seen, "authorization").is_empty());
        assert_eq!(find(&seen, "cookie"), ["a=1; b=2; __session=c.c.c"]);
    }

    #[test]
    fn cache_keys_depend_on_every_part() {
        let k = cache_key("auth", "m", "v", "t");
        assert_eq!(k, cache_key("auth", "m", "v", "t"));
        assert_ne!(k, cache_key("auth", "m2", "v", "t"));
        assert_ne!(k, cache_key("auth", "m", "v2", "t"));
        assert_ne!(k, cache_key("auth", "m", "v", "t2"));
        assert_ne!(k, cache_key("auth2", "m", "v", "t"));
        // No ambiguity where one part ends and the next begins.
        assert_ne!(
            cache_key("a", "bc", "v", "t"),
            cache_key("ab", "c", "v", "t")
        );
    }
}
