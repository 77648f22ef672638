//! spike: runs the backend services of a live code-editing site as
//! WebAssembly components, with KV, blob storage and more as host imports.
//!
//! - `server`: the listener, routing to plugins, the admin API, errors
//! - `runtime`: engine, compile cache, manifests, plugin registry (hot swap),
//!   per-request stores and dispatch
//! - `rooms`: WebSocket rooms on owned objects, their protocols (relay,
//!   text, yjs, livestore) and their forwarding between nodes
//! - `objects`: owned objects: one owner per object across the nodes of a
//!   cluster, its inbox, lease, idle time and hibernation (rooms are one
//!   kind)
//! - `cli`: the `spike` command's arguments, and the settings they make
//! - `caps`: one module per capability a plugin may be granted
//! - `storage`: the seam between capabilities and backends (redb, NATS
//!   JetStream), the `spike-storage` crate
//! - `bindings`: the Rust side of the `spike:host` WIT package
//! - `metrics`: every series the host exports, in the Prometheus format
//! - `telemetry`: OpenTelemetry traces over OTLP, one per request
//! - `log_sink`: the log, written to stdout in batches by a thread of its own
//! - `util`: the clock, hashes, temporary file names

pub mod assets;
pub mod bindings;
pub mod caps;
pub mod cli;
pub mod config;
#[doc(hidden)]
pub mod fuzz;
pub mod log_sink;
pub mod metrics;
/// Owned objects, a crate of its own (`objects/`).
pub use spike_objects as objects;
pub mod operator;
pub mod project;
pub mod rooms;
pub mod runtime;
pub mod server;
pub mod telemetry;
pub mod tls;
/// The bottom layer, a crate of its own (`storage/`).
pub use spike_storage as storage;
pub mod util;

pub use config::ServerConfig;
pub use server::{RunningServer, start};
