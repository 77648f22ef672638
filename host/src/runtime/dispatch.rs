//! One request through one plugin: a fresh `Store` and instance, the
//! plugin's limits, and what becomes of a guest that misbehaves or a client
//! that is too slow.
//!
//! The guest runs on the connection's task until its response headers come,
//! and in a task of its own only if it still has a body to stream then. It
//! holds one of the plugin's concurrency permits for as long as the
//! instance lives, and the watchdog (`runtime::watchdog`, through
//! `request_watch`) ends it when the headers are late (`timeout_ms`), at
//! `max_duration_ms`, or when the client stops reading the response. A
//! trap, a CPU or memory limit, or a missed deadline ends only this
//! request's store; the error is classified here and turned into a status
//! by `server::errors`.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::Poll;
use std::time::Duration;

use http_body_util::BodyExt;
use tokio::sync::oneshot::error::RecvError;
use tracing::Instrument;
use wasmtime::component::Resource;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyIndices};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p2::types::{HostIncomingRequest, HostResponseOutparam};

use super::loader::LoadedPlugin;
use super::memory_budget::MemoryBudgetExhausted;
use super::request_body::{BODY_OK, BODY_OVERFLOWED, BODY_STALLED, RequestBody, declared_length};
use super::request_watch::{RequestWatch, WatchedBody, millis};
use super::slot::{Admitted, PluginSlot};
use super::state::{CpuLimitExceeded, MemoryLimitExceeded, RequestState};
use super::watchdog::{self, Watchdog};
use crate::caps::identity::IdentityCtx;
use crate::caps::services::CallDepth;
use crate::metrics::PluginMetrics;

/// How long a client may leave a body stalled: the server's settings, not
/// a plugin's.
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeouts {
    /// Longest wait for the next bytes of a request body a plugin is
    /// reading; then 408.
    pub request: Duration,
    /// Longest time a client may leave a response unread; then the response
    /// is cut off and the instance freed.
    pub response: Duration,
}

/// How a request to a plugin failed before a response began.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("request body is larger than this plugin's limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("the request body stalled: no bytes for {idle_ms} ms")]
    BodyTimeout { idle_ms: u128 },
    #[error("the plugin did not respond within {timeout_ms} ms")]
    Timeout { timeout_ms: u128 },
    #[error("{0}")]
    CpuLimit(CpuLimitExceeded),
    #[error("{0}")]
    MemoryLimit(MemoryLimitExceeded),
    #[error("the plugin failed: {0}")]
    Trap(String),
    #[error("the plugin returned without sending a response")]
    NoResponse,
    #[error("the plugin answered with an error: {0:?}")]
    Guest(ErrorCode),
    #[error("{0}")]
    Busy(Busy),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Which limit turned a request away with 503 `busy`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Busy {
    #[error("the server is at its limit of concurrent instances")]
    Pool,
    #[error("this plugin is at its limit of {0} concurrent requests")]
    Plugin(u32),
    #[error("{0}")]
    Memory(MemoryBudgetExhausted),
}

impl crate::telemetry::ErrorType for DispatchError {
    fn error_type(&self) -> &'static str {
        self.kind()
    }
}

impl DispatchError {
    /// Counts the failure in its series: `busy` by the limit reached,
    /// `faults` by kind.
    pub fn count(&self, metrics: &PluginMetrics) {
        let host = &metrics.host;
        let family = match self {
            DispatchError::Busy(_) => &host.instances.busy,
            _ => &host.instances.faults,
        };
        metrics.count(family, self.kind());
    }

    /// What failed, as its series name it: the limit reached for busy,
    /// else the fault.
    pub fn kind(&self) -> &'static str {
        match self {
            DispatchError::Busy(Busy::Plugin(_)) => "plugin",
            DispatchError::Busy(Busy::Pool) => "pool",
            DispatchError::Busy(Busy::Memory(_)) => "memory",
            DispatchError::BodyTooLarge { .. } => "body_too_large",
            DispatchError::BodyTimeout { .. } => "body_timeout",
            DispatchError::Timeout { .. } => "timeout",
            DispatchError::CpuLimit(_) => "cpu_limit",
            DispatchError::MemoryLimit(_) => "memory_limit",
            DispatchError::Trap(_) => "trap",
            DispatchError::NoResponse => "no_response",
            DispatchError::Guest(_) => "guest_error",
            DispatchError::Internal(_) => "internal",
        }
    }
}

/// Runs requests through plugins, in small steps: `prepare` (the checks,
/// a permit, a store), the guest run to its response head on the
/// caller's task (`run_to_head`), then `respond` (the answer, or the
/// failure, and the body streamed under the watchdog). It holds what every
/// request shares: the engine, the watchdog and the server's body timeouts.
#[derive(Clone)]
pub struct Dispatcher {
    engine: wasmtime::Engine,
    watchdog: Watchdog,
    timeouts: BodyTimeouts,
}

