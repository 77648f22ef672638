//! A request's deadlines while its guest runs, and how the watchdog ends
//! it: response headers by `timeout_ms`, the whole request by
//! `max_duration_ms`, and no piece of the response left unread for the
//! server's send timeout.
//!
//! A request is registered with the watchdog only once its guest has to
//! wait (most requests never do: the guest answers in its first poll).
//! Ending it then means stopping its guest wherever it runs: on the
//! connection's task (woken through `waker`, it drops the guest) or in a
//! task of its own once the response streams (aborted).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::task::AtomicWaker;
use hyper::body::{Body, Frame, SizeHint};

use super::manifest::Limits;
use super::watchdog::{self, Watched};
use crate::metrics::PluginMetrics;

/// Why the watchdog ended a request: the guest's instance is freed, and a
/// response already begun is cut off.
#[derive(Debug, Clone, thiserror::Error)]
pub(super) enum Cut {
    #[error("the plugin did not respond within {0} ms")]
    NoHeaders(u128),
    #[error("the request ran past the plugin's max_duration_ms of {0} ms")]
    MaxDuration(u128),
    #[error("the client read nothing of the response for {0} ms")]
    ClientStalled(u128),
}

/// A request's deadlines, checked by the watchdog every tick: response
/// headers by `headers_by`, the whole request by `done_by`, and no piece
/// of the response left unread for `send_timeout`. Times are the
/// watchdog's `now_ms`.
pub(super) struct RequestWatch {
    /// The plugin's series (and its name).
    pub(super) metrics: PluginMetrics,
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
    pub(super) responded: AtomicBool,
    /// Set once, when the watchdog ends the request. The body then ends in
    /// an error, not in a clean end that would make a cut-off response look
    /// complete.
    pub(super) cut: OnceLock<Cut>,
    /// The guest's task, to abort, once it runs in one.
    pub(super) guest: OnceLock<tokio::task::AbortHandle>,
    /// The task polling the guest while it runs on the connection's task.
    pub(super) waker: AtomicWaker,
}

const NOT_WAITING: u64 = u64::MAX;

/// `d` in whole milliseconds, as the watchdog's clock counts.
pub(super) fn millis(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

impl RequestWatch {
    pub(super) fn new(
        metrics: PluginMetrics,
        limits: &Limits,
        send_timeout: Duration,
        now: u64,
    ) -> Self {
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
            waker: AtomicWaker::new(),
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
            self.metrics
                .count(&self.metrics.host.instances.faults, kind);
        }
        let _ = self.cut.set(cut);
        if let Some(guest) = self.guest.get() {
            guest.abort();
        }
        self.waker.wake();
    }
}

/// The guest's response body as the server reads it, telling the watchdog
/// when the client stops taking it.
pub(super) struct WatchedBody<B> {
    pub(super) inner: B,
    pub(super) watch: Arc<RequestWatch>,
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
