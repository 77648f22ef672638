//! OpenTelemetry traces: one trace per request, across the host, its
//! plugins and their calls, sent over OTLP (http/protobuf or grpc); and
//! the plugins' own metrics, sent the same way.
//!
//! The host's spans are `tracing` spans of the target `spike::trace`,
//! turned into OpenTelemetry spans by `tracing-opentelemetry`'s layer and
//! sent by `export` (a bounded queue, one task, drops counted). Nothing
//! of it runs unless an endpoint is configured: `span!` is then
//! `Span::none()` after one atomic load.
//!
//! Which requests are traced is decided once, before the request's first
//! span (`sampler`); inside an untraced request `span!` makes nothing
//! either. Trace context comes in as the operator allows (`context::
//! Honour`) and goes out only where a grant says so (`outbound`).
//!
//! - `sampler`: `OTEL_TRACES_SAMPLER`, decided up front
//! - `context`: W3C `traceparent` in and out
//! - `export`: the queue to the collector, and its series
//! - `logs`: trace and span ids in JSON log lines
//! - `metrics`: the plugins' own metrics (`caps::otel`) over OTLP too

mod context;
mod export;
pub mod fresh_filter;
mod logs;
pub mod metrics;
mod sampler;

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use http::{HeaderMap, HeaderValue};
use opentelemetry::trace::{SpanContext, TraceContextExt, TraceId, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracerProvider};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

pub use context::Honour;
pub use export::{Batching, TelemetryMetrics};
pub use logs::WithTraceIds;
pub use sampler::{Root, Sampler};

/// The target of every span of spike's traces.
pub const TARGET: &str = "spike::trace";

/// How spans reach the collector (`OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    #[value(name = "http/protobuf")]
    HttpProtobuf,
    #[value(name = "grpc")]
    Grpc,
}

/// Where traces go and which requests are traced.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The collector's address: for http/protobuf the traces URL itself
    /// (`…/v1/traces`), for grpc the server's.
    pub endpoint: String,
    /// Where the plugins' metrics go (`…/v1/metrics`, or the grpc
    /// server's), if they do, and how often.
    pub metrics_endpoint: Option<String>,
    pub metrics_interval: Duration,
    pub protocol: Protocol,
    /// Headers every export carries (a collector's API key).
    pub headers: Vec<(String, String)>,
    pub service_name: String,
    /// `OTEL_RESOURCE_ATTRIBUTES`, after the service's own.
    pub resource: Vec<(String, String)>,
    pub sampler: Sampler,
    pub honour: Honour,
    pub batching: Batching,
}

/// What the request path reads: set once, when traces are on.
struct State {
    sampler: Sampler,
    honour: Honour,
}

static STATE: OnceLock<State> = OnceLock::new();
static EXPORTING: Mutex<Option<export::Exporting>> = Mutex::new(None);

/// Whether traces are on in this process.
pub fn on() -> bool {
    STATE.get().is_some()
}

/// Turns traces on for this process (once) and gives the layer the
/// subscriber needs; spawns the export task on the current runtime.
/// `node` names this server among a cluster's.
pub fn install<S>(
    settings: &Settings,
    node: &str,
) -> anyhow::Result<Box<dyn Layer<S> + Send + Sync + 'static>>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    let resource = opentelemetry_sdk::Resource::builder_empty()
        .with_service_name(settings.service_name.clone())
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", node.to_owned()),
            KeyValue::new("spike.node", node.to_owned()),
        ])
        .with_attributes(
            (settings.resource.iter()).map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .build();
    if let Some(endpoint) = &settings.metrics_endpoint {
        let exporter = metric_exporter(settings, endpoint)?;
        metrics::start(exporter, resource.clone(), settings.metrics_interval);
    }
    let mut exporter = span_exporter(settings)?;
    opentelemetry_sdk::trace::SpanExporter::set_resource(&mut exporter, &resource);
    let (processor, exporting) = export::start(exporter, settings.batching);
    let provider = SdkTracerProvider::builder()
        // Chosen already (`sampler`): what reaches the SDK is traced.
        .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOn)
        .with_span_processor(processor)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("spike");
    STATE
        .set(State {
            sampler: settings.sampler,
            honour: settings.honour,
        })
        .map_err(|_| anyhow::anyhow!("telemetry is installed once per process"))?;
    *EXPORTING.lock().unwrap_or_else(|e| e.into_inner()) = Some(exporting);
    // INFO, not TRACE: the subscriber's most verbose level stays INFO, so
    // every crate's `debug!` and `trace!` still cost one comparison.
    let filter = tracing_subscriber::filter::Targets::new()
        .with_target(TARGET, tracing::Level::INFO)
        // Warnings and errors logged inside a traced request become
        // events of its span.
        .with_default(tracing::Level::WARN);
    Ok(tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_tracked_inactivity(false)
        .with_context_activation(false)
        .with_location(false)
        .with_threads(false)
        .with_level(false)
        .with_target(false)
        .with_filter(fresh_filter::Fresh(filter))
        .boxed())
}

