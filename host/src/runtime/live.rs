//! Manifests that change while the host serves. Editing a manifest (routes,
//! grants, limits, component), adding one or removing one takes effect
//! without a restart: a new slot is built, its version loaded, and the
//! plugin table swapped whole, atomically, so requests in flight finish
//! under the old manifest and version while new ones get the new. A
//! manifest that does not parse, claims another plugin's name or route, or
//! whose component does not load is refused with the reason, and the old
//! one keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::loader::LoadError;
use super::manifest::{self, Manifest};
use super::registry::{PluginRegistry, Plugins};
use super::routes::RouteTable;
use super::slot::{PluginSlot, SlotParts};
use crate::util::unpoisoned;

/// What a manifest change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestChange {
    Added(String),
    Updated(String),
    Removed(String),
    /// The file is as it was (or gone and never served).
    Unchanged,
    /// Refused, with the reason; what served before still does.
    Refused(String),
}

/// Why a pushed manifest was not put in force.
#[derive(Debug, thiserror::Error)]
pub enum PutManifestError {
    /// It does not parse, or names another plugin.
    #[error("{0}")]
    Invalid(manifest::ManifestError),
    /// It parses but cannot serve (a route another plugin has, a component
    /// that does not load): what served before still does.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Io(String),
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

impl PluginRegistry {
    /// Applies the manifest file at `path` as it is now: added, edited or
    /// removed. Changes are applied one at a time.
    pub async fn manifest_changed(&self, path: &Path) -> ManifestChange {
        let _one_at_a_time = self.changes.one_at_a_time.lock().await;
        self.changed(path).await
    }

    /// Writes `text` as the manifest of plugin `name` (its file, or
    /// `{name}.toml` for a new plugin) and applies it, as if an operator
    /// had edited the file. A manifest that is refused is not kept: the
    /// file is put back as it was.
    pub async fn put_manifest(
        &self,
        name: &str,
        text: &str,
    ) -> Result<ManifestChange, PutManifestError> {
        let _one_at_a_time = self.changes.one_at_a_time.lock().await;
        let path = match self.slot(name) {
            Some(slot) => slot.manifest.path.clone(),
            None => self.plugins_dir.join(format!("{name}.toml")),
        };
        let mut manifest = manifest::parse(&path, text).map_err(PutManifestError::Invalid)?;
        self.overrides.apply(&mut manifest);
        if manifest.name != name {
            return Err(PutManifestError::Invalid(manifest::ManifestError {
                path,
                line: None,
                message: format!("this manifest is plugin '{}', not '{name}'", manifest.name),
            }));
        }
        let before = std::fs::read(&path).ok();
        let write = |bytes: &[u8]| -> Result<(), PutManifestError> {
            let staged = path.with_extension("toml.pushed");
            std::fs::write(&staged, bytes)
                .and_then(|()| std::fs::rename(&staged, &path))
                .map_err(|e| PutManifestError::Io(format!("writing {}: {e}", path.display())))
        };
        if before.as_deref() != Some(text.as_bytes()) {
            write(text.as_bytes())?;
        }
        let change = self.changed(&path).await;
        if let ManifestChange::Refused(reason) = change {
            match &before {
                Some(before) => write(before)?,
                None => {
                    let _ = std::fs::remove_file(&path);
                }
            }
            self.changed(&path).await;
            return Err(PutManifestError::Refused(reason));
        }
        Ok(change)
    }

