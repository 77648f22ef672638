//! A `spike serve` process of the debug binary, on a loopback port of its
//! own, that a test can kill (`kill -9`), pause, stop with SIGTERM and
//! start again on the same port and data, as a real machine would see.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::{ADMIN_TOKEN, client, target_dir, within_for};

/// One spike process.
pub struct SpikeProcess {
    pub name: String,
    pub url: String,
    pub addr: std::net::SocketAddr,
    child: Option<Child>,
    log: PathBuf,
    command: Vec<String>,
    env: Vec<(String, String)>,
    /// The debug build's, unless set.
    binary: Option<PathBuf>,
}

/// The debug `spike` binary (`./dev.sh test` builds it before the tests).
fn spike_binary() -> PathBuf {
    let path = target_dir().join("debug/spike");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p spike` (./dev.sh test does)",
        path.display()
    );
    path
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl SpikeProcess {
    /// `spike serve` of `plugins` and `data` on a free port, its output
    /// appended to `log`, with the admin API on (`ADMIN_TOKEN`), no file
    /// watching, and `extra` arguments; not started yet.
    pub fn new(name: &str, plugins: &Path, data: &Path, log: PathBuf, extra: &[&str]) -> Self {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut command = vec![
            "serve".to_string(),
            "--listen".into(),
            addr.to_string(),
            "--plugins".into(),
            plugins.display().to_string(),
            "--data".into(),
            data.display().to_string(),
            "--admin-token".into(),
            ADMIN_TOKEN.into(),
            "--no-watch".into(),
        ];
        command.extend(extra.iter().map(|a| a.to_string()));
        Self {
            name: name.to_string(),
            url: format!("http://{addr}"),
            addr,
            child: None,
            log,
            command,
            env: Vec::new(),
            binary: None,
        }
    }

    /// Runs `binary` (a release build, for a benchmark) instead of the
    /// debug build.
    pub fn binary(mut self, binary: PathBuf) -> Self {
        self.binary = Some(binary);
        self
    }

    /// Adds arguments to `spike serve`'s.
    pub fn args(mut self, extra: &[&str]) -> Self {
        self.command.extend(extra.iter().map(|a| a.to_string()));
        self
    }

    /// Adds `key=value` to the process's environment (a secret, say).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Starts the process (again, after a kill or a stop: same port, same
    /// data folder).
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let binary = self.binary.clone().unwrap_or_else(spike_binary);
        let child = Command::new(binary)
            .args(&self.command)
            .env(
                "RUST_LOG",
                "info,spike::access=off,wasmtime=warn,cranelift=warn",
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spike starts");
        self.child = Some(child);
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        let ready = async {
            loop {
                let answer = client().get(self.at("/readyz")).send().await;
                if answer.is_ok_and(|r| r.status() == 200) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(60), ready)
            .await
            .is_err()
        {
            panic!("{} was not ready within 60 s:\n{}", self.name, self.log());
        }
    }

    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// What the process logged so far (over all its starts).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the process runs").id()
    }

    /// Sends `signal` (`KILL`, `STOP`, `CONT`, `TERM`) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {}", self.pid());
    }

    /// `kill -9`, and waits for the process to be gone.
    pub fn kill(&mut self) {
        self.signal("KILL");
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// SIGTERM; how the process ended, which must be within `limit`.
    pub async fn terminate(&mut self, limit: Duration) -> ExitStatus {
        self.signal("TERM");
        self.exited(limit).await
    }

    /// How the process ended (by a signal sent before), which must be
    /// within `limit`.
    pub async fn exited(&mut self, limit: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("the process runs");
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if tokio::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} still ran after {limit:?}:\n{}", self.name, self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts the process again and waits until it is ready.
    pub async fn restart(&mut self) {
        self.spawn();
        self.wait_ready().await;
    }

    /// `GET /_spike/plugins`.
    pub async fn plugins(&self) -> serde_json::Value {
        let list = within_for(Duration::from_secs(10), async {
            client()
                .get(self.at("/_spike/plugins"))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        })
        .await;
        assert!(list["plugins"].is_array(), "{list}");
        list
    }
}

impl Drop for SpikeProcess {
    fn drop(&mut self) {
        // A failed test shows what the process said: its log is usually
        // deleted with the test's folder.
        if std::thread::panicking() {
            eprintln!("==== {} log ====\n{}", self.name, self.log());
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
