//! A cluster for the tests: a JetStream server of its own and spike nodes
//! as separate processes of the `spike` binary (so that one can be killed
//! or paused like a real machine), all on loopback, sharing the server,
//! each with its own plugins and data folders.

use std::path::PathBuf;

use spike::storage::nats::local::LocalNats;

use std::time::Duration;

use crate::process::SpikeProcess;
use crate::rooms::{RoomClient, tungstenite, ws_url};
use crate::{Plugin, within, write_plugins};

/// One node of the cluster.
pub type Node = SpikeProcess;

pub struct Cluster {
    pub nats: LocalNats,
    pub nodes: Vec<Node>,
    /// Each node's plugins folder, by node number from 1.
    pub plugins_dirs: Vec<PathBuf>,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// A JetStream server and `n` nodes serving `plugins`, every plugin
    /// ready on every node.
    pub async fn start(n: usize, plugins: &[Plugin<'_>]) -> Self {
        Self::start_with(n, plugins, &[]).await
    }

    /// The same, each node with `env` added to its environment.
    pub async fn start_with(n: usize, plugins: &[Plugin<'_>], env: &[(&str, &str)]) -> Self {
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
            let node = (env.iter()).fold(cluster.node_command(i), |node, (k, v)| node.env(k, v));
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
        let name = format!("node-{i}");
        let data = self.dir.path().join(&name);
        let log = self.dir.path().join(format!("{name}.log"));
        let nats = self.nats.url().to_string();
        let extra = ["--storage", &nats, "--node", &name, "--max-instances", "64"];
        SpikeProcess::new(&name, &self.plugins_dirs[i - 1], &data, log, &extra)
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i - 1]
    }

    pub fn node_mut(&mut self, i: usize) -> &mut Node {
        &mut self.nodes[i - 1]
    }
}

/// Joins `path` on `node` with `?since=`, retrying while the room's lease
/// is still another node's (503 `room_elsewhere`) or the node is away.
pub async fn join_when_open(node: &Node, path: &str) -> RoomClient {
    let url = ws_url(&node.url, path);
    within(async {
        loop {
            match RoomClient::try_join(&url).await {
                Ok(client) => return client,
                Err(e) => {
                    if let tungstenite::Error::Http(answer) = &e {
                        assert_eq!(answer.status(), 503, "{e}");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    })
    .await
}

/// The events `first..first + n` as the client reads them.
pub async fn events(client: &mut RoomClient, first: u64, n: u64) -> Vec<String> {
    let mut data = Vec::new();
    for seq in first..first + n {
        let event = client.next_event().await;
        assert_eq!(event["seq"], seq, "{event}");
        data.push(event["data"].as_str().unwrap().to_string());
    }
    data
}
