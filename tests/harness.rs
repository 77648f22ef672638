//! What every end-to-end test shares: the built guest components, a real
//! spike server on 127.0.0.1:0 with plugins in a temporary folder, an HTTP
//! client, and a timeout around every await.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use spike::{RunningServer, ServerConfig};

pub mod ai_server;
pub mod cluster;
pub mod fake_ai;
pub mod livestore_wire;
pub mod node;
pub mod npm_registry;
pub mod otlp;
pub mod pebble;
pub mod process;
pub mod render_pages;
pub mod rooms;
pub mod soak;
pub mod tls;
pub mod tokens;
pub mod yjs_wire;

/// The operator token test servers use.
pub const ADMIN_TOKEN: &str = "test-operator-token";

/// Default time any single await in a test may take.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Awaits `fut`, failing the test if it takes longer than `TIMEOUT`.
pub async fn within<T>(fut: impl Future<Output = T>) -> T {
    within_for(TIMEOUT, fut).await
}

/// Awaits `fut`, failing the test if it takes longer than `limit`.
pub async fn within_for<T>(limit: Duration, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?}"),
    }
}

/// The target directory: a test binary lives in `<target>/debug/deps/`,
/// this crate's binaries (`soak`, `fake-ai`) in `<target>/release/`.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile = exe.ancestors().find(|dir| {
        dir.file_name()
            .is_some_and(|name| name == "debug" || name == "release")
    });
    let target = profile.and_then(|dir| dir.parent());
    target.expect("the target directory").to_path_buf()
}

/// The built component `name` (e.g. `hello`, `fixture_loop`).
pub fn guest(name: &str) -> PathBuf {
    let path = target_dir()
        .join("wasm32-wasip2/guest")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: build the guests with scripts/build-guests.sh (./dev.sh test does)",
        path.display()
    );
    path
}

/// A plugin for a test server: its name, the guest it runs (none: `""`,
/// for a plugin that only declares rooms), and the rest of its manifest
/// (routes, rooms, grants, limits) as TOML.
#[derive(Clone, Copy)]
pub struct Plugin<'a> {
    pub name: &'a str,
    pub guest: &'a str,
    pub manifest: &'a str,
}

/// The hello plugin as `plugins/hello.toml` grants it, with anonymous
/// writes (the shipped manifest asks for a signed-in caller).
pub const HELLO: Plugin = Plugin {
    name: "hello",
    guest: "hello",
    manifest: "[[routes]]\nprefix = \"/hello\"\n[grants]\nkv = [\"hello\"]\nblob = [\"hello-files\"]\n\
               [env]\nWRITE_ACCESS = \"anyone\"\n",
};

/// A running test server with its folders.
pub struct TestServer {
    pub url: String,
    pub plugins_dir: PathBuf,
    pub data_dir: PathBuf,
    config: ServerConfig,
    server: Option<RunningServer>,
    _dir: tempfile::TempDir,
}

/// Logs to the test's output (shown when a test fails), and keeps them for
/// [`captured_logs`]. `RUST_LOG` overrides.
pub fn init_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn,spike=info".into()),
            )
            .with_writer(|| LogTee)
            .try_init();
    });
}

/// The log of this test process so far (the last 32 MiB at most), to
/// check what a server wrote, e.g. that a secret never appears in it.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}

static LOGS: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

/// Writes log lines to the test's output (as `print!` does, so the test
/// harness captures them) and to [`LOGS`].
struct LogTee;

