//! The rooms' series.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

use crate::metrics::{KindLabels, PluginLabel, series};

series! {
    /// Rooms, their connections and events, and the rooms import.
    pub struct RoomMetrics {
        /// Rooms with an owner task (their state in memory or hibernating).
        open: Gauge = Gauge::default(),
            "rooms_open", "Rooms with an owner (in memory or hibernating)";
        /// WebSocket connections in rooms.
        connections: Gauge = Gauge::default(),
            "room_connections", "WebSocket connections in rooms";
        events: Family<PluginLabel, Counter> = Family::default(),
            "room_events", "Room events stored, by plugin";
        /// Frames queued to room connections (events, presence, errors).
        deliveries: Family<PluginLabel, Counter> = Family::default(),
            "room_deliveries", "Frames queued to room connections, by plugin";
        /// Room connections closed by the host, or refused, by reason.
        closes: Family<KindLabels, Counter> = Family::default(),
            "room_closes", "Room connections the host closed or refused, by reason";
        /// Room connections forwarded between the nodes of a cluster, by
        /// plugin and side: `entry` (this node holds the client's socket)
        /// or `owner` (this node owns the room).
        links: Family<KindLabels, Gauge> = Family::default(),
            "room_links",
            "Room connections forwarded between nodes, by plugin and side (entry, owner)";
        /// Time to make a batch of room events durable (the output gate).
        append_seconds: Histogram = Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            "room_append_seconds", "Time to make a batch of room events durable";
        operations: Family<KindLabels, Counter> = Family::default(),
            "room_operations", "Calls of the rooms import, by plugin and function";
        /// Room handler calls, by plugin and outcome (`ok`, or the fault).
        handler_calls: Family<KindLabels, Counter> = Family::default(),
            "room_handler_calls", "Room handler calls, by plugin and outcome";
        /// LiveStore sync requests, by plugin and outcome: `pull`, `push`
        /// (stored), `server_ahead` (a stale push), `refused` (a malformed
        /// push, another store), `backend_mismatch`, `bad_message`.
        livestore_requests: Family<KindLabels, Counter> = Family::default(),
            "livestore_requests", "LiveStore sync requests, by plugin and outcome";
    }
}
