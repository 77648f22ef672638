//! The plugins this host serves, and hot swap.
//!
//! Each plugin has a `PluginSlot`: its manifest, its capability context and
//! the active version behind an atomic pointer (`ArcSwapOption`). A request
//! takes an `Arc` of the active version and keeps it to the end, so swapping
//! never disturbs requests in flight: they finish on the old version while new
//! requests get the new one. A new version is compiled and linked off the
//! request path (`loader`); only a version that fits is swapped in.
//!
//! Every activated version is kept by the `VersionStore` and recorded in the
//! plugin's history (`versions`), so an upload survives a restart and
//! `rollback` can go back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;

use super::engine::{EpochTicker, PoolSettings, build_engine};
use super::loader::{LoadError, LoadedPlugin, Loader};
use super::manifest::{self, Manifest, ManifestError};
use super::memory_budget::MemoryBudget;
use super::routes::{RouteMatch, RouteTable};
use super::state::PluginContext;
use super::versions;
use super::watchdog::Watchdog;
use crate::caps::Caps;
use crate::metrics::Metrics;
use crate::storage::{VersionHistory, VersionRecord, VersionSource, VersionStore};
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

/// One plugin: manifest, context and the active version.
pub struct PluginSlot {
    pub manifest: Manifest,
    pub context: Arc<PluginContext>,
    /// Requests of this plugin that may run at once (`limits.max_concurrent`,
    /// or a share of the instance pool): one plugin's slow clients wait on
    /// their own permits, never on the other plugins' instances.
    pub max_concurrent: u32,
    running: Arc<AtomicU32>,
    active: ArcSwapOption<LoadedPlugin>,
    /// Until its first load ends (ready or failed).
    loading: std::sync::atomic::AtomicBool,
    last_error: Mutex<Option<LoadError>>,
    /// Serialises swaps of this plugin (uploads, file changes, rollbacks).
    swap_lock: tokio::sync::Mutex<()>,
}

impl PluginSlot {
    /// The version new requests should use, if any loaded.
    pub fn active(&self) -> Option<Arc<LoadedPlugin>> {
        self.active.load_full()
    }

    fn count_swap(&self, outcome: &'static str) {
        let metrics = &self.context.metrics;
        Metrics::count(&metrics.host.swaps, &metrics.plugin, outcome, 1);
    }

    /// Whether the plugin's first load is still under way.
    pub fn is_loading(&self) -> bool {
        self.loading.load(Ordering::Acquire)
    }

    /// The most recent load failure, if the last attempt failed. For the
    /// log and the admin API only: it may name files of the host.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(ToString::to_string)
    }

    fn set_error(&self, e: Option<LoadError>) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }

    fn error_is_unreadable_file(&self) -> bool {
        matches!(
            *self.last_error.lock().unwrap_or_else(|p| p.into_inner()),
            Some(LoadError::Read { .. })
        )
    }

    /// A permit to run one request, held until its instance is gone; `None`
    /// when the plugin is at `max_concurrent`. (A counter, not a semaphore:
    /// nobody waits for a permit, and releasing one takes no lock.)
    pub fn try_admit(&self) -> Option<Admitted> {
        let before = self.running.fetch_add(1, Ordering::AcqRel);
        if before >= self.max_concurrent {
            self.running.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Admitted(self.running.clone()))
    }

    /// Requests running now.
    pub fn in_flight(&self) -> u32 {
        self.running
            .load(Ordering::Relaxed)
            .min(self.max_concurrent)
    }
}

