//! `wasi:logging/logging@0.1.0-draft`: a guest's `log(level, context,
//! message)` as a line of its plugin's log, `context: message` at its
//! level (`critical` is logged as an error, the most tracing has, and keeps
//! its name in the line), bounded as `wasi:otel`'s log records are.

use super::{Bounds, OtelView};
use crate::bindings::wasi::logging::logging::{Host, Level};

impl Host for OtelView<'_> {
    fn log(&mut self, level: Level, context: String, message: String) -> wasmtime::Result<()> {
        if self.state.logs >= Bounds::LOGS {
            self.dropped("log", 1);
            return Ok(());
        }
        self.state.logs += 1;
        let (level, critical) = match level {
            Level::Trace => (tracing::Level::TRACE, false),
            Level::Debug => (tracing::Level::DEBUG, false),
            Level::Info => (tracing::Level::INFO, false),
            Level::Warn => (tracing::Level::WARN, false),
            Level::Error => (tracing::Level::ERROR, false),
            Level::Critical => (tracing::Level::ERROR, true),
        };
        let mut line = String::with_capacity(context.len() + message.len() + 12);
        if critical {
            line.push_str("CRITICAL ");
        }
        if !context.is_empty() {
            line.push_str(&context);
            line.push_str(": ");
        }
        line.push_str(&message);
        self.log_line(level, "wasi:logging", line);
        Ok(())
    }
}
