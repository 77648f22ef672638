//! Verifying a session token.
//!
//! The algorithm in the token's header only chooses among keys this server
//! already trusts for that algorithm: RS256 and ES256 take a public key of
//! the issuer's key set with that `kid`, of the matching type (RSA, EC
//! P-256) and never a symmetric one; HS256 takes only the operator's secret.
//! So `alg: none`, an HS256 token signed with the RSA public key
//! (algorithm confusion), or a key set that slips in an `oct` key all fail.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;
use spike_sdk::identity::Caller;
use spike_sdk::secrets;

use crate::config::Config;
use crate::jwks::{self, KeyError};

/// The cookie Clerk keeps its session token in.
const SESSION_COOKIE: &str = "__session";

/// Why a token did not verify.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// The token is not good; the reason is for the caller and says
    /// nothing about any user.
    Rejected(&'static str),
    /// It cannot be checked now.
    Unavailable(&'static str),
}

use Failure::{Rejected, Unavailable};

/// The claims this plugin reads; the caller gets all of them as signed.
/// (`sub` and `exp` are required, but optional here so that a token
/// without them fails as missing a claim rather than as malformed.)
#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    sid: Option<String>,
    iss: Option<String>,
    azp: Option<String>,
    exp: Option<u64>,
}

/// The bearer token of a request, read as the host reads it:
/// `Authorization: Bearer`, else the `__session` cookie. The host hands
/// over the one credential it read; a request with several `Authorization`
/// headers (which the host refuses) has none here either.
pub fn bearer_token(headers: &[(String, Vec<u8>)]) -> Option<String> {
    let values = |name: &'static str| {
        headers
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
    };
    if values("authorization").count() > 1 {
        return None;
    }
    let from_header = values("authorization").find_map(|v| {
        let (scheme, token) = v.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    from_header
        .or_else(|| {
            values("cookie")
                .flat_map(|v| v.split(';'))
                .find_map(|pair| {
                    let (name, value) = pair.trim().split_once('=')?;
                    (name.trim() == SESSION_COOKIE).then(|| value.trim().trim_matches('"'))
                })
        })
        .filter(|t| !t.is_empty())
        .map(String::from)
}

/// The caller `token` proves, under `config`.
pub fn verify(config: &Config, token: &str) -> Result<Caller, Failure> {
    let header = decode_header(token).map_err(|_| Rejected("the token is malformed"))?;
    let key = match header.alg {
        Algorithm::RS256 | Algorithm::ES256 => {
            let url = config
                .jwks_url
                .as_deref()
                .ok_or(Rejected("the token's algorithm is not accepted"))?;
            let kid = header
                .kid
                .as_deref()
                .ok_or(Rejected("the token names no key (kid)"))?;
            let jwk = jwks::key(url, kid, &config.jwks).map_err(|e| match e {
                KeyError::Unknown => Rejected("the token's key is not known"),
                KeyError::Unavailable => Unavailable(
                    "the issuer's signing keys cannot be fetched now; try again shortly",
                ),
            })?;
            public_key(jwk, header.alg)?
        }
        Algorithm::HS256 => {
            let name = config
                .hs256_secret
                .as_deref()
                .ok_or(Rejected("the token's algorithm is not accepted"))?;
            let secret = secrets::get(name).map_err(|e| {
                eprintln!(
                    "auth: the HS256 key '{name}' cannot be read: {}",
                    e.message()
                );
                Unavailable("authentication is misconfigured")
            })?;
            DecodingKey::from_secret(secret.as_bytes())
        }
        _ => return Err(Rejected("the token's algorithm is not accepted")),
    };

    let mut validation = Validation::new(header.alg);
    validation.leeway = config.leeway_s;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    let mut required = vec!["exp", "sub"];
    if let Some(issuer) = &config.issuer {
        validation.set_issuer(&[issuer]);
        required.push("iss");
    }
    validation.validate_aud = !config.audience.is_empty();
    if validation.validate_aud {
        validation.set_audience(&config.audience);
        required.push("aud");
    }
    validation.set_required_spec_claims(&required);

    let claims = decode::<Claims>(token, &key, &validation)
        .map_err(|e| Rejected(reason(e.kind())))?
        .claims;
    // Clerk puts the origin the session was made on in `azp`.
    if !config.allowed_origins.is_empty()
        && let Some(azp) = &claims.azp
        && !config.allowed_origins.iter().any(|o| o == azp)
    {
        return Err(Rejected("the token was issued for another origin"));
    }
    let (Some(subject), Some(exp)) = (claims.sub, claims.exp) else {
        return Err(Rejected("the token lacks a required claim"));
    };
    Ok(Caller {
        subject,
        session_id: claims.sid,
        issuer: claims.iss.unwrap_or_default(),
        claims: raw_claims(token)?,
        expires_at_ms: Some(exp.saturating_mul(1000)),
    })
}

/// A public key from a JWK, if it is the kind `alg` needs.
fn public_key(jwk: serde_json::Value, alg: Algorithm) -> Result<DecodingKey, Failure> {
    const UNUSABLE: Failure = Rejected("the token's key cannot verify it");
    let jwk: Jwk = serde_json::from_value(jwk).map_err(|_| UNUSABLE)?;
    if let Some(key_alg) = jwk.common.key_algorithm
        && Algorithm::try_from(key_alg).ok() != Some(alg)
    {
        return Err(UNUSABLE);
    }
    if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
        return Err(UNUSABLE);
    }
    let fits = match (&jwk.algorithm, alg) {
        (AlgorithmParameters::RSA(_), Algorithm::RS256) => true,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256) => p.curve == EllipticCurve::P256,
        _ => false,
    };
    if !fits {
        return Err(UNUSABLE);
    }
    DecodingKey::from_jwk(&jwk).map_err(|_| UNUSABLE)
}