/// One running request of a plugin; dropping it makes room for another.
pub struct Admitted(Arc<AtomicU32>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The share of the instance pool a plugin gets when its manifest sets no
/// `max_concurrent`: half, enough for a busy plugin, while slow clients of
/// one plugin leave the other half to the rest.
pub fn default_max_concurrent(max_instances: u32) -> u32 {
    (max_instances / 2).max(1)
}

/// Where a request goes.
pub struct Routed {
    pub slot: Arc<PluginSlot>,
    /// The route prefix that matched.
    pub route: Arc<str>,
    /// A `HEAD` the plugin is to run as `GET` (the server drops the body).
    pub head_as_get: bool,
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

/// All plugins, their routes, and the engine they run on.
pub struct PluginRegistry {
    loader: Loader,
    versions: Arc<dyn VersionStore>,
    staging_dir: PathBuf,
    slots: BTreeMap<String, Arc<PluginSlot>>,
    routes: RouteTable,
    /// How many plugins have finished their first load.
    loaded: tokio::sync::watch::Receiver<usize>,
    watchdog: Watchdog,
    _ticker: EpochTicker,
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
        let manifests = read_manifests(&settings.plugins_dir)?;
        let routes = RouteTable::new(&manifests).map_err(StartError::Routes)?;
        let engine = build_engine(&settings.pool).map_err(|e| StartError::Engine(e.to_string()))?;
        let loader = Loader::new(&engine, settings.compile_cache_dir.clone())
            .map_err(|e| StartError::Engine(format!("{e:#}")))?;
        reset_dir(&settings.staging_dir).map_err(|source| StartError::PluginsDir {
            path: settings.staging_dir.clone(),
            source,
        })?;
        let memory_budget = MemoryBudget::new(settings.memory_budget_bytes);
        let slots = manifests
            .into_iter()
            .map(|m| {
                if m.limits.memory_bytes > settings.memory_budget_bytes {
                    tracing::warn!(
                        plugin = %m.name,
                        "memory_mib is above the host's memory budget: its requests may be refused as busy"
                    );
                }
                let max_concurrent = m
                    .limits
                    .max_concurrent
                    .unwrap_or_else(|| default_max_concurrent(settings.pool.max_instances))
                    .min(settings.pool.max_instances.max(1));
                let slot = PluginSlot {
                    context: PluginContext::new(caps, &m, memory_budget.clone(), metrics),
                    manifest: m,
                    max_concurrent,
                    running: Arc::default(),
                    active: ArcSwapOption::empty(),
                    loading: std::sync::atomic::AtomicBool::new(true),
                    last_error: Mutex::new(None),
                    swap_lock: tokio::sync::Mutex::new(()),
                };
                (slot.manifest.name.clone(), Arc::new(slot))
            })
            .collect();
        let (loaded_tx, loaded) = tokio::sync::watch::channel(0);
        let registry = Arc::new(Self {
            _ticker: EpochTicker::start(engine),
            watchdog: Watchdog::start(),
            loader,
            versions,
            staging_dir: settings.staging_dir.clone(),
            slots,
            routes,
            loaded,
        });
        let started = std::time::Instant::now();
        for slot in registry.slots.values().cloned() {
            let (registry, loaded_tx, delay) =
                (registry.clone(), loaded_tx.clone(), settings.load_delay);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                if let Err(e) = registry.load_at_start(&slot).await {
                    tracing::error!(plugin = %slot.manifest.name, "unavailable: {e}");
                    slot.set_error(Some(e));
                }
                slot.loading.store(false, Ordering::Release);
                loaded_tx.send_modify(|n| *n += 1);
                if *loaded_tx.borrow() == registry.slots.len() {
                    let ms = started.elapsed().as_millis();
                    tracing::info!(plugins = registry.slots.len(), ms, "every plugin loaded");
                }
            });
        }
        Ok(registry)
    }

    /// Waits until every plugin's first load has ended (ready or failed).
    pub async fn ready(&self) {
        let mut loaded = self.loaded.clone();
        let _ = loaded.wait_for(|n| *n >= self.slots.len()).await;
    }

    pub fn engine(&self) -> &wasmtime::Engine {
        self.loader.engine()
    }

    /// Enforces the deadlines of requests and connections.
    pub fn watchdog(&self) -> &Watchdog {
        &self.watchdog
    }

    /// The plugin for a request.
    pub fn route(&self, method: &str, path: &str) -> Result<Routed, RouteMatch<'_>> {
        match self.routes.resolve(method, path) {
            RouteMatch::Plugin {
                name,
                prefix,
                as_get,
            } => match self.slots.get(name) {
                Some(slot) => Ok(Routed {
                    slot: slot.clone(),
                    route: prefix.clone(),
                    head_as_get: as_get,
                }),
                None => Err(RouteMatch::NotFound),
            },
            other => Err(other),
        }
    }

    pub fn slot(&self, name: &str) -> Option<&Arc<PluginSlot>> {
        self.slots.get(name)
    }

    fn existing_slot(&self, name: &str) -> Result<Arc<PluginSlot>, LoadError> {
        self.slot(name)
            .cloned()
            .ok_or_else(|| LoadError::NoSuchPlugin(name.into()))
    }

    pub fn slots(&self) -> impl Iterator<Item = &Arc<PluginSlot>> {
        self.slots.values()
    }

    /// The version history of `name`, as recorded.
    pub async fn history(&self, name: &str) -> Result<VersionHistory, LoadError> {
        Ok(self.versions.history(name).await?)
    }

    /// At start: the component file, unless an upload or rollback happened
    /// after the file was last read and the file has not changed since.
    async fn load_at_start(&self, slot: &PluginSlot) -> Result<(), LoadError> {
        let _swap = slot.swap_lock.lock().await;
        let name = &slot.manifest.name;
        let bytes = read_component(&slot.manifest.component).await?;
        let file_sha = sha256_hex(&bytes);
        let mut history = self.versions.history(name).await?;
        if let Some(kept) = versions::to_resume(&history, &file_sha).cloned() {
            match self.versions.load(&kept.sha256).await {
                Ok(bytes) => {
                    let loaded = self.load(bytes.into(), kept.sha256, kept.source).await?;
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
            .load(bytes.clone(), file_sha, VersionSource::File)
            .await?;
        self.keep_and_record(name, &mut history, &loaded, &bytes)
            .await?;
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
        let slot = self.existing_slot(name)?;
        let _swap = slot.swap_lock.lock().await;
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
        let loaded = match self.load(bytes.clone(), sha, source).await {
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
        let slot = self.existing_slot(name)?;
        match read_component(&slot.manifest.component).await {
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

    /// Goes back to the version before the active one.
    pub async fn rollback(&self, name: &str) -> Result<Arc<LoadedPlugin>, LoadError> {
        let slot = self.existing_slot(name)?;
        let _swap = slot.swap_lock.lock().await;
        let mut history = self.versions.history(name).await?;
        let previous = versions::previous(&history)
            .cloned()
            .ok_or(LoadError::NoPreviousVersion)?;
        let bytes = self.versions.load(&previous.sha256).await?;
        let loaded = self
            .load(bytes.into(), previous.sha256, previous.source)
            .await?;
        history.versions.pop();
        self.versions.save_history(name, &history).await?;
        Ok(self.activate(&slot, loaded))
    }

    /// Compiles and links a version; refuses one that cannot serve the
    /// plugin's routes.
    async fn load(
        &self,
        bytes: Arc<[u8]>,
        sha256: String,
        source: VersionSource,
    ) -> Result<LoadedPlugin, LoadError> {
        let loaded = self.loader.load(bytes, sha256, source).await?;
        if loaded.exports.http.is_none() {
            return Err(LoadError::NoHttpHandler);
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

    fn activate(&self, slot: &PluginSlot, loaded: LoadedPlugin) -> Arc<LoadedPlugin> {
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

async fn read_component(path: &Path) -> Result<Vec<u8>, LoadError> {
    tokio::fs::read(path).await.map_err(|e| LoadError::Read {
        path: path.to_path_buf(),
        source: Arc::new(e),
    })
}

/// Every `*.toml` in `dir`, parsed, in name order. Two manifests naming the
/// same plugin are refused.
pub fn read_manifests(dir: &Path) -> Result<Vec<Manifest>, StartError> {
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
        let m = manifest::load(&path)?;
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
