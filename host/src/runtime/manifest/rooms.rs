//! A manifest's `[[rooms]]`: the WebSocket rooms a plugin declares.
//!
//! ```toml
//! [[rooms]]
//! prefix = "/room"            # GET /room/{id} with Upgrade: websocket joins room {id}
//! protocol = "text"           # or "relay" (the default), "yjs" (y-websocket),
//!                             # or "livestore" (@livestore/sync-cf: GET {prefix}?storeId=…)
//! auth = "optional"           # as for [[routes]], checked before the upgrade
//! rate_limit = { requests = 30, per_s = 60 }   # joins, as for [[routes]]
//! max_message_kib = 64        # a bigger message closes its connection (1009);
//!                             # yjs rooms: 8192 by default, livestore 1024
//! max_connections = 10000     # per room
//! messages_per_s = 100        # per connection; more are refused with an error frame
//!                             # (livestore: 1000 by default)
//! send_queue = 1024           # frames waiting for a slow client before it is dropped
//! send_queue_kib = 4096       # and their bytes (one larger frame may wait alone)
//! idle_s = 60                 # an idle room drops its memory (it reopens from its log)
//! ping_s = 30                 # keepalive; a client silent through two pings is closed
//! compact_every = 1000        # events between snapshots; as many are kept for catch-up
//!                             # (not for livestore: a store keeps every event)
//! max_log_mib = 256           # what one room's log may hold (its snapshot and events;
//!                             # 0: no limit); past it, writes are refused
//! ```

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::checks::check_prefix;
use super::routes::gate;
use super::{ErrAt, ManifestError, RouteAuth, RouteLimit};
pub use crate::rooms::{RoomLimits, RoomProtocol};

/// A room route: where clients join, how the room behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRoute {
    pub prefix: String,
    pub protocol: RoomProtocol,
    pub auth: Option<RouteAuth>,
    /// Of joins.
    pub rate_limit: RouteLimit,
    pub limits: RoomLimits,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoom {
    prefix: Spanned<String>,
    protocol: Option<Spanned<String>>,
    auth: Option<Spanned<String>>,
    authenticator: Option<Spanned<String>>,
    rate_limit: Option<Spanned<toml::Value>>,
    max_message_kib: Option<Spanned<u64>>,
    max_connections: Option<Spanned<u64>>,
    messages_per_s: Option<Spanned<u64>>,
    send_queue: Option<Spanned<u64>>,
    send_queue_kib: Option<Spanned<u64>>,
    idle_s: Option<Spanned<u64>>,
    ping_s: Option<Spanned<u64>>,
    compact_every: Option<Spanned<u64>>,
    max_log_mib: Option<Spanned<u64>>,
}

/// One `[[rooms]]` entry, checked.
pub(super) fn parse_room(raw: &RawRoom, err: ErrAt<'_>) -> Result<RoomRoute, ManifestError> {
    let prefix = raw.prefix.get_ref();
    check_prefix(prefix).map_err(|m| err(Some(raw.prefix.span()), m))?;
    if prefix == "/" {
        return Err(err(
            Some(raw.prefix.span()),
            "a room prefix cannot be '/': rooms are joined at {prefix}/{id}".into(),
        ));
    }
    let protocol = match &raw.protocol {
        None => RoomProtocol::Relay,
        Some(p) => RoomProtocol::from_name(p.get_ref()).ok_or_else(|| {
            let names: Vec<String> = (RoomProtocol::ALL.iter())
                .map(|p| format!("\"{}\"", p.name()))
                .collect();
            let message = format!(
                "protocol = \"{}\": write one of {}",
                p.get_ref(),
                names.join(", ")
            );
            err(Some(p.span()), message)
        })?,
    };
    let (auth, rate_limit) = gate(&raw.auth, &raw.authenticator, &raw.rate_limit, err)?;
    let mut limits = protocol.default_limits();
    let bounded = |v: &Option<Spanned<u64>>, name: &str, min: u64, max: u64| {
        super::limits::bounded(v, name, Some(min), Some(max), err)
    };
    if let Some(kib) = bounded(&raw.max_message_kib, "max_message_kib", 1, 16 << 10)? {
        limits.max_message_bytes = (kib as usize) << 10;
    }
    if let Some(n) = bounded(&raw.max_connections, "max_connections", 1, 1_000_000)? {
        limits.max_connections = n as usize;
    }
    if let Some(n) = bounded(&raw.messages_per_s, "messages_per_s", 1, 1_000_000)? {
        limits.messages_per_s = n as u32;
    }
    if let Some(n) = bounded(&raw.send_queue, "send_queue", 16, 1 << 20)? {
        limits.send_queue = n as usize;
    }
    if let Some(kib) = bounded(&raw.send_queue_kib, "send_queue_kib", 64, 1 << 20)? {
        limits.send_queue_bytes = (kib as usize) << 10;
    }
    if let Some(s) = bounded(&raw.idle_s, "idle_s", 1, 86_400)? {
        limits.idle = Duration::from_secs(s);
    }
    if let Some(s) = bounded(&raw.ping_s, "ping_s", 1, 3_600)? {
        limits.ping = Duration::from_secs(s);
    }
    if let Some(n) = bounded(&raw.compact_every, "compact_every", 10, 1_000_000)? {
        if !protocol.compacts() {
            return Err(err(
                raw.compact_every.as_ref().map(Spanned::span),
                format!(
                    "compact_every does not apply to a {} room: it keeps every event, which new clients replay",
                    protocol.name()
                ),
            ));
        }
        limits.compact_every = n;
    }
    if let Some(mib) = bounded(&raw.max_log_mib, "max_log_mib", 0, 1 << 20)? {
        limits.max_log_bytes = (mib > 0).then_some(mib << 20);
    }
    Ok(RoomRoute {
        prefix: prefix.clone(),
        protocol,
        auth,
        rate_limit,
        limits,
    })
}
