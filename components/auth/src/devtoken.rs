//! The development token issuer: `POST /api/dev-token` with `{"name":
//! "Ann"}` answers an HS256 session token for `dev_ann`, signed with the
//! key the authenticator verifies HS256 tokens with, so that a local
//! server has sign-in without an identity provider.
//!
//! The answer also sets the token as the `__session` cookie, `HttpOnly`
//! (no page script can read it, so a script that runs on this origin
//! cannot take the session away), `SameSite=Strict`, and `Secure` when the
//! request came over HTTPS; a browser needs nothing else. `DELETE
//! /api/dev-token` signs out: it clears the cookie.
//!
//! It answers only when the manifest says `DEV_TOKENS = "true"` (the
//! shipped `plugins/dev-tokens.toml`, which routes `/api/dev-token` to
//! this component) and the HS256 key's secret is set (`./dev.sh serve`
//! makes one). Anyone who can reach it can be anyone: a server with real
//! users has neither that manifest nor an HS256 key.

use serde::{Deserialize, Serialize};
use spike_sdk::access;
use spike_sdk::http::{Request, Response};
use spike_sdk::router::HttpError;

use crate::config::Config;

/// Longest name, in characters.
const MAX_NAME: usize = 32;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Ask {
    name: String,
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    name: &'a str,
    iss: &'a str,
    iat: u64,
    exp: u64,
}

/// The answer: the token and what it says.
#[derive(Serialize)]
pub struct Issued {
    token: String,
    sub: String,
    name: String,
    expires_at_ms: u64,
}

/// The cookie the authenticator reads a browser's token from.
const SESSION_COOKIE: &str = "__session";

/// `POST /api/dev-token`.
pub fn issue(req: &Request) -> Result<Response, HttpError> {
    if std::env::var("DEV_TOKENS").ok().as_deref() != Some("true") {
        return Err(HttpError::not_found(
            "the development token issuer is off (DEV_TOKENS in the manifest)",
        ));
    }
    let config = Config::from_env().map_err(|e| HttpError::new(503, "misconfigured", e))?;
    let Some(secret_name) = &config.hs256_secret else {
        return Err(HttpError::new(
            503,
            "misconfigured",
            "development tokens are HS256: name the key's secret in HS256_SECRET",
        ));
    };
    let ask: Ask = req.json(4096)?;
    let name = ask.name.trim();
    let sub = subject(name).ok_or_else(|| {
        HttpError::bad_request(format!(
            "a name is 1 to {MAX_NAME} letters, digits, spaces, '-', '_' or '.'"
        ))
    })?;
    let key = access::secret(secret_name)?;
    let now_s = spike_sdk::now_ms() / 1000;
    let exp = now_s + config.dev_token_ttl_s;
    let claims = Claims {
        sub: &sub,
        name,
        iss: config.issuer.as_deref().unwrap_or("spike-dev"),
        iat: now_s,
        exp,
    };
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
    )
    .map_err(|e| HttpError::new(500, "internal", format!("signing: {e}")))?;
    let cookie = session_cookie(req, &token, config.dev_token_ttl_s);
    let issued = Issued {
        token,
        sub,
        name: name.to_string(),
        expires_at_ms: exp * 1000,
    };
    Ok(Response::json_of(200, &issued).header("set-cookie", cookie))
}

/// `DELETE /api/dev-token`: signs a browser out (its cookie goes).
pub fn sign_out(req: &Request) -> Response {
    Response::new(204).header("set-cookie", session_cookie(req, "", 0))
}

/// The `Set-Cookie` value holding `token` for `max_age_s` (0: cleared).
fn session_cookie(req: &Request, token: &str, max_age_s: u64) -> String {
    let https = req
        .header("x-forwarded-proto")
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
        || req.scheme_is_https();
    let secure = if https { "; Secure" } else { "" };
    format!(
        "{SESSION_COOKIE}={token}; Path=/; Max-Age={max_age_s}; HttpOnly; SameSite=Strict{secure}"
    )
}

/// `dev_` and the name in lower case, spaces as `_`; `None` for a name
/// that is empty, too long or has other characters.
fn subject(name: &str) -> Option<String> {
    let fits = (1..=MAX_NAME).contains(&name.chars().count())
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.'));
    fits.then(|| format!("dev_{}", name.to_lowercase().replace(' ', "_")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects() {
        assert_eq!(subject("Ann Lee").as_deref(), Some("dev_ann_lee"));
        assert_eq!(subject("bo.b-2_x").as_deref(), Some("dev_bo.b-2_x"));
        assert_eq!(subject(""), None);
        assert_eq!(subject("a/b"), None);
        assert_eq!(subject("<script>"), None);
        assert_eq!(subject(&"x".repeat(33)), None);
    }
}
