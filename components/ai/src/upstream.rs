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
/// `retry-after-ms`, or `Retry-After` in seconds or as an HTTP date.
pub fn retry_after_ms(response: &Streaming) -> Option<u64> {
    if let Some(ms) = response
        .header("retry-after-ms")
        .and_then(|v| v.trim().parse().ok())
    {
        return Some(ms);
    }
    let value = response.header("retry-after")?.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then_some((secs * 1000.0) as u64);
    }
    let at_ms = http_date_unix_s(value)?.saturating_mul(1000);
    Some(at_ms.saturating_sub(spike_sdk::now_ms()))
}

/// The Unix time of an HTTP date in its preferred form (RFC 9110's
/// IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`).
fn http_date_unix_s(date: &str) -> Option<u64> {
    let mut parts = date.split_whitespace();
    let (_weekday, day, month, year, time, zone) = (
        parts.next()?,
        parts.next()?.parse::<u64>().ok()?,
        parts.next()?,
        parts.next()?.parse::<i64>().ok()?,
        parts.next()?,
        parts.next()?,
    );
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == month)? as i64 + 1;
    let mut hms = time.split(':').map(|n| n.parse::<u64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    if zone != "GMT"
        || parts.next().is_some()
        || !(1..=31).contains(&day)
        || h > 23
        || m > 59
        || s > 60
    {
        return None;
    }
    // Days from 1970-01-01 to the date (the civil-from-days algorithm run
    // backwards, with March as the first month of the year).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days)
        .ok()
        .map(|d| d * 86_400 + h * 3600 + m * 60 + s)
}

#[cfg(test)]
mod tests {
    use super::http_date_unix_s;

    #[test]
    fn http_dates() {
        assert_eq!(
            http_date_unix_s("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(http_date_unix_s("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            http_date_unix_s("Tue, 29 Feb 2028 23:59:59 GMT"),
            Some(1_835_481_599)
        );
        assert_eq!(http_date_unix_s("Sun, 06 Nov 1994 08:49:37 PST"), None);
        assert_eq!(http_date_unix_s("Sunday, 06-Nov-94 08:49:37 GMT"), None);
        assert_eq!(http_date_unix_s("soon"), None);
    }
}