/// The payload as the issuer signed it, for `identity`.
fn raw_claims(token: &str) -> Result<String, Failure> {
    let payload = token.split('.').nth(1).unwrap_or_default();
    URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or(Rejected("the token is malformed"))
}

/// The caller's reason for a failed check.
fn reason(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidSignature => "the token's signature does not verify",
        ErrorKind::ExpiredSignature => "the token has expired",
        ErrorKind::ImmatureSignature => "the token is not valid yet",
        ErrorKind::InvalidIssuer => "the token's issuer is not accepted",
        ErrorKind::InvalidAudience => "the token's audience is not accepted",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "the token's algorithm is not accepted"
        }
        ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim",
        ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidRsaKey(_) | ErrorKind::InvalidKeyFormat => {
            "the token's key cannot verify it"
        }
        _ => "the token is malformed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn the_token_is_read_as_the_host_reads_it() {
        assert_eq!(bearer_token(&h(&[])), None);
        assert_eq!(
            bearer_token(&h(&[("authorization", "Bearer a.b.c")])),
            Some("a.b.c".into())
        );
        assert_eq!(
            bearer_token(&h(&[("cookie", "x=1; __session=\"c.d.e\"")])),
            Some("c.d.e".into())
        );
        assert_eq!(
            bearer_token(&h(&[
                ("cookie", "__session=c.c.c"),
                ("authorization", "bearer h.h.h")
            ])),
            Some("h.h.h".into())
        );
        assert_eq!(bearer_token(&h(&[("authorization", "Basic abc")])), None);
        let two = h(&[
            ("authorization", "Basic abc"),
            ("authorization", "Bearer a.b.c"),
        ]);
        assert_eq!(bearer_token(&two), None);
    }

    #[test]
    fn only_keys_of_the_algorithm_s_own_kind_verify() {
        let rsa = serde_json::json!({"kty": "RSA", "kid": "r", "n": "sXch", "e": "AQAB"});
        let ec = serde_json::json!({"kty": "EC", "kid": "e", "crv": "P-256",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"});
        let oct = serde_json::json!({"kty": "oct", "kid": "o", "k": "c2VjcmV0"});
        assert!(public_key(rsa.clone(), Algorithm::RS256).is_ok());
        assert!(public_key(ec.clone(), Algorithm::ES256).is_ok());
        assert!(public_key(rsa, Algorithm::ES256).is_err());
        assert!(public_key(ec, Algorithm::RS256).is_err());
        assert!(public_key(oct.clone(), Algorithm::RS256).is_err());
        assert!(public_key(oct, Algorithm::ES256).is_err());
        let rs_for_ps =
            serde_json::json!({"kty": "RSA", "kid": "r", "alg": "PS256", "n": "sXch", "e": "AQAB"});
        assert!(public_key(rs_for_ps, Algorithm::RS256).is_err());
        let enc =
            serde_json::json!({"kty": "RSA", "kid": "r", "use": "enc", "n": "sXch", "e": "AQAB"});
        assert!(public_key(enc, Algorithm::RS256).is_err());
    }
}
