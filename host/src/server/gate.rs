//! What a request passes before its plugin runs, as its route's policy
//! says (`runtime::slot::RoutePolicy`): a rate limit by client address, the
//! auth hook (or the operator's token), then a rate limit by user. A request turned away here costs no
//! instance of the route's plugin.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode};

use super::AppState;
use super::errors::ApiError;
use crate::caps::identity::Caller;
use crate::caps::rate_limit::Decision;
use crate::config::ClientAddresses;
use crate::metrics::RouteLabels;
use crate::runtime::auth::AuthOutcome;
use crate::runtime::manifest::{LimitKey, RouteAuth};
use crate::runtime::slot::{RouteLimiter, Routed};

/// The address of the connection a request came on, put in the request's
/// extensions by the listener.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// What a request that passed carries on: its caller and client address,
/// and the rate limit decision to report in its response headers.
pub struct Passed {
    pub caller: Option<Arc<Caller>>,
    pub client: IpAddr,
    pub limit: Option<Decision>,
    /// The client's place among the plugin's requests in progress
    /// (`max_concurrent_per_client`), held as long as this is.
    pub held: Option<crate::runtime::per_client::Held>,
}

/// Runs the route's policy for a request; `Err` is the response that turns
/// it away. Traced as the span `gate`.
pub async fn pass(
    state: &AppState,
    routed: &Routed,
    method: &str,
    path: &str,
    headers: &HeaderMap,
    peer: Option<PeerAddr>,
) -> Result<Passed, Response> {
    use tracing::Instrument;
    let policy = &routed.slot.policies[routed.index];
    let passing = pass_here(state, routed, method, path, headers, peer);
    // A route with nothing to check has nothing to trace.
    if policy.rate_limit.is_none() && policy.auth.is_none() && routed.slot.per_client.is_none() {
        return passing.await;
    }
    let span = crate::telemetry::span!(
        "gate",
        spike.rate_limit = tracing::field::Empty,
        spike.auth = tracing::field::Empty,
    );
    passing.instrument(span).await
}

async fn pass_here(
    state: &AppState,
    routed: &Routed,
    method: &str,
    path: &str,
    headers: &HeaderMap,
    peer: Option<PeerAddr>,
) -> Result<Passed, Response> {
    let policy = &routed.slot.policies[routed.index];
    let client = client_ip(peer, headers, &state.client_addresses);
    let mut passed = Passed {
        caller: None,
        client,
        limit: None,
        held: None,
    };
    if let Some(limit) = &policy.rate_limit
        && limit.key == LimitKey::Ip
    {
        let key = ip_key(client);
        passed.limit = Some(check(limit, &key).map_err(|d| too_many(state, routed, limit, &d))?);
    }
    match &policy.auth {
        None => {}
        Some(RouteAuth::Operator) => {
            state
                .operator
                .check(headers, client)
                .map_err(IntoResponse::into_response)?;
            passed.caller = Some(Arc::new(crate::caps::identity::operator()));
        }
        Some(RouteAuth::Caller {
            required,
            authenticator,
        }) => {
            passed.caller = caller(
                state,
                routed,
                *required,
                authenticator,
                method,
                path,
                headers,
            )
            .await?;
        }
    }
    if let Some(limit) = &policy.rate_limit
        && limit.key == LimitKey::User
    {
        let key = match &passed.caller {
            Some(caller) => format!("user {}", caller.subject),
            None => ip_key(client),
        };
        passed.limit = Some(check(limit, &key).map_err(|d| too_many(state, routed, limit, &d))?);
    }
    if let Some(per_client) = &routed.slot.per_client {
        let held = per_client.try_hold(ip_key(client)).ok_or_else(|| {
            let plugin = crate::metrics::PluginLabel {
                plugin: routed.slot.manifest.name.as_str().into(),
            };
            state
                .metrics
                .http
                .client_capped
                .get_or_create(&plugin)
                .inc();
            let max = per_client.max();
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_at_once",
                format!(
                    "this plugin takes {max} requests at once from one client; wait for one to end"
                ),
            )
            .with_retry_after(1)
            .into_response()
        })?;
        passed.held = Some(held);
    }
    Ok(passed)
}

