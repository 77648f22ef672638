//! `wasi:otel/tracing`: a guest's spans, into the request's trace.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use opentelemetry::InstrumentationScope;
use opentelemetry::trace::{
    Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use super::{Bounds, OtelView, attributes, cut};
use crate::bindings::wasi::otel::tracing as wit;
use wasmtime_wasi::p2::bindings::clocks::wall_clock::Datetime;

impl wit::Host for OtelView<'_> {
    fn on_start(&mut self, _context: wit::SpanContext) -> wasmtime::Result<()> {
        // Spans are taken when they end, whole.
        Ok(())
    }

    fn on_end(&mut self, span: wit::SpanData) -> wasmtime::Result<()> {
        let Some(outer) = self.outer() else {
            self.dropped("span", 1);
            return Ok(());
        };
        if self.state.spans >= Bounds::SPANS {
            self.dropped("span", 1);
            return Ok(());
        }
        match convert(span, &outer) {
            Some(data) => {
                self.state.spans += 1;
                crate::telemetry::export_span(data);
            }
            None => self.dropped("span", 1),
        }
        Ok(())
    }

    fn outer_span_context(&mut self) -> wasmtime::Result<wit::SpanContext> {
        Ok(match &self.outer() {
            Some(outer) => to_wit(outer),
            // No trace to join: an invalid context, as the proposal's own
            // SDKs read it.
            None => wit::SpanContext {
                trace_id: TraceId::INVALID.to_string(),
                span_id: SpanId::INVALID.to_string(),
                trace_flags: wit::TraceFlags::empty(),
                is_remote: false,
                trace_state: Vec::new(),
            },
        })
    }
}

fn to_wit(cx: &SpanContext) -> wit::SpanContext {
    let mut flags = wit::TraceFlags::empty();
    if cx.is_sampled() {
        flags |= wit::TraceFlags::SAMPLED;
    }
    wit::SpanContext {
        trace_id: cx.trace_id().to_string(),
        span_id: cx.span_id().to_string(),
        trace_flags: flags,
        // The guest's parent is the host's span: remote to the guest's
        // SDK, which then takes it as a parent and not as its own.
        is_remote: true,
        trace_state: Vec::new(),
    }
}

/// The guest's span as the exporter takes it, if it belongs to the trace
/// of `outer` and its ids are well formed.
fn convert(span: wit::SpanData, outer: &SpanContext) -> Option<SpanData> {
    let cx = context(&span.span_context)?;
    if cx.trace_id() != outer.trace_id() || cx.span_id() == outer.span_id() {
        return None;
    }
    let parent = SpanId::from_hex(&span.parent_span_id).unwrap_or(SpanId::INVALID);
    // A span the guest made a root would start a trace of its own inside
    // this one: it hangs under the guest call instead.
    let parent = if parent == SpanId::INVALID {
        outer.span_id()
    } else {
        parent
    };
    let (attrs, dropped_attributes) = attributes(span.attributes);
    let mut events = SpanEvents::default();
    events.dropped_count = (span.events.len().saturating_sub(Bounds::EVENTS) as u32)
        .saturating_add(span.dropped_events);
    events.events = (span.events.into_iter().take(Bounds::EVENTS))
        .map(|e| {
            let (attrs, dropped) = attributes(e.attributes);
            Event::new(cut(e.name, Bounds::TEXT), time(e.time), attrs, dropped)
        })
        .collect();
    let mut links = SpanLinks::default();
    links.dropped_count =
        (span.links.len().saturating_sub(Bounds::LINKS) as u32).saturating_add(span.dropped_links);
    links.links = (span.links.into_iter().take(Bounds::LINKS))
        .filter_map(|l| {
            let (attrs, dropped) = attributes(l.attributes);
            Some(Link::new(context(&l.span_context)?, attrs, dropped))
        })
        .collect();
    let scope = span.instrumentation_scope;
    let mut scope_builder = InstrumentationScope::builder(cut(scope.name, Bounds::TEXT));
    if let Some(version) = scope.version {
        scope_builder = scope_builder.with_version(cut(version, Bounds::TEXT));
    }
    Some(SpanData {
        span_context: SpanContext::new(
            cx.trace_id(),
            cx.span_id(),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: parent,
        parent_span_is_remote: parent == outer.span_id(),
        span_kind: kind(span.span_kind),
        name: Cow::Owned(cut(span.name, Bounds::TEXT)),
        start_time: time(span.start_time),
        end_time: time(span.end_time),
        attributes: attrs,
        dropped_attributes_count: dropped_attributes.saturating_add(span.dropped_attributes),
        events,
        links,
        status: match span.status {
            wit::Status::Unset => Status::Unset,
            wit::Status::Ok => Status::Ok,
            wit::Status::Error(m) => Status::error(cut(m, Bounds::TEXT)),
        },
        instrumentation_scope: scope_builder.build(),
    })
}

fn context(cx: &wit::SpanContext) -> Option<SpanContext> {
    let trace = TraceId::from_hex(&cx.trace_id).ok()?;
    let span = SpanId::from_hex(&cx.span_id).ok()?;
    let cx = SpanContext::new(
        trace,
        span,
        TraceFlags::SAMPLED,
        false,
        TraceState::default(),
    );
    cx.is_valid().then_some(cx)
}

fn kind(kind: wit::SpanKind) -> SpanKind {
    match kind {
        wit::SpanKind::Client => SpanKind::Client,
        wit::SpanKind::Server => SpanKind::Server,
        wit::SpanKind::Producer => SpanKind::Producer,
        wit::SpanKind::Consumer => SpanKind::Consumer,
        wit::SpanKind::Internal => SpanKind::Internal,
    }
}

fn time(t: Datetime) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::new(t.seconds, t.nanoseconds.min(999_999_999))
}
