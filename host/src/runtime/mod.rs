//! Running plugins: the engine, the compile cache, manifests, the plugin
//! registry (hot swap), per-request stores, the memory budget, dispatch and
//! the watchdog that enforces deadlines.

pub mod check;
pub mod compile_cache;
pub mod dispatch;
pub mod engine;
pub mod manifest;
pub mod memory_budget;
pub mod registry;
pub mod state;
pub mod watch;
pub mod watchdog;

pub use registry::{LoadedPlugin, PluginRegistry, PluginSlot};
pub use state::RequestState;
