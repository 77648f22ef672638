//! Telemetry from guests: `wasi:otel` 0.2.0-rc.2, the interface Spin and
//! wasmCloud link, so a component instrumented for them reports here too.
//!
//! - tracing: a guest's ended spans join the request's trace, children of
//!   its guest call span (`outer-span-context`), and go out with the
//!   host's (`spans`). A span of another trace (the request is not
//!   traced, or the guest made up its own) is dropped and counted.
//! - metrics: kept per plugin and served in `/metrics` with the plugin's
//!   label, `spike_guest_<name>` (`metrics`).
//! - logs: lines of the plugin's log (`spike plugins logs`), at their
//!   level.
//!
//! And `wasi:logging/logging@0.1.0-draft` (`wasi_logging`): its lines
//! join the same log, under the same bound.
//!
//! All of it is bounded per call (`Bounds`), so a guest cannot flood the
//! host: what is past a bound is dropped and counted
//! (`spike_guest_telemetry_dropped_total`). No grant is needed: what a
//! guest reports is about itself, and the operator decides what leaves
//! the machine.

mod logs;
pub mod metrics;
mod spans;
mod wasi_logging;

use opentelemetry::trace::SpanContext;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use wasmtime::component::{HasData, Linker};

use crate::bindings::wasi::otel;
use crate::metrics::KindLabels;
use crate::runtime::state::PluginContext;

/// What one call into a guest may report.
pub struct Bounds;

impl Bounds {
    pub const SPANS: u32 = 256;
    pub const LOGS: u32 = 200;
    /// Metric exports.
    pub const EXPORTS: u32 = 64;
    /// Points one export may carry.
    pub const POINTS: usize = 1024;
    pub const ATTRIBUTES: usize = 32;
    pub const EVENTS: usize = 32;
    pub const LINKS: usize = 8;
    /// Bytes of a name or attribute value kept; longer ones are cut.
    pub const TEXT: usize = 1024;
    /// Bytes of a log line kept.
    pub const LOG_LINE: usize = 8 * 1024;
}

/// One store's telemetry state: the guest call's span, and what the call
/// reported so far.
pub struct GuestTelemetry {
    /// The guest call span (`Span::none()` if the request is not
    /// traced), and its context once a guest asked for it: most guests
    /// never do, and looking it up costs.
    outer_span: tracing::Span,
    outer: Option<Option<SpanContext>>,
    spans: u32,
    logs: u32,
    exports: u32,
    /// The last value of each cumulative sum the instance reported: a kept
    /// instance reports its totals again, and only the difference counts.
    totals: metrics::Totals,
}

impl Default for GuestTelemetry {
    fn default() -> Self {
        Self {
            outer_span: tracing::Span::none(),
            outer: None,
            spans: 0,
            logs: 0,
            exports: 0,
            totals: metrics::Totals::default(),
        }
    }
}

impl GuestTelemetry {
    /// A new call into the guest, in `outer` (its guest call span).
    pub fn begin(&mut self, outer: tracing::Span) {
        self.outer_span = outer;
        self.outer = None;
        self.spans = 0;
        self.logs = 0;
        self.exports = 0;
    }
}

/// The view through which a guest reports.
pub struct OtelView<'a> {
    pub state: &'a mut GuestTelemetry,
    pub plugin: &'a PluginContext,
}

impl OtelView<'_> {
    /// The guest call span's context, if the request is traced.
    fn outer(&mut self) -> Option<SpanContext> {
        let state = &mut *self.state;
        (state.outer)
            .get_or_insert_with(|| crate::telemetry::span_context(&state.outer_span))
            .clone()
    }

    fn dropped(&self, what: &'static str, n: u64) {
        let metrics = &self.plugin.metrics;
        crate::metrics::Metrics::count(
            &metrics.host.guest_telemetry.dropped,
            &metrics.plugin,
            what,
            n,
        );
    }
}

impl otel::types::Host for OtelView<'_> {}

struct HasOtel;

impl HasData for HasOtel {
    type Data<'a> = OtelView<'a>;
}

