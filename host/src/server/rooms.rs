//! Room routes: `GET {prefix}/{id}` with `Upgrade: websocket` joins room
//! `{id}` (a `livestore` room: `GET {prefix}?storeId=…`, see `Target`).
//! Checked before the upgrade, so a refusal is a plain HTTP answer with a
//! JSON error: the id, the upgrade headers, `?since=`, the route's policy
//! (rate limit, auth hook), and the room's own capacity.

use axum::extract::FromRequestParts;
use axum::extract::Request;
use axum::extract::ws::WebSocketUpgrade;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode};

use super::AppState;
use super::errors::ApiError;
use super::gate::{self, PeerAddr};
use super::room_socket;
use crate::metrics::Metrics;
use crate::rooms::{Dialect, JoinError, JoinRequest, RoomAddress};
use crate::runtime::manifest::{RoomProtocol, RoomRoute};
use crate::runtime::slot::Routed;
use crate::telemetry;
use tracing::Instrument;

/// A room socket's read buffer, and how much it reads at once: an idle
/// connection keeps it (with what it grew to), so it is small; a bigger
/// message grows it up to the room's limit. 512 bytes cost nothing
/// measurable on a 6 MiB Yjs update (`bench/yjs-big-update.mjs`: 147 to
/// 206 ms against 1 KiB's 159 to 204 ms) and save about 1.9 KB per idle
/// connection.
const READ_BUFFER: usize = 1 << 9;

/// Answers a request routed to room route `room` of its plugin.
pub async fn join(state: &AppState, routed: &Routed, room: usize, req: Request) -> Response {
    let manifest = &routed.slot.manifest;
    let route = &manifest.rooms[room];
    let path = req.uri().path();
    let target = match Target::of(route, path, req.uri().query()) {
        Ok(target) => target,
        Err(e) => return e.into_response(),
    };
    if !asks_for_websocket(req.headers()) {
        return upgrade_required();
    }
    let since = match since(req.uri().query()) {
        Ok(since) => since,
        Err(e) => return e.into_response(),
    };
    let peer = req.extensions().get::<PeerAddr>().copied();
    let (mut parts, _body) = req.into_parts();
    // A LiveStore client cannot send headers: its token comes in its
    // payload, and counts as the bearer token if there is none.
    if let Some(token) = &target.token
        && !parts.headers.contains_key(http::header::AUTHORIZATION)
        && let Ok(value) = HeaderValue::try_from(format!("Bearer {token}"))
    {
        parts.headers.insert(http::header::AUTHORIZATION, value);
    }
    let path = parts.uri.path().to_string();
    let passed = match gate::pass(state, routed, "GET", &path, &parts.headers, peer).await {
        Ok(passed) => passed,
        Err(refusal) => return refusal,
    };
    // Held by the socket for as long as it is open.
    let Some(place) = state.room_clients.try_hold(gate::ip_key(passed.client)) else {
        return client_full(state, &manifest.name);
    };
    let id = target.id;
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_handshake",
                rejection.body_text(),
            )
            .into_response();
        }
    };
    let address = RoomAddress {
        plugin: &manifest.name,
        prefix: &route.prefix,
        protocol: route.protocol,
        limits: &route.limits,
        id: &id,
    };
    let headers = std::mem::take(&mut parts.headers);
    let request = JoinRequest {
        since,
        caller: passed.caller,
        headers,
        dialect: target.dialect,
    };
    let span = telemetry::span!(
        "room join",
        spike.room.protocol = ?route.protocol,
        spike.room.prefix = &*route.prefix,
    );
    let joining = state.rooms.join(&address, request);
    let mut joined = match joining.instrument(span.clone()).await {
        Ok(joined) => joined,
        Err(refusal) => {
            telemetry::failed(&span, "refused");
            return refused(refusal, upgrade, &manifest.name, &id);
        }
    };
    joined
        .membership
        .set_joined_in(telemetry::span_context(&span));
    let max = joined.limits.max_message_bytes;
    // Boxed before the upgrade's callback takes it: the callback stays in
    // the connection's task for as long as it is open.
    let joined = Box::new(joined);
    let metrics = room_socket::SocketMetrics::new(&state.metrics, &manifest.name);
    let send_timeout = state.clients.send_timeout;
    upgrade
        .read_buffer_size(READ_BUFFER)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| async move {
            room_socket::run(socket, joined, metrics, send_timeout).await;
            drop(place);
        })
}

