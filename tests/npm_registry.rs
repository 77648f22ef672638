//! A real npm registry on loopback for the npm plugin's tests: Verdaccio
//! (tests/node's `verdaccio`, 6.8.0) serving a copy of the packages
//! `scripts/setup.sh` published into the tools folder
//! (`tests/node/npm-registry.mjs fill`, every package of
//! tests/npm/package-lock.json as the public registry packs it), with no
//! uplinks: what it does not hold, it does not have.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::node::node_dir;
use crate::process::free_port;
use crate::tokens::tools_dir;

/// The filled registry `scripts/setup.sh` keeps.
pub fn registry_dir() -> PathBuf {
    let dir = tools_dir().join("npm-registry");
    assert!(
        dir.join("storage/react").exists(),
        "{} holds no packages: run scripts/setup.sh (./dev.sh test does)",
        dir.display()
    );
    dir
}

/// A running Verdaccio; stopped when dropped.
pub struct Verdaccio {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Verdaccio {
    /// Verdaccio on a free port, serving a copy of the filled registry.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let copied = std::process::Command::new("cp")
            .arg("-r")
            .arg(registry_dir().join("storage"))
            .arg(registry_dir().join("htpasswd"))
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(copied.success(), "copying the registry");
        let mut registry = Verdaccio {
            child: None,
            port: free_port(),
            dir,
        };
        registry.restart().await;
        registry
    }

    /// The registry's base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `host:port`, as a manifest's `grants.outbound` names it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts it again (on the same port) after `stop`.
    pub async fn restart(&mut self) {
        let node = node_dir();
        let config = Command::new("node")
            .arg(node.join("npm-registry.mjs"))
            .arg("config")
            .arg(self.dir.path())
            .status()
            .await
            .unwrap();
        assert!(config.success(), "writing Verdaccio's config");
        let child = Command::new("node")
            .arg(node.join("node_modules/verdaccio/bin/verdaccio"))
            .arg("--config")
            .arg(self.dir.path().join("config.yaml"))
            .arg("--listen")
            .arg(self.host())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("Verdaccio starts");
        self.child = Some(child);
        let started = Instant::now();
        loop {
            let got = reqwest::get(format!("{}/react", self.url())).await;
            if got.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "Verdaccio did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops it: the registry is down.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }
}

/// The shipped `plugins/npm.toml` (without its `component` line, which
/// the harness writes), each setting of `extra_env` (`KEY = "value"`
/// lines) in place of the shipped one.
pub fn npm_manifest(extra_env: &str) -> String {
    let shipped = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins/npm.toml"),
    )
    .unwrap();
    let keys: Vec<&str> = extra_env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, _)| k.trim())
        .collect();
    let kept: Vec<&str> = shipped
        .lines()
        .filter(|l| !l.starts_with("component ="))
        .filter(|l| {
            !keys
                .iter()
                .any(|k| l.split_once('=').is_some_and(|(lk, _)| lk.trim() == *k))
        })
        .collect();
    kept.join("\n")
        .replace("[env]\n", &format!("[env]\n{extra_env}\n"))
}

/// `--npm-registry registry`: the shipped manifest pointed at it.
pub fn use_registry(config: &mut spike::ServerConfig, registry: &str) {
    config.plugin_overrides.npm_registry =
        Some(spike::runtime::manifest::operator::NpmRegistry::parse(registry).unwrap());
}
