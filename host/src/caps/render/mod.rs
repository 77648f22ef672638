//! The `spike:host/render` capability: screenshots, PDFs and rendered HTML
//! from one warm headless Chromium, for plugins whose manifest grants
//! `render = true`.
//!
//! - `renderer`: the browser's keeper: a bounded number of pages at once, a
//!   queue with a wait limit, contexts prepared ahead of demand, the
//!   browser restarted after a crash or after `restart_after` renders;
//! - `browser`: one Chromium process and the contexts made in it (one per
//!   render, so nothing leaks between callers);
//! - `capture`: what one render does on its page (load, wait, take);
//! - `options`: a guest's request checked and turned into a `Job`;
//! - `guard`: the proxy every request of a page goes through (SSRF);
//! - `memory`: a page's memory, bounded (its renderer process is killed
//!   past `--render-page-mib`).

mod browser;
mod capture;
mod guard;
mod memory;
mod options;
mod renderer;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

pub use browser::missing_chromium;
pub use options::{Job, Output, Source};
pub use renderer::Renderer;

use super::View;
use super::outbound::HostPattern;
use crate::bindings::spike::host::render as wit;
use crate::metrics::{Histograms, KindLabels, Metrics, PluginLabel, latency_histogram};
use tracing::Instrument;

/// The memory a page may hold by default (`--render-page-mib`): more
/// than the heaviest common web applications take, a fraction of a
/// machine.
pub const DEFAULT_PAGE_MEMORY: u64 = 1 << 30;

/// The operator's settings of the renderer (`spike serve --render-*`).
#[derive(Debug, Clone)]
pub struct RenderSettings {
    /// The Chromium binary.
    pub chromium: PathBuf,
    /// Renders at once (pages open); also how many contexts are kept ready.
    pub pages: usize,
    /// Renders that may wait for a page; beyond it a render is refused at
    /// once with `busy`.
    pub queue: usize,
    /// How long a render may wait for a page before it is refused with
    /// `busy`.
    pub queue_wait: Duration,
    /// A render's deadline (queueing included), and the most a plugin may
    /// ask for.
    pub timeout: Duration,
    /// Renders after which the browser is replaced (Chromium's memory only
    /// grows).
    pub restart_after: u32,
    /// Internal addresses pages may reach (`127.0.0.1:8080`, `[::1]`).
    pub allow: Vec<HostPattern>,
    /// Largest result handed to a plugin.
    pub max_bytes: usize,
    /// The resident memory one page (its renderer process) may hold.
    pub page_memory: u64,
    /// Where browser profiles live while a browser runs.
    pub profiles_dir: PathBuf,
}

impl Default for RenderSettings {
    fn default() -> Self {
        Self {
            chromium: PathBuf::from("/usr/bin/chromium"),
            pages: 2,
            queue: 32,
            queue_wait: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            restart_after: 500,
            allow: Vec::new(),
            max_bytes: 32 << 20,
            page_memory: DEFAULT_PAGE_MEMORY,
            profiles_dir: std::env::temp_dir(),
        }
    }
}

/// Why a render failed, as the host sees it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RenderError {
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    Invalid(String),
    #[error("blocked: {0}")]
    Blocked(String),
    #[error("every page is busy")]
    Busy { retry_after: Duration },
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Failed(String),
    #[error("{0}")]
    TooLarge(String),
}

impl RenderError {
    /// The outcome's name in `spike_renders_total`.
    fn outcome(&self) -> &'static str {
        match self {
            RenderError::Denied(_) => "denied",
            RenderError::Invalid(_) => "invalid",
            RenderError::Blocked(_) => "blocked",
            RenderError::Busy { .. } => "busy",
            RenderError::Timeout(_) => "timeout",
            RenderError::Unavailable(_) => "unavailable",
            RenderError::Failed(_) => "failed",
            RenderError::TooLarge(_) => "too_large",
        }
    }

    /// The one place a render error becomes the WIT variant.
    fn to_wit(&self) -> wit::RenderError {
        match self {
            RenderError::Denied(m) => wit::RenderError::AccessDenied(m.clone()),
            RenderError::Invalid(m) => wit::RenderError::InvalidInput(m.clone()),
            RenderError::Blocked(m) => wit::RenderError::Blocked(m.clone()),
            RenderError::Busy { retry_after } => {
                wit::RenderError::Busy(retry_after.as_millis().min(u32::MAX as u128) as u32)
            }
            RenderError::Timeout(m) => wit::RenderError::Timeout(m.clone()),
            RenderError::Unavailable(m) => wit::RenderError::Unavailable(m.clone()),
            RenderError::Failed(m) => wit::RenderError::Failed(m.clone()),
            RenderError::TooLarge(m) => wit::RenderError::TooLarge(m.clone()),
        }
    }
}