/// A request made ready for its guest.
struct Call {
    /// The guest: instantiate (or take a kept instance), handle, then free
    /// or keep the instance and the permit.
    guest: Pin<Box<dyn Future<Output = wasmtime::Result<()>> + Send>>,
    /// Where the guest's response head arrives.
    head: Outparam,
    watch: Arc<RequestWatch>,
    /// Whether the request body overflowed or stalled.
    body_state: Arc<AtomicU8>,
    max_body: u64,
    timeout: Duration,
}

type Outparam =
    tokio::sync::oneshot::Receiver<Result<http::Response<HyperOutgoingBody>, ErrorCode>>;

/// How the run to the response head ended.
struct Head {
    /// The response head, or the guest's error code; `Err` if the guest
    /// dropped its outparam; `None` if the watchdog cut it first.
    sent: Option<Result<Result<http::Response<HyperOutgoingBody>, ErrorCode>, RecvError>>,
    /// The guest's outcome, if it ended too.
    finished: Option<wasmtime::Result<()>>,
    /// Its place with the watchdog, if it had to wait.
    watching: Option<watchdog::Watching>,
}

/// What a guest run owns: its store and instance, and what to do with them
/// when it ends.
struct GuestRun {
    /// Its guest call span (`Span::none()` when not traced).
    span: tracing::Span,
    plugin: Arc<LoadedPlugin>,
    store: wasmtime::Store<RequestState>,
    /// A kept instance, and the requests it served.
    warm: Option<(Proxy, u32)>,
    http_export: ProxyIndices,
    incoming: Resource<HostIncomingRequest>,
    outparam: Resource<HostResponseOutparam>,
    watch: Arc<RequestWatch>,
    /// What keeping the instance takes, for a plugin that reuses them.
    keeping: Option<(Watchdog, u32, u64)>,
    reuse: u32,
    permit: Admitted,
}

impl Dispatcher {
    pub fn new(engine: wasmtime::Engine, watchdog: Watchdog, timeouts: BodyTimeouts) -> Self {
        Self {
            engine,
            watchdog,
            timeouts,
        }
    }

    /// Runs `req` through `plugin`, a version of `slot`, for `caller`.
    pub async fn dispatch(
        &self,
        slot: &PluginSlot,
        plugin: Arc<LoadedPlugin>,
        caller: IdentityCtx,
        req: http::Request<axum::body::Body>,
    ) -> Result<http::Response<axum::body::Body>, DispatchError> {
        let mut call = self.prepare(slot, plugin, caller, req)?;
        let head = self.run_to_head(&mut call).await;
        self.respond(call, head)
    }

    /// The checks before any instance (the body's declared length, a
    /// permit), then the request's store: a kept instance's if the plugin
    /// reuses them and one waits, else a fresh one (instantiated on the
    /// guest's first poll).
    fn prepare(
        &self,
        slot: &PluginSlot,
        plugin: Arc<LoadedPlugin>,
        caller: IdentityCtx,
        req: http::Request<axum::body::Body>,
    ) -> Result<Call, DispatchError> {
        let limits = &slot.context.limits;
        let http_export = (plugin.exports.http.clone())
            .ok_or_else(|| DispatchError::Internal("the plugin has no HTTP handler".into()))?;
        let max_body = limits.max_body_bytes;
        if declared_length(req.headers()).is_some_and(|n| n > max_body) {
            return Err(DispatchError::BodyTooLarge { limit: max_body });
        }
        let permit = slot
            .try_admit()
            .ok_or(DispatchError::Busy(Busy::Plugin(slot.max_concurrent)))?;

        let body_state = Arc::new(AtomicU8::new(BODY_OK));
        let (parts, body) = req.into_parts();
        let body = RequestBody::new(body, max_body, self.timeouts.request, body_state.clone());
        let req = http::Request::from_parts(parts, body);

        let reuse = limits.instance_reuse;
        let kept = match reuse {
            0 => None,
            _ => plugin.idle.take(&slot.context, caller.clone()),
        };
        let (mut store, warm) = match kept {
            Some(idle) => (idle.store, Some((idle.proxy, idle.served))),
            None => (
                RequestState::new_store(&self.engine, &slot.context, caller),
                None,
            ),
        };
        if let Some(CallDepth(depth)) = req.extensions().get() {
            store.data_mut().set_call_depth(*depth);
        }
        let (tx, head) = tokio::sync::oneshot::channel();
        let http = || DispatchError::Internal("creating the request resources".into());
        let incoming = (store.data_mut().http())
            .new_incoming_request(Scheme::Http, req)
            .map_err(|_| http())?;
        let outparam = (store.data_mut().http())
            .new_response_outparam(tx)
            .map_err(|_| http())?;
        let watch = Arc::new(RequestWatch::new(
            slot.context.metrics.clone(),
            limits,
            self.timeouts.response,
            watchdog::now_ms(),
        ));
        let export = "wasi:http/incoming-handler";
        let span = guest_span(&slot.manifest.name, &plugin, export, warm.is_none());
        let keeping = (reuse > 0).then(|| {
            let idle_for_ms = millis(limits.instance_idle);
            (self.watchdog.clone(), slot.max_concurrent, idle_for_ms)
        });
        let run = GuestRun {
            span: span.clone(),
            plugin,
            store,
            warm,
            http_export,
            incoming,
            outparam,
            watch: watch.clone(),
            keeping,
            reuse,
            permit,
        };
        Ok(Call {
            guest: Box::pin(run.run().instrument(span)),
            head,
            watch,
            body_state,
            max_body,
            timeout: limits.timeout,
        })
    }