/// Adds `wasi:otel` (types, tracing, metrics, logs) and `wasi:logging` to
/// the linker.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> OtelView<'_>,
) -> wasmtime::Result<()> {
    otel::types::add_to_linker::<T, HasOtel>(linker, view)?;
    otel::tracing::add_to_linker::<T, HasOtel>(linker, view)?;
    otel::metrics::add_to_linker::<T, HasOtel>(linker, view)?;
    otel::logs::add_to_linker::<T, HasOtel>(linker, view)?;
    crate::bindings::wasi::logging::logging::add_to_linker::<T, HasOtel>(linker, view)?;
    Ok(())
}

/// `text`, cut to at most `max` bytes on a character boundary.
fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

crate::metrics::series! {
    /// Guest telemetry's own series (the guests' metrics are
    /// `metrics::GuestMetrics`).
    pub struct GuestTelemetryMetrics {
        /// What guests reported and the host dropped, by kind: `span`
        /// (past the bound, or of another trace), `log`, `metric`.
        dropped: Family<KindLabels, Counter> = Family::default(),
            "guest_telemetry_dropped",
            "Guest spans, logs and metric points dropped (past a bound, or of another trace), by kind";
    }
}

/// A guest's attribute value (JSON, as `wasi:otel` encodes it) as an
/// OpenTelemetry value: strings, numbers, booleans and arrays of one of
/// them; anything else as its JSON text.
fn value(json: &str) -> opentelemetry::Value {
    use opentelemetry::{Array, StringValue, Value};
    let text = |s: &str| Value::String(StringValue::from(cut(s.to_owned(), Bounds::TEXT)));
    let Ok(parsed) = serde_json::from_str::<serde_json::Value>(json) else {
        return text(json);
    };
    match parsed {
        serde_json::Value::String(s) => text(&s),
        serde_json::Value::Bool(b) => Value::Bool(b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::I64(i),
            None => Value::F64(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::Array(items) => {
            if let Some(all) = items
                .iter()
                .map(serde_json::Value::as_bool)
                .collect::<Option<Vec<_>>>()
            {
                Value::Array(Array::Bool(all))
            } else if let Some(all) = items
                .iter()
                .map(serde_json::Value::as_i64)
                .collect::<Option<Vec<_>>>()
            {
                Value::Array(Array::I64(all))
            } else if let Some(all) = items
                .iter()
                .map(serde_json::Value::as_f64)
                .collect::<Option<Vec<_>>>()
            {
                Value::Array(Array::F64(all))
            } else if let Some(all) = items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(|s| StringValue::from(cut(s.to_owned(), Bounds::TEXT)))
                })
                .collect::<Option<Vec<_>>>()
            {
                Value::Array(Array::String(all))
            } else {
                text(json)
            }
        }
        _ => text(json),
    }
}

/// Attributes, at most `Bounds::ATTRIBUTES`, and how many were dropped.
fn attributes(list: Vec<otel::types::KeyValue>) -> (Vec<opentelemetry::KeyValue>, u32) {
    let dropped = list.len().saturating_sub(Bounds::ATTRIBUTES) as u32;
    let kept = (list.into_iter().take(Bounds::ATTRIBUTES))
        .map(|kv| opentelemetry::KeyValue::new(cut(kv.key, Bounds::TEXT), value(&kv.value)))
        .collect();
    (kept, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_values_become_typed_values() {
        use opentelemetry::{Array, Value};
        assert_eq!(value("\"gpt-4o\""), Value::from("gpt-4o"));
        assert_eq!(value("42"), Value::I64(42));
        assert_eq!(value("0.5"), Value::F64(0.5));
        assert_eq!(value("true"), Value::Bool(true));
        assert_eq!(value("[1,2]"), Value::Array(Array::I64(vec![1, 2])));
        assert_eq!(value("not json"), Value::from("not json"));
        assert_eq!(value("{\"a\":1}"), Value::from("{\"a\":1}"));
        let long = format!("\"{}\"", "é".repeat(Bounds::TEXT));
        let Value::String(cut) = value(&long) else {
            panic!()
        };
        assert!(cut.as_str().len() <= Bounds::TEXT);
    }
}
