//! Where `spike serve` writes its log: stdout, in batches.
//!
//! One line per request written straight to stdout cost a `write` system
//! call per request, about a tenth of the server's CPU on the hello
//! benchmark. Instead, each line is appended to a shared buffer and a
//! thread of its own writes the buffer out: every `FLUSH_EVERY`, at once
//! for a warning or an error or when the buffer passes `FLUSH_AT`, and
//! when the sink's guard drops at exit. A line thus reaches stdout at most
//! `FLUSH_EVERY` late, and a `kill -9` can lose that much of the log.
//!
//! A reader that stops reading stdout no longer stalls the server: past
//! `MAX_BUFFERED` bytes, lines are dropped, and the next batch says how
//! many.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

use crate::util::unpoisoned;

/// The longest a line waits in the buffer.
const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// A buffer this full is written at once.
const FLUSH_AT: usize = 64 << 10;
/// Beyond this, stdout is not keeping up: lines are dropped.
const MAX_BUFFERED: usize = 16 << 20;

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    dropped: u64,
    /// Write now rather than at the next tick.
    urgent: bool,
    closing: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
}

/// The `MakeWriter` of the log: lines go to the buffer.
#[derive(Clone)]
pub struct LogSink {
    shared: Arc<Shared>,
}

/// Writes what is left when dropped (keep it until `main` returns).
pub struct FlushOnDrop {
    shared: Arc<Shared>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl LogSink {
    /// A sink over stdout and the thread that writes it.
    pub fn stdout() -> (Self, FlushOnDrop) {
        Self::new(std::io::stdout())
    }

    fn new(mut out: impl Write + Send + 'static) -> (Self, FlushOnDrop) {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
        });
        let writing = shared.clone();
        let writer = std::thread::Builder::new()
            .name("spike-log".into())
            .spawn(move || {
                let mut batch = Vec::new();
                loop {
                    let closing = {
                        let mut pending = unpoisoned(writing.pending.lock());
                        if !pending.urgent && !pending.closing {
                            pending = unpoisoned(writing.wake.wait_timeout(pending, FLUSH_EVERY)).0;
                        }
                        pending.urgent = false;
                        std::mem::swap(&mut batch, &mut pending.bytes);
                        if pending.dropped > 0 {
                            let note = format!(
                                "spike: {} log lines dropped: stdout was not read fast enough\n",
                                std::mem::take(&mut pending.dropped)
                            );
                            batch.extend_from_slice(note.as_bytes());
                        }
                        pending.closing
                    };
                    if !batch.is_empty() {
                        // Nowhere to report a failing stdout: the lines are lost.
                        let _ = out.write_all(&batch).and_then(|()| out.flush());
                        batch.clear();
                    }
                    if closing {
                        return;
                    }
                }
            })
            .expect("spawning the log writer thread");
        (
            Self {
                shared: shared.clone(),
            },
            FlushOnDrop {
                shared,
                writer: Some(writer),
            },
        )
    }

    fn append(&self, line: &[u8], urgent: bool) {
        let mut pending = unpoisoned(self.shared.pending.lock());
        if pending.bytes.len() + line.len() > MAX_BUFFERED {
            pending.dropped += 1;
            return;
        }
        pending.bytes.extend_from_slice(line);
        if urgent || pending.bytes.len() >= FLUSH_AT {
            pending.urgent = true;
            drop(pending);
            self.shared.wake.notify_one();
        }
    }
}

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        unpoisoned(self.shared.pending.lock()).closing = true;
        self.shared.wake.notify_one();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// One log line's writer (the formatter writes each line with one
/// `write_all`).
pub struct LineWriter<'a> {
    sink: &'a LogSink,
    urgent: bool,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.sink.append(buf, self.urgent);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogSink {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            sink: self,
            urgent: false,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        LineWriter {
            sink: self,
            // `Level` orders ERROR < WARN < INFO.
            urgent: *meta.level() <= Level::WARN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stdout that keeps what it gets.
    #[derive(Clone, Default)]
    struct Kept(Arc<Mutex<Vec<u8>>>);

    impl Write for Kept {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn text(kept: &Kept) -> String {
        String::from_utf8(kept.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn lines_arrive_in_order_within_a_tick_and_all_at_exit() {
        let kept = Kept::default();
        let (sink, guard) = LogSink::new(kept.clone());
        sink.make_writer().write_all(b"one\n").unwrap();
        sink.make_writer().write_all(b"two\n").unwrap();
        std::thread::sleep(FLUSH_EVERY * 4);
        assert_eq!(text(&kept), "one\ntwo\n");
        sink.make_writer().write_all(b"three\n").unwrap();
        drop(guard);
        assert_eq!(text(&kept), "one\ntwo\nthree\n");
    }

    #[test]
    fn a_warning_is_written_at_once() {
        let kept = Kept::default();
        let (sink, _guard) = LogSink::new(kept.clone());
        // The writer thread is waiting out its tick: an urgent line wakes it.
        std::thread::sleep(Duration::from_millis(5));
        LineWriter {
            sink: &sink,
            urgent: true,
        }
        .write_all(b"warn\n")
        .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(text(&kept), "warn\n");
    }

    #[test]
    fn a_stdout_that_is_not_read_costs_lines_not_the_server() {
        /// A stdout blocked until released.
        struct Blocked(Arc<(Mutex<bool>, Condvar)>, Kept);
        impl Write for Blocked {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let (open, cv) = &*self.0;
                let mut open = open.lock().unwrap();
                while !*open {
                    open = cv.wait(open).unwrap();
                }
                self.1.write(buf)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let kept = Kept::default();
        let (sink, guard) = LogSink::new(Blocked(gate.clone(), kept.clone()));
        let line = vec![b'x'; 1023];
        // Twice what the buffer holds: whatever the writer took before it
        // blocked, lines must be dropped.
        let lines = 2 * MAX_BUFFERED / 1024;
        for _ in 0..lines {
            let mut l = line.clone();
            l.push(b'\n');
            sink.make_writer().write_all(&l).unwrap();
        }
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        drop(guard);
        let out = text(&kept);
        let written = out.lines().filter(|l| l.starts_with('x')).count();
        assert!(written < lines, "{written} of {lines}");
        assert!(
            out.contains("log lines dropped: stdout was not read fast enough"),
            "no note of the dropped lines"
        );
    }
}
