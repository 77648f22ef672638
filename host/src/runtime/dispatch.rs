//! One request through one plugin: a fresh `Store` and instance, the
//! plugin's limits, and what becomes of a guest that misbehaves or a client
//! that is too slow.
//!
//! The guest runs in its own task so that it can keep streaming the response
//! body after the headers have gone out. That task holds one of the plugin's
//! concurrency permits for as long as the instance lives, and the watchdog
//! (`runtime::watchdog`) ends it when the headers are late (`timeout_ms`),
//! at `max_duration_ms`, or when the client stops reading the response. A
//! trap, a CPU or memory limit, or a missed deadline ends only this
//! request's store; the error is classified here and turned into a status
//! by `server::errors`.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};

use super::loader::LoadedPlugin;
use super::manifest::Limits;
use super::memory_budget::MemoryBudgetExhausted;
use super::request_body::{BODY_OK, BODY_OVERFLOWED, BODY_STALLED, RequestBody, declared_length};
use super::slot::PluginSlot;
use super::state::{CpuLimitExceeded, MemoryLimitExceeded, RequestState};
use super::watchdog::{self, Watchdog, Watched};
use crate::caps::identity::IdentityCtx;
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

/// Why the watchdog ended a request: the guest's instance is freed, and a
/// response already begun is cut off.
#[derive(Debug, Clone, thiserror::Error)]
enum Cut {
    #[error("the plugin did not respond within {0} ms")]
    NoHeaders(u128),
    #[error("the request ran past the plugin's max_duration_ms of {0} ms")]
    MaxDuration(u128),
    #[error("the client read nothing of the response for {0} ms")]
    ClientStalled(u128),
}

impl DispatchError {
    /// Counts the failure in its series: `busy` by the limit reached,
    /// `faults` by kind.
    pub fn count(&self, metrics: &PluginMetrics) {
        let host = &metrics.host;
        let family = match self {
            DispatchError::Busy(_) => &host.busy,
            _ => &host.faults,
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

/// Runs `req` through `plugin`, a version of `slot`, for `caller`.
pub async fn dispatch(
    slot: &PluginSlot,
    plugin: Arc<LoadedPlugin>,
    engine: &wasmtime::Engine,
    watchdog: &Watchdog,
    timeouts: BodyTimeouts,
    caller: IdentityCtx,
    req: http::Request<axum::body::Body>,
) -> Result<http::Response<axum::body::Body>, DispatchError> {
    let limits = &slot.context.limits;
    let http_export = plugin
        .exports
        .http
        .clone()
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
    let body = RequestBody::new(body, max_body, timeouts.request, body_state.clone());
    let req = http::Request::from_parts(parts, body);

    let mut store = RequestState::new_store(engine, &slot.context, caller);

    let (tx, rx) = tokio::sync::oneshot::channel();
    let http = || DispatchError::Internal("creating the request resources".into());
    let incoming = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, req)
        .map_err(|_| http())?;
    let outparam = store
        .data_mut()
        .http()
        .new_response_outparam(tx)
        .map_err(|_| http())?;

    let watch = Arc::new(RequestWatch::new(
        slot.context.metrics.clone(),
        limits,
        timeouts.response,
        watchdog::now_ms(),
    ));
    let watching = watchdog.watch(watch.clone());
    let pre = plugin.pre.clone();
    let guest_watch = watch.clone();
    let guest = tokio::spawn(async move {
        let outcome = async {
            let instance = instantiate(&pre, &mut store, &guest_watch.metrics).await?;
            let proxy = http_export.load(&mut store, &instance)?;
            store.data_mut().begin_call();
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, incoming, outparam)
                .await
        }
        .await;
        if let Err(e) = &outcome
            && guest_watch.responded.load(Ordering::Relaxed)
            && guest_watch.cut.get().is_none()
        {
            let failure = classify(e);
            let plugin = &guest_watch.metrics.plugin;
            tracing::warn!(%plugin, "failed while streaming its response: {failure}");
            failure.count(&guest_watch.metrics);
        }
        // Aborted or not, this task's end frees the instance (the store),
        // then the permit: only now may another request take its place.
        // The version stays alive as long as its instance ran.
        drop(store);
        drop((permit, watching, plugin));
        outcome
    });
    watch.guest.get_or_init(|| guest.abort_handle());
    // If this future is dropped before the response begins (the client
    // went away), the guest is stopped with it.
    let mut abort = AbortOnDrop(Some(guest.abort_handle()));

    let result = match rx.await {
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err(code)) => Err(DispatchError::Guest(code)),
        // The guest dropped the outparam: it returned, trapped, or the
        // watchdog ended it.
        Err(_) => match (watch.cut.get(), guest.await) {
            (Some(_), _) => Err(DispatchError::Timeout {
                timeout_ms: limits.timeout.as_millis(),
            }),
            (None, Ok(Ok(()))) => Err(DispatchError::NoResponse),
            (None, Ok(Err(e))) => Err(classify(&e)),
            (None, Err(e)) => Err(DispatchError::Internal(format!("guest task: {e}"))),
        },
    };
    // Whatever the guest made of a body cut off at the limit or stalled,
    // the answer is 413 or 408.
    match body_state.load(Ordering::Relaxed) {
        BODY_OVERFLOWED => return Err(DispatchError::BodyTooLarge { limit: max_body }),
        BODY_STALLED => {
            return Err(DispatchError::BodyTimeout {
                idle_ms: timeouts.request.as_millis(),
            });
        }
        _ => {}
    }
    let resp = result?;
    // From here the guest streams the body on its own, under the watchdog.
    abort.0 = None;
    watch.responded.store(true, Ordering::Relaxed);
    Ok(resp.map(|body| {
        axum::body::Body::new(WatchedBody {
            inner: body.map_err(|e| std::io::Error::other(format!("{e:?}"))),
            watch,
        })
    }))
}

