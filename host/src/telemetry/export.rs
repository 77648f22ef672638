//! Spans on their way to the collector: a bounded queue and one task that
//! sends them in batches.
//!
//! The SDK's own batch processor runs its exporter on a thread of its own
//! (blocking on the HTTP client) and only logs how many spans it dropped;
//! this one runs on the server's runtime and counts every span it could
//! not send in `/metrics`, by reason. Ending a span costs a push under a
//! lock: a full queue (a collector that is down or slow) drops the span,
//! never waits, so no request is slower for it.

use std::sync::LazyLock;
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::sync::Arc;

use tokio::sync::{Notify, oneshot};

/// How spans are batched (`OTEL_BSP_*`).
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Spans waiting at most; more are dropped.
    pub max_queue: usize,
    /// Spans sent at most in one export.
    pub max_batch: usize,
    /// How long the first span of a batch waits for others.
    pub delay: Duration,
    /// How long one export may take, retries included.
    pub timeout: Duration,
}

impl Default for Batching {
    fn default() -> Self {
        // The specification's defaults, but for the delay: 5 s of spans
        // lost at a crash is more than a second's.
        Self {
            max_queue: 2048,
            max_batch: 512,
            delay: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
        }
    }
}

/// The spans waiting to go out. A span ends into it under a lock, which
/// wakes the sender only when a batch is full: waking it for every span
/// (a channel's way) cost a cross-thread wake-up per span, a third of a
/// traced request's CPU.
#[derive(Debug)]
struct Queue {
    spans: std::sync::Mutex<Vec<SpanData>>,
    /// A full batch waits.
    full: Notify,
    batching: Batching,
}

impl Queue {
    fn push(&self, span: SpanData) {
        let mut spans = self.spans.lock().unwrap_or_else(|e| e.into_inner());
        if spans.len() >= self.batching.max_queue {
            drop(spans);
            dropped("queue_full", 1);
            return;
        }
        spans.push(span);
        if spans.len() == self.batching.max_batch {
            self.full.notify_one();
        }
    }

    /// Up to a batch of the oldest spans.
    fn take(&self) -> Vec<SpanData> {
        let mut spans = self.spans.lock().unwrap_or_else(|e| e.into_inner());
        if spans.len() <= self.batching.max_batch {
            return std::mem::take(&mut *spans);
        }
        let rest = spans.split_off(self.batching.max_batch);
        std::mem::replace(&mut *spans, rest)
    }
}

/// Ends spans into the queue.
#[derive(Debug)]
pub struct QueueProcessor {
    queue: Arc<Queue>,
}

/// The task that sends the queue's spans: told to stop, it sends what is
/// queued and ends.
pub struct Exporting {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Exporting {
    /// Sends what is queued, for at most `limit`.
    pub async fn finish(self, limit: Duration) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(limit, self.task).await;
    }
}

/// The queue, for spans made outside the SDK (guests').
static QUEUE: std::sync::OnceLock<Arc<Queue>> = std::sync::OnceLock::new();

/// Queues a span made outside the SDK; dropped (and counted) if the queue
/// is full.
pub fn queue(span: SpanData) {
    if let Some(queue) = QUEUE.get() {
        queue.push(span);
    }
}

/// The processor, and the task (spawned on the current runtime) that
/// sends what it queues through `exporter`.
pub fn start<E: SpanExporter + 'static>(
    exporter: E,
    batching: Batching,
) -> (QueueProcessor, Exporting) {
    let queue = Arc::new(Queue {
        spans: std::sync::Mutex::new(Vec::with_capacity(batching.max_batch)),
        full: Notify::new(),
        batching,
    });
    let (stop, stopped) = oneshot::channel();
    let _ = QUEUE.set(queue.clone());
    let task = tokio::spawn(send_batches(queue.clone(), stopped, exporter));
    (QueueProcessor { queue }, Exporting { stop, task })
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if span.span_context.is_sampled() {
            self.queue.push(span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        // `Exporting::finish` sends what is left, on the runtime.
        Ok(())
    }
}

/// Sends a batch when one is full or the delay has passed, until told to
/// stop; then what is left.
async fn send_batches<E: SpanExporter>(
    queue: Arc<Queue>,
    mut stopped: oneshot::Receiver<()>,
    exporter: E,
) {
    let batching = queue.batching;
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            _ = queue.full.notified() => {}
            _ = tokio::time::sleep(batching.delay) => {}
        }
        // A full batch, or what the delay gathered; more full batches may
        // wait behind it.
        loop {
            let batch = queue.take();
            let full = batch.len() == batching.max_batch;
            send(&exporter, batch, batching.timeout).await;
            if !full {
                break;
            }
        }
    }
    loop {
        let batch = queue.take();
        if batch.is_empty() {
            break;
        }
        send(&exporter, batch, batching.timeout).await;
    }
    let _ = exporter.shutdown();
}

async fn send<E: SpanExporter>(exporter: &E, spans: Vec<SpanData>, timeout: Duration) {
    if spans.is_empty() {
        return;
    }
    let n = spans.len() as u64;
    match tokio::time::timeout(timeout, exporter.export(spans)).await {
        Ok(Ok(())) => {
            EXPORTED.inc_by(n);
        }
        Ok(Err(e)) => {
            tracing::debug!("exporting {n} spans failed: {e}");
            dropped("export_failed", n);
        }
        Err(_) => {
            tracing::debug!("exporting {n} spans took over {timeout:?}");
            dropped("export_timeout", n);
        }
    }
}

fn dropped(reason: &'static str, n: u64) {
    DROPPED.get_or_create(&ReasonLabel { reason }).inc_by(n);
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

// The series are the process's (the tracing subscriber is), shared by
// every server's registry.
static EXPORTED: LazyLock<Counter> = LazyLock::new(Counter::default);
static DROPPED: LazyLock<Family<ReasonLabel, Counter>> = LazyLock::new(Family::default);

crate::metrics::series! {
    /// The trace exporter's series.
    pub struct TelemetryMetrics {
        /// Spans the collector accepted.
        exported: Counter = EXPORTED.clone(),
            "telemetry_spans_exported",
            "Spans sent to the OTLP collector";
        /// Spans lost, by reason: `queue_full` (the collector is down or
        /// slower than the spans come), `export_failed`, `export_timeout`.
        dropped: Family<ReasonLabel, Counter> = DROPPED.clone(),
            "telemetry_spans_dropped",
            "Spans not sent to the OTLP collector, by reason (queue_full, export_failed, export_timeout)";
    }
}
