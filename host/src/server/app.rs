//! What a request goes through on the public address: `App` sends the
//! host's own routes through axum and every other request to
//! `plugin_request`, which routes it to a plugin (or a room, or a static
//! site); `every_request` around both refuses malformed requests, and logs
//! and counts each one.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use http::{HeaderValue, Method, StatusCode};

use super::answer_cache::Key as AnswerKey;
use super::errors::ApiError;
use super::{AppState, admin, admin_sql, gate, rooms};
use crate::caps::identity::IdentityCtx;
use crate::metrics::RequestLabels;
use crate::runtime::LoadedPlugin;
use crate::runtime::dispatch::DispatchError;
use crate::runtime::routes::RouteMatch;
use crate::runtime::slot::{PluginSlot, Routed};
use crate::runtime::state::PluginContext;
use crate::telemetry;
use tracing::Instrument;

/// Which plugin and route served a response, for the request log and
/// metrics.
struct ServedBy {
    plugin: Arc<PluginContext>,
    route: Arc<str>,
}

/// What the public address serves. The host's own routes (`/healthz`,
/// `/readyz`, `/_spike/...`) go through axum's router; every other request
/// goes straight to `plugin_request`, on the hot path, where axum's router
/// and middleware cost boxed futures and clones of their own.
#[derive(Clone)]
pub struct App {
    state: Arc<AppState>,
    host: Router,
    scope: Scope,
}

/// What one listener of the app serves.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Scope {
    /// Everything: plugins, sites, the host's routes, the admin API.
    All,
    /// All but the admin API, which has a listener of its own.
    Public,
    /// The admin API (and the health checks) alone.
    Admin,
}

impl App {
    pub fn new(state: Arc<AppState>, scope: Scope) -> Self {
        let host = Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/_spike/plugins", get(admin::list))
            .route("/_spike/metrics", get(admin::metrics))
            .route(
                "/_spike/plugins/{name}",
                put(admin::upload).delete(admin::remove),
            )
            .route("/_spike/plugins/{name}/rollback", post(admin::rollback))
            .route("/_spike/certs", get(admin::certs))
            .route(
                "/_spike/plugins/{name}/versions/{version}/activate",
                post(admin::activate),
            )
            .route("/_spike/plugins/{name}/logs", get(admin::logs))
            .route("/_spike/plugins/{name}/manifest", put(admin::put_manifest))
            .route("/_spike/kv/{namespace}", get(admin::kv_list))
            .route("/_spike/sql", get(admin_sql::list))
            .route("/_spike/sql/{db}/execute", post(admin_sql::execute))
            .route("/_spike/sql/{db}/export", get(admin_sql::export))
            .route("/_spike/sql/{db}/import", post(admin_sql::import))
            .route("/_spike/sql/{db}/restore", post(admin_sql::restore))
            .route(
                "/_spike/sql/{db}/migrations",
                get(admin_sql::migrations).post(admin_sql::apply_migrations),
            )
            .fallback(|req: Request| async move {
                ApiError::not_found(format!("nothing is served at {}", req.uri().path()))
            })
            .with_state(state.clone());
        Self { state, host, scope }
    }

    /// Whether this listener answers `path`: the admin API on its own
    /// listener (with `--admin-listen`) and nowhere else.
    fn in_scope(&self, path: &str) -> bool {
        let admin = path == "/_spike" || path.starts_with("/_spike/");
        match self.scope {
            Scope::All => true,
            Scope::Public => !admin,
            Scope::Admin => admin || path == "/healthz" || path == "/readyz",
        }
    }

    /// The paths no plugin may claim (`RESERVED_PREFIXES`) are the host's.
    fn is_host_route(path: &str) -> bool {
        use crate::runtime::{manifest::RESERVED_PREFIXES, routes::prefix_matches};
        RESERVED_PREFIXES.iter().any(|p| prefix_matches(p, path))
    }
}