fn metric_exporter(
    settings: &Settings,
    endpoint: &str,
) -> anyhow::Result<opentelemetry_otlp::MetricExporter> {
    let timeout = settings.batching.timeout;
    let built = match settings.protocol {
        Protocol::HttpProtobuf => opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .with_timeout(timeout)
            .with_headers(settings.headers.iter().cloned().collect())
            .build(),
        Protocol::Grpc => opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(timeout)
            .with_metadata(grpc_metadata(settings)?)
            .build(),
    };
    built.context("setting up the OTLP metrics exporter")
}

/// `OTEL_EXPORTER_OTLP_HEADERS` as grpc metadata.
fn grpc_metadata(
    settings: &Settings,
) -> anyhow::Result<opentelemetry_otlp::tonic_types::metadata::MetadataMap> {
    let mut headers = HeaderMap::new();
    for (k, v) in &settings.headers {
        let name = http::HeaderName::from_bytes(k.as_bytes())
            .with_context(|| format!("the OTLP header name '{k}'"))?;
        let value = HeaderValue::from_str(v)
            .with_context(|| format!("the value of the OTLP header '{k}'"))?;
        headers.insert(name, value);
    }
    Ok(opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(headers))
}

fn span_exporter(settings: &Settings) -> anyhow::Result<opentelemetry_otlp::SpanExporter> {
    let timeout = settings.batching.timeout;
    let built = match settings.protocol {
        Protocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(settings.endpoint.clone())
            .with_timeout(timeout)
            .with_headers(settings.headers.iter().cloned().collect())
            .build(),
        Protocol::Grpc => {
            let metadata = grpc_metadata(settings)?;
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(settings.endpoint.clone())
                .with_timeout(timeout)
                .with_metadata(metadata)
                .build()
        }
    };
    built.context("setting up the OTLP exporter")
}

/// Sends the spans still queued (at a stop), for at most `limit`.
pub async fn finish(limit: Duration) {
    let exporting = EXPORTING.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(exporting) = exporting {
        exporting.finish(limit).await;
    }
}

/// Whether the code running now is inside a traced request: the current
/// span is one of spike's. (Outside one, `span!` makes nothing.)
pub fn traced_here() -> bool {
    on() && Span::current()
        .metadata()
        .is_some_and(|m| m.target() == TARGET)
}

/// A span of spike's traces, a child of the current one, if the code
/// runs inside a traced request; `Span::none()` (free) otherwise. Every
/// span may record its failure (`failed`).
///
/// ```ignore
/// let span = telemetry::span!("kv get", spike.kv.namespace = %ns);
/// ```
macro_rules! span {
    ($name:literal $($fields:tt)*) => {
        if $crate::telemetry::traced_here() {
            ::tracing::info_span!(
                target: "spike::trace",
                $name,
                otel.status_code = ::tracing::field::Empty,
                error.type = ::tracing::field::Empty
                $($fields)*
            )
        } else {
            ::tracing::Span::none()
        }
    };
}
pub(crate) use span;

