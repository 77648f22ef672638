//! Per-caller quotas through the host's `rate-limit` import: the quota the
//! manifest declares (`[quotas.<QUOTA>]`), keyed by the signed-in user or
//! by the client's address (IPv6 by its /64).

use std::net::IpAddr;

use crate::config::{QuotaKey, Settings};
use crate::errors::{ApiError, Kind};

/// The key of the caller of this request.
fn caller_key(how: QuotaKey) -> String {
    if how == QuotaKey::UserOrIp
        && let Some(caller) = spike_sdk::identity::current()
    {
        return format!("user:{}", caller.subject);
    }
    match spike_sdk::identity::client_address().and_then(|a| a.parse::<IpAddr>().ok()) {
        Some(IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("ip:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Some(ip) => format!("ip:{ip}"),
        None => "anonymous".into(),
    }
}

/// Counts `cost` calls for this request's caller; a 429 with `Retry-After`
/// when they do not fit.
pub fn check(settings: &Settings, cost: u32) -> Result<(), ApiError> {
    let Some(quota) = &settings.quota else {
        return Ok(());
    };
    match spike_sdk::rate_limit::check(quota, &caller_key(settings.quota_key), cost) {
        Ok(d) if d.allowed => Ok(()),
        Ok(d) => {
            let seconds = d.retry_after_ms.div_ceil(1000).max(1);
            Err(ApiError::new(
                Kind::RateLimited,
                format!(
                    "Rate limit reached: {} AI calls per period; try again in {seconds} s",
                    d.limit
                ),
            )
            .retry_after(seconds))
        }
        Err(e) => Err(ApiError::new(
            Kind::Unavailable,
            format!(
                "the AI quota '{quota}' cannot be checked ({}): declare [quotas.{quota}] in the manifest",
                e.message()
            ),
        )),
    }
}
