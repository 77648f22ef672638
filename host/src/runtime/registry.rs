//! The plugins this host serves, and hot swap.
//!
//! Each plugin has a `PluginSlot`: its manifest, its capability context and
//! the active version behind an atomic pointer (`ArcSwapOption`). A request
//! takes an `Arc` of the active version and keeps it to the end, so swapping
//! never disturbs requests in flight: they finish on the old version while new
//! requests get the new one. A new version is compiled and type-checked off
//! the request path; only a version that fits the plugin world is swapped in.
//!
//! Every activated version is kept in `data/plugin-versions/` and recorded in
//! redb, so an upload survives a restart and `rollback` can go back.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use serde::{Deserialize, Serialize};
use wasmtime::Engine;
use wasmtime::component::Linker;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use super::compile_cache::{CacheOutcome, CompileCache};
use super::engine::{EpochTicker, build_engine};
use super::manifest::{self, Manifest, ManifestError};
use super::memory_budget::MemoryBudget;
use super::state::{PluginContext, RequestState};
use super::watchdog::Watchdog;
use crate::caps::outbound::OutboundCtx;
use crate::caps::{self, blob::BlobCtx, blob::BlobStore, kv::KvCtx, kv::KvStore};
use crate::config::ServerConfig;
use crate::server::routes::{RouteMatch, RouteTable};
use crate::storage::{PLUGIN_VERSIONS, Storage, StorageError, now_ms, sha256_hex, unique_suffix};

/// How many versions of a plugin are remembered for rollback.
const MAX_HISTORY: usize = 50;

/// Where a version came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionSource {
    /// The component file named by the manifest.
    File,
    /// `PUT /_spike/plugins/{name}`.
    Upload,
}

/// One compiled, type-checked version of a plugin, ready to instantiate.
pub struct LoadedPlugin {
    pub sha256: String,
    pub source: VersionSource,
    pub loaded_at_ms: u64,
    /// Time from bytes to a ready `ProxyPre`.
    pub load_time: Duration,
    pub cache: CacheOutcome,
    pub pre: ProxyPre<RequestState>,
}

/// A recorded activation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub sha256: String,
    pub source: VersionSource,
    pub activated_at_ms: u64,
}

/// A plugin's activations, oldest first; the last is the active one.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VersionHistory {
    pub versions: Vec<VersionRecord>,
    /// Hash of the component file when it was last read, to tell at start
    /// whether the file changed since an upload or rollback.
    pub file_sha256: Option<String>,
}

/// Why a version could not be loaded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read component {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("not a valid component: {0}")]
    Compile(String),
    #[error("component does not fit the spike:host/plugin world: {0}")]
    World(String),
    #[error("no plugin named '{0}'")]
    NoSuchPlugin(String),
    #[error("no previous version to roll back to")]
    NoPreviousVersion,
    #[error("storage: {0}")]
    Storage(String),
}

impl From<StorageError> for LoadError {
    fn from(e: StorageError) -> Self {
        Self::Storage(e.to_string())
    }
}

/// The bytes of a version on their way in.
pub enum NewVersion {
    /// Read into memory (a component file, a kept version).
    Bytes(Vec<u8>),
    /// Streamed into a file at `PluginRegistry::staging_path` (an upload),
    /// hashed on the way. The file is moved into the versions folder if the
    /// version is activated, and removed otherwise.
    Staged(StagedFile),
}

/// An upload in its staging file; the file goes when this drops unless it
/// was kept.
pub struct StagedFile {
    pub path: std::path::PathBuf,
    pub sha256: String,
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl NewVersion {
    fn sha256(&self) -> String {
        match self {
            Self::Bytes(b) => sha256_hex(b),
            Self::Staged(f) => f.sha256.clone(),
        }
    }

    /// The bytes to compile, and the staging file if there is one
    /// (blocking).
    fn open(self) -> Result<(Vec<u8>, Option<StagedFile>), LoadError> {
        match self {
            Self::Bytes(b) => Ok((b, None)),
            Self::Staged(f) => match std::fs::read(&f.path) {
                Ok(b) => Ok((b, Some(f))),
                Err(e) => Err(LoadError::Storage(format!("reading the upload: {e}"))),
            },
        }
    }
}

/// Keeps a version's bytes at `keep_at` (its hash names it, so one copy
/// serves every plugin that uses these bytes): the staging file moves
/// there, or the bytes are written.
fn keep_version(bytes: &[u8], staged: Option<StagedFile>, keep_at: &Path) -> std::io::Result<()> {
    if keep_at.exists() {
        return Ok(());
    }
    match staged {
        Some(f) => std::fs::rename(&f.path, keep_at),
        None => {
            // Unique per call: two plugins may install the same bytes at once.
            let tmp = keep_at.with_extension(unique_suffix());
            std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, keep_at))
        }
    }
}

