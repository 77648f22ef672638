//! What the tests of the `spike` binary share: a server process on port
//! 0 with its log lines, raw HTTP requests, and the built guests.

#![allow(dead_code)] // each test file uses its own part

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// `spike serve` on port 0, its stdout and stderr read line by line.
pub struct Spike {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    /// Every line read so far.
    seen: Vec<String>,
    /// The folder, when this server owns it.
    _dir: Option<tempfile::TempDir>,
}

impl Spike {
    /// With no plugins.
    pub fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
        let mut spike = Self::start_in(dir.path(), extra, &[]);
        spike._dir = Some(dir);
        spike
    }

    /// With the plugins in `dir/plugins` and the data in `dir/data`, and
    /// `env` added.
    pub fn start_in(dir: &std::path::Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = serve_command(dir);
        command
            .args(extra)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied());
        Self::spawn(command)
    }

    /// Runs `command` (a `spike` command line), its output read line by
    /// line.
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        forward_lines(child.stdout.take().unwrap(), tx.clone());
        forward_lines(stderr, tx);
        Self {
            child,
            lines,
            seen: Vec::new(),
            _dir: None,
        }
    }

    /// The next line that contains `needle`.
    pub fn line_with(&mut self, needle: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("no line with {needle:?}"));
            self.seen.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// The address from the "spike is serving" line of JSON logs.
    pub fn serving_addr(&mut self) -> String {
        let serving: serde_json::Value =
            serde_json::from_str(&self.line_with("spike is serving")).unwrap();
        serving["addr"].as_str().unwrap().to_string()
    }

    /// Stops the server; every line it wrote.
    pub fn stop(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut seen = std::mem::take(&mut self.seen);
        // The forwarding threads end with the pipes.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            seen.push(line);
        }
        seen
    }
}

/// `spike serve` on port 0, without watching, for the plugins in
/// `dir/plugins` and the data in `dir/data`.
pub fn serve_command(dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_spike"));
    command
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-watch",
            "--plugins",
        ])
        .arg(dir.join("plugins"))
        .arg("--data")
        .arg(dir.join("data"));
    command
}

/// Sends each line of `from` to `tx` until either ends.
fn forward_lines(from: impl Read + Send + 'static, tx: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
}

impl Drop for Spike {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A trace collector that keeps the raw bodies of what is exported to it
/// (`POST /v1/traces`, http/protobuf): a span's name is in them as its
/// bytes. Its base URL, and the bodies so far.
pub fn otlp_bodies() -> (String, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let kept = kept.clone();
            std::thread::spawn(move || keep_exports(stream, &kept));
        }
    });
    (url, bodies)
}

/// Reads HTTP requests on `stream` (kept alive), keeping their bodies.
fn keep_exports(stream: std::net::TcpStream, kept: &std::sync::Mutex<Vec<u8>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut length = 0;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        kept.lock().unwrap().extend_from_slice(&body);
        let answer =
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

pub fn get(addr: &str, path: &str) -> String {
    request(addr, "GET", path, "")
}

/// Waits until every plugin serves.
pub fn wait_ready(addr: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !get(addr, "/readyz").starts_with("HTTP/1.1 200") {
        assert!(std::time::Instant::now() < deadline, "not ready in 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The whole reply to `method path` with `headers` (CRLF-terminated lines).
pub fn request(addr: &str, method: &str, path: &str, headers: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 0\r\n{headers}\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    reply
}

/// A built guest component (`scripts/build-guests.sh` puts them beside the
/// binary's target folder).
pub fn guest(name: &str) -> std::path::PathBuf {
    let target = std::path::Path::new(env!("CARGO_BIN_EXE_spike"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf();
    let path = target.join(format!("wasm32-wasip2/guest/{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-guests.sh",
        path.display()
    );
    path
}
