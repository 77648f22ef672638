//! The operator's token (`--admin-token`): who may call the admin API
//! (`/_spike/...`) and routes whose manifest says `auth = "operator"`.
//!
//! Compared in constant time. A client address that sends a wrong token
//! `MAX_FAILURES` times a minute is refused at once with 429 until its
//! allowance comes back, whatever token it sends meanwhile: the hostile
//! probe sent 3,000 wrong tokens without being slowed.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, StatusCode};

use super::errors::ApiError;
use crate::caps::rate_limit::{Limiter, RateLimits, Rule};
use crate::metrics::Metrics;

/// Wrong tokens a client address may send a minute.
const MAX_FAILURES: u32 = 10;

/// Addresses kept as refused at most (the oldest go first).
const MAX_REFUSED: usize = 10_000;

pub struct OperatorToken {
    token: Option<String>,
    /// Wrong tokens, by client address.
    failures: Arc<Limiter>,
    /// Addresses refused until then.
    refused: quick_cache::sync::Cache<String, Instant>,
    metrics: Arc<Metrics>,
}

impl OperatorToken {
    pub fn new(token: Option<String>, limits: &RateLimits, metrics: Arc<Metrics>) -> Self {
        let rule = Rule::new(MAX_FAILURES, 60).expect("a valid rule");
        Self {
            token,
            failures: limits.limiter("-", "operator token failures", rule),
            refused: quick_cache::sync::Cache::new(MAX_REFUSED),
            metrics,
        }
    }

    /// `Ok` if `headers` carry the operator's token; 403 if there is none
    /// (the admin API is off), 429 for an address that sent too many wrong
    /// ones, 401 otherwise.
    pub fn check(&self, headers: &HeaderMap, client: IpAddr) -> Result<(), ApiError> {
        let Some(token) = self.token.as_deref() else {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "admin_disabled",
                "the admin API is disabled: start spike with --admin-token or SPIKE_ADMIN_TOKEN",
            ));
        };
        let key = super::gate::ip_key(client);
        if let Some(until) = self.refused.get(&key) {
            if let Some(left) = until.checked_duration_since(Instant::now()) {
                self.refused("throttled");
                return Err(too_many(left));
            }
            self.refused.remove(&key);
        }
        let given = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
            return Ok(());
        }
        let counted = self.failures.check(&key, std::num::NonZeroU32::MIN);
        if let Ok(decision) = counted
            && !decision.allowed
        {
            let left = decision.retry_after.max(Duration::from_secs(1));
            self.refused.insert(key, Instant::now() + left);
            self.refused("throttled");
            return Err(too_many(left));
        }
        self.refused("wrong");
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong operator token (Authorization: Bearer <token>)",
        ))
    }

    /// Counts a refused token in `spike_operator_token_refusals_total`.
    fn refused(&self, kind: &'static str) {
        Metrics::count(
            &self.metrics.http.operator_token_refusals,
            &"-".into(),
            kind,
            1,
        );
    }
}

fn too_many(left: Duration) -> ApiError {
    let secs = left.as_millis().div_ceil(1000) as u64;
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_attempts",
        format!(
            "{MAX_FAILURES} wrong operator tokens a minute from this address at most; \
             retry in {secs} s"
        ),
    )
    .with_retry_after(secs.max(1))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        h
    }

    #[tokio::test]
    async fn wrong_tokens_are_throttled_per_address_and_then_refused_whatever_comes() {
        let metrics = crate::metrics::Metrics::new();
        let limits = RateLimits::start(None, None, &metrics);
        let operator = OperatorToken::new(Some("right".into()), &limits, metrics.clone());
        let (attacker, other): (IpAddr, IpAddr) = (
            "203.0.113.7".parse().unwrap(),
            "198.51.100.1".parse().unwrap(),
        );
        assert!(operator.check(&bearer("right"), attacker).is_ok());
        for _ in 0..MAX_FAILURES {
            let e = operator.check(&bearer("wrong"), attacker).unwrap_err();
            assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        }
        let e = operator.check(&bearer("wrong"), attacker).unwrap_err();
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        // Refused before the comparison: the right token too, from there.
        let e = operator.check(&bearer("right"), attacker).unwrap_err();
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        // Another address is not.
        assert!(operator.check(&bearer("right"), other).is_ok());
        let text = metrics.render();
        for line in [
            "spike_operator_token_refusals_total{plugin=\"-\",kind=\"wrong\"} 10",
            "spike_operator_token_refusals_total{plugin=\"-\",kind=\"throttled\"} 2",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        let off = OperatorToken::new(None, &limits, metrics.clone());
        let e = off.check(&bearer("right"), other).unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
    }
}
