//! What the nodes share besides storage: their statuses in the KV bucket
//! `P_nodes` (each published with a TTL, so a node that dies drops out),
//! and the plugin histories' changes, watched on `P_plugins`.

use async_nats::jetstream::kv::{Operation, Store};
use futures::StreamExt;
use futures::stream::BoxStream;

use super::names::{name, token};
use super::stream::{kv_values, publish};
use super::{NatsBackend, OrFailed, open_kv};
use crate::storage::{Cluster, NODE_STATUS_TTL, NodeStatus, Result, StorageError};

pub struct NatsCluster {
    backend: NatsBackend,
    node: String,
    nodes: Store,
}

impl NatsCluster {
    /// Joins as `node` (statuses are published by the caller).
    pub async fn join(backend: &NatsBackend, node: &str) -> Result<Self> {
        let js = async_nats::jetstream::new(backend.client());
        let config = async_nats::jetstream::kv::Config {
            bucket: format!("{}_nodes", backend.prefix()),
            history: 1,
            limit_markers: Some(super::MARKER_TTL),
            ..Default::default()
        };
        Ok(Self {
            backend: backend.clone(),
            node: node.to_string(),
            nodes: open_kv(&js, config).await?,
        })
    }
}

#[async_trait::async_trait]
impl Cluster for NatsCluster {
    fn node(&self) -> &str {
        &self.node
    }

    async fn report(&self, status: &NodeStatus) -> Result<()> {
        let value = serde_json::to_vec(status).expect("a node status encodes");
        let subject = format!("{}{}", self.nodes.prefix, token(&self.node));
        let inner = &self.backend.inner;
        publish(
            &inner.js,
            subject,
            value.into(),
            None,
            Some(NODE_STATUS_TTL),
        )
        .await?;
        Ok(())
    }

    async fn nodes(&self) -> Result<Vec<NodeStatus>> {
        let values = kv_values(&self.backend.inner.client, &self.nodes, ">").await?;
        let mut nodes = Vec::new();
        for (key, raw) in values {
            let status: NodeStatus = serde_json::from_slice(&raw)
                .map_err(|e| StorageError::Corrupt(format!("the status of node {key}: {e}")))?;
            nodes.push(status);
        }
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(nodes)
    }

    async fn plugin_changes(&self) -> Result<BoxStream<'static, Result<String>>> {
        let watch = self
            .backend
            .inner
            .plugins
            .watch_all()
            .await
            .or_failed("watching plugin versions")?;
        Ok(watch
            .filter_map(|entry| async move {
                match entry {
                    Ok(e) if e.operation == Operation::Put => name(&e.key).map(Ok),
                    Ok(_) => None,
                    Err(e) => Some(Err(StorageError::Backend(format!(
                        "watching plugin versions: {e}"
                    )))),
                }
            })
            .boxed())
    }
}