    /// Runs the guest on this (the connection's) task until the response
    /// head comes: no task spawned, no thread woken for the common case of
    /// a guest that answers at once. It is registered with the watchdog
    /// only when it has to wait. Dropping this future (the client went
    /// away) drops the guest with it.
    async fn run_to_head(&self, call: &mut Call) -> Head {
        let mut watching = None;
        let mut finished = None;
        let sent = std::future::poll_fn(|cx| {
            if finished.is_none()
                && let Poll::Ready(outcome) = call.guest.as_mut().poll(cx)
            {
                finished = Some(outcome);
            }
            // A guest that ended dropped the outparam: this is then ready.
            if let Poll::Ready(sent) = Pin::new(&mut call.head).poll(cx) {
                return Poll::Ready(Some(sent));
            }
            call.watch.waker.register(cx.waker());
            if call.watch.cut.get().is_some() {
                return Poll::Ready(None);
            }
            watching.get_or_insert_with(|| self.watchdog.watch(call.watch.clone()));
            Poll::Pending
        })
        .await;
        Head {
            sent,
            finished,
            watching,
        }
    }

    /// The answer: the guest's response, its body streamed from a task of
    /// its own if the guest still writes it; or why there is none.
    fn respond(
        &self,
        call: Call,
        head: Head,
    ) -> Result<http::Response<axum::body::Body>, DispatchError> {
        let Head {
            sent,
            mut finished,
            watching,
        } = head;
        let result = match sent {
            None => Err(DispatchError::Timeout {
                timeout_ms: call.timeout.as_millis(),
            }),
            Some(Ok(Ok(resp))) => Ok(resp),
            Some(Ok(Err(code))) => Err(DispatchError::Guest(code)),
            // The guest dropped the outparam: it returned or failed (or,
            // if it runs on, gave up on answering).
            Some(Err(_)) => match finished.take() {
                Some(Err(e)) => Err(classify(&e)),
                Some(Ok(())) | None => Err(DispatchError::NoResponse),
            },
        };
        // Whatever the guest made of a body cut off at the limit or
        // stalled, the answer is 413 or 408.
        match call.body_state.load(Ordering::Relaxed) {
            BODY_OVERFLOWED => {
                return Err(DispatchError::BodyTooLarge {
                    limit: call.max_body,
                });
            }
            BODY_STALLED => {
                return Err(DispatchError::BodyTimeout {
                    idle_ms: self.timeouts.request.as_millis(),
                });
            }
            _ => {}
        }
        let resp = result?;
        let watch = call.watch;
        watch.responded.store(true, Ordering::Relaxed);
        let body_error = |e| std::io::Error::other(format!("{e:?}"));
        if let Some(outcome) = finished {
            // The guest has ended: all it wrote of the body is buffered,
            // and nothing is left to watch.
            if let Err(e) = outcome {
                streaming_failed(&watch.metrics, &e);
            }
            return Ok(resp.map(|body| axum::body::Body::new(body.map_err(body_error))));
        }
        // The guest streams the rest of the body from a task of its own,
        // under the watchdog, which aborts that task to end it.
        let watching = watching.unwrap_or_else(|| self.watchdog.watch(watch.clone()));
        let guest = call.guest;
        let task = tokio::spawn(async move {
            let outcome = guest.await;
            drop(watching);
            outcome
        });
        watch.guest.get_or_init(|| task.abort_handle());
        if watch.cut.get().is_some() {
            task.abort();
        }
        Ok(resp.map(|body| {
            axum::body::Body::new(WatchedBody {
                inner: body.map_err(body_error),
                watch,
            })
        }))
    }
}

