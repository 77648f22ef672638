//! The plugins this host serves, and hot swap.
//!
//! The plugins served now are one table (`Plugins`: a `PluginSlot` per
//! plugin, and the routes), swapped whole when a manifest changes (`live`).
//! Each slot holds its active version behind an atomic pointer. A request
//! takes an `Arc` of its slot and of the active version and keeps them to
//! the end, so swapping never disturbs requests in flight: they finish on
//! the old manifest and version while new requests get the new ones. A new
//! version is compiled and linked off the request path (`loader`); only a
//! version that fits is swapped in.
//!
//! Every activated version is kept by the `VersionStore` and recorded in the
//! plugin's history (`versions`), so an upload survives a restart and
//! `rollback` can go back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::auth::{AuthHook, AuthOutcome};
use super::engine::{EpochTicker, PoolSettings, build_engine};
use super::loader::{LoadError, LoadedPlugin, Loader};
use super::manifest::operator::PluginOverrides;
use super::manifest::{self, Manifest, ManifestError};
use super::memory_budget::MemoryBudget;
use super::routes::{RouteMatch, RouteTable};
use super::slot::{PluginSlot, Routed, SlotParts};
use super::versions;
use super::watchdog::Watchdog;
use crate::caps::Caps;
use crate::metrics::Metrics;
use crate::storage::{VersionHistory, VersionRecord, VersionSource, VersionStore};
use crate::util::unpoisoned;
use crate::util::{sha256_hex, unique_suffix};

/// What the registry needs of the host's settings.
#[derive(Debug, Clone)]
pub struct RegistrySettings {
    /// Folder of plugin manifests (`*.toml`).
    pub plugins_dir: PathBuf,
    pub pool: PoolSettings,
    /// The linear memory all instances together may hold.
    pub memory_budget_bytes: u64,
    /// Where compiled components are cached.
    pub compile_cache_dir: PathBuf,
    /// Where admin uploads are streamed before they are compiled (cleared
    /// at start).
    pub staging_dir: PathBuf,
    /// Tests only: how long each plugin's first load waits before it starts,
    /// to observe the server while plugins are still loading.
    pub load_delay: std::time::Duration,
    /// Verified tokens the auth hook keeps.
    pub auth_cache_entries: usize,
    /// The operator's settings for shipped plugins (`--npm-registry`).
    pub overrides: PluginOverrides,
}

/// The bytes of a version on their way in.
pub enum NewVersion {
    /// Read into memory (a component file).
    Bytes(Vec<u8>),
    /// Streamed into a file at `PluginRegistry::staging_path` (an upload),
    /// hashed on the way.
    Staged(StagedFile),
}

/// An upload in its staging file, removed when this drops.
pub struct StagedFile {
    pub path: PathBuf,
    pub sha256: String,
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl NewVersion {
    /// The bytes and their hash.
    async fn read(self) -> Result<(Arc<[u8]>, String), LoadError> {
        match self {
            Self::Bytes(b) => {
                let sha = sha256_hex(&b);
                Ok((b.into(), sha))
            }
            Self::Staged(f) => {
                let bytes = tokio::fs::read(&f.path)
                    .await
                    .map_err(|e| LoadError::Read {
                        path: f.path.clone(),
                        source: Arc::new(e),
                    })?;
                Ok((bytes.into(), f.sha256.clone()))
            }
        }
    }
}

/// Why the host cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Manifest(#[from] ManifestError),
    #[error("{0}")]
    Routes(String),
    #[error("plugins folder {}: {source}", path.display())]
    PluginsDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Engine(String),
}

/// The plugins served now, and their routes: swapped whole.
pub(super) struct Plugins {
    pub(super) slots: BTreeMap<String, Arc<PluginSlot>>,
    pub(super) routes: RouteTable,
}

/// All plugins, their routes, and the engine they run on.
pub struct PluginRegistry {
    pub(super) instances: Instances,
    pub(super) versions: Arc<dyn VersionStore>,
    pub(super) caps: Arc<Caps>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) plugins_dir: PathBuf,
    /// Applied to every manifest read.
    pub(super) overrides: PluginOverrides,
    staging_dir: PathBuf,
    /// The plugin table, swapped whole on every change.
    pub(super) plugins: ArcSwap<Plugins>,
    pub(super) changes: ManifestChanges,
    first_loads: FirstLoads,
    auth: AuthHook,
}

