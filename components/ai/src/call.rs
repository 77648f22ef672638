//! One call to one provider, with its resilience: the breaker's admission,
//! the key from `secrets`, retries with exponential backoff and jitter on a
//! 429, a 5xx or a connection error (a provider's `Retry-After` honoured),
//! all within the call's deadline.

use spike_sdk::kv::Namespace;
use spike_sdk::wasi::http::types::Method;

use crate::breaker::{Admission, Breaker};
use crate::config::{Format, Provider, Settings};
use crate::errors::{ApiError, Kind};
use crate::upstream::{self, FetchError, Instant, Streaming};

/// How much of a failed answer's body is read, for its message.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// A failed call.
#[derive(Debug)]
pub struct CallError {
    pub error: ApiError,
    pub attempts: u32,
    /// Whether another provider might do better (not so for a deadline
    /// that has passed).
    pub may_fall_back: bool,
}

impl CallError {
    fn new(error: ApiError, attempts: u32, may_fall_back: bool) -> Self {
        Self {
            error,
            attempts,
            may_fall_back,
        }
    }
}

/// A provider's answer whose body is still to be read: a success, or an
/// error the caller is to see (a 4xx other than 429).
pub struct Answer {
    pub response: Streaming,
    pub attempts: u32,
    /// The key the call was made with, to blank it out of error messages.
    key: Option<String>,
}

impl Answer {
    /// The key the call was made with, if any.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The provider's error answer (a 4xx), read and mapped to an error,
    /// with any echo of the key blanked out.
    pub fn into_error(self, deadline: Instant) -> ApiError {
        let status = self.response.status;
        let body = self
            .response
            .read_all(MAX_ERROR_BODY, deadline)
            .unwrap_or_default();
        ApiError::from_upstream(status, &scrub(&body, self.key.as_deref()))
    }
}

/// The caller's credentials and API headers, for providers that pass them on.
#[derive(Default)]
pub struct CallerHeaders {
    /// The caller's own key (`Authorization: Bearer` or `x-api-key`).
    pub key: Option<String>,
    pub anthropic_version: Option<String>,
    pub anthropic_beta: Option<String>,
}

/// The secret holding `provider`'s key, read; `None` if it has none.
fn api_key(provider: &Provider) -> Result<Option<String>, ApiError> {
    let Some(name) = &provider.api_key_secret else {
        return Ok(None);
    };
    spike_sdk::secrets::get(name).map(Some).map_err(|e| {
        let how = spike_sdk::access::secret_hint(name, &e);
        ApiError::new(
            Kind::Unavailable,
            format!("provider '{}' has no API key: {how}", provider.name),
        )
    })
}

/// The key that goes to `provider`: the caller's own if the provider
/// passes it on and the caller sent one, else the configured one. It is
/// blanked out of whatever comes back.
pub fn upstream_key(
    provider: &Provider,
    caller: &CallerHeaders,
) -> Result<Option<String>, ApiError> {
    match (&caller.key, provider.forward_authorization) {
        (Some(own), true) => Ok(Some(own.clone())),
        _ => api_key(provider),
    }
}

/// The headers for `provider`: `key` in its own header, and its API
/// version.
fn headers(
    provider: &Provider,
    key: Option<&str>,
    caller: &CallerHeaders,
) -> Vec<(String, Vec<u8>)> {
    let mut h = vec![
        ("content-type".to_string(), b"application/json".to_vec()),
        ("user-agent".to_string(), b"spike-ai".to_vec()),
    ];
    match provider.kind {
        Format::OpenAi => {
            if let Some(key) = key {
                h.push(("authorization".into(), format!("Bearer {key}").into_bytes()));
            }
        }
        Format::Anthropic => {
            if let Some(key) = key {
                h.push(("x-api-key".into(), key.as_bytes().to_vec()));
            }
            let version = caller.anthropic_version.as_deref().unwrap_or("2023-06-01");
            h.push(("anthropic-version".into(), version.as_bytes().to_vec()));
            if let Some(beta) = &caller.anthropic_beta {
                h.push(("anthropic-beta".into(), beta.as_bytes().to_vec()));
            }
        }
    }
    h
}

/// `base_url` with `path` appended.
pub fn url(provider: &Provider, path: &str) -> String {
    format!("{}{path}", provider.base_url.trim_end_matches('/'))
}