/// Marks `span` failed, with the kind of failure (`error.type`).
pub fn failed(span: &Span, error_type: &str) {
    if !span.is_none() {
        span.record("otel.status_code", "ERROR");
        span.record("error.type", error_type);
    }
}

/// Records a number (a size, a count) as `field` of `span`.
pub fn record(span: &Span, field: &str, value: u64) {
    if !span.is_none() {
        span.record(field, value);
    }
}

/// Marks the current span failed, inside a traced request.
pub fn failed_here(error_type: &str) {
    if traced_here() {
        failed(&Span::current(), error_type);
    }
}

/// `fut` run inside `span`, which records its failure.
pub async fn traced<T, E: ErrorType>(
    span: Span,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    use tracing::Instrument;
    if span.is_none() {
        return fut.await;
    }
    let result = fut.instrument(span.clone()).await;
    if let Err(e) = &result {
        failed(&span, e.error_type());
    }
    result
}

/// The `error.type` of a failure: a short, stable name.
pub trait ErrorType {
    fn error_type(&self) -> &'static str;
}

/// The server span of a request (kind server, the HTTP semantic
/// conventions' attributes), a child of the caller's span if the request
/// brings one that is honoured (`trusted`: it came from a trusted
/// proxy); `Span::none()` if traces are off or the request is not
/// sampled. `routed` says which plugin and route serve it, asked only of
/// a traced request: its name is `{method} {route}` from the start (an
/// OpenTelemetry span cannot be renamed cheaply once its children have
/// started it).
pub fn server_span(
    method: &http::Method,
    uri: &http::Uri,
    headers: &HeaderMap,
    trusted: bool,
    request_id: u64,
    routed: impl FnOnce() -> Option<(String, std::sync::Arc<str>)>,
) -> Span {
    let Some(state) = STATE.get() else {
        return Span::none();
    };
    let parent = match state.honour {
        Honour::Always => context::incoming(headers),
        Honour::Trusted if trusted => context::incoming(headers),
        Honour::Trusted | Honour::Never => None,
    };
    let trace_id = match &parent {
        Some(p) => p.trace_id(),
        // A new trace: its id is the SDK's to make; any random id decides
        // as well, since no other service has seen this trace.
        None => RandomIdGenerator::default().new_trace_id(),
    };
    if !state.sampler.samples(parent.as_ref(), trace_id) {
        return Span::none();
    }
    let routed = routed();
    let route = routed.as_ref().map(|(_, route)| &**route);
    let plugin = routed.as_ref().map(|(plugin, _)| plugin.as_str());
    let span = tracing::info_span!(
        target: "spike::trace",
        parent: None,
        "request",
        otel.name = %format_args!("{method}{}{}", if route.is_some() { " " } else { "" }, route.unwrap_or("")),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
        http.request.method = %method,
        url.path = uri.path(),
        url.scheme = "http",
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        spike.plugin = plugin,
        spike.request_id = request_id,
        spike.busy_us = tracing::field::Empty,
    );
    if let Some(parent) = parent {
        let _ = span.set_parent(Context::new().with_remote_span_context(parent));
    }
    span
}

/// The span of one message a room member sent, from its arrival to its
/// broadcast: a trace of its own (the join's request is long over),
/// sampled as a request without a parent is, linked to the member's join
/// span `joined_in` if that was traced.
pub fn room_message_span(joined_in: Option<&SpanContext>, bytes: usize) -> Span {
    let Some(state) = STATE.get() else {
        return Span::none();
    };
    let trace_id = RandomIdGenerator::default().new_trace_id();
    if !state.sampler.samples(None, trace_id) {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: "spike::trace",
        parent: None,
        "room message",
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
        spike.room = tracing::field::Empty,
        spike.bytes = bytes as u64,
    );
    if let Some(join) = joined_in {
        span.add_link(join.clone());
    }
    span
}