/// The caller the route's authenticator verified: `None` on an optional
/// route without one, `Err` with the answer on a required route.
async fn caller(
    state: &AppState,
    routed: &Routed,
    required: bool,
    authenticator: &str,
    method: &str,
    path: &str,
    headers: &HeaderMap,
) -> Result<Option<Arc<Caller>>, Response> {
    let outcome = state
        .registry
        .authenticate(authenticator, method, path, headers)
        .await;
    let kind = match &outcome {
        AuthOutcome::Verified(_) => "verified",
        _ if !required => "anonymous",
        AuthOutcome::Missing => "missing",
        AuthOutcome::Rejected(_) => "rejected",
        AuthOutcome::Unavailable(_) => "unavailable",
    };
    crate::telemetry::note("spike.auth", kind);
    routed
        .slot
        .context
        .metrics
        .count(&state.metrics.auth.outcomes, kind);
    match outcome {
        AuthOutcome::Verified(caller) => Ok(Some(caller)),
        // An optional route goes on without a caller, whatever the
        // reason: the plugin serves anonymous callers anyway.
        _ if !required => Ok(None),
        AuthOutcome::Missing => Err(unauthorized(None)),
        AuthOutcome::Rejected(reason) => Err(unauthorized(Some(reason))),
        AuthOutcome::Unavailable(reason) => {
            Err(
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "auth_unavailable", reason)
                    .into_response(),
            )
        }
    }
}

/// 401, with the challenge RFC 6750 asks for: no error code when nothing
/// was sent, `invalid_token` when what was sent was refused.
fn unauthorized(rejected: Option<String>) -> Response {
    let (code, message, challenge) = match rejected {
        None => (
            "missing_token",
            "this route needs a bearer token (Authorization: Bearer, or the __session cookie)"
                .to_string(),
            HeaderValue::from_static("Bearer"),
        ),
        Some(reason) => (
            "invalid_token",
            reason,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        ),
    };
    let mut resp = ApiError::new(StatusCode::UNAUTHORIZED, code, message).into_response();
    resp.headers_mut()
        .insert(http::header::WWW_AUTHENTICATE, challenge);
    resp
}

/// Counts a request against a route's limiter: `Ok` if it fits, `Err` with
/// the refusal if not.
fn check(limit: &RouteLimiter, key: &str) -> Result<Decision, Decision> {
    let decision = limit
        .limiter
        .check(key, NonZeroU32::MIN)
        .expect("a cost of 1 always fits a rule");
    let outcome = if decision.allowed {
        "allowed"
    } else {
        "limited"
    };
    crate::telemetry::note("spike.rate_limit", outcome);
    if decision.allowed {
        Ok(decision)
    } else {
        Err(decision)
    }
}

/// 429 for a request `limit` refused, counted.
fn too_many(
    state: &AppState,
    routed: &Routed,
    limit: &RouteLimiter,
    decision: &Decision,
) -> Response {
    let labels = RouteLabels {
        plugin: routed.slot.context.name().clone(),
        route: routed.route.clone(),
    };
    state.metrics.http.rate_limited.get_or_create(&labels).inc();
    let rule = limit.limiter.rule;
    let mut resp = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!(
            "too many requests: this route allows {} per {} s; retry in {} s",
            rule.requests,
            rule.per.as_secs(),
            ceil_secs(decision.retry_after)
        ),
    )
    .into_response();
    let headers = resp.headers_mut();
    headers.insert(
        http::header::RETRY_AFTER,
        HeaderValue::from(ceil_secs(decision.retry_after).max(1)),
    );
    rate_limit_headers(headers, decision);
    resp
}

/// `RateLimit-Limit`, `-Remaining` and `-Reset` (seconds until the
/// allowance is whole), as the IETF draft names them.
pub fn rate_limit_headers(headers: &mut HeaderMap, decision: &Decision) {
    headers.insert("ratelimit-limit", HeaderValue::from(decision.limit));
    headers.insert("ratelimit-remaining", HeaderValue::from(decision.remaining));
    headers.insert(
        "ratelimit-reset",
        HeaderValue::from(ceil_secs(decision.reset)),
    );
}

fn ceil_secs(d: std::time::Duration) -> u64 {
    d.as_millis().div_ceil(1000) as u64
}

