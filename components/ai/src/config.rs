//! The plugin's settings, read from the manifest's `[env]` once per
//! request (an instance serves one request).
//!
//! `PROVIDERS` is a JSON array of providers, tried in order for a model:
//!
//! ```json
//! [{"name": "openai", "kind": "openai", "base_url": "https://api.openai.com/v1",
//!   "models": ["gpt-*", "o*", "whisper-1"], "api_key_secret": "openai-api-key",
//!   "fallback": "claude-sonnet-4-5"}]
//! ```
//!
//! `kind` is `openai` (OpenAI itself or any OpenAI-compatible base URL: a
//! gateway, a local server) or `anthropic`. `models` are names or patterns
//! with `*`. The key is read from the `secrets` import under
//! `api_key_secret` (none: no key is sent). `forward_authorization: true`
//! sends the caller's own key instead of the configured one when the caller
//! sent one. `fallback` names a model (of any provider) to answer with when
//! this provider cannot (its breaker is open, or it failed after retries).
//!
//! The other settings, with their defaults, are in [`Settings::from_env`].

use serde::Deserialize;

/// The wire format of a provider, or of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// OpenAI's chat completions.
    #[serde(rename = "openai")]
    OpenAi,
    /// Anthropic's messages.
    Anthropic,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::OpenAi => "openai",
            Format::Anthropic => "anthropic",
        }
    }
}

/// One upstream provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    pub name: String,
    pub kind: Format,
    /// The API's base, e.g. `https://api.openai.com/v1`: the routes are
    /// appended (`/chat/completions`, `/messages`, `/audio/transcriptions`).
    pub base_url: String,
    pub models: Vec<String>,
    #[serde(default)]
    pub api_key_secret: Option<String>,
    #[serde(default)]
    pub forward_authorization: bool,
    #[serde(default)]
    pub fallback: Option<String>,
}

impl Provider {
    /// Whether this provider serves `model`.
    pub fn serves(&self, model: &str) -> bool {
        self.models.iter().any(|p| matches(p, model))
    }

    /// The models it names exactly (patterns left out), for `/v1/models`.
    pub fn listed_models(&self) -> impl Iterator<Item = &str> {
        self.models
            .iter()
            .filter(|m| !m.contains('*'))
            .map(String::as_str)
    }
}

/// Whether `model` matches `pattern`: exact, or with `*` standing for any
/// run of characters.
pub fn matches(pattern: &str, model: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = model.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// Whose quota a call counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaKey {
    /// The signed-in user, or the client's address when there is none.
    UserOrIp,
    /// The client's address always.
    Ip,
}

/// Everything the plugin reads from its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    pub providers: Vec<Provider>,
    /// The model `/summarize` uses.
    pub default_model: Option<String>,
    /// The model `/whisper` uses when the form names none first.
    pub audio_model: String,
    pub retry: RetrySettings,
    pub breaker: BreakerSettings,
    /// Until the provider's response begins, retries included; then 504.
    pub deadline_ms: u64,
    /// A stream that sends nothing for this long is ended with an error event.
    pub stream_idle_ms: u64,
    /// How long a cached answer lives; 0 turns the cache off.
    pub cache_ttl_s: u64,
    /// The `[quotas.<name>]` calls count against, if any.
    pub quota: Option<String>,
    pub quota_key: QuotaKey,
    /// Whether `/ai-logs` keeps the prompts and answers.
    pub log_prompts: bool,
    /// Signed-in callers (subjects) who may read `/ai-logs` besides the
    /// operator (`LOG_READERS`, separated by commas).
    pub log_readers: Vec<String>,
    pub log_ttl_s: u64,
    /// The largest JSON request body read.
    pub max_request_bytes: usize,
    pub replicate: ReplicateSettings,
}

