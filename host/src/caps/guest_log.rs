//! What guests print: their stdout and stderr go to the host's log line by
//! line with the plugin's name, and to the plugin's feed, which keeps the
//! last `KEPT` lines and hands new ones to whoever follows it
//! (`GET /_spike/plugins/{name}/logs`, `spike plugins logs`).

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use serde::Serialize;
use tokio::sync::broadcast;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use super::PluginCaps;

/// Lines a feed keeps for someone who starts reading it.
pub const KEPT: usize = 200;

/// Lines a follower may fall behind before it misses some.
const BACKLOG: usize = 1024;

/// Longest line kept before it is logged in pieces.
const MAX_LOG_LINE: usize = 8 * 1024;

/// One line a guest printed.
#[derive(Debug, Clone, Serialize)]
pub struct LogLine {
    /// Wall clock, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// `stdout` or `stderr`.
    pub stream: &'static str,
    pub line: String,
}

/// One plugin's lines, across its versions.
pub struct LogFeed {
    kept: Mutex<VecDeque<Arc<LogLine>>>,
    live: broadcast::Sender<Arc<LogLine>>,
}

impl LogFeed {
    fn new() -> Self {
        Self {
            kept: Mutex::new(VecDeque::with_capacity(KEPT)),
            live: broadcast::channel(BACKLOG).0,
        }
    }

    pub(crate) fn push(&self, line: LogLine) {
        let line = Arc::new(line);
        let mut kept = self.kept.lock().expect("log feed lock");
        if kept.len() == KEPT {
            kept.pop_front();
        }
        kept.push_back(line.clone());
        // Sent under the lock, so that a reader that takes the kept lines
        // and subscribes under it misses none and sees none twice.
        let _ = self.live.send(line);
    }

    /// The lines kept so far, and the ones to come.
    pub fn read(&self) -> (Vec<Arc<LogLine>>, broadcast::Receiver<Arc<LogLine>>) {
        let kept = self.kept.lock().expect("log feed lock");
        (kept.iter().cloned().collect(), self.live.subscribe())
    }
}

/// Every plugin's feed, by name.
#[derive(Default)]
pub struct LogFeeds(Mutex<HashMap<Arc<str>, Arc<LogFeed>>>);

impl LogFeeds {
    /// Plugin `name`'s feed, made on first use.
    pub fn feed(&self, name: &Arc<str>) -> Arc<LogFeed> {
        let mut feeds = self.0.lock().expect("log feeds lock");
        feeds
            .entry(name.clone())
            .or_insert_with(|| Arc::new(LogFeed::new()))
            .clone()
    }
}

/// A guest's stdout or stderr.
pub struct GuestLog {
    plugin: Arc<str>,
    feed: Arc<LogFeed>,
    stream: &'static str,
}

impl GuestLog {
    pub fn new(caps: &PluginCaps, stream: &'static str) -> Self {
        Self {
            plugin: caps.name.clone(),
            feed: caps.log_feed.clone(),
            stream,
        }
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(LineLogger {
            plugin: self.plugin.clone(),
            feed: self.feed.clone(),
            stream: self.stream,
            line: Vec::new(),
        })
    }
}

struct LineLogger {
    plugin: Arc<str>,
    feed: Arc<LogFeed>,
    stream: &'static str,
    line: Vec<u8>,
}

impl LineLogger {
    fn emit(&mut self) {
        if !self.line.is_empty() {
            let text = String::from_utf8_lossy(&self.line).trim_end().to_owned();
            tracing::info!(plugin = %self.plugin, stream = self.stream, "{text}");
            self.feed.push(LogLine {
                at_ms: crate::util::now_ms(),
                stream: self.stream,
                line: text,
            });
            self.line.clear();
        }
    }
}

impl tokio::io::AsyncWrite for LineLogger {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        for &b in buf {
            if b == b'\n' {
                self.emit();
            } else {
                self.line.push(b);
                if self.line.len() >= MAX_LOG_LINE {
                    self.emit();
                }
            }
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.emit();
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineLogger {
    fn drop(&mut self) {
        self.emit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_feed_keeps_the_last_lines_and_hands_on_new_ones() {
        let feed = LogFeed::new();
        for i in 0..KEPT + 5 {
            feed.push(LogLine {
                at_ms: 0,
                stream: "stdout",
                line: format!("line {i}"),
            });
        }
        let (kept, mut live) = feed.read();
        assert_eq!(kept.len(), KEPT);
        assert_eq!(kept[0].line, "line 5");
        feed.push(LogLine {
            at_ms: 0,
            stream: "stderr",
            line: "after".into(),
        });
        assert_eq!(live.try_recv().unwrap().line, "after");
    }
}