/// Which room a request joins, and how.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    id: String,
    /// A `livestore` connection's dialect.
    dialect: Option<Dialect>,
    /// A `livestore` client's `payload.authToken`.
    token: Option<String>,
}

impl Target {
    fn of(route: &RoomRoute, path: &str, query: Option<&str>) -> Result<Self, ApiError> {
        if route.protocol == RoomProtocol::LiveStore {
            return Self::livestore(&route.prefix, path, query);
        }
        let Some(id) = room_id(&route.prefix, path) else {
            return Err(ApiError::not_found(format!(
                "rooms are joined at {}/{{id}}, the id {ID_RULE}",
                route.prefix
            )));
        };
        Ok(Self {
            id: id.to_string(),
            dialect: None,
            token: None,
        })
    }

    /// `@livestore/sync-cf` 0.4 connects to `{prefix}?storeId=…&payload=…
    /// &transport=ws`, 0.3 to `{prefix}/websocket?storeId=…&payload=…`; the
    /// payload is JSON, URL-encoded twice.
    fn livestore(prefix: &str, path: &str, query: Option<&str>) -> Result<Self, ApiError> {
        let bad = |code: &'static str, message: String| {
            ApiError::new(StatusCode::BAD_REQUEST, code, message)
        };
        let dialect = match path.strip_prefix(prefix) {
            Some("") => Dialect::Rpc,
            Some("/websocket") => Dialect::WsMessage,
            _ => {
                return Err(ApiError::not_found(format!(
                    "LiveStore syncs at {prefix}?storeId=… (0.4) or {prefix}/websocket?storeId=… (0.3)"
                )));
            }
        };
        let (mut store, mut payload, mut transport) = (None, None, None);
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match &*key {
                "storeId" => store = Some(value.into_owned()),
                "payload" => payload = Some(value.into_owned()),
                "transport" => transport = Some(value.into_owned()),
                _ => {}
            }
        }
        let Some(id) = store.filter(|s| valid_id(s)) else {
            return Err(bad(
                "bad_store_id",
                format!("storeId is required, {ID_RULE}"),
            ));
        };
        if dialect == Dialect::Rpc && transport.as_deref().is_some_and(|t| t != "ws") {
            return Err(bad(
                "bad_transport",
                "this server syncs LiveStore over a WebSocket: use transport=ws".into(),
            ));
        }
        let token = match payload {
            None => None,
            Some(payload) => {
                let json = percent_encoding::percent_decode_str(&payload)
                    .decode_utf8()
                    .ok()
                    .and_then(|p| serde_json::from_str::<serde_json::Value>(&p).ok())
                    .ok_or_else(|| bad("bad_payload", "payload must be URL-encoded JSON".into()))?;
                json.get("authToken")
                    .and_then(|t| t.as_str())
                    .map(str::to_string)
            }
        };
        Ok(Self {
            id,
            dialect: Some(dialect),
            token,
        })
    }
}

const ID_RULE: &str = "1 to 128 letters, digits, '-', '_', '.' or '~'";

/// A room id: unreserved characters (RFC 3986), so that it needs no
/// decoding in a path and names one room.
fn valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
}

/// The room id in `path` under `prefix`: one segment.
fn room_id<'a>(prefix: &str, path: &'a str) -> Option<&'a str> {
    let id = path.strip_prefix(prefix)?.strip_prefix('/')?;
    valid_id(id).then_some(id)
}

/// `Connection` lists `upgrade` and `Upgrade` lists `websocket`.
fn asks_for_websocket(headers: &HeaderMap) -> bool {
    let lists = |name, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    lists(http::header::CONNECTION, "upgrade") && lists(http::header::UPGRADE, "websocket")
}

/// `?since=<seq>`, the last event a reconnecting client has.
fn since(query: Option<&str>) -> Result<Option<u64>, ApiError> {
    let Some(query) = query else {
        return Ok(None);
    };
    let mut since = None;
    for pair in query.split('&') {
        if let Some(value) = pair.strip_prefix("since=") {
            let n = value.parse::<u64>().map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_since",
                    format!("since must be an event number (0 or more), not '{value}'"),
                )
            })?;
            since = Some(n);
        }
    }
    Ok(since)
}