impl GuestRun {
    /// The guest's whole run. However it ends (returned, failed, or
    /// dropped by the watchdog), its end frees the instance (the store), or
    /// keeps it for the next request if the plugin allows and the call
    /// returned normally; then the permit: only now may another request
    /// take its place. The version stays alive as long as its instance ran.
    async fn run(self) -> wasmtime::Result<()> {
        let GuestRun {
            span,
            plugin,
            mut store,
            mut warm,
            http_export,
            incoming,
            outparam,
            watch,
            keeping,
            reuse,
            permit,
        } = self;
        let metrics = &watch.metrics;
        let mut served = 0;
        let outcome = async {
            let proxy = match warm.take() {
                Some((proxy, before)) => {
                    served = before;
                    metrics.instance_reuses.inc();
                    proxy
                }
                None => {
                    // An attribute of the guest call, not a span of its
                    // own: a span costs more than a fresh instance does.
                    let started = std::time::Instant::now();
                    let instance = instantiate(&plugin.pre, &mut store, metrics).await?;
                    let micros = started.elapsed().as_micros() as u64;
                    crate::telemetry::record(&span, "spike.instantiate_us", micros);
                    http_export.load(&mut store, &instance)?
                }
            };
            store.data_mut().begin_call();
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, incoming, outparam)
                .await
                .map(|()| proxy)
        }
        .await;
        let used = store.data_mut().end_call();
        crate::telemetry::record(&span, "spike.guest_cpu_us", used.as_micros() as u64);
        if let Err(e) = &outcome {
            crate::telemetry::failed_here(classify(e).kind());
        }
        if let Err(e) = &outcome
            && watch.responded.load(Ordering::Relaxed)
            && watch.cut.get().is_none()
        {
            streaming_failed(metrics, e);
        }
        served += 1;
        let outcome = match (outcome, &keeping) {
            (Ok(proxy), Some((watchdog, max_idle, idle_for_ms)))
                if served < reuse && watch.cut.get().is_none() =>
            {
                let idle = &plugin.idle;
                idle.keep(store, proxy, served, *max_idle, *idle_for_ms, watchdog);
                Ok(())
            }
            (outcome, _) => {
                drop(store);
                outcome.map(drop)
            }
        };
        drop((permit, plugin));
        outcome
    }
}

/// Logs and counts a guest that failed after its response headers went
/// out (the client sees the body cut off).
fn streaming_failed(metrics: &PluginMetrics, e: &wasmtime::Error) {
    let failure = classify(e);
    let plugin = &metrics.plugin;
    tracing::warn!(%plugin, "failed while streaming its response: {failure}");
    failure.count(metrics);
}

/// The span of one call into a guest: which plugin, version and export,
/// in a fresh instance or a kept one.
pub(super) fn guest_span(
    plugin: &str,
    version: &LoadedPlugin,
    export: &'static str,
    fresh: bool,
) -> tracing::Span {
    crate::telemetry::span!(
        "guest call",
        spike.plugin = plugin,
        spike.plugin.version = &version.sha256[..12],
        spike.export = export,
        spike.instance = if fresh { "fresh" } else { "reused" },
        spike.guest_cpu_us = tracing::field::Empty,
        spike.instantiate_us = tracing::field::Empty,
    )
}

/// A fresh instance of `pre` in `store`, counted in the plugin's
/// instantiation series: every guest call the host makes starts here.
pub(super) async fn instantiate(
    pre: &wasmtime::component::InstancePre<RequestState>,
    store: &mut wasmtime::Store<RequestState>,
    metrics: &PluginMetrics,
) -> wasmtime::Result<wasmtime::component::Instance> {
    let started = std::time::Instant::now();
    let instance = pre.instantiate_async(store).await?;
    metrics.instantiations.inc();
    metrics
        .instantiation_seconds
        .observe(started.elapsed().as_secs_f64());
    Ok(instance)
}

/// Names what went wrong in a guest.
pub(super) fn classify(e: &wasmtime::Error) -> DispatchError {
    if let Some(cpu) = e.downcast_ref::<CpuLimitExceeded>() {
        return DispatchError::CpuLimit(cpu.clone());
    }
    if let Some(mem) = e.downcast_ref::<MemoryLimitExceeded>() {
        return DispatchError::MemoryLimit(mem.clone());
    }
    if let Some(budget) = e.downcast_ref::<MemoryBudgetExhausted>() {
        return DispatchError::Busy(Busy::Memory(budget.clone()));
    }
    if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        return DispatchError::Busy(Busy::Pool);
    }
    // The trap itself ("wasm `unreachable` instruction executed") says more
    // than the outer "error while executing at wasm backtrace".
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => DispatchError::Trap(trap.to_string()),
        None => DispatchError::Trap(first_line(&format!("{e:#}"))),
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).chars().take(500).collect()
}
