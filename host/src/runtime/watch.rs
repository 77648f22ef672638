//! Hot swap from the file system: when a plugin's component file changes,
//! load it (the registry refuses a broken one and keeps the old version).

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use super::registry::PluginRegistry;

/// How long a file must be quiet before it is read: editors and `cp` write
/// in several steps, and a half-written component would only be refused.
const SETTLE: Duration = Duration::from_millis(200);

/// Watches every plugin's component file until the returned watcher drops.
pub fn watch_components(
    registry: Arc<PluginRegistry>,
) -> notify::Result<notify::RecommendedWatcher> {
    // Watch folders, not files: replacing a file by rename would end a
    // watch on the file itself.
    let mut by_path: HashMap<PathBuf, Vec<String>> = HashMap::new();
    let mut dirs = BTreeSet::new();
    for slot in registry.slots() {
        let path = absolute(&slot.manifest.component);
        if let Some(dir) = path.parent() {
            dirs.insert(dir.to_path_buf());
        }
        by_path
            .entry(path)
            .or_default()
            .push(slot.manifest.name.clone());
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        for path in &event.paths {
            for name in by_path.get(&absolute(path)).into_iter().flatten() {
                let _ = tx.send(name.clone());
            }
        }
    })?;
    for dir in &dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut changed = BTreeSet::from([first]);
            // Wait until the files have been quiet for SETTLE.
            while let Ok(Some(name)) = tokio::time::timeout(SETTLE, rx.recv()).await {
                changed.insert(name);
            }
            for name in changed {
                if let Err(e) = registry.reload_file(&name).await {
                    tracing::error!(plugin = %name, "component file refused, the old version keeps serving: {e}");
                }
            }
        }
    });
    Ok(watcher)
}

fn absolute(path: &std::path::Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
