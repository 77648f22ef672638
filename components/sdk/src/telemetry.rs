//! Telemetry from a plugin, through `wasi:otel` (the interface Spin and
//! wasmCloud share): spans that join the request's trace, metrics that
//! appear in the host's `/metrics` as `spike_guest_<name>{plugin=...}`,
//! and log records in the plugin's log.
//!
//! ```ignore
//! use spike_sdk::telemetry::{self, Span};
//!
//! let mut span = Span::start("call provider");
//! span.attr("provider", "openai").attr("model", "gpt-4o");
//! // ... the work ...
//! span.attr("tokens_in", 512);
//! drop(span); // sent when it ends
//!
//! telemetry::count("ai_cache", 1, &[("result", "hit")]);
//! telemetry::histogram_seconds("ai_upstream_seconds", 0.412, &[("provider", "openai")]);
//! telemetry::log(telemetry::Level::Warn, "retrying", &[("attempt", "2")]);
//! ```
//!
//! A span is sent only when the request is traced (the host samples);
//! otherwise it costs a clock read. Metrics and logs always go out. The
//! host bounds what one request may send.

use crate::wasi::clocks::wall_clock::{self, Datetime};
use crate::wasi::otel::metrics as m;
use crate::wasi::otel::tracing as t;
use crate::wasi::otel::types::{InstrumentationScope, KeyValue, Resource};

/// The scope every span and metric of this helper names.
fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "spike-sdk".into(),
        version: Some(env!("CARGO_PKG_VERSION").into()),
        schema_url: None,
        attributes: Vec::new(),
    }
}

/// An attribute's value.
#[derive(Debug, Clone)]
pub enum Value {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Value {
    /// As `wasi:otel` carries it: JSON.
    fn json(&self) -> String {
        match self {
            Value::Text(s) => serde_json::Value::from(s.as_str()).to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) if f.is_finite() => f.to_string(),
            Value::Float(f) => serde_json::Value::from(f.to_string()).to_string(),
            Value::Bool(b) => b.to_string(),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.into())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Text(s)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}
impl From<u64> for Value {
    fn from(i: u64) -> Self {
        Value::Int(i64::try_from(i).unwrap_or(i64::MAX))
    }
}
impl From<u32> for Value {
    fn from(i: u32) -> Self {
        Value::Int(i.into())
    }
}
impl From<usize> for Value {
    fn from(i: usize) -> Self {
        Value::Int(i64::try_from(i).unwrap_or(i64::MAX))
    }
}
impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Float(f)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

fn key_values(pairs: &[(&str, &str)]) -> Vec<KeyValue> {
    pairs
        .iter()
        .map(|(k, v)| KeyValue {
            key: (*k).into(),
            value: Value::from(*v).json(),
        })
        .collect()
}

/// A span of the plugin's own work: a child of the host's span for this
/// call (or of `parent`), sent when it ends (dropped, or `end`).
pub struct Span {
    /// `None` when the request is not traced: nothing is sent.
    open: Option<Open>,
}

struct Open {
    context: t::SpanContext,
    parent: String,
    name: String,
    start: Datetime,
    attributes: Vec<KeyValue>,
    status: t::Status,
}

impl Span {
    /// A span named `name`, a child of the host's span for this call.
    pub fn start(name: &str) -> Self {
        let outer = t::outer_span_context();
        Self::under(name, &outer)
    }

    /// A span named `name`, a child of this one.
    pub fn child(&self, name: &str) -> Self {
        match &self.open {
            Some(open) => Self::under(name, &open.context),
            None => Self { open: None },
        }
    }

    fn under(name: &str, parent: &t::SpanContext) -> Self {
        let traced = parent.trace_flags == t::TraceFlags::SAMPLED
            && parent.trace_id.bytes().any(|b| b != b'0');
        if !traced {
            return Self { open: None };
        }
        let context = t::SpanContext {
            trace_id: parent.trace_id.clone(),
            span_id: format!("{:016x}", crate::wasi::random::random::get_random_u64() | 1),
            trace_flags: t::TraceFlags::SAMPLED,
            is_remote: false,
            trace_state: Vec::new(),
        };
        t::on_start(&context);
        Self {
            open: Some(Open {
                context,
                parent: parent.span_id.clone(),
                name: name.into(),
                start: wall_clock::now(),
                attributes: Vec::new(),
                status: t::Status::Unset,
            }),
        }
    }

    /// Whether the span will be sent (the request is traced).
    pub fn is_recording(&self) -> bool {
        self.open.is_some()
    }

    /// Sets an attribute (never a secret or a user's data: it leaves the
    /// machine).
    pub fn attr(&mut self, key: &str, value: impl Into<Value>) -> &mut Self {
        if let Some(open) = &mut self.open {
            open.attributes.push(KeyValue {
                key: key.into(),
                value: value.into().json(),
            });
        }
        self
    }

