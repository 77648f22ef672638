//! A manifest's `[limits]`: what one request of the plugin may use, each
//! value checked against its range with the line it is on.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{ErrAt, Limits, MAX_INSTANCE_IDLE_MS, MAX_INSTANCE_REUSE, ManifestError};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    memory_mib: Option<Spanned<u64>>,
    cpu_ms: Option<Spanned<u64>>,
    timeout_ms: Option<Spanned<u64>>,
    max_duration_ms: Option<Spanned<u64>>,
    max_body_mib: Option<Spanned<u64>>,
    max_concurrent: Option<Spanned<u32>>,
    max_concurrent_per_client: Option<Spanned<u32>>,
    instance_reuse: Option<Spanned<u32>>,
    instance_idle_ms: Option<Spanned<u64>>,
}

/// `[limits]` over the defaults; `err` makes an error at a span.
pub(super) fn parse(l: &RawLimits, err: ErrAt<'_>) -> Result<Limits, ManifestError> {
    let mut limits = Limits::default();
    if let Some(mib) = bounded(&l.memory_mib, "memory_mib", Some(1), Some(4096), err)? {
        limits.memory_bytes = mib << 20;
    }
    if let Some(ms) = bounded(&l.cpu_ms, "cpu_ms", Some(10), None, err)? {
        limits.cpu = Duration::from_millis(ms);
    }
    if let Some(ms) = bounded(&l.timeout_ms, "timeout_ms", Some(10), None, err)? {
        limits.timeout = Duration::from_millis(ms);
    }
    if let Some(mib) = bounded(&l.max_body_mib, "max_body_mib", Some(1), Some(1 << 20), err)? {
        limits.max_body_bytes = mib << 20;
    }
    let max_duration = bounded(&l.max_duration_ms, "max_duration_ms", Some(10), None, err)?;
    match (max_duration, &l.max_duration_ms) {
        (Some(ms), Some(v)) if limits.timeout > Duration::from_millis(ms) => {
            return Err(err(
                Some(v.span()),
                format!(
                    "max_duration_ms ({ms}) is shorter than timeout_ms ({})",
                    limits.timeout.as_millis()
                ),
            ));
        }
        (Some(ms), _) => limits.max_duration = Duration::from_millis(ms),
        // Left to the default: never shorter than the time to headers.
        (None, _) => limits.max_duration = limits.max_duration.max(limits.timeout),
    }
    let at_least_one = |v, key| bounded(v, key, Some(1), None, err);
    limits.max_concurrent = at_least_one(&l.max_concurrent, "max_concurrent")?;
    limits.max_concurrent_per_client =
        at_least_one(&l.max_concurrent_per_client, "max_concurrent_per_client")?;
    let reuse = bounded(
        &l.instance_reuse,
        "instance_reuse",
        None,
        Some(MAX_INSTANCE_REUSE),
        err,
    )?;
    if let Some(n) = reuse {
        limits.instance_reuse = n;
    }
    let idle = Some(MAX_INSTANCE_IDLE_MS);
    if let Some(ms) = bounded(&l.instance_idle_ms, "instance_idle_ms", Some(10), idle, err)? {
        limits.instance_idle = Duration::from_millis(ms);
    }
    Ok(limits)
}

/// A bounded value of the manifest: `None` if absent, the value if it is
/// within `min` and `max` (where given), else an error at its line that
/// names the key and its range.
pub(super) fn bounded<T: Copy + PartialOrd + std::fmt::Display>(
    value: &Option<Spanned<T>>,
    key: &str,
    min: Option<T>,
    max: Option<T>,
    err: ErrAt<'_>,
) -> Result<Option<T>, ManifestError> {
    let Some(v) = value else {
        return Ok(None);
    };
    let n = *v.get_ref();
    if min.is_none_or(|min| n >= min) && max.is_none_or(|max| n <= max) {
        return Ok(Some(n));
    }
    let range = match (min, max) {
        (Some(min), Some(max)) => format!("between {min} and {max}"),
        (Some(min), None) => format!("at least {min}"),
        (None, Some(max)) => format!("at most {max}"),
        (None, None) => unreachable!("a value without bounds is always within them"),
    };
    Err(err(Some(v.span()), format!("{key} must be {range}")))
}
