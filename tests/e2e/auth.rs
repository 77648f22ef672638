//! The auth hook with the real auth component, against tokens PyJWT mints
//! and a JWKS server the test controls: what verifies, every attack that
//! must not, key rotation, and an issuer that is down, slow or talks
//! garbage (401 or 503 with a JSON reason, never a 500 or a hang).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use spike::caps::secrets::SecretSource;
use spike_e2e::tokens::*;
use spike_e2e::*;
use tokio::io::AsyncWriteExt;

const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "spike-tests";
const ORIGIN: &str = "https://app.test";
const HS_KEY: &str = "hs256-test-key-of-32-bytes-or-so!";

/// The auth plugin configured for `jwks`, with extra `[env]` lines; and
/// whoami behind `required` and `optional` routes.
fn plugins(jwks: &JwksServer, extra_env: &str) -> (String, String) {
    let auth = format!(
        r#"
[[routes]]
prefix = "/api/logged_in"
auth = "required"
[grants]
kv = ["auth"]
outbound = ["127.0.0.1:{port}"]
secrets = ["hs-key"]
[env]
ISSUER = "{ISSUER}"
JWKS_URL = "{url}"
AUDIENCE = "{AUDIENCE}"
ALLOWED_ORIGINS = "{ORIGIN}"
HS256_SECRET = "hs-key"
JWKS_TIMEOUT_MS = "1000"
{extra_env}
"#,
        port = jwks.port,
        url = jwks.url(),
    );
    let whoami = r#"
[[routes]]
prefix = "/whoami/required"
auth = "required"
[[routes]]
prefix = "/whoami/optional"
auth = "optional"
"#
    .to_string();
    (auth, whoami)
}

async fn start(jwks: &JwksServer, extra_env: &str) -> TestServer {
    let (auth, whoami) = plugins(jwks, extra_env);
    TestServer::start_with(
        &[
            Plugin {
                name: "auth",
                guest: "auth",
                manifest: &auth,
            },
            Plugin {
                name: "whoami",
                guest: "fixture_whoami",
                manifest: &whoami,
            },
        ],
        |config| {
            config.secrets = SecretSource {
                file: None,
                env: vec![("SPIKE_SECRET_HS_KEY".into(), HS_KEY.into())],
            };
        },
    )
    .await
}

/// Claims that pass every check, for `sub`, valid for a minute.
fn claims(sub: &str) -> Value {
    let now = now_s();
    json!({"sub": sub, "sid": format!("sess_{sub}"), "iss": ISSUER, "aud": AUDIENCE,
           "azp": ORIGIN, "iat": now, "nbf": now - 1, "exp": now + 60,
           "org": {"role": "admin", "name": "Ünïcode ✓"}})
}

