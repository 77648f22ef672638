//! Per-caller quotas through the host's `rate-limit` import: the quota the
//! manifest declares (`[quotas.<QUOTA>]`), keyed by the signed-in user or
//! by the client's address (IPv6 by its /64).

use spike_sdk::access;

use crate::config::{QuotaKey, Settings};
use crate::errors::ApiError;

/// Counts `cost` calls for this request's caller; a 429 with `Retry-After`
/// when they do not fit.
pub fn check(settings: &Settings, cost: u32) -> Result<(), ApiError> {
    let Some(quota) = &settings.quota else {
        return Ok(());
    };
    let key = access::caller_key(settings.quota_key == QuotaKey::UserOrIp);
    access::within_quota(quota, &key, cost)
        .map(drop)
        .map_err(ApiError::from_http)
}
