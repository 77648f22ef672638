//! One request through one plugin: a fresh `Store` and instance, the
//! plugin's limits, and what becomes of a guest that misbehaves.
//!
//! The guest runs in its own task so that it can keep streaming the response
//! body after the headers have gone out. A trap, a CPU or memory limit, or a
//! missed deadline ends only this request's store; the error is classified
//! here and turned into a status by `server::errors`.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};

use super::registry::{LoadedPlugin, PluginSlot};
use super::state::{CpuLimitExceeded, MemoryLimitExceeded, RequestState};

/// How a request to a plugin failed before a response began.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("request body is larger than this plugin's limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
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
    #[error("the server is at its limit of concurrent instances")]
    Busy,
    #[error("internal error: {0}")]
    Internal(String),
}

/// A guest's response, body still streaming.
pub type GuestResponse = hyper::Response<wasmtime_wasi_http::p2::body::HyperOutgoingBody>;

/// Runs `req` through `plugin`, a version of `slot`.
pub async fn dispatch(
    slot: &PluginSlot,
    plugin: Arc<LoadedPlugin>,
    engine: &wasmtime::Engine,
    req: http::Request<axum::body::Body>,
) -> Result<GuestResponse, DispatchError> {
    let limits = &slot.context.limits;
    let max_body = limits.max_body_bytes;
    if declared_length(req.headers()).is_some_and(|n| n > max_body) {
        return Err(DispatchError::BodyTooLarge { limit: max_body });
    }
    let overflowed = Arc::new(AtomicBool::new(false));
    let (parts, body) = req.into_parts();
    let body = LimitedBody {
        inner: body,
        remaining: max_body,
        overflowed: overflowed.clone(),
    };
    let req = http::Request::from_parts(parts, body);

    let mut store = RequestState::new_store(engine, &slot.context);

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

    let pre = plugin.pre.clone();
    let guest = tokio::spawn(async move {
        let proxy = pre.instantiate_async(&mut store).await?;
        let r = proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut store, incoming, outparam)
            .await;
        // Keep the version alive as long as its instance runs.
        drop(plugin);
        r
    });
    // If this future is dropped before the response begins (the client
    // went away), the guest is stopped with it.
    let mut abort = AbortOnDrop(Some(guest.abort_handle()));

    let result = match tokio::time::timeout(limits.timeout, rx).await {
        Ok(Ok(Ok(resp))) => Ok(resp),
        Ok(Ok(Err(code))) => Err(DispatchError::Guest(code)),
        // The guest dropped the outparam: it returned or trapped.
        Ok(Err(_)) => match guest.await {
            Ok(Ok(())) => Err(DispatchError::NoResponse),
            Ok(Err(e)) => Err(classify(e)),
            Err(e) => Err(DispatchError::Internal(format!("guest task: {e}"))),
        },
        Err(_) => Err(DispatchError::Timeout {
            timeout_ms: limits.timeout.as_millis(),
        }),
    };
    // Whatever the guest made of a body cut off at the limit, the answer is 413.
    if overflowed.load(Ordering::Relaxed) {
        return Err(DispatchError::BodyTooLarge { limit: max_body });
    }
    if result.is_ok() {
        // From here the guest streams the body on its own.
        abort.0 = None;
    }
    result
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

/// Names what went wrong in a guest.
fn classify(e: wasmtime::Error) -> DispatchError {
    if let Some(cpu) = e.downcast_ref::<CpuLimitExceeded>() {
        return DispatchError::CpuLimit(cpu.clone());
    }
    if let Some(mem) = e.downcast_ref::<MemoryLimitExceeded>() {
        return DispatchError::MemoryLimit(mem.clone());
    }
    if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        return DispatchError::Busy;
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

fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// A request body that ends in an error once it passes `remaining` bytes,
/// and says so through `overflowed` so the response can become a 413.
struct LimitedBody {
    inner: axum::body::Body,
    remaining: u64,
    overflowed: Arc<AtomicBool>,
}

impl Body for LimitedBody {
    type Data = Bytes;
    type Error = ErrorCode;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ErrorCode>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > self.remaining {
                        self.overflowed.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(ErrorCode::HttpRequestBodySize(None))));
                    }
                    self.remaining -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            // The client went away mid-body.
            Poll::Ready(Some(Err(_))) => Poll::Ready(Some(Err(ErrorCode::ConnectionTerminated))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Converts a guest's streaming body for axum.
pub fn into_axum_body(body: wasmtime_wasi_http::p2::body::HyperOutgoingBody) -> axum::body::Body {
    axum::body::Body::new(body.map_err(|e| std::io::Error::other(format!("{e:?}"))))
}
