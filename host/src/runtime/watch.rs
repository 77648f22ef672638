//! Hot swap from the file system: a manifest that is written, added or
//! removed in the plugins folder is applied (`live`); a component file
//! that changes is loaded (the registry refuses a broken one and keeps the
//! old version).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use super::registry::PluginRegistry;
use crate::util::unpoisoned;

/// How long files must be quiet before they are read: editors and `cp`
/// write in several steps, and a half-written file would only be refused.
const SETTLE: Duration = Duration::from_millis(200);

/// The file watcher; watching stops when it drops.
pub struct FileWatch {
    _watcher: Arc<Mutex<notify::RecommendedWatcher>>,
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Watches the plugins folder and the folder of every component (folders,
/// not files: replacing a file by rename would end a watch on the file).
pub fn watch_plugins(registry: Arc<PluginRegistry>) -> notify::Result<FileWatch> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        for path in event.paths {
            let _ = tx.send(absolute(&path));
        }
    })?;
    let watcher = Arc::new(Mutex::new(watcher));
    let plugins_dir = absolute(&registry.plugins_dir);
    let mut watched = BTreeSet::new();
    watch_dir(&watcher, &mut watched, &plugins_dir)?;
    for slot in registry.slots() {
        if let Some(component) = &slot.manifest.component {
            watch_component_dir(&watcher, &mut watched, component);
        }
    }
    // The task holds the watcher weakly: when the host drops the watcher,
    // the events channel closes and the task ends (releasing the registry).
    let weak = Arc::downgrade(&watcher);
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut changed = BTreeSet::from([first]);
            while let Ok(Some(path)) = tokio::time::timeout(SETTLE, rx.recv()).await {
                changed.insert(path);
            }
            for path in changed {
                let is_manifest = path.parent() == Some(plugins_dir.as_path())
                    && path.extension().is_some_and(|e| e == "toml");
                if is_manifest {
                    registry.manifest_changed(&path).await;
                    // A manifest may name a component in a new folder.
                    if let Some(watcher) = weak.upgrade() {
                        for slot in registry.slots() {
                            if let Some(component) = &slot.manifest.component {
                                watch_component_dir(&watcher, &mut watched, component);
                            }
                        }
                    }
                    continue;
                }
                let owners = registry.slots().into_iter().filter(|s| {
                    s.manifest.component.as_deref().map(absolute) == Some(path.clone())
                });
                for slot in owners {
                    let name = &slot.manifest.name;
                    if let Err(e) = registry.reload_file(name).await {
                        tracing::error!(plugin = %name, "component file refused, the old version keeps serving: {e}");
                    }
                }
            }
        }
    });
    Ok(FileWatch { _watcher: watcher })
}

fn watch_dir(
    watcher: &Mutex<notify::RecommendedWatcher>,
    watched: &mut BTreeSet<PathBuf>,
    dir: &Path,
) -> notify::Result<()> {
    if watched.contains(dir) {
        return Ok(());
    }
    let mut watcher = unpoisoned(watcher.lock());
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    watched.insert(dir.to_path_buf());
    Ok(())
}

fn watch_component_dir(
    watcher: &Mutex<notify::RecommendedWatcher>,
    watched: &mut BTreeSet<PathBuf>,
    component: &Path,
) {
    let Some(dir) = absolute(component).parent().map(Path::to_path_buf) else {
        return;
    };
    if let Err(e) = watch_dir(watcher, watched, &dir) {
        tracing::warn!(dir = %dir.display(), "cannot watch a component folder: {e}");
    }
}
