//! Keeping sites current: a changed folder is rescanned once it settles,
//! and its new snapshot replaces the old one whole.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use super::Site;
use super::snapshot::Snapshot;

/// How long the folder must be quiet before a rebuild is scanned.
const SETTLE: Duration = Duration::from_millis(300);

/// Watches every site's folder, and the folder above it so that a folder
/// deleted and made anew (`rm -rf dist && build`) is watched again; a
/// change rescans that site once the folder has been quiet for [`SETTLE`].
pub(super) fn watch_sites(
    sites: &[Arc<Site>],
) -> notify::Result<Arc<Mutex<notify::RecommendedWatcher>>> {
    let roots: Vec<(PathBuf, Arc<Site>)> = sites
        .iter()
        .map(|site| {
            let dir = &site.config.dir;
            (
                std::path::absolute(dir).unwrap_or_else(|_| dir.clone()),
                site.clone(),
            )
        })
        .collect();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
    let watched: Vec<PathBuf> = roots.iter().map(|(root, _)| root.clone()).collect();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        // The parent's other entries are none of our business (and a busy
        // parent would never let the folder settle).
        for path in event.paths {
            if watched.iter().any(|root| path.starts_with(root)) {
                let _ = tx.send(path);
            }
        }
    })?;
    let watcher = Arc::new(Mutex::new(watcher));
    for (root, _) in &roots {
        let mut w = watcher.lock().expect("watcher lock");
        w.watch(root, RecursiveMode::Recursive)?;
        if let Some(parent) = root.parent() {
            // Best effort: a site at / has no parent to watch.
            let _ = w.watch(parent, RecursiveMode::NonRecursive);
        }
    }
    let rewatch = watcher.clone();
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut changed = vec![first];
            // Settle: gather everything until the folder is quiet.
            while let Ok(Some(path)) = tokio::time::timeout(SETTLE, rx.recv()).await {
                changed.push(path);
            }
            for (root, site) in &roots {
                if changed.iter().any(|p| p.starts_with(root)) {
                    if changed.iter().any(|p| p == root) {
                        // The folder itself came or went: watch what is there now.
                        let mut w = rewatch.lock().expect("watcher lock");
                        let _ = w.unwatch(root);
                        let _ = w.watch(root, RecursiveMode::Recursive);
                    }
                    rescan(site.clone()).await;
                }
            }
        }
    });
    Ok(watcher)
}

async fn rescan(site: Arc<Site>) {
    let dir: PathBuf = site.config.dir.clone();
    let scanned = tokio::task::spawn_blocking(move || Snapshot::scan(Path::new(&dir))).await;
    match scanned {
        Ok(Ok(snapshot)) => {
            tracing::info!(
                prefix = %site.config.prefix,
                files = snapshot.files.len(),
                version = %snapshot.version,
                "site rebuilt"
            );
            site.snapshot.store(Arc::new(snapshot));
        }
        // A folder in the middle of being replaced: the next event rescans.
        Ok(Err(e)) => tracing::warn!(prefix = %site.config.prefix, "site scan failed: {e}"),
        Err(e) => tracing::error!("site scan panicked: {e}"),
    }
}
