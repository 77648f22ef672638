//! The browser's keeper. One Chromium, launched when the first plugin with
//! the grant loads; `pages` renders at once (a semaphore), up to `queue`
//! more waiting at most `queue_wait` (then `busy`); `pages` contexts kept
//! prepared ahead of demand, so that a render starts on a page that is
//! already open. A browser that dies is replaced on the next render (a
//! render it took down is tried once more, within its deadline), and one
//! that served `restart_after` renders is retired: new renders go to a new
//! browser while the old one finishes its own.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, timeout_at};

use super::browser::{Instance, Prepared};
use super::guard::{Guard, Refusal};
use super::options::{Job, Source};
use super::{RenderError, RenderSettings, Rendered, capture};
use crate::caps::outbound::Resolver;
use crate::metrics::Metrics;

/// What a refused render is told to wait before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

pub struct Renderer {
    settings: RenderSettings,
    guard: Guard,
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    /// The browser new renders go to (launched under the lock, so that
    /// renders arriving together wait for one launch).
    current: tokio::sync::Mutex<Option<Arc<Instance>>>,
    /// Contexts prepared ahead of demand.
    ready: Mutex<Vec<Prepared>>,
    refilling: AtomicBool,
    warmed: AtomicBool,
    launches: AtomicU64,
    metrics: Arc<Metrics>,
}

impl Renderer {
    pub fn new(
        settings: RenderSettings,
        resolver: Arc<dyn Resolver>,
        metrics: &Arc<Metrics>,
    ) -> Arc<Self> {
        let pages = settings.pages.max(1);
        Arc::new(Self {
            guard: Guard::new(settings.allow.clone(), resolver),
            permits: Arc::new(Semaphore::new(pages)),
            settings: RenderSettings { pages, ..settings },
            waiting: AtomicUsize::new(0),
            current: tokio::sync::Mutex::new(None),
            ready: Mutex::new(Vec::new()),
            refilling: AtomicBool::new(false),
            warmed: AtomicBool::new(false),
            launches: AtomicU64::new(0),
            metrics: metrics.clone(),
        })
    }

    pub fn settings(&self) -> &RenderSettings {
        &self.settings
    }

    /// Starts the browser and prepares its contexts in the background, the
    /// first time a plugin with the grant loads. A machine without Chromium
    /// is told how to install it, once, and serves everything else.
    pub fn warm(self: &Arc<Self>) {
        if self.warmed.swap(true, Ordering::AcqRel) {
            return;
        }
        if !self.settings.chromium.exists() {
            tracing::warn!(
                "render: {}",
                super::missing_chromium(&self.settings.chromium)
            );
            return;
        }
        self.refill();
    }

    /// Runs one render under the job's deadline.
    pub async fn render(self: &Arc<Self>, job: &Job) -> Result<Rendered, RenderError> {
        let deadline = Instant::now() + job.timeout;
        let late = || {
            RenderError::Timeout(format!(
                "the page was not ready within {} ms",
                job.timeout.as_millis()
            ))
        };
        // The page's own address is checked before any browser work, so a
        // direct attempt at an internal address costs nothing.
        if let Source::Url { host, port, .. } = &job.source {
            timeout_at(deadline, self.guard.check(host, *port))
                .await
                .map_err(|_| late())?
                .map_err(|r| match r {
                    Refusal::Blocked(why) => RenderError::Blocked(why),
                    Refusal::Unreachable(why) => RenderError::Failed(why),
                })?;
        }
        let _permit = self.admit(deadline).await?;
        let mut retried = false;
        loop {
            let mut prepared = timeout_at(deadline, self.take_prepared())
                .await
                .map_err(|_| late())??;
            let instance = prepared.instance.clone();
            let served = instance.renders.fetch_add(1, Ordering::Relaxed) + 1;
            if served >= self.settings.restart_after {
                self.retire(&instance, "recycled").await;
            }
            // A page past its memory is killed (`memory`): its render ends
            // then, saying so, rather than at its deadline.
            let page = prepared.page().clone();
            let killed = instance.killed();
            let work = async {
                tokio::select! {
                    outcome = capture::run(&mut prepared, job, &self.settings) => outcome,
                    gone = killed_under(&page, killed, self.settings.page_memory) => Err(gone),
                }
            };
            let outcome = timeout_at(deadline, work)
                .await
                .map_err(|_| late())
                .and_then(|r| r)
                .map_err(|e| with_refusals(e, &prepared.proxy.blocked()));
            // The context goes now, whatever happened in it, and the next
            // one is prepared: after the render, not beside it, since both
            // need the same cores.
            drop(prepared);
            self.refill();
            // A command fails once the DevTools connection is gone, which
            // the handler notes first: a failure with the browser dead is
            // the browser's (tried again), with it alive the page's.
            let crashed = matches!(outcome, Err(RenderError::Failed(_))) && !instance.alive();
            if !crashed {
                return outcome;
            }
            self.retire(&instance, "crashed").await;
            if retried {
                return Err(RenderError::Failed(
                    "Chromium crashed twice during this render".into(),
                ));
            }
            retried = true;
        }
    }

    /// Lets pages reach the server's own public listener (see `Guard`).
    pub fn allow_own_listener(&self, addr: std::net::SocketAddr) {
        self.guard.allow_own_listener(addr);
    }

