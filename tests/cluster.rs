//! A cluster for the tests: a JetStream server of its own and spike nodes
//! as separate processes of the `spike` binary (so that one can be killed
//! or paused like a real machine), all on loopback, sharing the server,
//! each with its own plugins and data folders.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use spike::storage::nats::local::LocalNats;

use crate::{ADMIN_TOKEN, Plugin, client, target_dir, within_for, write_plugins};

pub struct Cluster {
    pub nats: LocalNats,
    pub nodes: Vec<Node>,
    /// Each node's plugins folder, by node number from 1.
    pub plugins_dirs: Vec<PathBuf>,
    dir: tempfile::TempDir,
}

/// One spike process.
pub struct Node {
    pub name: String,
    pub url: String,
    child: Option<Child>,
    log: PathBuf,
    command: Vec<String>,
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    /// A JetStream server and `n` nodes serving `plugins`, every plugin
    /// ready on every node.
    pub async fn start(n: usize, plugins: &[Plugin<'_>]) -> Self {
        crate::init_logging();
        let nats = LocalNats::start().unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::tempdir().unwrap();
        // A folder each, as on separate machines.
        let plugins_dirs: Vec<PathBuf> = (1..=n)
            .map(|i| dir.path().join(format!("plugins-{i}")))
            .collect();
        for plugins_dir in &plugins_dirs {
            write_plugins(plugins_dir, plugins);
        }
        let mut cluster = Self {
            nats,
            nodes: Vec::new(),
            plugins_dirs,
            dir,
        };
        for i in 1..=n {
            let node = cluster.node_command(i);
            cluster.nodes.push(node);
        }
        for node in &mut cluster.nodes {
            node.spawn();
        }
        for node in &cluster.nodes {
            node.wait_ready().await;
        }
        cluster
    }

    fn node_command(&self, i: usize) -> Node {
        let port = free_port();
        let name = format!("node-{i}");
        let data = self.dir.path().join(&name);
        let command = vec![
            "serve".to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--plugins".into(),
            self.plugins_dirs[i - 1].display().to_string(),
            "--data".into(),
            data.display().to_string(),
            "--storage".into(),
            self.nats.url().to_string(),
            "--node".into(),
            name.clone(),
            "--admin-token".into(),
            ADMIN_TOKEN.into(),
            "--no-watch".into(),
            "--max-instances".into(),
            "64".into(),
        ];
        Node {
            log: self.dir.path().join(format!("{name}.log")),
            url: format!("http://127.0.0.1:{port}"),
            name,
            child: None,
            command,
        }
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i - 1]
    }

    pub fn node_mut(&mut self, i: usize) -> &mut Node {
        &mut self.nodes[i - 1]
    }
}

impl Node {
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(spike_binary())
            .args(&self.command)
            .env("RUST_LOG", "info,wasmtime=warn,cranelift=warn")
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

    /// What the node logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the node runs").id()
    }

    /// Sends `signal` (`KILL`, `STOP`, `CONT`, `TERM`) to the node.
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

    /// Starts the node again (same port, same data folder).
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

impl Drop for Node {
    fn drop(&mut self) {
        // A failed test shows what each node said: its log is deleted
        // with the cluster's folder.
        if std::thread::panicking() {
            eprintln!("==== {} log ====\n{}", self.name, self.log());
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
