//! Running plugins: the engine, the compile cache, loading and linking,
//! manifests and routes, the plugin registry (hot swap) and version history,
//! per-request stores, the memory budget, dispatch and the watchdog that
//! enforces deadlines; the owners of rooms.

pub mod auth;
pub mod check;
pub mod cluster;
pub mod compile_cache;
pub mod dispatch;
pub mod engine;
mod instance_metrics;
mod kept;
pub mod linker;
pub mod live;
pub mod loader;
pub mod manifest;
pub mod memory_budget;
pub mod per_client;
pub mod registry;
pub mod request_body;
mod request_watch;
pub mod reuse;
mod room_handler;
pub mod routes;
pub mod slot;
pub mod standards;
pub mod state;
pub mod versions;
pub mod watch;
pub mod watchdog;

pub use instance_metrics::InstanceMetrics;
pub use loader::{LoadError, LoadedPlugin};
pub use registry::PluginRegistry;
pub use room_handler::PluginRooms;
pub use slot::PluginSlot;
pub use state::RequestState;
