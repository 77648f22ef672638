//! The host's own settings (as opposed to a plugin's, in its manifest).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::runtime::engine::PoolSettings;

/// Default listen address: the port the Workers tooling taught users.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";
/// Largest blob object by default (R2's single-upload limit).
pub const DEFAULT_MAX_OBJECT_BYTES: u64 = 5 << 30;

/// Everything `spike serve` needs to run.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Folder of plugin manifests (`*.toml`).
    pub plugins_dir: PathBuf,
    /// Folder of the database, blob bodies and caches.
    pub data_dir: PathBuf,
    /// Bearer token for `/_spike/*`. Without one the admin API is disabled.
    pub admin_token: Option<String>,
    /// Reload a plugin when its component file changes.
    pub watch: bool,
    pub pool: PoolSettings,
    pub max_object_bytes: u64,
    /// How often expired KV keys are reclaimed.
    pub kv_sweep_interval: Duration,
}

impl ServerConfig {
    /// Settings for `plugins_dir` and `data_dir`, defaults otherwise.
    pub fn new(plugins_dir: impl Into<PathBuf>, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            plugins_dir: plugins_dir.into(),
            data_dir: data_dir.into(),
            admin_token: None,
            watch: true,
            pool: PoolSettings::default(),
            max_object_bytes: DEFAULT_MAX_OBJECT_BYTES,
            kv_sweep_interval: Duration::from_secs(1),
        }
    }
}