/// A finished render.
#[derive(Debug)]
pub struct Rendered {
    pub body: Vec<u8>,
    pub content_type: &'static str,
    pub final_url: String,
    pub status: Option<u16>,
    pub blocked: Vec<String>,
}

/// The renderer, as the capability's context.
pub type RenderCtx = Arc<Renderer>;

/// The view that implements the render `Host` trait.
pub type RenderView<'a> = View<'a, RenderCtx>;

type WitResult = wasmtime::Result<Result<wit::Rendered, wit::RenderError>>;

impl RenderView<'_> {
    /// Checks the grant, runs the job, counts and times it.
    async fn run(&mut self, job: Result<Job, RenderError>) -> WitResult {
        let started = Instant::now();
        let span = crate::caps::call_span("render", "page", "");
        let outcome = match (self.grants.render, job) {
            (false, _) => Err(RenderError::Denied(
                "render is not granted to this plugin (grants.render = true)".into(),
            )),
            (true, Err(e)) => Err(e),
            (true, Ok(job)) => self.ctx.render(&job).instrument(span.clone()).await,
        };
        match &outcome {
            Ok(r) => crate::telemetry::record(&span, "spike.bytes", r.body.len() as u64),
            Err(e) => crate::telemetry::failed(&span, e.outcome()),
        }
        let metrics = self.counts.metrics;
        match &outcome {
            Ok(r) => {
                Metrics::count(&metrics.render.renders, self.counts.plugin, "ok", 1);
                metrics.render.time(self.counts.plugin, started.elapsed());
                if !r.blocked.is_empty() {
                    let n = r.blocked.len() as u64;
                    Metrics::count(&metrics.render.blocked, self.counts.plugin, "request", n);
                }
            }
            Err(e) => {
                Metrics::count(&metrics.render.renders, self.counts.plugin, e.outcome(), 1);
                if let RenderError::Blocked(_) = e {
                    Metrics::count(&metrics.render.blocked, self.counts.plugin, "page", 1);
                }
            }
        }
        Ok(outcome
            .map(|r| wit::Rendered {
                body: r.body,
                content_type: r.content_type.to_string(),
                final_url: r.final_url,
                status: r.status,
                blocked: r.blocked,
            })
            .map_err(|e| e.to_wit()))
    }
}

impl wit::Host for RenderView<'_> {
    async fn screenshot(&mut self, page: wit::Page, o: wit::ScreenshotOptions) -> WitResult {
        let job = options::screenshot(page, o, self.ctx.settings());
        self.run(job).await
    }

    async fn pdf(&mut self, page: wit::Page, o: wit::PdfOptions) -> WitResult {
        let job = options::pdf(page, o, self.ctx.settings());
        self.run(job).await
    }

    async fn html(&mut self, page: wit::Page) -> WitResult {
        let job = options::html(page, self.ctx.settings());
        self.run(job).await
    }
}

struct HasRender;

impl wasmtime::component::HasData for HasRender {
    type Data<'a> = RenderView<'a>;
}

/// Adds `spike:host/render` to the linker.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    view: fn(&mut T) -> RenderView<'_>,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasRender>(linker, view)
}

crate::metrics::series! {
    /// The renderer's series.
    pub struct RenderMetrics {
        /// Renders, by plugin and outcome: `ok`, `busy`, `timeout`,
        /// `blocked`, `failed`, `unavailable`, `invalid`, `denied`,
        /// `too_large`.
        renders: Family<KindLabels, Counter> = Family::default(),
            "renders", "Renders (screenshots, PDFs, HTML), by plugin and outcome";
        /// Time of a render that succeeded, queueing included.
        seconds: Histograms = Family::new_with_constructor(latency_histogram),
            "render_seconds", "Time of a successful render, queueing included, by plugin";
        /// What the guard refused, by plugin: a `page` (the render failed)
        /// or a `request` of a page (the render went on without it).
        blocked: Family<KindLabels, Counter> = Family::default(),
            "render_blocked",
            "What the renderer's guard refused, by plugin: a page, or a request of a page";
        launches: Counter = Counter::default(),
            "render_browser_launches", "Chromium processes the renderer started";
        /// Browsers replaced: `crashed`, `recycled` (after `restart_after`).
        restarts: Family<KindLabels, Counter> = Family::default(),
            "render_browser_restarts",
            "Browsers the renderer replaced, by reason (crashed, recycled)";
        /// Pages (renderer processes) stopped past `--render-page-mib`.
        pages_killed: Counter = Counter::default(),
            "render_pages_killed",
            "Pages the renderer stopped for holding more memory than --render-page-mib";
    }
}

impl RenderMetrics {
    /// Times a render of `plugin` that succeeded.
    pub fn time(&self, plugin: &Arc<str>, took: Duration) {
        let label = PluginLabel {
            plugin: plugin.clone(),
        };
        self.seconds
            .get_or_create(&label)
            .observe(took.as_secs_f64());
    }
}
