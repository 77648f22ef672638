//! `wasi:otel/logs`: a guest's log records, as lines of its plugin's log
//! (`spike plugins logs`) and of the host's, at their level.

use super::{Bounds, OtelView, cut};
use crate::bindings::wasi::otel::logs as wit;

impl wit::Host for OtelView<'_> {
    fn on_emit(&mut self, record: wit::LogRecord) -> wasmtime::Result<()> {
        if self.state.logs >= Bounds::LOGS {
            self.dropped("log", 1);
            return Ok(());
        }
        self.state.logs += 1;
        let level = level(record.severity_number);
        let mut line = match record.body.as_deref().map(super::value) {
            Some(opentelemetry::Value::String(s)) => s.to_string(),
            Some(other) => other.to_string(),
            None => record.event_name.clone().unwrap_or_default(),
        };
        for kv in record
            .attributes
            .unwrap_or_default()
            .into_iter()
            .take(Bounds::ATTRIBUTES)
        {
            line.push_str(&format!(" {}={}", kv.key, super::value(&kv.value)));
        }
        self.log_line(level, "otel", line);
        Ok(())
    }
}

impl OtelView<'_> {
    /// One line of the guest's log, at `level`, to the host's log and the
    /// plugin's feed (`stream` says which interface it came by). The caller
    /// has counted it against `Bounds::LOGS`.
    pub(super) fn log_line(&self, level: tracing::Level, stream: &'static str, line: String) {
        let line = cut(line, Bounds::LOG_LINE);
        let plugin = &self.plugin.metrics.plugin;
        match level {
            tracing::Level::ERROR => tracing::error!(%plugin, "{line}"),
            tracing::Level::WARN => tracing::warn!(%plugin, "{line}"),
            tracing::Level::INFO => tracing::info!(%plugin, "{line}"),
            tracing::Level::DEBUG => tracing::debug!(%plugin, "{line}"),
            _ => tracing::trace!(%plugin, "{line}"),
        }
        let line = format!("{} {line}", level.as_str());
        self.plugin
            .caps
            .log_feed
            .push(crate::caps::guest_log::LogLine {
                at_ms: crate::util::now_ms(),
                stream,
                line,
            });
    }
}

/// OpenTelemetry's severity numbers (1 to 24) as levels; info when absent.
fn level(severity: Option<u8>) -> tracing::Level {
    match severity.unwrap_or(9) {
        0..=4 => tracing::Level::TRACE,
        5..=8 => tracing::Level::DEBUG,
        9..=12 => tracing::Level::INFO,
        13..=16 => tracing::Level::WARN,
        _ => tracing::Level::ERROR,
    }
}