impl tower::Service<http::Request<hyper::body::Incoming>> for App {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response, std::convert::Infallible>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        if self.scope != Scope::All && !self.in_scope(req.uri().path()) {
            let message = match self.scope {
                Scope::Public => "the admin API is served on its own address (--admin-listen)",
                _ => "this address serves the admin API only",
            };
            let refused = ApiError::not_found(message).into_response();
            return Box::pin(std::future::ready(Ok(refused)));
        }
        let state = self.state.clone();
        // The router only for the host's routes: a clone is an atomic
        // count on a line every core shares.
        let host = Self::is_host_route(req.uri().path()).then(|| self.host.clone());
        Box::pin(async move {
            let req = req.map(axum::body::Body::new);
            Ok(every_request(&state, req, |req| async {
                match host {
                    Some(host) => {
                        use tower::ServiceExt;
                        match host.oneshot(req).await {
                            Ok(resp) => (resp, None),
                            Err(never) => match never {},
                        }
                    }
                    None => plugin_request(&state, req).await,
                }
            })
            .await)
        })
    }
}

async fn healthz() -> impl IntoResponse {
    super::json::JsonLine(serde_json::json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 once every plugin serves a version; 503 while any is
/// still loading or has no version that loaded (names only: the reasons
/// are for the admin API).
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let (mut loading, mut failed) = (Vec::new(), Vec::new());
    for slot in state.registry.slots() {
        if slot.is_loading() {
            loading.push(slot.manifest.name.clone());
        } else if slot.active().is_none() && slot.manifest.component.is_some() {
            failed.push(slot.manifest.name.clone());
        }
    }
    let ready = loading.is_empty() && failed.is_empty();
    let body = serde_json::json!({
        "status": if ready { "ready" } else if loading.is_empty() { "failed" } else { "loading" },
        "loading": loading,
        "failed": failed,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut resp = (status, super::json::JsonLine(body)).into_response();
    if !ready {
        resp.headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

/// What no route should see: an `Expect` the server cannot meet (417;
/// hyper itself answers `100-continue` when the body is read), and a `Host`
/// that is not a valid authority (400), which `wasi:http` would otherwise
/// fail on as an internal error.
fn malformed(req: &Request) -> Option<ApiError> {
    if let Some(expect) = req.headers().get(http::header::EXPECT)
        && !expect.as_bytes().eq_ignore_ascii_case(b"100-continue")
    {
        return Some(ApiError::new(
            StatusCode::EXPECTATION_FAILED,
            "expectation_failed",
            "the only expectation this server meets is 100-continue",
        ));
    }
    if let Some(host) = req.headers().get(http::header::HOST)
        && !is_valid_host(host.as_bytes())
    {
        return Some(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_host",
            "the Host header is not a valid host name and port",
        ));
    }
    None
}

/// A `Host` value (RFC 9110 section 7.2, RFC 3986 section 3.2.2): a
/// registered name, an IPv4 address or a bracketed IPv6 address, with an
/// optional numeric port; or empty (allowed when the target has no
/// authority). Checked byte by byte: it runs on every request.
fn is_valid_host(value: &[u8]) -> bool {
    let (host, port) = match value.strip_prefix(b"[") {
        Some(rest) => {
            let Some(end) = rest.iter().position(|&b| b == b']') else {
                return false;
            };
            let address = std::str::from_utf8(&rest[..end]).ok();
            if address
                .and_then(|a| a.parse::<std::net::Ipv6Addr>().ok())
                .is_none()
            {
                return false;
            }
            match &rest[end + 1..] {
                [] => (&[][..], None),
                [b':', port @ ..] => (&[][..], Some(port)),
                _ => return false,
            }
        }
        None => match value.iter().rposition(|&b| b == b':') {
            Some(colon) => (&value[..colon], Some(&value[colon + 1..])),
            None => (value, None),
        },
    };
    let name_byte = |b: &u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(b);
    let port_ok = port.is_none_or(|p| {
        p.is_empty()
            || (p.len() <= 5
                && p.iter().all(u8::is_ascii_digit)
                && std::str::from_utf8(p).is_ok_and(|p| p.parse::<u16>().is_ok()))
    });
    host.iter().all(name_byte) && port_ok
}

/// Every request that is not the host's own goes to the plugin whose route
/// covers it (and which one, for the log and metrics).
async fn plugin_request(state: &Arc<AppState>, mut req: Request) -> (Response, Option<ServedBy>) {
    let routed = match state
        .registry
        .route(req.method().as_str(), req.uri().path())
    {
        Ok(routed) => routed,
        Err(RouteMatch::MethodNotAllowed(allowed)) => {
            let mut resp = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!(
                    "{} is not allowed here; allowed: {}",
                    req.method(),
                    allowed.join(", ")
                ),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&allowed.join(", ")) {
                resp.headers_mut().insert(http::header::ALLOW, v);
            }
            return (resp, None);
        }
        Err(_) => {
            let path = req.uri().path().to_string();
            let resp = match state.sites.serve(req).await {
                Some(resp) => resp,
                None => ApiError::not_found(format!("no plugin serves {path}")).into_response(),
            };
            return (resp, None);
        }
    };
    let slot = &routed.slot;
    let served_by = ServedBy {
        plugin: slot.context.clone(),
        route: routed.route.clone(),
    };
    if let Some(room) = routed.room {
        return (
            rooms::join(state, &routed, room, req).await,
            Some(served_by),
        );
    }
    let mut active = slot.active();
    if active.is_none() && slot.is_loading() {
        // The server listens before its plugins have loaded (a restart
        // under load): a request that comes meanwhile waits for the load
        // rather than being turned away.
        let registry = &state.registry;
        registry.first_load_of(slot, state.clients.load_wait).await;
        active = slot.active();
    }
    let resp = match active {
        None => not_ready(slot),
        Some(plugin) => {
            // wasi:http needs an authority; HTTP/1.0 clients may send none.
            if req
                .headers()
                .get(http::header::HOST)
                .is_none_or(|h| h.is_empty())
            {
                req.headers_mut()
                    .insert(http::header::HOST, HeaderValue::from_static("localhost"));
            }
            let peer = req.extensions().get::<gate::PeerAddr>().copied();
            let (method, path) = (req.method().as_str(), req.uri().path());
            let mut passed =
                match gate::pass(state, &routed, method, path, req.headers(), peer).await {
                    Ok(passed) => passed,
                    Err(refusal) => return (refusal, Some(served_by)),
                };
            if routed.head_as_get {
                *req.method_mut() = Method::GET;
            }
            let mut resp = answer(state, &routed, plugin, &mut passed, req).await;
            if let Some(decision) = &passed.limit {
                gate::rate_limit_headers(resp.headers_mut(), decision);
            }
            resp
        }
    };
    (resp, Some(served_by))
}

/// The plugin's answer to `req`, which passed its route's gate: given
/// again from the host's cache of immutable answers if it is there, else
/// the plugin's (kept if it says it never changes). A version's first
/// immutable answer marks it; it is kept from the next one on.
async fn answer(
    state: &AppState,
    routed: &Routed,
    plugin: Arc<LoadedPlugin>,
    passed: &mut gate::Passed,
    req: Request,
) -> Response {
    let slot = &routed.slot;
    let anonymous = passed.caller.is_none();
    let marked = plugin.answers_immutably.load(Ordering::Relaxed);
    let eligible = !marked && AnswerKey::eligible(&req, anonymous);
    let kept = marked
        .then(|| AnswerKey::of(&req, &plugin.sha256, anonymous))
        .flatten();
    if let Some(hit) = kept.as_ref().and_then(|key| state.answers.get(key)) {
        return if routed.head_as_get {
            head_only(hit)
        } else {
            hit
        };
    }
    let caller = IdentityCtx {
        caller: passed.caller.take(),
        client: Some(passed.client),
    };
    // Only a request that may mark the version holds on to it.
    let to_mark = eligible.then(|| plugin.clone());
    match state.dispatcher.dispatch(slot, plugin, caller, req).await {
        Ok(resp) if routed.head_as_get => head_only(resp),
        Ok(resp) => match kept {
            Some(key) => state.answers.keep(key, resp).await,
            None => {
                if let Some(version) = to_mark
                    && state.answers.keepable(&resp)
                {
                    version.answers_immutably.store(true, Ordering::Relaxed);
                }
                resp
            }
        },
        Err(e) => dispatch_failed(slot, e),
    }
}

/// The answer to a request `dispatch` failed: counted, logged, and the
/// status and JSON error of its kind.
pub(super) fn dispatch_failed(slot: &PluginSlot, e: DispatchError) -> Response {
    e.count(&slot.context.metrics);
    // Busy comes in floods under load, and the request line already shows
    // the 503.
    if matches!(e, DispatchError::Busy(_)) {
        tracing::debug!(plugin = %slot.manifest.name, "{e}");
    } else {
        tracing::warn!(plugin = %slot.manifest.name, "{e}");
    }
    ApiError::from(e).into_response()
}

/// The answer of a plugin with no version to run: 503, still loading or
/// unavailable.
pub(super) fn not_ready(slot: &PluginSlot) -> Response {
    if slot.is_loading() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "plugin_loading",
            format!("plugin '{}' is still loading", slot.manifest.name),
        )
        .into_response();
    }
    // Why it failed names files of the host: that is for the log and the
    // admin API, not for whoever sent this request.
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "plugin_unavailable",
        format!("plugin '{}' is unavailable", slot.manifest.name),
    )
    .into_response()
}

