//! TURN credentials by the TURN REST API scheme that coturn implements
//! (`use-auth-secret`): the username is `<expiry>:<user id>` and the
//! password is base64(HMAC-SHA1(shared secret, username)). The TURN server
//! recomputes the password from the secret it shares with us and refuses
//! the username once its expiry has passed; nothing is stored.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha1::Sha1;
use spike_sdk::{access, secrets};

use crate::config::TurnSettings;
use spike_sdk::now_ms;

/// Credentials for one user, as WebRTC's `RTCIceServer` wants them, with
/// the lifetime.
#[derive(Serialize)]
pub struct Credentials {
    pub urls: Vec<String>,
    pub username: String,
    pub credential: String,
    #[serde(rename = "ttl")]
    pub ttl_s: u64,
}

/// Why there are none: TURN is not set up here, and what the operator sets.
pub struct Unavailable(pub String);

/// Credentials for `user`, valid for the configured lifetime from now.
pub fn credentials(settings: &TurnSettings, user: &str) -> Result<Credentials, Unavailable> {
    if settings.urls.is_empty() {
        return Err(Unavailable(
            "no TURN server is configured: set TURN_URLS in the auth plugin's [env]".into(),
        ));
    }
    let name = settings.secret.as_deref().ok_or_else(|| {
        Unavailable(
            "no TURN secret is configured: set TURN_SECRET in the auth plugin's [env] \
                 to the name of the secret shared with the TURN server"
                .into(),
        )
    })?;
    let secret = secrets::get(name).map_err(|e| {
        // The same words as every other secret error (`access::secret`).
        Unavailable(format!(
            "the TURN secret is not available: {}",
            access::secret_hint(name, &e)
        ))
    })?;
    let expiry = now_ms() / 1000 + settings.ttl_s;
    Ok(sign(settings, secret.as_bytes(), expiry, user))
}

fn sign(settings: &TurnSettings, secret: &[u8], expiry: u64, user: &str) -> Credentials {
    let username = format!("{expiry}:{user}");
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(username.as_bytes());
    Credentials {
        urls: settings.urls.clone(),
        credential: STANDARD.encode(mac.finalize().into_bytes()),
        username,
        ttl_s: settings.ttl_s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_follow_the_turn_rest_scheme() {
        let settings = TurnSettings {
            urls: vec!["turn:127.0.0.1:3478".into()],
            secret: Some("turn".into()),
            ttl_s: 60,
        };
        // HMAC-SHA1("north", "1700000000:user_1"), computed with Python's hmac.
        let c = sign(&settings, b"north", 1_700_000_000, "user_1");
        assert_eq!(c.username, "1700000000:user_1");
        assert_eq!(c.credential, "l5aJJWrgG9fNphe0Vy53sjw8NxE=");
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"urls":["turn:127.0.0.1:3478"],"username":"1700000000:user_1","credential":"l5aJJWrgG9fNphe0Vy53sjw8NxE=","ttl":60}"#
        );
    }
}
