//! The `spike` binary's logs: one JSON object per line with
//! `--log-format json`, and no colour codes when stdout is not a terminal.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// `spike serve` on port 0 with no plugins, its stdout read line by line.
struct Spike {
    child: Child,
    lines: mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

impl Spike {
    fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let plugins = dir.path().join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_spike"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--no-watch",
                "--plugins",
            ])
            .arg(&plugins)
            .arg("--data")
            .arg(dir.path().join("data"))
            .args(extra)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            lines,
            _dir: dir,
        }
    }

    /// The next line that contains `needle`.
    fn line_with(&self, needle: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("no line with {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    }
}

impl Drop for Spike {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn get(addr: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    reply
}

#[test]
fn json_logs_are_one_object_per_line() {
    let spike = Spike::start(&["--log-format", "json"]);
    let serving: serde_json::Value =
        serde_json::from_str(&spike.line_with("spike is serving")).unwrap();
    let addr = serving["addr"].as_str().unwrap().to_string();
    let reply = get(&addr, "/healthz");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let id = reply
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .expect("a request id")
        .to_string();
    let line = spike.line_with("\"request\"");
    let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["message"], "request");
    assert_eq!(entry["method"], "GET");
    assert_eq!(entry["path"], "/healthz");
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["request_id"].to_string(), id);
    assert!(entry["latency_us"].is_u64(), "{entry}");
}

#[test]
fn text_logs_have_no_colour_codes_off_a_terminal() {
    let spike = Spike::start(&[]);
    let line = spike.line_with("spike is serving");
    assert!(!line.contains('\u{1b}'), "{line:?}");
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .unwrap()
        .to_string();
    get(&addr, "/healthz");
    let line = spike.line_with("request");
    assert!(!line.contains('\u{1b}'), "{line:?}");
    assert!(line.contains("path=/healthz"), "{line}");
}