#[derive(Debug, Clone, Copy)]
pub struct RetrySettings {
    /// Tries per provider, the first included.
    pub attempts: u32,
    /// The first backoff; each next one doubles, with full jitter.
    pub base_ms: u64,
    /// The longest single wait, `Retry-After` included.
    pub max_delay_ms: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct BreakerSettings {
    /// Consecutive failures that open a provider's breaker.
    pub failures: i64,
    /// How long it stays open before one probe may go through.
    pub cooldown_ms: u64,
}

#[derive(Debug, Clone)]
pub struct ReplicateSettings {
    pub base_url: String,
    pub api_key_secret: Option<String>,
    /// How long `/replicate` waits for a prediction to finish.
    pub timeout_ms: u64,
    pub poll_ms: u64,
}

/// A setting that cannot be used, named.
#[derive(Debug)]
pub struct ConfigError(pub String);

fn setting(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn number(name: &str, default: u64) -> Result<u64, ConfigError> {
    match setting(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| ConfigError(format!("{name} must be a whole number, not '{v}'"))),
    }
}

fn flag(name: &str) -> bool {
    setting(name).is_some_and(|v| matches!(v.trim(), "1" | "true" | "yes" | "on"))
}

impl Settings {
    pub fn from_env() -> Result<Self, ConfigError> {
        let providers: Vec<Provider> = match setting("PROVIDERS") {
            None => Vec::new(),
            Some(json) => serde_json::from_str(&json)
                .map_err(|e| ConfigError(format!("PROVIDERS is not a valid provider list: {e}")))?,
        };
        for p in &providers {
            if !(p.base_url.starts_with("http://") || p.base_url.starts_with("https://")) {
                return Err(ConfigError(format!(
                    "provider '{}': base_url must be an http(s) URL",
                    p.name
                )));
            }
        }
        let quota_key = match setting("QUOTA_KEY").as_deref().map(str::trim) {
            None | Some("user") => QuotaKey::UserOrIp,
            Some("ip") => QuotaKey::Ip,
            Some(other) => {
                return Err(ConfigError(format!(
                    "QUOTA_KEY must be 'user' or 'ip', not '{other}'"
                )));
            }
        };
        Ok(Self {
            providers,
            default_model: setting("DEFAULT_MODEL"),
            audio_model: setting("AUDIO_MODEL").unwrap_or_else(|| "whisper-1".into()),
            retry: RetrySettings {
                attempts: number("RETRY_ATTEMPTS", 3)?.clamp(1, 10) as u32,
                base_ms: number("RETRY_BASE_MS", 250)?,
                max_delay_ms: number("RETRY_MAX_DELAY_MS", 8_000)?,
            },
            breaker: BreakerSettings {
                failures: number("BREAKER_FAILURES", 5)?.clamp(1, 1_000) as i64,
                cooldown_ms: number("BREAKER_COOLDOWN_MS", 30_000)?,
            },
            deadline_ms: number("DEADLINE_MS", 60_000)?,
            stream_idle_ms: number("STREAM_IDLE_MS", 30_000)?.max(1),
            cache_ttl_s: number("CACHE_TTL_S", 3_600)?,
            quota: setting("QUOTA"),
            quota_key,
            log_prompts: flag("LOG_PROMPTS"),
            log_readers: setting("LOG_READERS")
                .map(|v| {
                    (v.split(','))
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            log_ttl_s: number("LOG_TTL_S", 86_400)?.max(1),
            max_request_bytes: number("MAX_REQUEST_KIB", 4_096)? as usize * 1024,
            replicate: ReplicateSettings {
                base_url: setting("REPLICATE_BASE_URL")
                    .unwrap_or_else(|| "https://api.replicate.com/v1".into()),
                api_key_secret: setting("REPLICATE_API_KEY_SECRET"),
                timeout_ms: number("REPLICATE_TIMEOUT_MS", 60_000)?,
                poll_ms: number("REPLICATE_POLL_MS", 1_000)?.max(10),
            },
        })
    }

    /// The provider that serves `model`: the first that lists it.
    pub fn provider_for(&self, model: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.serves(model))
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn patterns() {
        assert!(matches("gpt-4o", "gpt-4o"));
        assert!(!matches("gpt-4o", "gpt-4o-mini"));
        assert!(matches("gpt-*", "gpt-4o-mini"));
        assert!(matches("*", "anything"));
        assert!(matches("claude-*-latest", "claude-3-5-sonnet-latest"));
        assert!(!matches("claude-*-latest", "claude-3-5-sonnet"));
        assert!(matches("*mini", "gpt-4o-mini"));
        assert!(!matches("o*", "gpt-4o"));
        assert!(matches("a*b*c", "a-b-c"));
        assert!(!matches("a*b*c", "a-c-b"));
    }
}
