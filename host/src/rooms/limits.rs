//! A room's limits and timings, as a manifest sets them (`[[rooms]]`).

use std::time::Duration;

/// A room's limits and timings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomLimits {
    pub max_message_bytes: usize,
    pub max_connections: usize,
    pub messages_per_s: u32,
    pub send_queue: usize,
    /// The bytes of the frames waiting for a client (see `mailbox`).
    pub send_queue_bytes: usize,
    pub idle: Duration,
    pub ping: Duration,
    pub compact_every: u64,
    /// What one room's log may hold (`None`: no limit).
    pub max_log_bytes: Option<u64>,
}

/// A room log's default quota (`max_log_mib`).
pub const DEFAULT_MAX_LOG_MIB: u64 = 256;

impl Default for RoomLimits {
    fn default() -> Self {
        Self {
            max_message_bytes: 64 << 10,
            max_connections: 10_000,
            messages_per_s: 100,
            send_queue: 1024,
            send_queue_bytes: 4 << 20,
            idle: Duration::from_secs(60),
            ping: Duration::from_secs(30),
            compact_every: 1000,
            max_log_bytes: Some(DEFAULT_MAX_LOG_MIB << 20),
        }
    }
}
