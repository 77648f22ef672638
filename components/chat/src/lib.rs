//! `chat`: an example room handler, to copy. Its manifest
//! (`plugins/chat.toml`) declares relay rooms at `/chat/{id}`; the host
//! owns the sockets, orders and stores the events, and calls this plugin
//! for each connection and message, in a fresh instance each time. What it
//! keeps between events is in room storage.
//!
//! - Joining: refused with close code 4001 when `REQUIRE_USER` is `true`
//!   and the connection did not authenticate (`identity`).
//! - A message becomes the event `{"name", "text"}`: the name is the
//!   member's nickname, else its user, else `guest-<connection>`.
//! - `/nick NAME` sets the nickname (room storage), `/who` answers the
//!   sender alone with the members, `/count` with how many messages the
//!   room has stored.
//! - Leaving forgets the nickname.

use serde_json::json;
use spike_sdk::json::{room_get, room_set};
use spike_sdk::{identity, rooms};

use crate::exports::spike::host::room_handler::{self, Connect, Message, Outcome, Rejection};

// The `room-plugin` world with every import the SDK's own type. A room
// handler in another crate copies this block.
wit_bindgen::generate!({
    path: "../../wit",
    world: "spike:host/room-plugin",
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
        "spike:host/rooms@0.1.0": spike_sdk::spike::host::rooms,
        "spike:host/render@0.1.0": spike_sdk::spike::host::render,
        "wasi:otel/types@0.2.0-rc.2": spike_sdk::wasi::otel::types,
        "wasi:otel/tracing@0.2.0-rc.2": spike_sdk::wasi::otel::tracing,
        "wasi:otel/metrics@0.2.0-rc.2": spike_sdk::wasi::otel::metrics,
        "wasi:otel/logs@0.2.0-rc.2": spike_sdk::wasi::otel::logs,
    },
});

struct Chat;

export!(Chat);

/// Longest nickname, in characters.
const MAX_NICK: usize = 32;

fn nick_key(connection: &str) -> String {
    format!("nick:{connection}")
}

/// How a member is shown: its nickname, its user, or a guest name.
fn name_of(connection: &str, user: Option<&str>) -> String {
    let nick = rooms::get(&nick_key(connection)).ok().flatten();
    match (nick.and_then(|n| String::from_utf8(n).ok()), user) {
        (Some(nick), _) => nick,
        (None, Some(user)) => user.to_string(),
        (None, None) => format!("guest-{}", connection.trim_start_matches('c')),
    }
}

fn reply(value: serde_json::Value) -> Outcome {
    Outcome {
        event: None,
        reply: Some(value.to_string()),
    }
}

fn error(message: &str) -> Outcome {
    reply(json!({ "type": "chat-error", "message": message }))
}

impl room_handler::Guest for Chat {
    fn on_connect(_event: Connect) -> Result<(), Rejection> {
        let required = std::env::var("REQUIRE_USER").is_ok_and(|v| v == "true");
        if required && identity::current().is_none() {
            return Err(Rejection {
                code: 4001,
                reason: "sign in to chat".into(),
            });
        }
        Ok(())
    }

    fn on_message(message: Message) -> Outcome {
        let text = message.data.trim();
        if let Some(nick) = text.strip_prefix("/nick ") {
            let nick = nick.trim();
            if nick.is_empty() || nick.chars().count() > MAX_NICK {
                return error(&format!("a nickname is 1 to {MAX_NICK} characters"));
            }
            return match rooms::set(&nick_key(&message.connection), nick.as_bytes()) {
                Ok(()) => reply(json!({ "type": "nick", "name": nick })),
                Err(e) => error(e.message()),
            };
        }
        if text == "/who" {
            let members: Vec<String> = match rooms::members() {
                Ok(members) => members
                    .iter()
                    .map(|m| name_of(&m.connection, m.user.as_deref()))
                    .collect(),
                Err(e) => return error(e.message()),
            };
            return reply(json!({ "type": "who", "members": members }));
        }
        if text == "/count" {
            let count = stored_count();
            return reply(json!({ "type": "count", "messages": count }));
        }
        if text.is_empty() {
            return error("empty message");
        }
        let name = name_of(&message.connection, message.user.as_deref());
        let _ = room_set("messages", &(stored_count() + 1));
        Outcome {
            event: Some(json!({ "name": name, "text": text }).to_string()),
            reply: None,
        }
    }

    fn on_close(_room: String, connection: String) {
        let _ = rooms::delete(&nick_key(&connection));
    }
}

/// How many messages this room has stored, as counted in its storage.
fn stored_count() -> u64 {
    room_get("messages").ok().flatten().unwrap_or(0)
}