/// Ends the spans of room messages whose events a commit just stored
/// and broadcast (`stored`), or failed to store.
pub fn room_messages_done(spans: &mut Vec<Span>, stored: bool) {
    for span in spans.drain(..) {
        if stored {
            span.add_event("stored and broadcast", Vec::new());
        } else {
            failed(&span, "not_stored");
        }
    }
}

/// `fut`, with the time its polls took recorded on `span` as
/// `spike.busy_us`: the host's time on the request (its guest's
/// included; not a body streamed from a task of its own), which is its
/// CPU time unless the thread was preempted meanwhile. A thread's own CPU
/// clock would be exact, but reading it is a system call here (about
/// 1 µs, twice a poll): a monotonic clock read is 20 ns. Only a traced
/// request pays for the reads.
pub async fn busy_timed<F: Future>(span: &Span, fut: F) -> F::Output {
    if span.is_none() {
        return fut.await;
    }
    let mut fut = std::pin::pin!(fut);
    let mut busy = Duration::ZERO;
    let out = std::future::poll_fn(|cx| {
        let started = std::time::Instant::now();
        let polled = fut.as_mut().poll(cx);
        busy += started.elapsed();
        polled
    })
    .await;
    span.record("spike.busy_us", busy.as_micros() as u64);
    out
}

/// Records how a request ended on its server span: its status.
pub fn server_answered(span: &Span, status: u16) {
    if span.is_none() {
        return;
    }
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
        span.record("error.type", status);
    }
}

/// Records `value` as `field` of the current span, inside a traced
/// request (a field the span does not have is ignored).
pub fn note(field: &str, value: &str) {
    if traced_here() {
        Span::current().record(field, value);
    }
}

/// The `traceparent` (and `tracestate`) that make a request's receiver
/// a child of `span`; nothing if `span` is not traced.
pub fn propagation_headers(span: &Span) -> Vec<(&'static str, HeaderValue)> {
    match span_context(span) {
        Some(cx) => context::outgoing(&cx),
        None => Vec::new(),
    }
}

/// The current span's trace context as a `traceparent` value, for a
/// call to another node of the cluster to continue; `None` outside a
/// traced request.
pub fn current_traceparent() -> Option<String> {
    if !traced_here() {
        return None;
    }
    let headers = propagation_headers(&Span::current());
    let (_, value) = headers
        .into_iter()
        .find(|(name, _)| *name == "traceparent")?;
    value.to_str().ok().map(str::to_owned)
}

/// The span of work another node of the cluster asked for (a forwarded
/// join, a forwarded SQL statement), continuing that node's trace
/// `traceparent`; `Span::none()` if traces are off here, or the caller's
/// trace is not sampled.
pub fn continued_span(name: &'static str, traceparent: Option<&str>) -> Span {
    if !on() {
        return Span::none();
    }
    let Some(value) = traceparent.and_then(|t| HeaderValue::from_str(t).ok()) else {
        return Span::none();
    };
    let mut headers = HeaderMap::new();
    headers.insert("traceparent", value);
    let Some(parent) = context::incoming(&headers).filter(SpanContext::is_sampled) else {
        return Span::none();
    };
    let span = tracing::info_span!(
        target: "spike::trace",
        parent: None,
        "forwarded",
        otel.name = name,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    let _ = span.set_parent(Context::new().with_remote_span_context(parent));
    span
}

/// The current span, inside a traced request; `Span::none()` otherwise.
pub fn current_span() -> Span {
    if traced_here() {
        Span::current()
    } else {
        Span::none()
    }
}

/// Sends a span made elsewhere (a guest's, `caps::otel`) with the host's.
pub fn export_span(span: opentelemetry_sdk::trace::SpanData) {
    export::queue(span);
}

/// `span`'s OpenTelemetry identity, if it is traced.
pub fn span_context(span: &Span) -> Option<SpanContext> {
    if span.is_none() || !on() {
        return None;
    }
    let cx = span.context().span().span_context().clone();
    cx.is_valid().then_some(cx)
}

/// The trace id of a traced span, as W3C writes it.
pub fn trace_id(span: &Span) -> Option<TraceId> {
    span_context(span).map(|cx| cx.trace_id())
}
