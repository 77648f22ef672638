//! The renderer's flags.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// The renderer's settings (plugins with `grants.render`).
#[derive(Args)]
pub struct RenderArgs {
    /// The Chromium binary the renderer drives.
    #[arg(long, default_value = "/usr/bin/chromium", env = "SPIKE_CHROMIUM")]
    pub chromium: PathBuf,
    /// Renders at once (browser pages open); as many contexts are kept
    /// ready ahead of demand.
    #[arg(long, default_value_t = 2, env = "SPIKE_RENDER_PAGES")]
    pub render_pages: usize,
    /// Renders that may wait for a page; beyond it 503 at once.
    #[arg(long, default_value_t = 32)]
    pub render_queue: usize,
    /// Seconds a render may wait for a page before a 503 with Retry-After.
    #[arg(long, default_value_t = 10)]
    pub render_queue_wait_secs: u64,
    /// A render's deadline in seconds, queueing included (and the most a
    /// caller may ask for).
    #[arg(long, default_value_t = 30)]
    pub render_timeout_secs: u64,
    /// Renders after which the browser is replaced by a fresh one.
    #[arg(long, default_value_t = 500)]
    pub render_restart_after: u32,
    /// An internal address pages may reach: IP[:port] (e.g. 127.0.0.1:3000,
    /// [::1]:8080); repeat or separate with commas. Loopback, private,
    /// link-local and metadata addresses are refused otherwise.
    #[arg(long, env = "SPIKE_RENDER_ALLOW", value_delimiter = ',')]
    pub render_allow: Vec<crate::caps::outbound::HostPattern>,
    /// Largest screenshot, PDF or HTML handed to a plugin, in MiB.
    #[arg(long, default_value_t = 32)]
    pub render_max_mib: usize,
    /// The memory one page may hold, in MiB: a page past it is stopped
    /// and its render fails with 413 (Chromium is outside
    /// --memory-budget-mib).
    #[arg(long, default_value_t = crate::caps::render::DEFAULT_PAGE_MEMORY >> 20)]
    pub render_page_mib: u64,
}

impl RenderArgs {
    pub fn settings(self) -> anyhow::Result<crate::caps::render::RenderSettings> {
        if let Some(name) = self.render_allow.iter().find_map(|p| p.host_name()) {
            anyhow::bail!(
                "--render-allow {name}: give an address (IP[:port]); names are checked by \
                 the addresses they resolve to"
            );
        }
        Ok(crate::caps::render::RenderSettings {
            chromium: self.chromium,
            pages: self.render_pages.max(1),
            queue: self.render_queue,
            queue_wait: Duration::from_secs(self.render_queue_wait_secs),
            timeout: Duration::from_secs(self.render_timeout_secs.max(1)),
            restart_after: self.render_restart_after.max(1),
            allow: self.render_allow,
            max_bytes: self.render_max_mib.max(1) << 20,
            page_memory: self.render_page_mib.max(64) << 20,
            ..Default::default()
        })
    }
}
