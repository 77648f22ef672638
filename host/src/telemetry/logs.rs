//! Trace and span ids in JSON log lines, so that a line logged inside a
//! traced request leads to its trace.

use std::fmt;

use opentelemetry::trace::TraceContextExt;
use tracing::{Event, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// A JSON event format with `trace_id` and `span_id` first in the lines
/// logged inside a traced request.
pub struct WithTraceIds<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Some((trace, span)) = current_ids() else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(
                writer,
                "{{\"trace_id\":\"{trace}\",\"span_id\":\"{span}\",{rest}"
            ),
            None => writer.write_str(&line),
        }
    }
}

/// The ids of the traced span the code runs in, if any.
fn current_ids() -> Option<(opentelemetry::trace::TraceId, opentelemetry::trace::SpanId)> {
    if !super::traced_here() {
        return None;
    }
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let span = span.span_context();
    span.is_valid().then(|| (span.trace_id(), span.span_id()))
}