impl std::io::Write for LogTee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        const MAX: usize = 32 << 20;
        let mut logs = LOGS.lock().unwrap();
        if logs.len() + buf.len() > MAX {
            let drop = (logs.len() + buf.len() - MAX).min(logs.len());
            logs.drain(..drop);
        }
        logs.extend_from_slice(buf);
        print!("{}", String::from_utf8_lossy(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes `plugins` (components and manifests) into `dir`.
pub fn write_plugins(dir: &Path, plugins: &[Plugin<'_>]) {
    std::fs::create_dir_all(dir).unwrap();
    for p in plugins {
        let manifest = if p.guest.is_empty() {
            format!("{}\n", p.manifest)
        } else {
            let wasm = format!("{}.wasm", p.name);
            std::fs::copy(guest(p.guest), dir.join(&wasm)).unwrap();
            format!("component = \"{wasm}\"\n{}\n", p.manifest)
        };
        std::fs::write(dir.join(format!("{}.toml", p.name)), manifest).unwrap();
    }
}

/// The configuration tests use: port 0, an operator token, a small pool.
pub fn test_config(plugins_dir: &Path, data_dir: &Path) -> ServerConfig {
    let mut config = ServerConfig::new(plugins_dir, data_dir);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.admin_token = Some(ADMIN_TOKEN.into());
    // Several servers run at once in one test process: keep each pool's
    // address-space reservation modest.
    config.pool.max_instances = 128;
    config.kv_sweep_interval = Duration::from_millis(100);
    config
}

impl TestServer {
    /// Starts a server serving `plugins`.
    pub async fn start(plugins: &[Plugin<'_>]) -> Self {
        Self::start_with(plugins, |_| {}).await
    }

    /// Starts a server serving `plugins`, with `configure` applied to the
    /// test configuration (and again on every restart).
    pub async fn start_with(
        plugins: &[Plugin<'_>],
        configure: impl FnOnce(&mut ServerConfig),
    ) -> Self {
        init_logging();
        let dir = tempfile::tempdir().unwrap();
        let plugins_dir = dir.path().join("plugins");
        let data_dir = dir.path().join("data");
        write_plugins(&plugins_dir, plugins);
        let mut config = test_config(&plugins_dir, &data_dir);
        configure(&mut config);
        let server = within(spike::start(config.clone()))
            .await
            .expect("server starts");
        within(server.ready()).await;
        Self {
            url: format!("http://{}", server.addr),
            plugins_dir,
            data_dir,
            config,
            server: Some(server),
            _dir: dir,
        }
    }

    /// The address the server listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.server().addr
    }

    /// Waits until plugin `name` has `n` requests in flight.
    pub async fn wait_in_flight(&self, name: &str, n: u64) {
        within_for(Duration::from_secs(10), async {
            while self.plugin_status(name).await["in_flight"] != n {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }

    /// What `GET /_spike/plugins` says of plugin `name`.
    pub async fn plugin_status(&self, name: &str) -> serde_json::Value {
        let (status, list) = send_json(
            client()
                .get(self.at("/_spike/plugins"))
                .bearer_auth(ADMIN_TOKEN),
        )
        .await;
        assert_eq!(status, 200, "{list}");
        list["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no plugin {name} in {list}"))
            .clone()
    }

    /// The admin metrics, as text.
    pub async fn metrics_text(&self) -> String {
        let (status, text) = send(
            client()
                .get(self.at("/_spike/metrics"))
                .bearer_auth(ADMIN_TOKEN),
        )
        .await;
        assert_eq!(status, 200, "{text}");
        text
    }

    /// The URL of `path` on this server.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Stops the server (releasing its database) and starts it again on the
    /// same folders.
    pub async fn restart(&mut self) {
        self.stop().await;
        let server = within(spike::start(self.config.clone()))
            .await
            .expect("server restarts");
        within(server.ready()).await;
        self.url = format!("http://{}", server.addr);
        self.server = Some(server);
    }

    /// Stops the server; the folders stay until `self` drops.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            within(server.stop()).await;
        }
    }

    /// The running server (to reach its registry).
    pub fn server(&self) -> &RunningServer {
        self.server.as_ref().expect("server is running")
    }
}

/// An HTTP client with a timeout on every request.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(TIMEOUT).build().unwrap()
}

/// Sends `req`, under the timeout, and returns the status and body text.
pub async fn send(req: reqwest::RequestBuilder) -> (u16, String) {
    let resp = within(req.send()).await.expect("request sent");
    let status = resp.status().as_u16();
    let text = within(resp.text()).await.expect("body read");
    (status, text)
}

/// Sends `req` and parses the body as JSON.
pub async fn send_json(req: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    let (status, text) = send(req).await;
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, json)
}

/// The `error.code` of a JSON error body.
pub fn error_code(body: &serde_json::Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {body}"))
}

/// A response read off a raw connection.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Opens a plain TCP connection, for what an HTTP client library will not
/// send (broken headers, bodies that stall) or not wait for.
pub async fn raw_connect(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    within(tokio::net::TcpStream::connect(addr))
        .await
        .expect("connects")
}

/// Reads one response (head, then a body framed by `content-length`, or to
/// the end of the connection) within `limit`.
pub async fn read_response(stream: &mut tokio::net::TcpStream, limit: Duration) -> RawResponse {
    use tokio::io::AsyncReadExt;
    within_for(limit, async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            let n = stream.read(&mut chunk).await.expect("reading a response");
            assert!(
                n > 0,
                "connection closed before a response: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut body = buf[head_end + 4..].to_vec();
        let length = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok());
        // 1xx responses have no body.
        if status >= 200 {
            loop {
                if length.is_some_and(|l| body.len() >= l) {
                    break;
                }
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => body.extend_from_slice(&chunk[..n]),
                }
            }
        }
        RawResponse {
            status,
            headers,
            body,
        }
    })
    .await
}