/// The wait before try number `attempt + 1`: exponential from the base,
/// with jitter in its upper half, capped.
fn backoff_ms(settings: &Settings, attempt: u32) -> u64 {
    let full = settings
        .retry
        .base_ms
        .saturating_mul(1u64 << attempt.min(20))
        .min(settings.retry.max_delay_ms);
    let half = full / 2;
    half + spike_sdk::wasi::random::random::get_random_u64() % (full - half + 1)
}

/// Sends `body` to `provider`'s chat endpoint, trying again as the retry
/// settings say, until `deadline`.
pub fn chat(
    settings: &Settings,
    ns: Option<&Namespace>,
    provider: &Provider,
    body: &[u8],
    caller: &CallerHeaders,
    deadline: Instant,
) -> Result<Answer, CallError> {
    let breaker = Breaker::new(ns, &provider.name, settings.breaker);
    let admission = breaker
        .admit_call()
        .map_err(|e| CallError::new(e, 0, true))?;
    let key = upstream_key(provider, caller).map_err(|e| CallError::new(e, 0, true))?;
    let path = match provider.kind {
        Format::OpenAi => "/chat/completions",
        Format::Anthropic => "/messages",
    };
    let url = url(provider, path);
    let headers = headers(provider, key.as_deref(), caller);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let last = attempt >= settings.retry.attempts;
        let sent = upstream::request(
            Method::Post,
            &url,
            &headers,
            deadline,
            settings.stream_idle_ms,
        )
        .and_then(|fetch| fetch.body(body).start());
        match &sent {
            Ok(response) => breaker.answered(admission, response.status),
            Err(e) => breaker.unanswered(admission, e),
        }
        let who = format!("provider '{}'", provider.name);
        let (retry_in_ms, failed) = match sent {
            Ok(response) if response.status != 429 && response.status < 500 => {
                return Ok(Answer {
                    response,
                    attempts: attempt,
                    key,
                });
            }
            Ok(response) => {
                let asked = upstream::retry_after_ms(&response);
                let status = response.status;
                let body = response
                    .read_all(MAX_ERROR_BODY, deadline)
                    .unwrap_or_default();
                let mut error = ApiError::from_upstream(status, &scrub(&body, key.as_deref()));
                if let Some(ms) = asked {
                    error = error.retry_after(ms.div_ceil(1000));
                }
                let wait = asked.unwrap_or_else(|| backoff_ms(settings, attempt - 1));
                // A provider that asks for a longer wait than we may take
                // gets its answer passed on instead.
                if asked.is_some_and(|ms| ms > settings.retry.max_delay_ms) {
                    return Err(CallError::new(error, attempt, true));
                }
                (wait, error)
            }
            // Past the deadline, or not sent at all: no other try helps.
            Err(e @ (FetchError::Timeout | FetchError::Denied(_) | FetchError::InvalidUrl(_))) => {
                let may_fall_back = e != FetchError::Timeout;
                let error = ApiError::unanswered(&who, &e);
                return Err(CallError::new(error, attempt, may_fall_back));
            }
            Err(e) => (
                backoff_ms(settings, attempt - 1),
                ApiError::unanswered(&who, &e),
            ),
        };
        // A probe gets one try: its outcome decides the breaker.
        if last || admission == Admission::Probe {
            return Err(CallError::new(failed, attempt, true));
        }
        if upstream::ms_until(deadline) <= retry_in_ms {
            return Err(CallError::new(failed, attempt, true));
        }
        eprintln!(
            "ai: provider '{}', try {attempt}: {}; trying again in {retry_in_ms} ms",
            provider.name, failed.message
        );
        upstream::sleep_ms(retry_in_ms);
    }
}

/// `body` with every form of `key` blanked out (`redact`): a provider may
/// echo a key in an error message, and it must not reach the caller.
pub fn scrub(body: &[u8], key: Option<&str>) -> Vec<u8> {
    crate::redact::Redactor::new(key).bytes(body)
}

#[cfg(test)]
mod tests {
    use super::scrub;

    #[test]
    fn keys_are_blanked() {
        assert_eq!(
            scrub(b"bad key sk-12345678 given", Some("sk-12345678")),
            b"bad key [redacted] given"
        );
        assert_eq!(scrub(b"nothing", None), b"nothing");
    }
}