/// A request's deadlines, checked by the watchdog every tick: response
/// headers by `headers_by`, the whole request by `done_by`, and no piece
/// of the response left unread for `send_timeout`. Times are the
/// watchdog's `now_ms`.
struct RequestWatch {
    /// The plugin's series (and its name).
    metrics: PluginMetrics,
    headers_by: u64,
    done_by: u64,
    timeout: Duration,
    max_duration: Duration,
    send_timeout: u64,
    /// When the body last handed a frame to the server; `NOT_WAITING`
    /// while the server is asking for the next one. A frame handed out and
    /// not followed by another request for one means the server could not
    /// write it: the client is not reading.
    handed_out: AtomicU64,
    /// The response headers went out.
    responded: AtomicBool,
    /// Set once, when the watchdog ends the request. The body then ends in
    /// an error, not in a clean end that would make a cut-off response look
    /// complete.
    cut: OnceLock<Cut>,
    /// The guest's task, to abort.
    guest: OnceLock<tokio::task::AbortHandle>,
}

const NOT_WAITING: u64 = u64::MAX;

fn millis(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

impl RequestWatch {
    fn new(metrics: PluginMetrics, limits: &Limits, send_timeout: Duration, now: u64) -> Self {
        Self {
            metrics,
            headers_by: now.saturating_add(millis(limits.timeout)),
            done_by: now.saturating_add(millis(limits.max_duration)),
            timeout: limits.timeout,
            max_duration: limits.max_duration,
            send_timeout: millis(send_timeout),
            handed_out: AtomicU64::new(NOT_WAITING),
            responded: AtomicBool::new(false),
            cut: OnceLock::new(),
            guest: OnceLock::new(),
        }
    }

    /// What, if anything, ends the request at `now`.
    fn due(&self, now: u64) -> Option<Cut> {
        if !self.responded.load(Ordering::Relaxed) && now >= self.headers_by {
            return Some(Cut::NoHeaders(self.timeout.as_millis()));
        }
        if now >= self.done_by {
            return Some(Cut::MaxDuration(self.max_duration.as_millis()));
        }
        match self.handed_out.load(Ordering::Relaxed) {
            NOT_WAITING => None,
            since => (now.saturating_sub(since) >= self.send_timeout)
                .then_some(Cut::ClientStalled(u128::from(self.send_timeout))),
        }
    }
}

impl Watched for RequestWatch {
    fn check(&self, now: u64) {
        if self.cut.get().is_some() {
            return;
        }
        let Some(cut) = self.due(now) else { return };
        if self.responded.load(Ordering::Relaxed) {
            // Before the headers, the 504 (and its log line and count)
            // says it.
            tracing::warn!(plugin = %self.metrics.plugin, "response cut off: {cut}");
            let kind = match cut {
                Cut::NoHeaders(_) | Cut::MaxDuration(_) => "max_duration",
                Cut::ClientStalled(_) => "client_stalled",
            };
            self.metrics.count(&self.metrics.host.faults, kind);
        }
        let _ = self.cut.set(cut);
        if let Some(guest) = self.guest.get() {
            guest.abort();
        }
    }
}

/// The guest's response body as the server reads it, telling the watchdog
/// when the client stops taking it.
struct WatchedBody<B> {
    inner: B,
    watch: Arc<RequestWatch>,
}

impl<B> Body for WatchedBody<B>
where
    B: Body<Data = Bytes, Error = std::io::Error> + Unpin,
{
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let WatchedBody { inner, watch } = &mut *self;
        watch.handed_out.store(NOT_WAITING, Ordering::Relaxed);
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                watch
                    .handed_out
                    .store(watchdog::now_ms(), Ordering::Relaxed);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) if watch.cut.get().is_some() => {
                Poll::Ready(Some(Err(std::io::Error::other("the response was cut off"))))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Aborts the guest task when dropped, unless disarmed.
struct AbortOnDrop(Option<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.abort();
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_come_due_in_order() {
        let limits = Limits {
            timeout: Duration::from_secs(10),
            max_duration: Duration::from_secs(100),
            ..Limits::default()
        };
        let start = 5_000;
        let metrics = PluginMetrics::new(&crate::metrics::Metrics::new(), &"p".into());
        let watch = RequestWatch::new(metrics, &limits, Duration::from_secs(30), start);
        let at = |s: u64| start + s * 1000;
        assert!(watch.due(at(9)).is_none());
        assert!(matches!(watch.due(at(10)), Some(Cut::NoHeaders(10_000))));
        watch.responded.store(true, Ordering::Relaxed);
        assert!(watch.due(at(99)).is_none());
        assert!(matches!(
            watch.due(at(100)),
            Some(Cut::MaxDuration(100_000))
        ));
        // A frame handed out at 20 s and not taken: the client stopped
        // reading, cut 30 s later.
        watch.handed_out.store(at(20), Ordering::Relaxed);
        assert!(watch.due(at(49)).is_none());
        assert!(matches!(
            watch.due(at(50)),
            Some(Cut::ClientStalled(30_000))
        ));
        // Taken (the server asks for the next): fine again.
        watch.handed_out.store(NOT_WAITING, Ordering::Relaxed);
        assert!(watch.due(at(60)).is_none());
    }
}
