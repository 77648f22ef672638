//! One Chromium process, driven over the DevTools protocol by
//! `chromiumoxide`, and the browser contexts made in it: each render gets a
//! context of its own (its own cookies, storage and cache, its own proxy),
//! disposed of when the render ends, however it ends.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::cdp::browser_protocol::browser::BrowserContextId;
use chromiumoxide::cdp::browser_protocol::emulation::SetDeviceMetricsOverrideParams;
use chromiumoxide::cdp::browser_protocol::target::{
    CreateBrowserContextParams, CreateTargetParams, DisposeBrowserContextParams,
};
use chromiumoxide::error::CdpError;
use chromiumoxide::page::Page;
use futures::StreamExt;

use super::guard::{Guard, RenderProxy, Reservation};
use super::memory::{self, Killed};
use super::{RenderError, RenderSettings};
use crate::metrics::Metrics;

/// The viewport a page is prepared with, and a render's when it names none.
pub const DEFAULT_VIEWPORT: Viewport = Viewport {
    width: 1280,
    height: 800,
    scale: 1.0,
};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Viewport {
    pub width: u32,
    pub height: u32,
    pub scale: f64,
}

/// The flags of the developers' guide for Chromium on these machines
/// (chromiumoxide adds `--` and its own defaults: headless, no background
/// networking, no extensions). Without the network ones Chromium calls
/// Google's services at start and is refused by a closed network.
const FLAGS: &[&str] = &[
    "disable-gpu",
    "no-first-run",
    "disable-component-update",
    "disable-sync",
    "disable-quic",
    // Containers often give /dev/shm 64 MiB, which a big page exhausts.
    "disable-dev-shm-usage",
    "hide-scrollbars",
    // A screenshot waits for the next frame; without these it waits for a
    // 60 Hz tick that a headless browser has no reason to keep (measured:
    // the capture of a 1280x800 page about 40 % faster).
    "disable-gpu-vsync",
    "disable-frame-rate-limit",
];

/// A running Chromium.
pub struct Instance {
    browser: Browser,
    /// False once the DevTools connection is gone (the browser died).
    alive: Arc<AtomicBool>,
    /// Renders started in it, to recycle it after `restart_after`.
    pub renders: AtomicU32,
    /// No new render goes to it (it crashed or served its share).
    retired: AtomicBool,
    /// Its profile folder, removed with it.
    dir: PathBuf,
    /// Its DevTools port, which no page may reach.
    _devtools: Option<Reservation>,
    /// Its pages killed for their memory (`memory`), counted.
    killed: Option<Killed>,
}

impl Instance {
    /// Starts Chromium with a fresh profile folder under `dir`.
    pub async fn launch(
        settings: &RenderSettings,
        guard: &Guard,
        dir: PathBuf,
        metrics: &Metrics,
    ) -> Result<Self, RenderError> {
        if !settings.chromium.exists() {
            return Err(RenderError::Unavailable(missing_chromium(
                &settings.chromium,
            )));
        }
        write_preferences(&dir).map_err(|e| {
            RenderError::Unavailable(format!("Chromium's profile at {}: {e}", dir.display()))
        })?;
        let config = BrowserConfig::builder()
            .chrome_executable(&settings.chromium)
            .no_sandbox()
            .user_data_dir(&dir)
            // Its shared-memory files (in TMPDIR, with
            // --disable-dev-shm-usage) go with the profile, not left in
            // /tmp when the process is killed.
            .env("TMPDIR", dir.display().to_string())
            // Viewports are set per page; chromiumoxide's default would be
            // one more command per page.
            .viewport(None)
            .respect_https_errors()
            .request_timeout(settings.timeout + Duration::from_secs(5))
            .launch_timeout(Duration::from_secs(30))
            .args(FLAGS.iter().copied())
            .build()
            .map_err(|e| RenderError::Unavailable(format!("Chromium: {e}")))?;
        let (mut browser, mut handler) = Browser::launch(config).await.map_err(|e| {
            RenderError::Unavailable(format!(
                "Chromium ({}) did not start: {e}",
                settings.chromium.display()
            ))
        })?;
        let alive = Arc::new(AtomicBool::new(true));
        let watch = alive.clone();
        tokio::spawn(async move {
            // The handler drives the DevTools connection. Messages it
            // cannot parse (from a Chromium newer than its protocol
            // definitions) are skipped; a broken connection means the
            // browser is gone, and dropping the handler fails every
            // command still waiting on it.
            while let Some(event) = handler.next().await {
                match event {
                    Err(CdpError::Ws(e)) => {
                        tracing::warn!("render: Chromium's DevTools connection broke: {e}");
                        break;
                    }
                    Err(e) => tracing::debug!("render: DevTools: {e}"),
                    Ok(()) => {}
                }
            }
            watch.store(false, Ordering::Release);
        });
        // The watch ends when the instance (its receiver) does.
        let pid = browser.get_mut_child().and_then(|c| c.inner.id());
        let killed = pid.map(|pid| {
            let counted = metrics.render.pages_killed.clone();
            memory::watch(pid, settings.page_memory, counted)
        });
        if killed.is_none() {
            tracing::warn!(
                "render: Chromium's process id is unknown: pages are not memory-bounded"
            );
        }
        let devtools = devtools_port(browser.websocket_address());
        if devtools.is_none() {
            tracing::warn!(
                "render: Chromium's DevTools address has no port: {}",
                browser.websocket_address()
            );
        }
        Ok(Self {
            _devtools: devtools.map(|port| guard.reserved().hold(port)),
            killed,
            browser,
            alive,
            renders: AtomicU32::new(0),
            retired: AtomicBool::new(false),
            dir,
        })
    }

