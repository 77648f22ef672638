//! A manifest's `[limits]`: what one request of the plugin may use, each
//! value checked against its range with the line it is on.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{Limits, MAX_INSTANCE_IDLE_MS, MAX_INSTANCE_REUSE, ManifestError};

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
pub(super) fn parse(
    l: &RawLimits,
    err: &dyn Fn(Option<std::ops::Range<usize>>, String) -> ManifestError,
) -> Result<Limits, ManifestError> {
    let mut limits = Limits::default();
    if let Some(v) = &l.memory_mib {
        let mib = *v.get_ref();
        if !(1..=4096).contains(&mib) {
            return Err(err(
                Some(v.span()),
                "memory_mib must be between 1 and 4096".into(),
            ));
        }
        limits.memory_bytes = mib << 20;
    }
    if let Some(v) = &l.cpu_ms {
        if *v.get_ref() < 10 {
            return Err(err(Some(v.span()), "cpu_ms must be at least 10".into()));
        }
        limits.cpu = Duration::from_millis(*v.get_ref());
    }
    if let Some(v) = &l.timeout_ms {
        if *v.get_ref() < 10 {
            return Err(err(Some(v.span()), "timeout_ms must be at least 10".into()));
        }
        limits.timeout = Duration::from_millis(*v.get_ref());
    }
    if let Some(v) = &l.max_body_mib {
        if !(1..=1 << 20).contains(v.get_ref()) {
            return Err(err(
                Some(v.span()),
                "max_body_mib must be between 1 and 1048576".into(),
            ));
        }
        limits.max_body_bytes = *v.get_ref() << 20;
    }
    if let Some(v) = &l.max_duration_ms {
        if *v.get_ref() < 10 {
            return Err(err(
                Some(v.span()),
                "max_duration_ms must be at least 10".into(),
            ));
        }
        limits.max_duration = Duration::from_millis(*v.get_ref());
    }
    match &l.max_duration_ms {
        Some(v) if limits.timeout > limits.max_duration => {
            return Err(err(
                Some(v.span()),
                format!(
                    "max_duration_ms ({}) is shorter than timeout_ms ({})",
                    limits.max_duration.as_millis(),
                    limits.timeout.as_millis()
                ),
            ));
        }
        // Left to the default: never shorter than the time to headers.
        None => limits.max_duration = limits.max_duration.max(limits.timeout),
        Some(_) => {}
    }
    if let Some(v) = &l.max_concurrent {
        if *v.get_ref() == 0 {
            return Err(err(
                Some(v.span()),
                "max_concurrent must be at least 1".into(),
            ));
        }
        limits.max_concurrent = Some(*v.get_ref());
    }
    if let Some(v) = &l.max_concurrent_per_client {
        if *v.get_ref() == 0 {
            return Err(err(
                Some(v.span()),
                "max_concurrent_per_client must be at least 1".into(),
            ));
        }
        limits.max_concurrent_per_client = Some(*v.get_ref());
    }
    if let Some(v) = &l.instance_reuse {
        if *v.get_ref() > MAX_INSTANCE_REUSE {
            return Err(err(
                Some(v.span()),
                format!("instance_reuse must be at most {MAX_INSTANCE_REUSE}"),
            ));
        }
        limits.instance_reuse = *v.get_ref();
    }
    if let Some(v) = &l.instance_idle_ms {
        let ms = *v.get_ref();
        if !(10..=MAX_INSTANCE_IDLE_MS).contains(&ms) {
            return Err(err(
                Some(v.span()),
                format!("instance_idle_ms must be between 10 and {MAX_INSTANCE_IDLE_MS}"),
            ));
        }
        limits.instance_idle = Duration::from_millis(ms);
    }
    Ok(limits)
}
