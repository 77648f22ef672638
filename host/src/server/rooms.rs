//! Room routes: `GET {prefix}/{id}` with `Upgrade: websocket` joins room
//! `{id}`. Checked before the upgrade, so a refusal is a plain HTTP answer
//! with a JSON error: the id, the upgrade headers, `?since=`, the route's
//! policy (rate limit, auth hook), and the room's own capacity.

use axum::extract::FromRequestParts;
use axum::extract::Request;
use axum::extract::ws::WebSocketUpgrade;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode};

use super::AppState;
use super::errors::ApiError;
use super::gate::{self, PeerAddr};
use super::room_socket;
use crate::runtime::rooms::{JoinError, JoinRequest, RoomAddress};
use crate::runtime::slot::Routed;

/// The most a client may send before the room protocol takes over; the
/// socket grows its buffer for a bigger message, up to the room's limit.
const READ_BUFFER: usize = 1 << 10;

/// Answers a request routed to room route `room` of its plugin.
pub async fn join(state: &AppState, routed: &Routed, room: usize, req: Request) -> Response {
    let manifest = &routed.slot.manifest;
    let route = &manifest.rooms[room];
    let path = req.uri().path();
    let Some(id) = room_id(&route.prefix, path) else {
        return ApiError::not_found(format!(
            "rooms are joined at {}/{{id}}, the id 1 to 128 letters, digits, '-', '_', '.' or '~'",
            route.prefix
        ))
        .into_response();
    };
    if !asks_for_websocket(req.headers()) {
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
        return resp;
    }
    let since = match since(req.uri().query()) {
        Ok(since) => since,
        Err(e) => return e.into_response(),
    };
    let peer = req.extensions().get::<PeerAddr>().copied();
    let passed = match gate::pass(state, routed, "GET", path, req.headers(), peer).await {
        Ok(passed) => passed,
        Err(refusal) => return refusal,
    };
    let id = id.to_string();
    let (mut parts, _body) = req.into_parts();
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
        route,
        id: &id,
    };
    let headers = std::mem::take(&mut parts.headers);
    let request = JoinRequest {
        since,
        caller: passed.caller,
        headers,
    };
    let joined = match state.rooms.join(&address, request).await {
        Ok(joined) => joined,
        Err(e @ JoinError::Full(_)) => {
            return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "room_full", e.to_string())
                .into_response();
        }
        Err(e @ JoinError::ServerFull(_)) => {
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_full",
                e.to_string(),
            )
            .into_response();
        }
        // The handler refused: the client learns it as the close of the
        // socket, which is how a browser's WebSocket can read it.
        Err(JoinError::Rejected { code, reason }) => {
            return upgrade.on_upgrade(move |socket| room_socket::refuse(socket, code, reason));
        }
        Err(e @ JoinError::Unavailable(_)) => {
            tracing::error!(plugin = %manifest.name, room = %id, "{e}");
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "room_unavailable",
                "the room cannot be opened now",
            )
            .into_response();
        }
    };
    let max = joined.limits.max_message_bytes;
    let metrics = room_socket::SocketMetrics::new(&state.metrics, &manifest.name);
    let send_timeout = state.clients.send_timeout;
    upgrade
        .read_buffer_size(READ_BUFFER)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| room_socket::run(socket, joined, metrics, send_timeout))
}

/// The room id in `path` under `prefix`: one segment of unreserved
/// characters (RFC 3986), so that it needs no decoding and names one room.
fn room_id<'a>(prefix: &str, path: &'a str) -> Option<&'a str> {
    let id = path.strip_prefix(prefix)?.strip_prefix('/')?;
    let ok = (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'));
    ok.then_some(id)
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