/// The answer to a request that asked for the WebSocket upgrade.
fn upgrade_required() -> Response {
    let mut resp = ApiError::new(
        StatusCode::UPGRADE_REQUIRED,
        "upgrade_required",
        "a room is joined with a WebSocket: send Connection: Upgrade and Upgrade: websocket",
    )
    .into_response();
    let headers = resp.headers_mut();
    headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    resp
}

/// The answer to a client past its room connections.
fn client_full(state: &AppState, plugin: &str) -> Response {
    let max = state.room_clients.max();
    Metrics::count(
        &state.metrics.rooms.closes,
        &plugin.into(),
        "client_full",
        1,
    );
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_connections",
        format!("this address holds {max} room connections, the most one client may"),
    )
    .with_retry_after(1)
    .into_response()
}

/// The answer to a join the room refused.
fn refused(refusal: JoinError, upgrade: WebSocketUpgrade, plugin: &str, id: &str) -> Response {
    match refusal {
        e @ JoinError::Full(_) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "room_full", e.to_string())
                .into_response()
        }
        e @ JoinError::ServerFull(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_full",
            e.to_string(),
        )
        .into_response(),
        // The handler refused: the client learns it as the close of the
        // socket, which is how a browser's WebSocket can read it.
        JoinError::Rejected { code, reason } => {
            upgrade.on_upgrade(move |socket| room_socket::refuse(socket, code, reason))
        }
        // Its owner node refused or did not answer a forwarded join (the
        // room is moving between nodes): the client tries again.
        e @ (JoinError::Elsewhere(_) | JoinError::Unreachable { .. }) => {
            tracing::warn!(plugin, room = %id, "{e}");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "room_elsewhere",
                e.to_string(),
            )
            .into_response()
        }
        e @ JoinError::Unavailable(_) => {
            tracing::error!(plugin, room = %id, "{e}");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "room_unavailable",
                "the room cannot be opened now",
            )
            .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_ids_are_one_plain_segment() {
        assert_eq!(room_id("/room", "/room/abc-1.x_~"), Some("abc-1.x_~"));
        for bad in [
            "/room",
            "/room/",
            "/room/a/b",
            "/room/a%20b",
            "/roomy/a",
            "/room/é",
        ] {
            assert_eq!(room_id("/room", bad), None, "{bad}");
        }
        assert_eq!(
            room_id("/room", &format!("/room/{}", "a".repeat(129))),
            None
        );
    }

    #[test]
    fn livestore_targets_come_from_the_query() {
        let t = |path, query| Target::livestore("/livestore", path, query);
        // As the 0.4 client writes it: encodeURIComponent(JSON), encoded again.
        let payload = "%257B%2522authToken%2522%253A%2522tok%2520en%2522%257D";
        let query = format!("storeId=todo-1&payload={payload}&transport=ws");
        assert_eq!(
            t("/livestore", Some(&query)).unwrap(),
            Target {
                id: "todo-1".into(),
                dialect: Some(Dialect::Rpc),
                token: Some("tok en".into()),
            }
        );
        let old = t("/livestore/websocket", Some("storeId=s")).unwrap();
        assert_eq!((old.dialect, old.token), (Some(Dialect::WsMessage), None));
        for (path, query, code) in [
            ("/livestore", None, "bad_store_id"),
            ("/livestore", Some("storeId=a%2Fb"), "bad_store_id"),
            (
                "/livestore",
                Some("storeId=s&transport=http"),
                "bad_transport",
            ),
            ("/livestore", Some("storeId=s&payload=%257B"), "bad_payload"),
            ("/livestore/other", Some("storeId=s"), "not_found"),
        ] {
            let e = t(path, query).unwrap_err();
            assert_eq!(e.code, code, "{path} {query:?}");
        }
    }

    #[test]
    fn since_is_a_number() {
        assert_eq!(since(None).unwrap(), None);
        assert_eq!(since(Some("a=1&since=42")).unwrap(), Some(42));
        assert!(since(Some("since=-1")).is_err());
        assert!(since(Some("since=")).is_err());
    }

    #[test]
    fn upgrade_headers_are_token_lists() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "connection",
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(!asks_for_websocket(&headers));
        headers.insert("upgrade", HeaderValue::from_static("WebSocket"));
        assert!(asks_for_websocket(&headers));
    }
}