    /// A page for one render, or `busy` when none comes free in time.
    async fn admit(&self, deadline: Instant) -> Result<OwnedSemaphorePermit, RenderError> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let busy = RenderError::Busy {
            retry_after: RETRY_AFTER,
        };
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.settings.queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(busy);
        }
        let until = deadline.min(Instant::now() + self.settings.queue_wait);
        let permit = timeout_at(until, self.permits.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        match permit {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(busy),
        }
    }

    /// A prepared context of the current browser, or a new one.
    async fn take_prepared(&self) -> Result<Prepared, RenderError> {
        loop {
            let next = self.ready.lock().ok().and_then(|mut r| r.pop());
            match next {
                Some(p) if p.instance.alive() && !p.instance.retired() => return Ok(p),
                Some(_stale) => continue,
                None => break,
            }
        }
        let instance = self.instance().await?;
        instance.prepare(&self.guard).await
    }

    /// The browser new renders go to, launched if there is none (or it
    /// died, or was retired).
    async fn instance(&self) -> Result<Arc<Instance>, RenderError> {
        let mut current = self.current.lock().await;
        if let Some(instance) = &*current
            && instance.alive()
            && !instance.retired()
        {
            return Ok(instance.clone());
        }
        let n = self.launches.fetch_add(1, Ordering::Relaxed);
        let dir = self
            .settings
            .profiles_dir
            .join(format!("chromium-{}-{n}", std::process::id()));
        let started = std::time::Instant::now();
        let instance =
            Arc::new(Instance::launch(&self.settings, &self.guard, dir, &self.metrics).await?);
        tracing::info!(
            launch = n,
            ms = started.elapsed().as_millis() as u64,
            "render: Chromium started"
        );
        self.metrics.render.launches.inc();
        *current = Some(instance.clone());
        Ok(instance)
    }

    /// Sends new renders to a new browser; this one goes when the renders
    /// it is serving end.
    async fn retire(self: &Arc<Self>, instance: &Arc<Instance>, why: &'static str) {
        if instance.retire() {
            tracing::info!("render: Chromium {why}, starting another");
            Metrics::count(&self.metrics.render.restarts, &Arc::from("-"), why, 1);
        }
        let mut current = self.current.lock().await;
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, instance)) {
            *current = None;
        }
        drop(current);
        if let Ok(mut ready) = self.ready.lock() {
            ready.retain(|p| !Arc::ptr_eq(&p.instance, instance));
        }
        self.refill();
    }

    /// Prepares contexts in the background until `pages` are ready.
    fn refill(self: &Arc<Self>) {
        if self.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        let this: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(renderer) = this.upgrade() else {
                    return;
                };
                let short = renderer
                    .ready
                    .lock()
                    .map(|r| r.len() < renderer.settings.pages)
                    .unwrap_or(false);
                if !short {
                    renderer.refilling.store(false, Ordering::Release);
                    return;
                }
                let prepared = match renderer.instance().await {
                    Ok(instance) => instance.prepare(&renderer.guard).await,
                    Err(e) => Err(e),
                };
                match prepared {
                    Ok(p) => {
                        if let Ok(mut ready) = renderer.ready.lock() {
                            ready.push(p);
                        }
                    }
                    Err(e) => {
                        // The next render tries again, and says why.
                        tracing::warn!("render: preparing a page: {e}");
                        renderer.refilling.store(false, Ordering::Release);
                        return;
                    }
                }
            }
        });
    }
}

/// Resolves once `page` is found gone after a page of its browser was
/// killed for its memory (the killed one may have been another render's:
/// each render asks its own page); never if the browser is not watched.
async fn killed_under(
    page: &chromiumoxide::page::Page,
    killed: Option<super::memory::Killed>,
    limit: u64,
) -> RenderError {
    let Some(mut killed) = killed else {
        return std::future::pending().await;
    };
    killed.mark_unchanged();
    loop {
        if killed.changed().await.is_err() {
            return std::future::pending().await;
        }
        let answer = tokio::time::timeout(Duration::from_secs(1), page.evaluate("1")).await;
        if !matches!(answer, Ok(Ok(_))) {
            return RenderError::TooLarge(format!(
                "the page used more than {} MiB of memory (--render-page-mib) and was stopped",
                limit >> 20
            ));
        }
    }
}

/// A render that timed out or failed while the guard refused some of its
/// page's requests says which: a module or an image the page waited for
/// is the likely cause, and the operator's fix is `--render-allow`.
fn with_refusals(e: RenderError, blocked: &[String]) -> RenderError {
    if blocked.is_empty() {
        return e;
    }
    let addresses: Vec<&str> = blocked
        .iter()
        .map(|b| b.split_once(": ").map_or(b.as_str(), |(at, _)| at))
        .collect();
    let note = format!(
        "; the renderer refused the page's requests to {} (internal addresses: \
         --render-allow IP[:PORT] lets pages reach one)",
        addresses.join(", ")
    );
    match e {
        RenderError::Timeout(m) => RenderError::Timeout(m + &note),
        RenderError::Failed(m) => RenderError::Failed(m + &note),
        e => e,
    }
}