/// `claims(sub)` with `changes` applied (a null removes the claim).
fn claims_with(sub: &str, changes: Value) -> Value {
    let mut c = claims(sub);
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

async fn get_with(server: &TestServer, path: &str, token: &str) -> (u16, Value) {
    send_json(client().get(server.at(path)).bearer_auth(token)).await
}

/// Asserts a 401 `invalid_token` with the challenge; returns the reason.
async fn refused(server: &TestServer, token: &str) -> String {
    let resp = within(
        client()
            .get(server.at("/whoami/required"))
            .bearer_auth(token)
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 401, "token {token}");
    assert_eq!(
        resp.headers()["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );
    let body: Value = within(resp.json()).await.unwrap();
    assert_eq!(error_code(&body), "invalid_token", "{body}");
    body["error"]["message"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_each_algorithm_reach_the_plugin_exactly_as_signed() {
    let (rsa, ec) = key_pairs("rsa-1", "ec-1");
    let jwks = JwksServer::start(vec![rsa.jwk.clone(), ec.jwk.clone()]).await;
    let server = start(&jwks, "").await;
    let hs = json!({"op": "sign", "alg": "HS256", "key": HS_KEY, "claims": claims("user_hs")});
    let signed = tokens(&mint(&[
        sign_job(&rsa, &claims("user_rs")),
        sign_job(&ec, &claims("user_es")),
        hs,
    ]));
    for (token, sub) in signed.iter().zip(["user_rs", "user_es", "user_hs"]) {
        let (status, body) = get_with(&server, "/whoami/required", token).await;
        assert_eq!(status, 200, "{sub}: {body}");
        assert_eq!(body["subject"], sub);
        assert_eq!(body["session_id"], format!("sess_{sub}"));
        assert_eq!(body["issuer"], ISSUER);
        // The claims are the payload the issuer signed, byte for byte.
        assert_eq!(body["claims"].as_str().unwrap(), payload_text(token));
        let exp = serde_json::from_str::<Value>(&payload_text(token)).unwrap()["exp"]
            .as_u64()
            .unwrap();
        assert_eq!(body["expires_at_ms"], exp * 1000);
        // The same through /api/logged_in, and optional routes see it too.
        let (status, logged_in) = get_with(&server, "/api/logged_in", token).await;
        assert_eq!(status, 200, "{logged_in}");
        assert_eq!(logged_in["sub"], sub);
        assert_eq!(logged_in["org"]["name"], "Ünïcode ✓");
        let (_, optional) = get_with(&server, "/whoami/optional", token).await;
        assert_eq!(optional["subject"], sub);
    }
    // The session cookie works as the header does.
    let (status, body) = send_json(
        client()
            .get(server.at("/whoami/required"))
            .header("cookie", format!("theme=dark; __session={}", signed[0])),
    )
    .await;
    assert_eq!((status, &body["subject"]), (200, &json!("user_rs")));

    // No credentials: 401 `missing_token` on required routes, anonymous on
    // optional ones.
    for path in ["/api/logged_in", "/whoami/required"] {
        let resp = within(client().get(server.at(path)).send()).await.unwrap();
        assert_eq!(resp.status(), 401);
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        let body: Value = within(resp.json()).await.unwrap();
        assert_eq!(error_code(&body), "missing_token");
    }
    let (status, body) = send_json(client().get(server.at("/whoami/optional"))).await;
    assert_eq!((status, body), (200, json!({"anonymous": true})));
    // One fetch of the key set served all of that.
    assert_eq!(jwks.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attack_is_refused_with_a_reason() {
    let (rsa, ec) = key_pairs("rsa-1", "ec-1");
    let (stranger, _) = key_pairs("rsa-1", "unused");
    let oct = json!({"kty": "oct", "kid": "oct-1", "k": "c2VjcmV0LWtleQ"});
    let jwks = JwksServer::start(vec![rsa.jwk.clone(), ec.jwk.clone(), oct]).await;
    let server = start(&jwks, "").await;
    let now = now_s();
    let good = sign_all(&[(&rsa, claims("user_1"))]).remove(0);
    // (what, the token, the reason the caller is given)
    let cases: Vec<(&str, &str, Value)> = vec![
        (
            "alg none",
            "the token is malformed",
            json!({"op": "unsigned", "claims": claims("user_1"), "headers": {"kid": "rsa-1"}}),
        ),
        (
            "HS256 signed with the RSA public key (algorithm confusion)",
            "the token's signature does not verify",
            json!({"op": "hs256_raw", "secret": rsa.public_pem, "claims": claims("user_1"),
                   "headers": {"kid": "rsa-1"}}),
        ),
        (
            "HS256 signed with the key set's oct key",
            "the token's signature does not verify",
            json!({"op": "hs256_raw", "secret": "secret-key", "claims": claims("user_1"),
                   "headers": {"kid": "oct-1"}}),
        ),
        (
            "HS256 with a wrong secret",
            "the token's signature does not verify",
            json!({"op": "sign", "alg": "HS256", "key": "not the key", "claims": claims("user_1")}),
        ),
        (
            "RS256 by a key the issuer does not hold, under its kid",
            "the token's signature does not verify",
            sign_job(&stranger, &claims("user_1")),
        ),
        (
            "unknown kid",
            "the token's key is not known",
            json!({"op": "sign", "alg": "RS256", "key": rsa.pem, "claims": claims("user_1"),
                   "headers": {"kid": "nobody"}}),
        ),
        (
            "no kid",
            "the token names no key (kid)",
            json!({"op": "sign", "alg": "RS256", "key": rsa.pem, "claims": claims("user_1")}),
        ),
        (
            "RS256 naming the EC key",
            "the token's key cannot verify it",
            json!({"op": "sign", "alg": "RS256", "key": rsa.pem, "claims": claims("user_1"),
                   "headers": {"kid": "ec-1"}}),
        ),
        (
            "RS384",
            "the token's algorithm is not accepted",
            json!({"op": "sign", "alg": "RS384", "key": rsa.pem, "claims": claims("user_1"),
                   "headers": {"kid": "rsa-1"}}),
        ),
        (
            "expired past the leeway",
            "the token has expired",
            sign_job(&rsa, &claims_with("user_1", json!({"exp": now - 30}))),
        ),
        (
            "not valid yet",
            "the token is not valid yet",
            sign_job(&rsa, &claims_with("user_1", json!({"nbf": now + 60}))),
        ),
        (
            "wrong issuer",
            "the token's issuer is not accepted",
            sign_job(
                &rsa,
                &claims_with("user_1", json!({"iss": "https://evil.test"})),
            ),
        ),
        (
            "no issuer",
            "the token lacks a required claim",
            sign_job(&rsa, &claims_with("user_1", json!({"iss": null}))),
        ),
        (
            "wrong audience",
            "the token's audience is not accepted",
            sign_job(&rsa, &claims_with("user_1", json!({"aud": "other-app"}))),
        ),
        (
            "another origin",
            "the token was issued for another origin",
            sign_job(
                &rsa,
                &claims_with("user_1", json!({"azp": "https://evil.test"})),
            ),
        ),
        (
            "no expiry",
            "the token lacks a required claim",
            sign_job(&rsa, &claims_with("user_1", json!({"exp": null}))),
        ),
        (
            "no subject",
            "the token lacks a required claim",
            sign_job(&ec, &claims_with("user_1", json!({"sub": null}))),
        ),
    ];
    let jobs: Vec<Value> = cases.iter().map(|(_, _, j)| j.clone()).collect();
    let minted = tokens(&mint(&jobs));
    for ((name, reason, _), token) in cases.iter().zip(&minted) {
        assert_eq!(&refused(&server, token).await, reason, "{name}");
    }

    // Tampering: another subject under the good signature, and a changed
    // signature.
    let parts: Vec<&str> = good.split('.').collect();
    let forged_claims = claims("user_admin").to_string();
    use base64::Engine;
    let forged_payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged_claims);
    let tampered_payload = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    // One character of the signature changed (in the middle, where every
    // bit counts).
    let mut sig = parts[2].as_bytes().to_vec();
    let mid = sig.len() / 2;
    sig[mid] = if sig[mid] == b'A' { b'B' } else { b'A' };
    let sig = String::from_utf8(sig).unwrap();
    let tampered_signature = format!("{}.{}.{}", parts[0], parts[1], sig);
    for token in [&tampered_payload, &tampered_signature] {
        assert_eq!(
            refused(&server, token).await,
            "the token's signature does not verify"
        );
    }
    // Malformed tokens and junk; the host refuses some before any guest.
    let long = "a".repeat(9 * 1024);
    for token in [
        "abc",
        "a.b",
        "a.b.c",
        "....",
        "e30.e30.e30",
        "eyJhbGciOiJSUzI1NiJ9.%%%.sig",
        long.as_str(),
    ] {
        refused(&server, token).await;
    }
    for cookie in ["__session=<script>alert(1)</script>", "__session=a b"] {
        let (status, body) = send_json(
            client()
                .get(server.at("/whoami/required"))
                .header("cookie", cookie),
        )
        .await;
        assert_eq!(status, 401, "{cookie}: {body}");
    }
    // Optional routes go on without an identity.
    for token in &minted {
        let (status, body) = get_with(&server, "/whoami/optional", token).await;
        assert_eq!((status, body), (200, json!({"anonymous": true})));
    }
    // A wrong token says nothing of who it names: two users, one reason.
    let pair = sign_all(&[
        (&stranger, claims("user_1")),
        (&stranger, claims("someone_who_does_not_exist")),
    ]);
    assert_eq!(
        refused(&server, &pair[0]).await,
        refused(&server, &pair[1]).await
    );
    // The good token still works: nothing above broke the cache.
    let (status, _) = get_with(&server, "/whoami/required", &good).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leeway_is_allowed_on_expiry() {
    let (rsa, _) = key_pairs("rsa-1", "ec-1");
    let jwks = JwksServer::start(vec![rsa.jwk.clone()]).await;
    let server = start(&jwks, "LEEWAY_S = \"20\"").await;
    let now = now_s();
    let t = sign_all(&[
        (&rsa, claims_with("user_1", json!({"exp": now - 5}))),
        (&rsa, claims_with("user_1", json!({"exp": now - 40}))),
    ]);
    let (status, body) = get_with(&server, "/whoami/required", &t[0]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(refused(&server, &t[1]).await, "the token has expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_and_unknown_kids_fetch_at_most_once_a_minute() {
    let (old, _) = key_pairs("key-old", "unused");
    let (new, _) = key_pairs("key-new", "unused");
    let jwks = JwksServer::start(vec![old.jwk.clone()]).await;
    // The default refetch interval: a minute.
    let server = start(&jwks, "").await;
    let t = sign_all(&[(&old, claims("user_1")), (&new, claims("user_1"))]);
    assert_eq!(get_with(&server, "/whoami/required", &t[0]).await.0, 200);
    assert_eq!(jwks.hits(), 1);
    // Made-up kids: the first one fetches again, the rest wait a minute.
    let jobs: Vec<Value> = (0..5)
        .map(|i| {
            json!({"op": "sign", "alg": "RS256", "key": old.pem, "claims": claims("u"),
                   "headers": {"kid": format!("made-up-{i}")}})
        })
        .collect();
    for token in tokens(&mint(&jobs)) {
        assert_eq!(
            refused(&server, &token).await,
            "the token's key is not known"
        );
    }
    assert!(jwks.hits() <= 2, "{} fetches", jwks.hits());
    drop(server);

    // Rotation, with a short refetch interval: the new kid appears, the
    // old one goes.
    let jwks = JwksServer::start(vec![old.jwk.clone()]).await;
    let server = start(&jwks, "JWKS_MIN_REFETCH_S = \"1\"").await;
    assert_eq!(get_with(&server, "/whoami/required", &t[0]).await.0, 200);
    jwks.set_keys(vec![new.jwk.clone()]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = get_with(&server, "/whoami/required", &t[1]).await;
    assert_eq!(status, 200, "the new key verifies: {body}");
    assert_eq!(jwks.hits(), 2);
    // A new token by the removed key no longer verifies.
    let late = sign_all(&[(&old, claims("user_2"))]).remove(0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        refused(&server, &late).await,
        "the token's key is not known"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_that_is_down_slow_or_garbled_gives_503_and_cached_keys_still_verify() {
    let (rsa, _) = key_pairs("rsa-1", "ec-1");
    let jwks = JwksServer::start(vec![rsa.jwk.clone()]).await;
    // Failed fetches are retried after 5 s; the key set is fresh for 1 s.
    let server = start(&jwks, "").await;
    let t = sign_all(&[
        (&rsa, claims("user_1")),
        (&rsa, claims("user_2")),
        (&rsa, claims("user_3")),
        (&rsa, claims("user_4")),
        (&rsa, claims("user_5")),
    ]);
    let unavailable = |(status, body): (u16, Value)| {
        assert_eq!(status, 503, "{body}");
        assert_eq!(error_code(&body), "auth_unavailable", "{body}");
    };
    let modes = [
        JwksMode::Close,
        JwksMode::Status(500),
        JwksMode::Garbage,
        JwksMode::Slow(Duration::from_secs(30)),
    ];
    for (i, mode) in modes.into_iter().enumerate() {
        jwks.set_mode(mode.clone());
        let started = Instant::now();
        unavailable(get_with(&server, "/whoami/required", &t[i]).await);
        // JWKS_TIMEOUT_MS is 1 s.
        assert!(started.elapsed() < Duration::from_secs(4), "{mode:?}");
        // The failure holds off fetching for a few seconds: the next
        // request does not wait again.
        let started = Instant::now();
        unavailable(get_with(&server, "/whoami/required", &t[i]).await);
        assert!(started.elapsed() < Duration::from_millis(900), "{mode:?}");
        // Optional routes go on anonymously.
        let (status, body) = get_with(&server, "/whoami/optional", &t[i]).await;
        assert_eq!((status, body), (200, json!({"anonymous": true})));
        tokio::time::sleep(Duration::from_millis(5100)).await;
    }

    // The issuer comes back, briefly, with keys fresh for a second...
    jwks.set_mode(JwksMode::Serve {
        cache_control: "max-age=1".into(),
    });
    assert_eq!(get_with(&server, "/whoami/required", &t[0]).await.0, 200);
    // ...then goes down: tokens by the cached key still verify.
    jwks.set_mode(JwksMode::Close);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = jwks.hits();
    let (status, body) = get_with(&server, "/whoami/required", &t[4]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(jwks.hits(), before + 1, "the stale set was fetched again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_pass_the_same_hook() {
    let (rsa, _) = key_pairs("rsa-1", "ec-1");
    let jwks = JwksServer::start(vec![rsa.jwk.clone()]).await;
    let server = start(&jwks, "").await;
    let token = sign_all(&[(&rsa, claims("user_1"))]).remove(0);
    let upgrade = |auth: &str| {
        format!(
            "GET /whoami/required HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\
             sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n{auth}\r\n"
        )
    };
    for (auth, expected) in [
        (String::new(), "missing_token"),
        (
            "authorization: Bearer a.b.c\r\n".to_string(),
            "invalid_token",
        ),
    ] {
        let mut stream = raw_connect(server.addr()).await;
        stream.write_all(upgrade(&auth).as_bytes()).await.unwrap();
        let resp = read_response(&mut stream, Duration::from_secs(10)).await;
        assert_eq!(resp.status, 401);
        assert_eq!(error_code(&resp.json()), expected);
    }
    // With a good token the request reaches the plugin (which does not
    // upgrade: rooms will).
    let mut stream = raw_connect(server.addr()).await;
    let auth = format!("authorization: Bearer {token}\r\n");
    stream.write_all(upgrade(&auth).as_bytes()).await.unwrap();
    let resp = read_response(&mut stream, Duration::from_secs(10)).await;
    assert_ne!(resp.status, 401, "{resp:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_tokens_are_verified_once_and_counted() {
    let (rsa, _) = key_pairs("rsa-1", "ec-1");
    let jwks = JwksServer::start(vec![rsa.jwk.clone()]).await;
    let server = start(&jwks, "").await;
    let token = sign_all(&[(&rsa, claims("user_1"))]).remove(0);
    for _ in 0..5 {
        assert_eq!(get_with(&server, "/whoami/required", &token).await.0, 200);
    }
    let metrics = server.metrics_text().await;
    let value = |series: &str, kind: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(series) && l.contains(&format!("kind=\"{kind}\"")))
            .unwrap_or_else(|| panic!("no {series} {kind} in\n{metrics}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(value("spike_auth_cache_total", "miss"), 1.0);
    assert_eq!(value("spike_auth_cache_total", "hit"), 4.0);
    assert_eq!(value("spike_auth_outcomes_total", "verified"), 5.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_naming_no_authenticator_answers_503_not_500() {
    // `hello` serves HTTP but exports no authenticator; `ghost` is no plugin.
    let manifest = r#"
[[routes]]
prefix = "/whoami/by-hello"
auth = "required"
authenticator = "hello"
[[routes]]
prefix = "/whoami/by-ghost"
auth = "required"
authenticator = "ghost"
[[routes]]
prefix = "/whoami/optional-ghost"
auth = "optional"
authenticator = "ghost"
"#;
    let server = TestServer::start(&[
        HELLO,
        Plugin {
            name: "whoami",
            guest: "fixture_whoami",
            manifest,
        },
    ])
    .await;
    for path in ["/whoami/by-hello", "/whoami/by-ghost"] {
        let (status, body) = get_with(&server, path, "a.b.c").await;
        assert_eq!(status, 503, "{path}: {body}");
        assert_eq!(error_code(&body), "auth_unavailable");
        // Without credentials nothing needs checking: 401.
        let (status, _) = send_json(client().get(server.at(path))).await;
        assert_eq!(status, 401);
    }
    let (status, body) = get_with(&server, "/whoami/optional-ghost", "a.b.c").await;
    assert_eq!((status, body), (200, json!({"anonymous": true})));
}

/// The hostile probe's session fixation: `Authorization: Basic`, then
/// `Authorization: Bearer <user A's token>`, then a garbage `__session`
/// cookie. The host read the cookie, the authenticator the second header,
/// and the host cached A's verdict under the garbage, which then
/// authenticated as A on its own for an hour. Now such a request is
/// refused before anything runs, and a token is cached only as verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_cached_only_under_itself() {
    let (rsa, _) = key_pairs("rsa-1", "ec-1");
    let jwks = JwksServer::start(vec![rsa.jwk.clone()]).await;
    let server = start(&jwks, "").await;
    let token = sign_all(&[(&rsa, claims("user_a"))]).remove(0);
    let garbage = "attacker-chosen.garbage.value";
    let mixed = client()
        .get(server.at("/whoami/required"))
        .header("authorization", "Basic dXNlcjpwdw==")
        .header("authorization", format!("Bearer {token}"))
        .header("cookie", format!("__session={garbage}"));
    let (status, body) = send_json(mixed).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("several Authorization"),
        "{body}"
    );
    let alone = client()
        .get(server.at("/whoami/required"))
        .header("cookie", format!("__session={garbage}"));
    let (status, body) = send_json(alone).await;
    assert_eq!(status, 401, "the garbage alone is no one: {body}");
    // A cookie header that is not ASCII, beside a good token: refused too
    // (the host skipped it, the authenticator read it).
    let resp = within(
        client()
            .get(server.at("/whoami/required"))
            .bearer_auth(&token)
            .header(
                "cookie",
                reqwest::header::HeaderValue::from_bytes("x=é".as_bytes()).unwrap(),
            )
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 401);
    // The token itself still works, from the header or the cookie.
    assert_eq!(get_with(&server, "/whoami/required", &token).await.0, 200);
    let from_cookie = client()
        .get(server.at("/whoami/required"))
        .header("cookie", format!("theme=dark; __session={token}"));
    assert_eq!(send_json(from_cookie).await.0, 200);
}

/// The development issuer sets its token as an `HttpOnly` cookie (a
/// script on the page cannot read the session), `SameSite=Strict`,
/// `Secure` over HTTPS; the cookie alone signs the browser in, and
/// `DELETE` signs it out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_tokens_come_as_an_http_only_cookie() {
    let dev_tokens = "[[routes]]\nprefix = \"/api/dev-token\"\nmethods = [\"POST\", \"DELETE\"]\n\
                      [grants]\nsecrets = [\"hs-key\"]\n[env]\nDEV_TOKENS = \"true\"\n\
                      HS256_SECRET = \"hs-key\"\n";
    let whoami = "[[routes]]\nprefix = \"/whoami\"\nauth = \"required\"\n";
    let server = spike_e2e::tokens::start_with_hs256_auth(
        HS_KEY,
        &[
            Plugin {
                name: "dev-tokens",
                guest: "auth",
                manifest: dev_tokens,
            },
            Plugin {
                name: "whoami",
                guest: "fixture_whoami",
                manifest: whoami,
            },
        ],
    )
    .await;
    let issue = |https: bool| {
        let mut req = client()
            .post(server.at("/api/dev-token"))
            .json(&json!({"name": "Ann"}));
        if https {
            req = req.header("x-forwarded-proto", "https");
        }
        req.send()
    };
    let resp = within(issue(false)).await.unwrap();
    assert_eq!(resp.status(), 200);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    let body: Value = within(resp.json()).await.unwrap();
    let token = body["token"].as_str().unwrap();
    assert!(
        cookie.starts_with(&format!("__session={token};")),
        "{cookie}"
    );
    for part in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(cookie.contains(part), "{part} in {cookie}");
    }
    assert!(!cookie.contains("Secure"), "{cookie}");
    let resp = within(issue(true)).await.unwrap();
    assert!(
        resp.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .ends_with("; Secure")
    );
    // The cookie, as a browser sends it back, is the session.
    let (status, me) = send_json(
        client()
            .get(server.at("/whoami"))
            .header("cookie", format!("__session={token}")),
    )
    .await;
    assert_eq!((status, &me["subject"]), (200, &json!("dev_ann")), "{me}");
    let resp = within(client().delete(server.at("/api/dev-token")).send())
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let cleared = resp.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cleared.starts_with("__session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
}
