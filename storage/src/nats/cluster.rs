//! What the nodes share besides storage: their statuses in the KV bucket
//! `P_nodes` (each published with a TTL, so a node that dies drops out),
//! the plugin histories' changes, watched on `P_plugins`, manifests pushed
//! through the admin API (`P_manifests`), shared numbers (`P_numbers`,
//! changed by compare-and-set), object leases (`P_leases`: rooms), and calls and
//! links between nodes (`messages`).

use async_nats::jetstream::kv::{Operation, Store};
use futures::StreamExt;
use futures::stream::BoxStream;

use super::names::{name, token};
use std::time::Duration;

use super::stream::{Published, kv_values, last, publish, subject};
use super::{NatsBackend, OrFailed, open_kv};
use crate::{Call, Cluster, LeaseClaim, Link, NODE_STATUS_TTL, NodeStatus, Result, StorageError};

pub struct NatsCluster {
    backend: NatsBackend,
    node: String,
    nodes: Store,
    /// Shared numbers: quotas' states (`P_numbers`).
    numbers: Store,
    /// Object leases (`P_leases`): which node owns each open room.
    leases: Store,
    /// Manifests pushed through the admin API (`P_manifests`), by plugin.
    manifests: Store,
    /// This process, as a lease names it (for whoever reads the bucket).
    instance: String,
}

/// An object's lease as stored.
#[derive(serde::Serialize, serde::Deserialize)]
struct Lease {
    node: String,
    instance: String,
}

impl NatsCluster {
    /// Joins as `node` (statuses are published by the caller).
    pub async fn join(backend: &NatsBackend, node: &str) -> Result<Self> {
        let js = async_nats::jetstream::new(backend.client());
        let config = |name: &str| async_nats::jetstream::kv::Config {
            bucket: format!("{}_{name}", backend.prefix()),
            history: 1,
            limit_markers: Some(super::MARKER_TTL),
            ..Default::default()
        };
        Ok(Self {
            backend: backend.clone(),
            node: node.to_string(),
            nodes: open_kv(&js, config("nodes")).await?,
            numbers: open_kv(&js, config("numbers")).await?,
            leases: open_kv(&js, config("leases")).await?,
            manifests: open_kv(&js, config("manifests")).await?,
            instance: format!("{}-{}", std::process::id(), crate::util::now_ms()),
        })
    }
}

impl NatsCluster {
    /// Writes this node's lease over `revision`; its new revision, or
    /// `None` if another write came first.
    async fn write_lease(&self, key: &str, revision: u64, ttl: Duration) -> Result<Option<u64>> {
        let lease = Lease {
            node: self.node.clone(),
            instance: self.instance.clone(),
        };
        let value = serde_json::to_vec(&lease).expect("a lease encodes");
        let subject = subject(&self.leases, key);
        let inner = &self.backend.inner;
        match publish(&inner.js, subject, value.into(), Some(revision), Some(ttl)).await? {
            Published::Stored(revision) => Ok(Some(revision)),
            Published::Conflict => Ok(None),
        }
    }
}

#[async_trait::async_trait]
impl Cluster for NatsCluster {
    fn node(&self) -> &str {
        &self.node
    }

    async fn report(&self, status: &NodeStatus) -> Result<()> {
        let value = serde_json::to_vec(status).expect("a node status encodes");
        let subject = subject(&self.nodes, &token(&self.node));
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

    async fn number(&self, key: &str) -> Result<(Option<u64>, u64)> {
        let (value, revision) = last(&self.numbers, &token(key)).await?;
        let number = match value {
            Some(raw) => Some(
                std::str::from_utf8(&raw)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| StorageError::Corrupt(format!("the number {key}")))?,
            ),
            None => None,
        };
        Ok((number, revision))
    }

    async fn set_number(
        &self,
        key: &str,
        value: u64,
        revision: u64,
        ttl: Duration,
    ) -> Result<bool> {
        let subject = subject(&self.numbers, &token(key));
        let value = bytes::Bytes::from(value.to_string());
        let inner = &self.backend.inner;
        let done = publish(&inner.js, subject, value, Some(revision), Some(ttl)).await?;
        Ok(matches!(done, Published::Stored(_)))
    }

    async fn claim_lease(&self, object: &str, ttl: Duration) -> Result<LeaseClaim> {
        let key = token(object);
        loop {
            let (value, revision) = last(&self.leases, &key).await?;
            if let Some(raw) = value {
                let holder: Lease = serde_json::from_slice(&raw)
                    .map_err(|e| StorageError::Corrupt(format!("the lease of {object}: {e}")))?;
                // This node's lease (or a previous run's, under the same
                // name) is refreshed; another node keeps it until it lapses.
                if holder.node != self.node {
                    return Ok(LeaseClaim::Theirs(holder.node));
                }
            }
            if let Some(revision) = self.write_lease(&key, revision, ttl).await? {
                return Ok(LeaseClaim::Ours(revision));
            }
        }
    }

    async fn renew_lease(&self, object: &str, revision: u64, ttl: Duration) -> Result<Option<u64>> {
        self.write_lease(&token(object), revision, ttl).await
    }

    async fn release_lease(&self, object: &str, revision: u64) -> Result<()> {
        let subject = subject(&self.leases, &token(object));
        super::stream::purge(&self.backend.inner.js, subject, Some(revision)).await?;
        Ok(())
    }

    async fn share_manifest(&self, plugin: &str, text: &str) -> Result<()> {
        let value = bytes::Bytes::from(text.to_string());
        (self.manifests.put(token(plugin), value).await).or_failed("sharing a manifest")?;
        Ok(())
    }

    async fn unshare_manifest(&self, plugin: &str) -> Result<()> {
        (self.manifests.delete(token(plugin)).await).or_failed("removing a shared manifest")?;
        Ok(())
    }

    async fn manifests(&self) -> Result<BoxStream<'static, Result<(String, Option<String>)>>> {
        let watch = (self.manifests.watch_with_history(">").await)
            .or_failed("watching shared manifests")?;
        Ok(watch
            .filter_map(|entry| async move {
                let e = match entry {
                    Ok(e) => e,
                    Err(e) => {
                        let e = format!("watching shared manifests: {e}");
                        return Some(Err(StorageError::Backend(e)));
                    }
                };
                let plugin = name(&e.key)?;
                if e.operation != Operation::Put {
                    return Some(Ok((plugin, None)));
                }
                let text = String::from_utf8(e.value.to_vec())
                    .map_err(|_| StorageError::Corrupt(format!("the manifest of {plugin}")));
                Some(text.map(|text| (plugin, Some(text))))
            })
            .boxed())
    }

    async fn calls(&self, service: &str) -> Result<BoxStream<'static, Call>> {
        super::messages::calls(&self.backend, &self.node, service).await
    }

    async fn call(
        &self,
        node: &str,
        service: &str,
        body: bytes::Bytes,
        timeout: Duration,
    ) -> Result<bytes::Bytes> {
        super::messages::call(&self.backend, node, service, body, timeout).await
    }

    async fn open_link(&self) -> Result<Link> {
        let id = super::messages::new_link_id(&self.backend);
        super::messages::link(&self.backend, id, true).await
    }

    async fn answer_link(&self, id: &str) -> Result<Link> {
        super::messages::link(&self.backend, id.to_string(), false).await
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