/// The client's address: the peer's, or what a trusted proxy reports.
pub fn client_ip(peer: Option<PeerAddr>, headers: &HeaderMap, config: &ClientAddresses) -> IpAddr {
    let peer = peer.map_or(IpAddr::from([0, 0, 0, 0]), |p| p.0.ip().to_canonical());
    let trusted = |ip: &IpAddr| config.trusted_proxies.iter().any(|n| n.contains(ip));
    if !trusted(&peer) {
        return peer;
    }
    // Right to left: each hop was added by the proxy after it; the first
    // one no trusted proxy added is the client. Anything unreadable ends
    // the walk at the last hop read.
    let mut client = peer;
    let hops = headers
        .get_all(&config.header)
        .iter()
        .rev()
        .flat_map(|v| v.to_str().unwrap_or("").rsplit(','));
    for hop in hops {
        match parse_hop(hop.trim()) {
            Some(ip) => {
                client = ip;
                if !trusted(&ip) {
                    break;
                }
            }
            None => break,
        }
    }
    client
}

/// One address of a forwarding header: `192.0.2.1`, `192.0.2.1:5678`,
/// `2001:db8::1` or `[2001:db8::1]:5678`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    hop.parse::<SocketAddr>()
        .ok()
        .map(|a| a.ip().to_canonical())
}

/// The rate limit key of an address: IPv4 whole, IPv6 by its /64 (one
/// host's share of a network; counting each of its addresses apart would
/// let one host take a limit 2^64 times).
pub fn ip_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(trusted: &[&str]) -> ClientAddresses {
        ClientAddresses {
            trusted_proxies: trusted.iter().map(|n| n.parse().unwrap()).collect(),
            ..ClientAddresses::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn from(peer: &str, forwarded: &[&str], config: &ClientAddresses) -> IpAddr {
        let mut headers = HeaderMap::new();
        for f in forwarded {
            headers.append("x-forwarded-for", f.parse().unwrap());
        }
        let peer = PeerAddr(SocketAddr::new(ip(peer), 1234));
        client_ip(Some(peer), &headers, config)
    }

    #[test]
    fn the_header_counts_only_from_a_trusted_proxy() {
        let none = config(&[]);
        assert_eq!(
            from("203.0.113.9", &["198.51.100.1"], &none),
            ip("203.0.113.9")
        );
        let trusted = config(&["10.0.0.0/8", "::1/128"]);
        assert_eq!(
            from("203.0.113.9", &["198.51.100.1"], &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(
            from("10.1.2.3", &["198.51.100.1"], &trusted),
            ip("198.51.100.1")
        );
        assert_eq!(
            from("::1", &["198.51.100.1:443"], &trusted),
            ip("198.51.100.1")
        );
        // Without the header: the proxy itself.
        assert_eq!(from("10.1.2.3", &[], &trusted), ip("10.1.2.3"));
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let trusted = config(&["10.0.0.0/8"]);
        // The client wrote "1.1.1.1" itself; proxy 10.0.0.2 added the real
        // address, and 10.0.0.1 the inner proxy.
        assert_eq!(
            from("10.0.0.1", &["1.1.1.1, 198.51.100.7, 10.0.0.2"], &trusted),
            ip("198.51.100.7")
        );
        assert_eq!(
            from("10.0.0.1", &["1.1.1.1", "198.51.100.7,10.0.0.2"], &trusted),
            ip("198.51.100.7")
        );
        // Junk stops the walk at the last hop read.
        assert_eq!(
            from("10.0.0.1", &["junk, 10.0.0.5"], &trusted),
            ip("10.0.0.5")
        );
        assert_eq!(
            from("10.0.0.1", &["[2001:db8::1]:80"], &trusted),
            ip("2001:db8::1")
        );
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        assert_eq!(ip_key(ip("192.0.2.1")), "192.0.2.1");
        assert_eq!(ip_key(ip("2001:db8:1:2:aaaa::1")), "2001:db8:1:2::/64");
        assert_eq!(ip_key(ip("2001:db8:1:2:bbbb::9")), "2001:db8:1:2::/64");
        assert_eq!(ip_key(ip("::ffff:192.0.2.1").to_canonical()), "192.0.2.1");
    }
}
