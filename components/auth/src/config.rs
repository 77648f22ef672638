//! The plugin's settings: its environment, which is the `[env]` table of
//! its manifest (`plugins/auth.toml`).
//!
//! | variable             | meaning                                                   | default |
//! |----------------------|-----------------------------------------------------------|---------|
//! | `ISSUER`             | the only accepted `iss` (Clerk: your Frontend API URL)     | any issuer |
//! | `JWKS_URL`           | the issuer's key set                                      | `$ISSUER/.well-known/jwks.json` |
//! | `AUDIENCE`           | accepted `aud` values, comma-separated                    | `aud` not checked |
//! | `ALLOWED_ORIGINS`    | accepted `azp` values (Clerk's origin claim), comma-separated | `azp` not checked |
//! | `LEEWAY_S`           | clock skew allowed on `exp` and `nbf`                     | 5 |
//! | `HS256_SECRET`       | name of the secret holding an HS256 key (grant it too)    | HS256 refused |
//! | `JWKS_TIMEOUT_MS`    | deadline of one key set fetch                             | 3000 |
//! | `JWKS_MAX_AGE_S`     | how long a key set is fresh when it has no `Cache-Control: max-age` | 300 |
//! | `JWKS_MIN_REFETCH_S` | least time between fetches for an unknown `kid`           | 60 |
//! | `JWKS_STALE_S`       | how long cached keys keep verifying while the key set cannot be fetched | 86400 |
//! | `TURN_URLS`          | TURN server URLs for `/api/my-turn`, comma-separated      | none: 503 |
//! | `TURN_SECRET`        | name of the secret shared with the TURN server            | none: 503 |
//! | `TURN_TTL_S`         | lifetime of TURN credentials                              | 3600 |
//! | `DEV_TOKENS`         | `true`: `POST /api/dev-token` issues HS256 tokens (`devtoken`) | off |
//! | `DEV_TOKEN_TTL_S`    | lifetime of a development token                           | 43200 |

use std::time::Duration;

/// Everything the plugin is told.
pub struct Config {
    pub issuer: Option<String>,
    pub jwks_url: Option<String>,
    pub audience: Vec<String>,
    pub allowed_origins: Vec<String>,
    pub leeway_s: u64,
    pub hs256_secret: Option<String>,
    pub dev_token_ttl_s: u64,
    pub jwks: JwksSettings,
    pub turn: TurnSettings,
}

pub struct JwksSettings {
    pub timeout: Duration,
    pub default_max_age_s: u64,
    pub min_refetch_s: u64,
    pub stale_s: u64,
}

pub struct TurnSettings {
    pub urls: Vec<String>,
    pub secret: Option<String>,
    pub ttl_s: u64,
}

impl Config {
    pub fn from_env() -> Result<Self, String> {
        let issuer = var("ISSUER").map(|s| s.trim_end_matches('/').to_string());
        let jwks_url = var("JWKS_URL").or_else(|| {
            issuer
                .as_ref()
                .map(|iss| format!("{iss}/.well-known/jwks.json"))
        });
        Ok(Self {
            jwks_url,
            issuer,
            audience: list("AUDIENCE"),
            allowed_origins: list("ALLOWED_ORIGINS"),
            leeway_s: number("LEEWAY_S", 5)?,
            hs256_secret: var("HS256_SECRET"),
            dev_token_ttl_s: number("DEV_TOKEN_TTL_S", 43_200)?,
            jwks: JwksSettings {
                timeout: Duration::from_millis(number("JWKS_TIMEOUT_MS", 3000)?),
                default_max_age_s: number("JWKS_MAX_AGE_S", 300)?,
                min_refetch_s: number("JWKS_MIN_REFETCH_S", 60)?,
                stale_s: number("JWKS_STALE_S", 86_400)?,
            },
            turn: TurnSettings {
                urls: list("TURN_URLS"),
                secret: var("TURN_SECRET"),
                ttl_s: number("TURN_TTL_S", 3600)?,
            },
        })
    }
}

/// A variable that is set and not blank.
fn var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

fn list(name: &str) -> Vec<String> {
    var(name)
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

fn number(name: &str, default: u64) -> Result<u64, String> {
    match var(name) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| format!("{name} must be a whole number, not {v:?}")),
    }
}
