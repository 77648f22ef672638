//! `auth`: the authenticator plugin. The host asks it who is calling before
//! it runs any route whose manifest says `auth = "required"` or
//! `"optional"`, and hands the answer to that route's plugin through the
//! `identity` import.
//!
//! It verifies session tokens (JWTs, as Clerk issues them): RS256 and ES256
//! against the issuer's key set (JWKS, fetched through the host's outbound
//! HTTP and cached in KV), HS256 with a key from `secrets`. It also serves
//!
//! | request             | what it answers                                        |
//! |---------------------|--------------------------------------------------------|
//! | `GET /api/logged_in`| the caller's claims (its route has `auth = "required"`) |
//! | `GET /api/my-turn`  | short-lived TURN credentials for the caller            |
//! | `POST /api/dev-token` | a development token, when the manifest allows (`devtoken`), also as an `HttpOnly` cookie |
//! | `DELETE /api/dev-token` | signs a browser out (clears the cookie) |
//!
//! Its settings are the manifest's `[env]`; see [`config`] and
//! `plugins/auth.toml`.

mod config;
mod devtoken;
mod jwks;
mod turn;
mod verify;

use spike_sdk::access;
use spike_sdk::http::Response;
use spike_sdk::router::{HttpError, Router};
use spike_sdk::wasi::http::types::{IncomingRequest, ResponseOutparam};

use crate::config::Config;
use crate::exports::spike::host::authenticator::{self, Outcome, RequestHead};

// The `auth-plugin` world: every import is the SDK's own type (so its HTTP
// helpers work), and the exports are both `wasi:http/incoming-handler` and
// `spike:host/authenticator`. An authenticator in another crate copies this
// block.
wit_bindgen::generate!({
    path: "../../wit",
    world: "spike:host/auth-plugin",
    with: {
        "wasi:io/poll@0.2.12": spike_sdk::wasi::io::poll,
        "wasi:io/error@0.2.12": spike_sdk::wasi::io::error,
        "wasi:io/streams@0.2.12": spike_sdk::wasi::io::streams,
        "wasi:clocks/monotonic-clock@0.2.12": spike_sdk::wasi::clocks::monotonic_clock,
        "wasi:clocks/wall-clock@0.2.12": spike_sdk::wasi::clocks::wall_clock,
        "wasi:random/random@0.2.12": spike_sdk::wasi::random::random,
        "wasi:cli/stdout@0.2.12": spike_sdk::wasi::cli::stdout,
        "wasi:cli/stderr@0.2.12": spike_sdk::wasi::cli::stderr,
        "wasi:cli/stdin@0.2.12": spike_sdk::wasi::cli::stdin,
        "wasi:http/types@0.2.12": spike_sdk::wasi::http::types,
        "wasi:http/outgoing-handler@0.2.12": spike_sdk::wasi::http::outgoing_handler,
        "spike:host/types@0.1.0": spike_sdk::spike::host::types,
        "spike:host/kv@0.1.0": spike_sdk::spike::host::kv,
        "spike:host/blob@0.1.0": spike_sdk::spike::host::blob,
        "spike:host/secrets@0.1.0": spike_sdk::spike::host::secrets,
        "spike:host/identity@0.1.0": spike_sdk::spike::host::identity,
        "spike:host/rate-limit@0.1.0": spike_sdk::spike::host::rate_limit,
        "wasi:otel/types@0.2.0-rc.2": spike_sdk::wasi::otel::types,
        "wasi:otel/tracing@0.2.0-rc.2": spike_sdk::wasi::otel::tracing,
        "wasi:otel/metrics@0.2.0-rc.2": spike_sdk::wasi::otel::metrics,
        "wasi:otel/logs@0.2.0-rc.2": spike_sdk::wasi::otel::logs,
    },
});

struct Auth;

export!(Auth);

impl authenticator::Guest for Auth {
    fn authenticate(head: RequestHead) -> Outcome {
        let Some(token) = verify::bearer_token(&head.headers) else {
            return Outcome::NoCredentials;
        };
        let config = match Config::from_env() {
            Ok(config) => config,
            Err(e) => {
                eprintln!("auth: bad configuration: {e}");
                return Outcome::Unavailable("authentication is misconfigured".into());
            }
        };
        let mut span = spike_sdk::telemetry::Span::start("verify token");
        let (outcome, kind) = match verify::verify(&config, &token) {
            Ok(caller) => (Outcome::Verified(caller), "verified"),
            Err(verify::Failure::Rejected(reason)) => {
                (Outcome::Rejected(reason.into()), "rejected")
            }
            Err(verify::Failure::Unavailable(reason)) => {
                (Outcome::Unavailable(reason.into()), "unavailable")
            }
        };
        span.attr("auth.outcome", kind);
        drop(span);
        spike_sdk::telemetry::count("auth_verifications", 1, &[("outcome", kind)]);
        outcome
    }
}

impl exports::wasi::http::incoming_handler::Guest for Auth {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        Router::new()
            .get("/api/logged_in", |_, _| logged_in())
            .get("/api/my-turn", |_, _| my_turn())
            .post("/api/dev-token", |req, _| devtoken::issue(req))
            .delete("/api/dev-token", |req, _| devtoken::sign_out(req))
            // Answers about a caller are never cached.
            .map_response(|_, r| r.header("cache-control", "no-store"))
            .serve(request, out)
    }
}

/// The caller's claims, exactly as signed. The route asks for
/// authentication, so the host has answered 401 already if there is none;
/// a manifest that made it optional gets the same 401 here.
fn logged_in() -> Result<Response, HttpError> {
    Ok(Response::json(200, access::signed_in()?.claims))
}

fn my_turn() -> Result<Response, HttpError> {
    let caller = access::signed_in()?;
    let config = Config::from_env().map_err(|e| {
        eprintln!("auth: bad configuration: {e}");
        HttpError::new(503, "misconfigured", "TURN credentials are misconfigured")
    })?;
    match turn::credentials(&config.turn, &caller.subject) {
        Ok(creds) => Ok(Response::json_of(200, &creds)),
        Err(turn::Unavailable(reason)) => Err(HttpError::new(503, "turn_unavailable", reason)),
    }
}