/// One plugin: manifest, context and the active version.
pub struct PluginSlot {
    pub manifest: Manifest,
    pub context: PluginContext,
    /// Requests of this plugin that may run at once (`limits.max_concurrent`,
    /// or a share of the instance pool): one plugin's slow clients wait on
    /// their own permits, never on the other plugins' instances.
    pub max_concurrent: u32,
    running: Arc<AtomicU32>,
    active: ArcSwapOption<LoadedPlugin>,
    last_error: Mutex<Option<LoadError>>,
    /// Serialises swaps of this plugin (uploads, file changes, rollbacks).
    swap_lock: tokio::sync::Mutex<()>,
}

impl PluginSlot {
    /// The version new requests should use, if any loaded.
    pub fn active(&self) -> Option<Arc<LoadedPlugin>> {
        self.active.load_full()
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
    #[error("plugins folder {path}: {reason}")]
    PluginsDir { path: String, reason: String },
    #[error("{0}")]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Engine(String),
}

/// All plugins, their routes, and the engine they run on.
pub struct PluginRegistry {
    engine: Engine,
    linker: Linker<RequestState>,
    cache: CompileCache,
    storage: Storage,
    slots: BTreeMap<String, Arc<PluginSlot>>,
    routes: RouteTable,
    pub kv: KvStore,
    pub blob: BlobStore,
    watchdog: Watchdog,
    _ticker: EpochTicker,
}

impl PluginRegistry {
    /// Reads every manifest in the plugins folder (a malformed one stops the
    /// start, naming file, line and reason), builds the route table and loads
    /// each plugin. A plugin whose component is missing or broken is kept as
    /// failed: its routes answer 503 while the others serve.
    pub async fn start(config: &ServerConfig, storage: Storage) -> Result<Self, StartError> {
        let manifests = read_manifests(&config.plugins_dir)?;
        let routes = RouteTable::new(&manifests).map_err(StartError::Routes)?;
        let engine = build_engine(&config.pool).map_err(|e| StartError::Engine(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        link_everything(&mut linker).map_err(|e| StartError::Engine(format!("{e:#}")))?;
        let cache = CompileCache::new(storage.compile_cache_dir(), &engine);
        let kv = KvStore::new(storage.clone());
        let blob = BlobStore::new(storage.clone(), config.max_object_bytes);
        let memory_budget = MemoryBudget::new(config.memory_budget_bytes);
        let slots = manifests
            .into_iter()
            .map(|m| {
                let grants = Arc::new(m.grants.clone());
                if m.limits.memory_bytes > config.memory_budget_bytes {
                    tracing::warn!(
                        plugin = %m.name,
                        "memory_mib is above the host's memory budget: its requests may be refused as busy"
                    );
                }
                let context = PluginContext {
                    name: m.name.as_str().into(),
                    limits: m.limits.clone(),
                    kv: KvCtx {
                        store: kv.clone(),
                        grants: grants.clone(),
                    },
                    blob: BlobCtx {
                        store: blob.clone(),
                        grants: grants.clone(),
                    },
                    outbound: OutboundCtx {
                        grants,
                        resolver: config.resolver.clone(),
                    },
                    memory_budget: memory_budget.clone(),
                };
                let max_concurrent = m
                    .limits
                    .max_concurrent
                    .unwrap_or_else(|| default_max_concurrent(config.pool.max_instances))
                    .min(config.pool.max_instances.max(1));
                let slot = PluginSlot {
                    manifest: m,
                    context,
                    max_concurrent,
                    running: Arc::default(),
                    active: ArcSwapOption::empty(),
                    last_error: Mutex::new(None),
                    swap_lock: tokio::sync::Mutex::new(()),
                };
                (slot.manifest.name.clone(), Arc::new(slot))
            })
            .collect();
        let registry = Self {
            _ticker: EpochTicker::start(engine.clone()),
            watchdog: Watchdog::start(),
            engine,
            linker,
            cache,
            storage,
            slots,
            routes,
            kv,
            blob,
        };
        for slot in registry.slots.values() {
            if let Err(e) = registry.load_at_start(slot).await {
                tracing::error!(plugin = %slot.manifest.name, "unavailable: {e}");
                slot.set_error(Some(e));
            }
        }
        Ok(registry)
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Enforces the deadlines of requests and connections.
    pub fn watchdog(&self) -> &Watchdog {
        &self.watchdog
    }

    /// The plugin for a request.
    pub fn route(&self, method: &str, path: &str) -> Result<Routed, RouteMatch<'_>> {
        match self.routes.resolve(method, path) {
            RouteMatch::Plugin { name, as_get } => match self.slots.get(name) {
                Some(slot) => Ok(Routed {
                    slot: slot.clone(),
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
    pub fn history(&self, name: &str) -> Result<VersionHistory, LoadError> {
        let txn = redb::ReadableDatabase::begin_read(self.storage.db())
            .map_err(|e| LoadError::Storage(e.to_string()))?;
        let table = txn
            .open_table(PLUGIN_VERSIONS)
            .map_err(|e| LoadError::Storage(e.to_string()))?;
        let raw = table
            .get(name)
            .map_err(|e| LoadError::Storage(e.to_string()))?;
        Ok(match raw {
            Some(raw) => serde_json::from_slice(raw.value()).unwrap_or_default(),
            None => VersionHistory::default(),
        })
    }

    /// Commits `history` (an fsync: off the async workers, since swaps
    /// happen while traffic flows).
    async fn save_history(&self, name: &str, history: &VersionHistory) -> Result<(), LoadError> {
        let raw = serde_json::to_vec(history).map_err(|e| LoadError::Storage(e.to_string()))?;
        let (storage, name) = (self.storage.clone(), name.to_string());
        let commit = move || -> Result<(), redb::Error> {
            let txn = storage.db().begin_write()?;
            txn.open_table(PLUGIN_VERSIONS)?
                .insert(name.as_str(), raw.as_slice())?;
            txn.commit()?;
            Ok(())
        };
        tokio::task::spawn_blocking(commit)
            .await
            .map_err(|e| LoadError::Storage(e.to_string()))?
            .map_err(|e| LoadError::Storage(e.to_string()))
    }

    /// At start: the component file, unless an upload or rollback happened
    /// after the file was last read and the file has not changed since.
    async fn load_at_start(&self, slot: &PluginSlot) -> Result<(), LoadError> {
        let _swap = slot.swap_lock.lock().await;
        let name = &slot.manifest.name;
        let bytes = read_component(&slot.manifest.component).await?;
        let file_sha = sha256_hex(&bytes);
        let mut history = self.history(name)?;
        if history.file_sha256.as_deref() == Some(file_sha.as_str())
            && let Some(last) = history.versions.last().cloned()
            && last.sha256 != file_sha
        {
            match self.read_version(&last.sha256).await {
                Ok(kept) => {
                    let kept = NewVersion::Bytes(kept);
                    let loaded = self.compile(kept, last.sha256.clone(), last.source).await?;
                    self.activate(slot, loaded);
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(plugin = %name, "kept version unavailable, loading the file: {e}")
                }
            }
        }
        history.file_sha256 = Some(file_sha.clone());
        let loaded = self
            .compile(NewVersion::Bytes(bytes), file_sha, VersionSource::File)
            .await?;
        Self::record(&mut history, &loaded);
        self.save_history(name, &history).await?;
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
        let sha = version.sha256();
        let mut history = self.history(name)?;
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
        let loaded = match self.compile(version, sha, source).await {
            Ok(l) => l,
            Err(e) => {
                slot.set_error(Some(e.clone()));
                if source == VersionSource::File {
                    // Remember the file was read, so an unchanged broken file
                    // is not retried on every event.
                    self.save_history(name, &history).await?;
                }
                return Err(e);
            }
        };
        Self::record(&mut history, &loaded);
        self.save_history(name, &history).await?;
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

    /// A new path in the versions folder to stream an upload into, then
    /// pass to `install` as `NewVersion::Staged`. Leftovers of a crash are
    /// removed at start (`Storage::open`).
    pub fn staging_path(&self) -> std::path::PathBuf {
        self.storage.plugin_versions_dir().join(unique_suffix())
    }

    /// Goes back to the version before the active one.
    pub async fn rollback(&self, name: &str) -> Result<Arc<LoadedPlugin>, LoadError> {
        let slot = self.existing_slot(name)?;
        let _swap = slot.swap_lock.lock().await;
        let mut history = self.history(name)?;
        if history.versions.len() < 2 {
            return Err(LoadError::NoPreviousVersion);
        }
        let previous = history.versions[history.versions.len() - 2].clone();
        let bytes = NewVersion::Bytes(self.read_version(&previous.sha256).await?);
        let loaded = self
            .compile(bytes, previous.sha256.clone(), previous.source)
            .await?;
        history.versions.pop();
        self.save_history(name, &history).await?;
        Ok(self.activate(&slot, loaded))
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
        loaded
    }

    /// Appends `loaded` to `history` (its bytes were kept by `compile`).
    fn record(history: &mut VersionHistory, loaded: &LoadedPlugin) {
        if history
            .versions
            .last()
            .is_some_and(|v| v.sha256 == loaded.sha256)
        {
            return;
        }
        history.versions.push(VersionRecord {
            sha256: loaded.sha256.clone(),
            source: loaded.source,
            activated_at_ms: loaded.loaded_at_ms,
        });
        if history.versions.len() > MAX_HISTORY {
            history.versions.remove(0);
        }
    }

    fn version_path(&self, sha256: &str) -> std::path::PathBuf {
        self.storage
            .plugin_versions_dir()
            .join(format!("{sha256}.wasm"))
    }

    async fn read_version(&self, sha256: &str) -> Result<Vec<u8>, LoadError> {
        let path = self.version_path(sha256);
        tokio::fs::read(&path).await.map_err(|e| LoadError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }

    /// Compiles (or loads from the cache) and type-checks a version, off
    /// the async workers, and keeps its bytes for later rollbacks and
    /// restarts.
    async fn compile(
        &self,
        version: NewVersion,
        sha256: String,
        source: VersionSource,
    ) -> Result<LoadedPlugin, LoadError> {
        let engine = self.engine.clone();
        let cache = self.cache.clone();
        let linker = self.linker.clone();
        let keep_at = self.version_path(&sha256);
        tokio::task::spawn_blocking(move || {
            let start = Instant::now();
            let (bytes, staged) = version.open()?;
            let (component, outcome) = cache
                .load(&engine, &bytes, &sha256)
                .map_err(LoadError::Compile)?;
            let instance_pre = linker
                .instantiate_pre(&component)
                .map_err(|e| LoadError::World(format!("{e:#}")))?;
            let pre =
                ProxyPre::new(instance_pre).map_err(|e| LoadError::World(format!("{e:#}")))?;
            let load_time = start.elapsed();
            keep_version(&bytes, staged, &keep_at)
                .map_err(|e| LoadError::Storage(format!("keeping the version: {e}")))?;
            Ok(LoadedPlugin {
                sha256,
                source,
                loaded_at_ms: now_ms(),
                load_time,
                cache: outcome,
                pre,
            })
        })
        .await
        .map_err(|e| LoadError::Compile(format!("compile task failed: {e}")))?
    }
}

/// Every import a plugin may have: all of WASI 0.2 (so components from other
/// toolchains load; sockets and files stay closed by the `WasiCtx`),
/// `wasi:http`, and spike's capabilities.
pub fn link_everything(linker: &mut Linker<RequestState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    caps::add_to_linker(linker)
}

async fn read_component(path: &Path) -> Result<Vec<u8>, LoadError> {
    tokio::fs::read(path).await.map_err(|e| LoadError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Every `*.toml` in `dir`, parsed, in name order. Two manifests naming the
/// same plugin are refused.
pub fn read_manifests(dir: &Path) -> Result<Vec<Manifest>, StartError> {
    let dir_err = |reason: String| StartError::PluginsDir {
        path: dir.display().to_string(),
        reason,
    };
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| dir_err(e.to_string()))?
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