/// The response to a `HEAD` run as `GET`: the same headers, no body. The
/// guest's body is dropped unread, which stops a guest still writing it.
fn head_only(resp: Response) -> Response {
    let (parts, _body) = resp.into_parts();
    Response::from_parts(parts, axum::body::Body::empty())
}

/// What every request goes through: refused if malformed, then counted,
/// and one access log line (target `spike::access`, off unless
/// `--access-log`) with a request id (also sent back as `x-request-id`),
/// method, path, plugin, status and latency.
async fn every_request<F, Fut>(state: &AppState, req: Request, next: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = (Response, Option<ServedBy>)>,
{
    static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let start = Instant::now();
    // What the access log line needs, only if it is on (it is off by
    // default). The URI shares its bytes: its clone costs no copy.
    let access = tracing::enabled!(target: "spike::access", tracing::Level::INFO)
        .then(|| (req.method().clone(), req.uri().clone()));
    let span = request_span(state, &req, id);
    let (mut resp, served_by) = match malformed(&req) {
        Some(refusal) => (refusal.into_response(), None),
        None => telemetry::busy_timed(&span, next(req).instrument(span.clone())).await,
    };
    resp.headers_mut()
        .insert("x-request-id", HeaderValue::from(id));
    let status = resp.status().as_u16();
    let latency = start.elapsed();
    let (plugin, route) = match &served_by {
        Some(s) => {
            let metrics = &s.plugin.metrics;
            metrics.request_seconds.observe(latency.as_secs_f64());
            (&metrics.plugin, &s.route)
        }
        None => (&state.unserved, &state.unserved),
    };
    let labels = RequestLabels {
        plugin: plugin.clone(),
        route: route.clone(),
        status,
    };
    state.metrics.http.requests.get_or_create(&labels).inc();
    telemetry::server_answered(&span, status);
    if let Some((method, uri)) = access {
        tracing::info!(
            target: "spike::access",
            request_id = id,
            %method,
            path = %uri.path(),
            plugin = %plugin,
            status,
            latency_us = latency.as_micros() as u64,
            "request"
        );
    }
    resp
}

/// The request's server span (`Span::none()` unless it is traced); a
/// `traceparent` counts as `--trace-context` says, "trusted" meaning from
/// a `--trusted-proxy` peer.
fn request_span(state: &AppState, req: &Request, id: u64) -> tracing::Span {
    if !telemetry::on() {
        return tracing::Span::none();
    }
    let peer = req.extensions().get::<gate::PeerAddr>();
    let proxies = &state.client_addresses.trusted_proxies;
    let trusted = peer.is_some_and(|p| {
        let ip = p.0.ip().to_canonical();
        proxies.iter().any(|n| n.contains(&ip))
    });
    let (method, path) = (req.method(), req.uri().path());
    let routed = || {
        let routed = state.registry.route(method.as_str(), path).ok()?;
        Some((routed.slot.manifest.name.clone(), routed.route))
    };
    telemetry::server_span(method, req.uri(), req.headers(), trusted, id, routed)
}

#[cfg(test)]
mod tests {
    use super::is_valid_host;

    #[test]
    fn host_values() {
        for ok in [
            "",
            "spike",
            "[2001:db8::1]:8443",
            "localhost:8787",
            "127.0.0.1:1",
            "[::1]:80",
            "[::1]",
            "a.b-c.d:",
        ] {
            assert!(is_valid_host(ok.as_bytes()), "{ok}");
        }
        for bad in [
            &b"\xff\xfe"[..],
            b"a b",
            b"x:notaport",
            b"x:99999",
            b"u@x",
            b"[::1",
            b"[nope]:80",
            b"[::1]x",
            b"a:b:c",
        ] {
            assert!(!is_valid_host(bad), "{bad:?}");
        }
    }
}
