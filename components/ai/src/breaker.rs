//! A circuit breaker per provider, kept in the plugin's KV namespace so
//! that every instance (one per request) shares it.
//!
//! - **Closed**: calls go through; each failed attempt (a 5xx, a connection
//!   error, a timeout) counts one consecutive failure, a success resets the
//!   count. At `BREAKER_FAILURES` the breaker opens.
//! - **Open** for `BREAKER_COOLDOWN_MS`: calls are refused at once (and go
//!   to the provider's fallback, if it has one).
//! - **Half-open** after the cool-down: exactly one call, the probe, goes
//!   through (claimed with an atomic increment); its success closes the
//!   breaker, its failure opens it again for another cool-down.
//!
//! Keys: `breaker:<provider>:failures` (a counter), `breaker:<provider>:
//! opened` (when it opened, Unix ms) and `breaker:<provider>:probe:<opened>`
//! (the probe's claim). A closed breaker costs two reads per call and no
//! write.

use serde_json::{Value, json};
use spike_sdk::kv::{Namespace, SetOptions};

use crate::config::BreakerSettings;
use crate::errors::{ApiError, Kind};
use crate::upstream::FetchError;

/// Whether a call may go to the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Go,
    /// The one call let through after the cool-down.
    Probe,
    /// Open: refused, to be tried again in this many ms.
    Refused {
        retry_in_ms: u64,
    },
}

pub struct Breaker<'a> {
    ns: Option<&'a Namespace>,
    provider: &'a str,
    settings: BreakerSettings,
}

impl<'a> Breaker<'a> {
    /// The breaker of `provider`; without a namespace it lets every call go.
    pub fn new(ns: Option<&'a Namespace>, provider: &'a str, settings: BreakerSettings) -> Self {
        Self {
            ns,
            provider,
            settings,
        }
    }

    fn key(&self, what: &str) -> String {
        format!("breaker:{}:{what}", self.provider)
    }

    fn read_u64(&self, ns: &Namespace, what: &str) -> Option<u64> {
        let bytes = ns.get(&self.key(what)).ok()??;
        std::str::from_utf8(&bytes).ok()?.trim().parse().ok()
    }

    pub fn admit(&self) -> Admission {
        let Some(ns) = self.ns else {
            return Admission::Go;
        };
        let Some(opened) = self.read_u64(ns, "opened") else {
            return Admission::Go;
        };
        let reopen_at = opened.saturating_add(self.settings.cooldown_ms);
        let now = spike_sdk::now_ms();
        if now < reopen_at {
            return Admission::Refused {
                retry_in_ms: reopen_at - now,
            };
        }
        match ns.increment(&self.key(&format!("probe:{opened}")), 1) {
            Ok(1) => Admission::Probe,
            // Another call is the probe: wait for its outcome.
            _ => Admission::Refused { retry_in_ms: 1_000 },
        }
    }

    /// Admits a call, or refuses it with the 503 its caller gets.
    pub fn admit_call(&self) -> Result<Admission, ApiError> {
        match self.admit() {
            Admission::Refused { retry_in_ms } => {
                let provider = [("provider", self.provider)];
                spike_sdk::telemetry::count("ai_breaker_refusals", 1, &provider);
                let seconds = retry_in_ms.div_ceil(1000);
                Err(ApiError::new(
                    Kind::Unavailable,
                    format!(
                        "provider '{}' is failing and its circuit breaker is open; it is tried again in {seconds} s",
                        self.provider
                    ),
                )
                .retry_after(seconds))
            }
            admission => Ok(admission),
        }
    }

    /// What an answer of `status` tells the breaker: a 5xx is a failure, a
    /// 429 neither (the provider asks for patience, it is not failing),
    /// anything else a success.
    pub fn answered(&self, admission: Admission, status: u16) {
        if status >= 500 {
            self.failure(admission);
        } else if status != 429 {
            self.success(admission);
        }
    }

    /// A call that got no answer: the provider's failure, unless the host
    /// would not send it (a grant missing: the operator's to fix, not the
    /// provider's).
    pub fn unanswered(&self, admission: Admission, e: &FetchError) {
        if !matches!(e, FetchError::Denied(_) | FetchError::InvalidUrl(_)) {
            self.failure(admission);
        }
    }

    /// A call that worked (any answer but a 5xx or a 429).
    fn success(&self, admission: Admission) {
        let Some(ns) = self.ns else { return };
        let failed_before = self.read_u64(ns, "failures").is_some_and(|n| n > 0);
        if admission == Admission::Probe || failed_before {
            if let Some(opened) = self.read_u64(ns, "opened") {
                let _ = ns.delete(&self.key(&format!("probe:{opened}")));
            }
            let _ = ns.delete(&self.key("opened"));
            let _ = ns.delete(&self.key("failures"));
            spike_sdk::telemetry::gauge("ai_breaker_open", 0.0, &[("provider", self.provider)]);
        }
    }

    /// A failed attempt: counts it, and opens the breaker at the threshold
    /// (or again, if this was the probe).
    fn failure(&self, admission: Admission) {
        let Some(ns) = self.ns else { return };
        let failures = ns.increment(&self.key("failures"), 1).unwrap_or(0);
        let opened = self.read_u64(ns, "opened");
        if admission == Admission::Probe || (opened.is_none() && failures >= self.settings.failures)
        {
            if let Some(old) = opened {
                let _ = ns.delete(&self.key(&format!("probe:{old}")));
            }
            let now = spike_sdk::now_ms().to_string();
            let options = SetOptions {
                ttl_ms: None,
                metadata: None,
            };
            spike_sdk::telemetry::gauge("ai_breaker_open", 1.0, &[("provider", self.provider)]);
            if let Err(e) = ns.set(&self.key("opened"), now.as_bytes(), &options) {
                eprintln!(
                    "ai: the breaker of '{}' cannot open: {}",
                    self.provider,
                    e.message()
                );
            }
        }
    }

    /// The state, for `/ai-logs`.
    pub fn state(&self) -> Value {
        let Some(ns) = self.ns else {
            return json!({"provider": self.provider, "state": "unknown"});
        };
        let failures = self.read_u64(ns, "failures").unwrap_or(0);
        let state = match self.read_u64(ns, "opened") {
            None => json!({"state": "closed"}),
            Some(opened) => {
                let until = opened.saturating_add(self.settings.cooldown_ms);
                let state = if spike_sdk::now_ms() < until {
                    "open"
                } else {
                    "half-open"
                };
                json!({"state": state, "opened_at_ms": opened, "probe_after_ms": until})
            }
        };
        let mut state = state;
        state["provider"] = json!(self.provider);
        state["consecutive_failures"] = json!(failures);
        state
    }
}
