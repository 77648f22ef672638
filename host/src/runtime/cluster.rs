//! A node's part in a cluster (a shared backend): it follows the plugin
//! versions that any node activates (an upload, a rollback, a changed
//! file) and the manifests pushed to any node, and tells the others which
//! versions it runs.
//!
//! Every node keeps its own plugins folder, manifests and compile cache;
//! what they share is the version history and the components' bytes
//! (`storage::VersionStore`), and the manifests pushed through the admin
//! API, which each node writes over its own file and applies as an edit.
//! A plugin whose component file a node lacks runs the last version its
//! shared history kept. A push to one node records the version in
//! the shared history; the others see the change on the watch
//! (`Cluster::plugin_changes`), load the bytes and swap, each with its own
//! compile cache. A node that was away catches up when its watch starts
//! again, by comparing every plugin with the shared history.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::live::ManifestChange;
use super::{LoadError, PluginRegistry};
use crate::storage::{Cluster, NodeStatus};
use crate::util::{AbortOnDrop, now_ms};

/// How often a node publishes its status when nothing changes (well
/// within `NODE_STATUS_TTL`).
const REFRESH: Duration = Duration::from_secs(5);
/// How often a node looks for a change of its own versions to publish.
const LOOK: Duration = Duration::from_millis(250);

/// The node's cluster tasks; stopped when dropped.
pub struct ClusterTasks {
    _tasks: Vec<AbortOnDrop>,
}

pub fn start(registry: &Arc<PluginRegistry>, cluster: &Arc<dyn Cluster>) -> ClusterTasks {
    let follow = tokio::spawn(follow(registry.clone(), cluster.clone()));
    let manifests = tokio::spawn(follow_manifests(registry.clone(), cluster.clone()));
    let report = tokio::spawn(report(registry.clone(), cluster.clone()));
    ClusterTasks {
        _tasks: vec![
            AbortOnDrop(follow),
            AbortOnDrop(manifests),
            AbortOnDrop(report),
        ],
    }
}

/// Puts in force every manifest pushed to any node (`Cluster::manifests`),
/// written over this node's file, for as long as the node runs.
async fn follow_manifests(registry: Arc<PluginRegistry>, cluster: Arc<dyn Cluster>) {
    registry.ready().await;
    loop {
        match cluster.manifests().await {
            Ok(mut manifests) => {
                while let Some(next) = manifests.next().await {
                    match next {
                        Ok((plugin, Some(text))) => take_manifest(&registry, &plugin, &text).await,
                        Ok((plugin, None)) => match registry.remove_plugin(&plugin).await {
                            Ok(true) => tracing::info!(plugin, "removed from the cluster"),
                            Ok(false) => {}
                            Err(e) => tracing::error!(plugin, "cannot remove a plugin: {e}"),
                        },
                        Err(e) => {
                            tracing::warn!("following shared manifests: {e}");
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!("cannot follow shared manifests: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn take_manifest(registry: &PluginRegistry, plugin: &str, text: &str) {
    match registry.put_manifest(plugin, text).await {
        Ok(ManifestChange::Unchanged) => {}
        Ok(change) => {
            tracing::info!(plugin, "the cluster's manifest is in force: {change:?}");
            // A new plugin whose component file is not here runs the
            // version pushed to another node.
            follow_one(registry, plugin).await;
        }
        Err(e) => tracing::error!(plugin, "the cluster's manifest is refused here: {e}"),
    }
}

/// Follows every change of the shared histories, for as long as the node
/// runs; a broken watch is opened again, and what it missed is caught up.
async fn follow(registry: Arc<PluginRegistry>, cluster: Arc<dyn Cluster>) {
    // First loads read the shared history themselves; what changes while
    // they run is caught up below.
    registry.ready().await;
    loop {
        match cluster.plugin_changes().await {
            Ok(mut changes) => {
                for slot in registry.slots() {
                    follow_one(&registry, &slot.manifest.name).await;
                }
                while let Some(change) = changes.next().await {
                    match change {
                        Ok(plugin) => follow_one(&registry, &plugin).await,
                        Err(e) => {
                            tracing::warn!("following plugin versions: {e}");
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!("cannot follow plugin versions: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn follow_one(registry: &PluginRegistry, plugin: &str) {
    match registry.follow(plugin).await {
        Ok(true) => tracing::info!(plugin, "following the cluster's active version"),
        Ok(false) => {}
        Err(e) => tracing::error!(plugin, "cannot follow the cluster's active version: {e}"),
    }
}

impl PluginRegistry {
    /// Activates the active version of `name`'s shared history if this node
    /// runs another; whether it did. A plugin this node has no manifest
    /// for is not its business.
    pub async fn follow(&self, name: &str) -> Result<bool, LoadError> {
        if self.slot(name).is_none() {
            return Ok(false);
        }
        let (slot, _swap) = self.locked_slot(name).await?;
        if slot.manifest.component.is_none() || slot.is_loading() {
            // A first load reads the shared history itself.
            return Ok(false);
        }
        let history = self.versions.history(name).await?;
        let Some(want) = history.active().cloned() else {
            return Ok(false);
        };
        if slot.active().is_some_and(|a| a.sha256 == want.sha256) {
            return Ok(false);
        }
        let bytes = self.versions.load(&want.sha256).await?;
        let loaded = self
            .load(&slot.manifest, bytes.into(), want.sha256, want.source)
            .await
            .inspect_err(|e| slot.set_error(Some(e.clone())))?;
        self.activate(&slot, loaded);
        Ok(true)
    }
}

/// Publishes this node's versions when they change, and every `REFRESH`.
async fn report(registry: Arc<PluginRegistry>, cluster: Arc<dyn Cluster>) {
    let mut published: Option<(BTreeMap<String, String>, Instant)> = None;
    let mut tick = tokio::time::interval(LOOK);
    loop {
        tick.tick().await;
        let plugins: BTreeMap<String, String> = registry
            .slots()
            .iter()
            .filter_map(|s| Some((s.manifest.name.clone(), s.active()?.sha256.clone())))
            .collect();
        if published
            .as_ref()
            .is_some_and(|(last, at)| *last == plugins && at.elapsed() < REFRESH)
        {
            continue;
        }
        let status = NodeStatus {
            node: cluster.node().to_string(),
            plugins: plugins.clone(),
            at_ms: now_ms(),
        };
        match cluster.report(&status).await {
            Ok(()) => published = Some((plugins, Instant::now())),
            Err(e) => tracing::warn!("cannot publish this node's status: {e}"),
        }
    }
}