/// What runs plugin instances: the engine (in the loader, with its compile
/// cache), the ticker that advances its epochs, the watchdog of deadlines,
/// the pool's settings and the memory budget every instance draws on.
pub(super) struct Instances {
    pub loader: Loader,
    pub pool: PoolSettings,
    pub memory_budget: Arc<MemoryBudget>,
    watchdog: Watchdog,
    _ticker: EpochTicker,
}

/// Changes of the plugins folder's manifests (`live`).
#[derive(Default)]
pub(super) struct ManifestChanges {
    /// Serialises them.
    pub one_at_a_time: tokio::sync::Mutex<()>,
    /// Manifest files that could not be applied, and why.
    pub refused: Mutex<BTreeMap<PathBuf, String>>,
}

/// How many plugins have finished their first load, of how many.
struct FirstLoads {
    done: tokio::sync::watch::Receiver<usize>,
    of: usize,
}

impl PluginRegistry {
    /// Reads every manifest in the plugins folder (a malformed one stops the
    /// start, naming file, line and reason), builds the route table, and
    /// starts loading every plugin, all at once, in the background: the
    /// server can listen at once, and a plugin's routes answer 503
    /// `plugin_loading` until it is ready (`ready` waits for all). A plugin
    /// whose component is missing or broken is kept as failed: its routes
    /// answer 503 while the others serve.
    pub async fn start(
        settings: &RegistrySettings,
        caps: &Arc<Caps>,
        versions: Arc<dyn VersionStore>,
        metrics: &Arc<Metrics>,
    ) -> Result<Arc<Self>, StartError> {
        let manifests = read_manifests(&settings.plugins_dir, &settings.overrides)?;
        let routes = RouteTable::new(&manifests).map_err(StartError::Routes)?;
        super::manifest::warn_of_demo_settings(&manifests);
        let engine = build_engine(&settings.pool).map_err(|e| StartError::Engine(e.to_string()))?;
        let loader = Loader::new(&engine, settings.compile_cache_dir.clone())
            .map_err(|e| StartError::Engine(format!("{e:#}")))?;
        reset_dir(&settings.staging_dir).map_err(|source| StartError::PluginsDir {
            path: settings.staging_dir.clone(),
            source,
        })?;
        let memory_budget = MemoryBudget::new(settings.memory_budget_bytes);
        let parts = SlotParts {
            caps,
            memory_budget: &memory_budget,
            metrics,
            pool: &settings.pool,
        };
        let slots: BTreeMap<String, Arc<PluginSlot>> = manifests
            .into_iter()
            .map(|m| (m.name.clone(), Arc::new(PluginSlot::new(m, &parts, None))))
            .collect();
        let (loaded_tx, loaded) = tokio::sync::watch::channel(0);
        let initial: Vec<Arc<PluginSlot>> = slots.values().cloned().collect();
        let registry = Arc::new(Self {
            instances: Instances {
                _ticker: EpochTicker::start(engine),
                watchdog: Watchdog::start(),
                loader,
                memory_budget,
                pool: settings.pool.clone(),
            },
            versions,
            caps: caps.clone(),
            metrics: metrics.clone(),
            plugins_dir: settings.plugins_dir.clone(),
            overrides: settings.overrides.clone(),
            staging_dir: settings.staging_dir.clone(),
            plugins: ArcSwap::from_pointee(Plugins { slots, routes }),
            changes: ManifestChanges::default(),
            first_loads: FirstLoads {
                done: loaded,
                of: initial.len(),
            },
            auth: AuthHook::new(settings.auth_cache_entries, metrics),
        });
        let started = std::time::Instant::now();
        for slot in initial {
            let (registry, loaded_tx, delay) =
                (registry.clone(), loaded_tx.clone(), settings.load_delay);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                registry.first_load(&slot).await;
                loaded_tx.send_modify(|n| *n += 1);
                let of = registry.first_loads.of;
                if *loaded_tx.borrow() == of {
                    let ms = started.elapsed().as_millis();
                    tracing::info!(plugins = of, ms, "every plugin loaded");
                }
            });
        }
        Ok(registry)
    }

    /// Loads a new slot's version; a failure leaves the slot failed.
    pub(super) async fn first_load(&self, slot: &PluginSlot) {
        if let Err(e) = self.load_at_start(slot).await {
            tracing::error!(plugin = %slot.manifest.name, "unavailable: {e}");
            slot.set_error(Some(e));
        }
        slot.loading.store(false, Ordering::Release);
    }

    /// Waits, up to `limit`, until `slot`'s first load has ended.
    pub async fn first_load_of(&self, slot: &PluginSlot, limit: std::time::Duration) {
        let mut loaded = self.first_loads.done.clone();
        let ended = loaded.wait_for(|_| !slot.is_loading());
        let _ = tokio::time::timeout(limit, ended).await;
    }

    /// Waits until every plugin's first load has ended (ready or failed).
    pub async fn ready(&self) {
        let mut loaded = self.first_loads.done.clone();
        let _ = loaded.wait_for(|n| *n >= self.first_loads.of).await;
    }

    pub fn engine(&self) -> &wasmtime::Engine {
        self.instances.loader.engine()
    }

    /// Who sent a request to a route whose authenticator is `authenticator`
    /// (see `auth`).
    pub async fn authenticate(
        &self,
        authenticator: &str,
        method: &str,
        path: &str,
        headers: &http::HeaderMap,
    ) -> AuthOutcome {
        (self.auth)
            .authenticate(self, authenticator, method, path, headers)
            .await
    }

    /// Enforces the deadlines of requests and connections.
    pub fn watchdog(&self) -> &Watchdog {
        &self.instances.watchdog
    }

    /// The plugin for a request.
    pub fn route(&self, method: &str, path: &str) -> Result<Routed, RouteMatch<'static>> {
        let plugins = self.plugins.load();
        match plugins.routes.resolve(method, path) {
            RouteMatch::Plugin {
                name,
                prefix,
                index,
                as_get,
                room,
            } => match plugins.slots.get(name) {
                Some(slot) => Ok(Routed {
                    slot: slot.clone(),
                    route: prefix.clone(),
                    index,
                    head_as_get: as_get,
                    room,
                }),
                None => Err(RouteMatch::NotFound),
            },
            RouteMatch::MethodNotAllowed(allowed) => Err(RouteMatch::MethodNotAllowed(allowed)),
            RouteMatch::NotFound => Err(RouteMatch::NotFound),
        }
    }

    /// The plugin named `name` now.
    pub fn slot(&self, name: &str) -> Option<Arc<PluginSlot>> {
        self.plugins.load().slots.get(name).cloned()
    }

    /// Every plugin now, in name order.
    pub fn slots(&self) -> Vec<Arc<PluginSlot>> {
        self.plugins.load().slots.values().cloned().collect()
    }

    /// Manifest files that could not be applied, and why (for the admin
    /// API).
    pub fn refused_manifests(&self) -> BTreeMap<PathBuf, String> {
        unpoisoned(self.changes.refused.lock()).clone()
    }

    /// The slot named `name`, with its swap lock held; the slot may have
    /// been replaced while waiting for the lock (a manifest change), so it
    /// is looked up again until it is the current one.
    pub(super) async fn locked_slot(
        &self,
        name: &str,
    ) -> Result<(Arc<PluginSlot>, tokio::sync::OwnedMutexGuard<()>), LoadError> {
        loop {
            let slot = self
                .slot(name)
                .ok_or_else(|| LoadError::NoSuchPlugin(name.into()))?;
            let guard = slot.swap_lock.clone().lock_owned().await;
            if self.slot(name).is_some_and(|now| Arc::ptr_eq(&now, &slot)) {
                return Ok((slot, guard));
            }
        }
    }

    /// The version history of `name`, as recorded.
    pub async fn history(&self, name: &str) -> Result<VersionHistory, LoadError> {
        Ok(self.versions.history(name).await?)
    }

    /// A new slot's version: the component file, unless an upload or
    /// rollback happened after the file was last read and the file has not
    /// changed since.
    async fn load_at_start(&self, slot: &PluginSlot) -> Result<(), LoadError> {
        let _swap = slot.swap_lock.lock().await;
        self.load_version(slot).await
    }

    /// What `load_at_start` does, with the swap lock already held.
    pub(super) async fn load_version(&self, slot: &PluginSlot) -> Result<(), LoadError> {
        let name = &slot.manifest.name;
        let Some(component) = &slot.manifest.component else {
            return Ok(()); // rooms only: nothing to load
        };
        let bytes = match read_component(component).await {
            Ok(bytes) => bytes,
            Err(e) => return self.load_last_kept(slot, e).await,
        };
        let file_sha = sha256_hex(&bytes);
        let mut history = self.versions.history(name).await?;
        if let Some(kept) = versions::to_resume(&history, &file_sha).cloned() {
            match self.versions.load(&kept.sha256).await {
                Ok(bytes) => {
                    let loaded =
                        (self.load(&slot.manifest, bytes.into(), kept.sha256, kept.source)).await?;
                    self.activate(slot, loaded);
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(plugin = %name, "kept version unavailable, loading the file: {e}")
                }
            }
        }
        history.file_sha256 = Some(file_sha.clone());
        let bytes: Arc<[u8]> = bytes.into();
        let loaded = self
            .load(&slot.manifest, bytes.clone(), file_sha, VersionSource::File)
            .await?;
        self.keep_and_record(name, &mut history, &loaded, &bytes)
            .await?;
        self.activate(slot, loaded);
        Ok(())
    }

    /// Loads the last version `slot`'s history kept, for a component file
    /// this node does not have (a plugin whose manifest and versions were
    /// pushed to another node of the cluster); `missing` if none was kept.
    async fn load_last_kept(&self, slot: &PluginSlot, missing: LoadError) -> Result<(), LoadError> {
        let history = self.versions.history(&slot.manifest.name).await?;
        let Some(last) = history.active() else {
            return Err(missing);
        };
        let bytes = self.versions.load(&last.sha256).await?;
        let loaded = (self.load(
            &slot.manifest,
            bytes.into(),
            last.sha256.clone(),
            last.source,
        ))
        .await?;
        tracing::info!(plugin = %slot.manifest.name, "no component file here: {missing}; running the last kept version");
        self.activate(slot, loaded);
        Ok(())
    }

    /// Installs a new version of `name` (an upload, or a changed file).
    /// On failure the old version keeps serving.
    pub async fn install(
        &self,
        name: &str,
        version: NewVersion,
        source: VersionSource,
    ) -> Result<Arc<LoadedPlugin>, LoadError> {
        let (slot, _swap) = self.locked_slot(name).await?;
        if slot.manifest.component.is_none() {
            return Err(LoadError::NoComponent(name.into()));
        }
        let (bytes, sha) = version.read().await?;
        let mut history = self.versions.history(name).await?;
        if source == VersionSource::File {
            if history.file_sha256.as_deref() == Some(sha.as_str()) {
                // Touched, an editor's second write event, or a deleted file
                // put back as it was: nothing to load.
                if let Some(active) = slot.active() {
                    if slot.error_is_unreadable_file() {
                        slot.set_error(None);
                    }
                    return Ok(active);
                }
            }
            history.file_sha256 = Some(sha.clone());
        }
        let loaded = match self.load(&slot.manifest, bytes.clone(), sha, source).await {
            Ok(l) => l,
            Err(e) => {
                slot.count_swap("refused");
                slot.set_error(Some(e.clone()));
                if source == VersionSource::File {
                    // Remember the file was read, so an unchanged broken file
                    // is not retried on every event.
                    self.versions.save_history(name, &history).await?;
                }
                return Err(e);
            }
        };
        self.keep_and_record(name, &mut history, &loaded, &bytes)
            .await?;
        Ok(self.activate(&slot, loaded))
    }

    /// Reloads `name` from its component file (the file watcher calls this).
    /// A file that cannot be read (deleted, say) leaves the active version
    /// serving and the plugin degraded, with the reason.
    pub async fn reload_file(&self, name: &str) -> Result<Arc<LoadedPlugin>, LoadError> {
        let slot = self
            .slot(name)
            .ok_or_else(|| LoadError::NoSuchPlugin(name.into()))?;
        let Some(component) = &slot.manifest.component else {
            return Err(LoadError::NoComponent(name.into()));
        };
        match read_component(component).await {
            Ok(bytes) => {
                self.install(name, NewVersion::Bytes(bytes), VersionSource::File)
                    .await
            }
            Err(e) => {
                slot.set_error(Some(e.clone()));
                Err(e)
            }
        }
    }

    /// A new path to stream an upload into, then pass to `install` as
    /// `NewVersion::Staged`.
    pub fn staging_path(&self) -> PathBuf {
        self.staging_dir.join(unique_suffix())
    }

    /// Compiles and links a version; refuses one that cannot serve what
    /// `manifest` declares: its routes need the HTTP export, and a plugin
    /// with rooms only needs the room handler.
    pub(super) async fn load(
        &self,
        manifest: &Manifest,
        bytes: Arc<[u8]>,
        sha256: String,
        source: VersionSource,
    ) -> Result<LoadedPlugin, LoadError> {
        let loaded = self.instances.loader.load(bytes, sha256, source).await?;
        if !manifest.routes.is_empty() && loaded.exports.http.is_none() {
            return Err(LoadError::NoHttpHandler);
        }
        if manifest.routes.is_empty() && loaded.exports.room_handler.is_none() {
            return Err(LoadError::NoRoomHandler);
        }
        Ok(loaded)
    }

    /// Keeps the bytes of `loaded` (for rollbacks and restarts) and
    /// appends it to the history.
    async fn keep_and_record(
        &self,
        name: &str,
        history: &mut VersionHistory,
        loaded: &LoadedPlugin,
        bytes: &[u8],
    ) -> Result<(), LoadError> {
        self.versions.keep(&loaded.sha256, bytes).await?;
        versions::record(
            history,
            VersionRecord {
                sha256: loaded.sha256.clone(),
                source: loaded.source,
                activated_at_ms: loaded.loaded_at_ms,
            },
        );
        self.versions.save_history(name, history).await?;
        Ok(())
    }

    pub(super) fn activate(&self, slot: &PluginSlot, loaded: LoadedPlugin) -> Arc<LoadedPlugin> {
        let loaded = Arc::new(loaded);
        tracing::info!(
            plugin = %slot.manifest.name,
            version = %&loaded.sha256[..12],
            source = ?loaded.source,
            cache = ?loaded.cache,
            load_ms = loaded.load_time.as_secs_f64() * 1e3,
            "plugin active"
        );
        slot.active.store(Some(loaded.clone()));
        slot.set_error(None);
        slot.count_swap("activated");
        loaded
    }
}

fn reset_dir(dir: &Path) -> std::io::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)
}

pub(super) async fn read_component(path: &Path) -> Result<Vec<u8>, LoadError> {
    tokio::fs::read(path).await.map_err(|e| LoadError::Read {
        path: path.to_path_buf(),
        source: Arc::new(e),
    })
}

/// Every `*.toml` in `dir`, parsed and with `overrides` applied, in name
/// order. Two manifests naming the same plugin are refused.
pub fn read_manifests(
    dir: &Path,
    overrides: &PluginOverrides,
) -> Result<Vec<Manifest>, StartError> {
    let dir_err = |source| StartError::PluginsDir {
        path: dir.to_path_buf(),
        source,
    };
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(dir_err)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    let mut manifests: Vec<Manifest> = Vec::new();
    for path in paths {
        let mut m = manifest::load(&path)?;
        overrides.apply(&mut m);
        if let Some(other) = manifests.iter().find(|o| o.name == m.name) {
            return Err(StartError::Routes(format!(
                "{}: plugin name '{}' is already used by {}",
                path.display(),
                m.name,
                other.path.display()
            )));
        }
        manifests.push(m);
    }
    Ok(manifests)
}
