//! Exchanges with providers, over the SDK's outgoing HTTP client (the host
//! lets the plugin reach only the hosts its manifest grants), and the
//! monotonic clock the deadlines are kept on.

pub use spike_sdk::client::{Fetch, FetchError, Streaming};
use spike_sdk::wasi::clocks::monotonic_clock;
use spike_sdk::wasi::http::types::Method;

/// Nanoseconds on the monotonic clock.
pub type Instant = u64;

pub fn now() -> Instant {
    monotonic_clock::now()
}

pub fn after_ms(ms: u64) -> Instant {
    now().saturating_add(ms.saturating_mul(1_000_000))
}

/// Milliseconds from now until `deadline` (0 if it has passed).
pub fn ms_until(deadline: Instant) -> u64 {
    deadline.saturating_sub(now()) / 1_000_000
}

/// Sleeps for `ms`.
pub fn sleep_ms(ms: u64) {
    if ms > 0 {
        monotonic_clock::subscribe_duration(ms.saturating_mul(1_000_000)).block();
    }
}

/// A request of `method` to `url` with `headers`, whose response head must
/// come by `deadline` and whose body may pause `idle_ms` at most.
pub fn request(
    method: Method,
    url: &str,
    headers: &[(String, Vec<u8>)],
    deadline: Instant,
    idle_ms: u64,
) -> Result<Fetch, FetchError> {
    let mut fetch = Fetch::new(method, url)?
        .timeout(std::time::Duration::from_millis(ms_until(deadline).max(1)))
        .idle_timeout(std::time::Duration::from_millis(idle_ms.max(1)));
    for (name, value) in headers {
        fetch = fetch.header(name, value);
    }
    Ok(fetch)
}

/// How long a provider asks to wait before trying again: OpenAI's
/// `retry-after-ms`, or `Retry-After` in seconds (its HTTP-date form is
/// not read).
pub fn retry_after_ms(response: &Streaming) -> Option<u64> {
    if let Some(ms) = response
        .header("retry-after-ms")
        .and_then(|v| v.trim().parse().ok())
    {
        return Some(ms);
    }
    let secs: f64 = response.header("retry-after")?.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then_some((secs * 1000.0) as u64)
}