/// Waits until the server closes `stream` (a read ends or fails), reading
/// and dropping whatever comes; returns how long that took, or `None` if it
/// stayed open for `limit`.
pub async fn closed_within(
    stream: &mut tokio::net::TcpStream,
    limit: Duration,
) -> Option<Duration> {
    use tokio::io::AsyncReadExt;
    let start = std::time::Instant::now();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
    .map(|()| start.elapsed())
}

/// Samples a process's resident memory every 10 ms from creation until
/// `growth` is asked, and reports the peak above the starting point.
pub struct RssWatch {
    pid: String,
    baseline: u64,
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    sampler: tokio::task::JoinHandle<()>,
}

impl RssWatch {
    /// This process's (server and test client together).
    pub fn start() -> Self {
        Self::of("self".into())
    }

    /// Process `pid`'s (a `SpikeProcess`, alone).
    pub fn of(pid: String) -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        let baseline = rss_bytes_of(&pid);
        let peak = std::sync::Arc::new(AtomicU64::new(baseline));
        let sampling = peak.clone();
        let sampled = pid.clone();
        let sampler = tokio::spawn(async move {
            loop {
                sampling.fetch_max(rss_bytes_of(&sampled), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        Self {
            pid,
            baseline,
            peak,
            sampler,
        }
    }

    /// The peak growth in bytes so far.
    pub fn peak_growth(&self) -> u64 {
        self.peak
            .load(std::sync::atomic::Ordering::Relaxed)
            .max(rss_bytes_of(&self.pid))
            .saturating_sub(self.baseline)
    }

    /// Stops sampling; the peak growth in bytes.
    pub fn growth(self) -> u64 {
        self.sampler.abort();
        self.peak_growth()
    }
}

/// The resident memory of this process (server and test client together).
pub fn rss_bytes() -> u64 {
    rss_bytes_of("self")
}

/// The resident set size of process `pid` (`"self"`: this one).
pub fn rss_bytes_of(pid: &str) -> u64 {
    try_rss_bytes_of(pid).unwrap_or_else(|| panic!("no resident size for process {pid}"))
}

/// The resident set size of process `pid`, if it (still) has one.
pub fn try_rss_bytes_of(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())?;
    Some(kb * 1024)
}

/// `s` percent-encoded as `encodeURIComponent` does, but for `!'()*` too:
/// every byte but letters, digits and `-_.~`.
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