    /// Removes plugin `name` as a deletion of its manifest file would:
    /// the file goes and the plugin stops serving. Whether there was one.
    pub async fn remove_plugin(&self, name: &str) -> std::io::Result<bool> {
        let _one_at_a_time = self.changes.one_at_a_time.lock().await;
        let Some(slot) = self.slot(name) else {
            return Ok(false);
        };
        match std::fs::remove_file(&slot.manifest.path) {
            Ok(()) => {}
            // Gone already (the watcher has not applied it yet).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.changed(&slot.manifest.path).await;
        Ok(true)
    }

    async fn changed(&self, path: &Path) -> ManifestChange {
        let path = absolute(path);
        let current = self.plugins.load_full();
        let old = current
            .slots
            .values()
            .find(|s| absolute(&s.manifest.path) == path)
            .cloned();
        let change = if path.exists() {
            self.apply(&current, &path, old).await
        } else if let Some(old) = old {
            self.remove(&current, &old)
        } else {
            ManifestChange::Unchanged
        };
        let mut refused = unpoisoned(self.changes.refused.lock());
        match &change {
            ManifestChange::Refused(reason) => {
                tracing::error!(manifest = %path.display(), "manifest refused: {reason}");
                refused.insert(path, reason.clone());
            }
            other => {
                refused.remove(&path);
                if *other != ManifestChange::Unchanged {
                    tracing::info!(manifest = %path.display(), "{other:?}");
                }
            }
        }
        change
    }

    async fn apply(
        &self,
        current: &Plugins,
        path: &Path,
        old: Option<Arc<PluginSlot>>,
    ) -> ManifestChange {
        let refuse = |e: LoadError| {
            if let Some(old) = &old {
                old.set_error(Some(e.clone()));
            }
            ManifestChange::Refused(e.to_string())
        };
        let manifest = match manifest::load(path) {
            Ok(mut m) => {
                self.overrides.apply(&mut m);
                m
            }
            Err(e) => return refuse(LoadError::Manifest(e)),
        };
        if let Some(old) = &old
            && old.manifest.sha256 == manifest.sha256
        {
            // Put back as it is in force: a refusal of the edit in between
            // no longer stands.
            old.clear_manifest_error();
            return ManifestChange::Unchanged;
        }
        let routes = match routes_with(current, &manifest, path, old.as_ref()) {
            Ok(routes) => routes,
            Err(e) => return refuse(e),
        };

        // No upload, file reload or rollback of this plugin meanwhile.
        let swap_lock = old.as_ref().map(|o| o.swap_lock.clone());
        let _swap = match &swap_lock {
            Some(lock) => Some(lock.clone().lock_owned().await),
            None => None,
        };
        let parts = SlotParts {
            caps: &self.caps,
            memory_budget: &self.instances.memory_budget,
            metrics: &self.metrics,
            pool: &self.instances.pool,
        };
        let slot = Arc::new(PluginSlot::new(manifest, &parts, swap_lock));
        let same_component = old
            .as_ref()
            .filter(|o| o.manifest.component == slot.manifest.component)
            .and_then(|o| o.active());
        match same_component {
            // The version the old manifest ran (an upload, maybe) goes on.
            Some(active) => slot.active.store(Some(active)),
            None => {
                if let Err(e) = self.load_version(&slot).await {
                    if old.is_some() {
                        return refuse(e);
                    }
                    // New: kept as failed, as at start.
                    tracing::error!(plugin = %slot.manifest.name, "unavailable: {e}");
                    slot.set_error(Some(e));
                }
            }
        }
        slot.loading.store(false, Ordering::Release);

        // What the new manifest allows that it did not before, or a new
        // plugin's: warned of as at start.
        if old
            .as_ref()
            .is_none_or(|o| o.manifest.demo_warnings() != slot.manifest.demo_warnings())
        {
            super::manifest::warn_of_demo_settings([&slot.manifest]);
        }
        let name = slot.manifest.name.clone();
        let mut slots = current.slots.clone();
        if let Some(old) = &old {
            slots.remove(&old.manifest.name);
        }
        slots.insert(name.clone(), slot);
        self.plugins.store(Arc::new(Plugins { slots, routes }));
        match old {
            Some(_) => ManifestChange::Updated(name),
            None => ManifestChange::Added(name),
        }
    }

    fn remove(&self, current: &Plugins, old: &Arc<PluginSlot>) -> ManifestChange {
        let mut slots = current.slots.clone();
        slots.remove(&old.manifest.name);
        let manifests: Vec<Manifest> = slots.values().map(|s| s.manifest.clone()).collect();
        let routes = RouteTable::new(&manifests).expect("fewer routes cannot clash");
        self.plugins.store(Arc::new(Plugins { slots, routes }));
        ManifestChange::Removed(old.manifest.name.clone())
    }
}

/// The route table with `manifest` in place of `old`'s (or added), or why
/// it cannot be: its name or a route is another plugin's.
fn routes_with(
    current: &Plugins,
    manifest: &Manifest,
    path: &Path,
    old: Option<&Arc<PluginSlot>>,
) -> Result<RouteTable, LoadError> {
    let is_old = |s: &Arc<PluginSlot>| old.is_some_and(|o| Arc::ptr_eq(o, s));
    if let Some(other) = current.slots.get(&manifest.name)
        && !is_old(other)
    {
        return Err(LoadError::Conflict(format!(
            "{}: plugin name '{}' is already used by {}",
            path.display(),
            manifest.name,
            other.manifest.path.display()
        )));
    }
    // The others first, so a clash names this manifest: the later one is
    // refused.
    let manifests: Vec<Manifest> = (current.slots.values())
        .filter(|s| !is_old(s))
        .map(|s| s.manifest.clone())
        .chain([manifest.clone()])
        .collect();
    RouteTable::new(&manifests).map_err(LoadError::Conflict)
}