    /// Pages of this browser killed for their memory so far (`None`: not
    /// watched).
    pub fn killed(&self) -> Option<Killed> {
        self.killed.clone()
    }

    pub fn alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    pub fn retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Marks it retired; true the first time.
    pub fn retire(&self) -> bool {
        !self.retired.swap(true, Ordering::AcqRel)
    }

    /// A new context with its own proxy, and a blank page in it at the
    /// default viewport.
    pub async fn prepare(self: &Arc<Self>, guard: &Guard) -> Result<Prepared, RenderError> {
        let proxy = guard
            .proxy()
            .await
            .map_err(|e| RenderError::Failed(format!("the render's proxy: {e}")))?;
        let context = self
            .browser
            .create_browser_context(
                CreateBrowserContextParams::builder()
                    .proxy_server(proxy.url.clone())
                    .proxy_bypass_list("<-loopback>")
                    .build(),
            )
            .await
            .map_err(|e| failed("creating a browser context", e))?;
        // From here the context is disposed of with the `Prepared`, on
        // every path.
        let mut prepared = Prepared {
            page: None,
            context: Some(context.clone()),
            proxy,
            viewport: DEFAULT_VIEWPORT,
            instance: self.clone(),
        };
        let target = CreateTargetParams::builder()
            .url("about:blank")
            .browser_context_id(context)
            .build()
            .map_err(RenderError::Failed)?;
        let page = self
            .browser
            .new_page(target)
            .await
            .map_err(|e| failed("opening a page", e))?;
        page.execute(metrics(DEFAULT_VIEWPORT))
            .await
            .map_err(|e| failed("setting the viewport", e))?;
        prepared.page = Some(page);
        Ok(prepared)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // chromiumoxide starts Chromium with kill-on-drop: the process goes
        // with `browser`. Its profile folder is ours to remove.
        let dir = std::mem::take(&mut self.dir);
        if !dir.as_os_str().is_empty() {
            std::thread::spawn(move || {
                // Chromium may still be writing as it dies.
                std::thread::sleep(Duration::from_millis(500));
                let _ = std::fs::remove_dir_all(dir);
            });
        }
    }
}

/// A DevTools command that failed. Whether the browser died under it is
/// the renderer's question (`Instance::alive`), asked once per render.
pub fn failed(doing: &str, e: impl std::fmt::Display) -> RenderError {
    RenderError::Failed(format!("Chromium failed {doing}: {e}"))
}

/// A viewport as the DevTools command that sets it.
pub fn metrics(v: Viewport) -> SetDeviceMetricsOverrideParams {
    SetDeviceMetricsOverrideParams::new(v.width as i64, v.height as i64, v.scale, false)
}

/// A context and its page, ready for one render.
pub struct Prepared {
    page: Option<Page>,
    context: Option<BrowserContextId>,
    pub proxy: RenderProxy,
    /// What the page's viewport is set to now.
    pub viewport: Viewport,
    pub instance: Arc<Instance>,
}

impl Prepared {
    pub fn page(&self) -> &Page {
        self.page.as_ref().expect("a prepared page")
    }
}

impl Drop for Prepared {
    /// Disposing of the context closes its page and forgets its cookies,
    /// storage and cache. It runs off the render's path; a browser that
    /// died takes its contexts with it.
    fn drop(&mut self) {
        let (Some(context), Ok(runtime)) =
            (self.context.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let instance = self.instance.clone();
        let page = self.page.take();
        runtime.spawn(async move {
            drop(page);
            if instance.alive()
                && let Err(e) = instance
                    .browser
                    .execute(DisposeBrowserContextParams::new(context))
                    .await
            {
                tracing::debug!("render: disposing of a context: {e}");
            }
        });
    }
}

/// The profile's preferences, written before Chromium first starts with
/// it: WebRTC may use UDP only through a proxy that carries it, which the
/// render's proxy does not, so a page's peer connections take TCP through
/// the guard or nothing. (Chromium reads this policy from preferences,
/// which every browser context inherits; there is no switch for it.)
fn write_preferences(dir: &Path) -> std::io::Result<()> {
    let preferences = serde_json::json!({
        "webrtc": {
            "ip_handling_policy": "disable_non_proxied_udp",
            "multiple_routes_enabled": false,
            "nonproxied_udp_enabled": false,
        }
    });
    let default = dir.join("Default");
    std::fs::create_dir_all(&default)?;
    std::fs::write(default.join("Preferences"), preferences.to_string())
}

/// The port of a DevTools address (`ws://127.0.0.1:PORT/devtools/...`).
fn devtools_port(address: &str) -> Option<u16> {
    let authority = address.split("://").nth(1)?.split('/').next()?;
    authority.rsplit_once(':')?.1.parse().ok()
}

/// What to tell an operator whose machine has no Chromium.
pub fn missing_chromium(path: &Path) -> String {
    format!(
        "Chromium is not installed at {}: install it with `sudo apt-get install chromium` \
         (Debian, Ubuntu) or run scripts/setup.sh, or point `spike serve --chromium` at a \
         Chromium or Chrome binary",
        path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devtools_ports_are_read_from_the_address() {
        let address = "ws://127.0.0.1:39427/devtools/browser/4a0e6b2c";
        assert_eq!(devtools_port(address), Some(39427));
        assert_eq!(devtools_port("ws://[::1]:9222/devtools/x"), Some(9222));
        assert_eq!(devtools_port("nonsense"), None);
    }
}