    /// Marks the span failed.
    pub fn error(&mut self, message: &str) -> &mut Self {
        if let Some(open) = &mut self.open {
            open.status = t::Status::Error(message.into());
        }
        self
    }

    /// Ends the span now.
    pub fn end(self) {}
}

impl Drop for Span {
    fn drop(&mut self) {
        let Some(open) = self.open.take() else { return };
        t::on_end(&t::SpanData {
            span_context: open.context,
            parent_span_id: open.parent,
            span_kind: t::SpanKind::Internal,
            name: open.name,
            start_time: open.start,
            end_time: wall_clock::now(),
            attributes: open.attributes,
            events: Vec::new(),
            links: Vec::new(),
            status: open.status,
            instrumentation_scope: scope(),
            dropped_attributes: 0,
            dropped_events: 0,
            dropped_links: 0,
        });
    }
}

fn export(name: &str, unit: &str, data: m::MetricData) {
    let metrics = m::ResourceMetrics {
        resource: Resource {
            attributes: Vec::new(),
            schema_url: None,
        },
        scope_metrics: vec![m::ScopeMetrics {
            scope: scope(),
            metrics: vec![m::Metric {
                name: name.into(),
                description: String::new(),
                unit: unit.into(),
                data,
            }],
        }],
    };
    // A refusal (past the host's bounds) is the host's to count.
    let _ = m::export(&metrics);
}

/// Adds `value` to the counter `name` (a monotonic sum), for these
/// attributes (they become the series' labels: keep them few).
pub fn count(name: &str, value: u64, attributes: &[(&str, &str)]) {
    let now = wall_clock::now();
    export(
        name,
        "",
        m::MetricData::U64Sum(m::Sum {
            data_points: vec![m::SumDataPoint {
                attributes: key_values(attributes),
                value: m::MetricNumber::U64(value),
                exemplars: Vec::new(),
            }],
            start_time: now,
            time: now,
            temporality: m::Temporality::Delta,
            is_monotonic: true,
        }),
    );
}

/// Sets the gauge `name` to `value`.
pub fn gauge(name: &str, value: f64, attributes: &[(&str, &str)]) {
    export(
        name,
        "",
        m::MetricData::F64Gauge(m::Gauge {
            data_points: vec![m::GaugeDataPoint {
                attributes: key_values(attributes),
                value: m::MetricNumber::F64(value),
                exemplars: Vec::new(),
            }],
            start_time: None,
            time: wall_clock::now(),
        }),
    );
}

/// Bounds of `histogram_seconds`: 1 ms to 30 s.
pub const SECONDS_BOUNDS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Records one value of the histogram `name`, with these bucket bounds.
pub fn histogram(name: &str, value: f64, bounds: &[f64], attributes: &[(&str, &str)]) {
    let mut buckets = vec![0u64; bounds.len() + 1];
    buckets[bounds.iter().take_while(|b| value > **b).count()] = 1;
    let now = wall_clock::now();
    export(
        name,
        "",
        m::MetricData::F64Histogram(m::Histogram {
            data_points: vec![m::HistogramDataPoint {
                attributes: key_values(attributes),
                count: 1,
                bounds: bounds.to_vec(),
                bucket_counts: buckets,
                min: Some(m::MetricNumber::F64(value)),
                max: Some(m::MetricNumber::F64(value)),
                sum: m::MetricNumber::F64(value),
                exemplars: Vec::new(),
            }],
            start_time: now,
            time: now,
            temporality: m::Temporality::Delta,
        }),
    );
}

/// Records a duration in the histogram `name` (`SECONDS_BOUNDS`; as
/// Prometheus names them, a duration's name ends in `_seconds`).
pub fn histogram_seconds(name: &str, seconds: f64, attributes: &[(&str, &str)]) {
    histogram(name, seconds, SECONDS_BOUNDS, attributes);
}

/// A log record's level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// A line in the plugin's log (and the host's), at `level`, in the
/// request's trace.
pub fn log(level: Level, message: &str, attributes: &[(&str, &str)]) {
    let (number, text) = match level {
        Level::Debug => (5, "DEBUG"),
        Level::Info => (9, "INFO"),
        Level::Warn => (13, "WARN"),
        Level::Error => (17, "ERROR"),
    };
    crate::wasi::otel::logs::on_emit(&crate::wasi::otel::logs::LogRecord {
        timestamp: Some(wall_clock::now()),
        observed_timestamp: None,
        severity_text: Some(text.into()),
        severity_number: Some(number),
        body: Some(Value::from(message).json()),
        attributes: Some(key_values(attributes)),
        event_name: None,
        resource: None,
        instrumentation_scope: None,
        trace_id: None,
        span_id: None,
        trace_flags: None,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_json() {
        assert_eq!(Value::from("a\"b").json(), "\"a\\\"b\"");
        assert_eq!(Value::from(3u64).json(), "3");
        assert_eq!(Value::from(true).json(), "true");
        assert_eq!(Value::from(f64::NAN).json(), "\"NaN\"");
    }
}
