//! From component bytes to a plugin ready to instantiate: compile (or load
//! from the compile cache), link against the plugin world, and find which
//! of the world's exports the component provides.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::Engine;
use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime_wasi_http::p2::bindings::ProxyIndices;

use super::compile_cache::{CacheOutcome, CompileCache};
use super::linker;
use super::state::RequestState;
use crate::bindings::exports::spike::host::authenticator::GuestIndices as AuthenticatorIndices;
use crate::bindings::exports::spike::host::room_handler::GuestIndices as RoomHandlerIndices;
use crate::storage::{StorageError, VersionSource};
use crate::util::now_ms;

/// One compiled, linked version of a plugin, ready to instantiate.
pub struct LoadedPlugin {
    pub sha256: String,
    pub source: VersionSource,
    pub loaded_at_ms: u64,
    /// Time from bytes to a ready `InstancePre`.
    pub load_time: Duration,
    pub cache: CacheOutcome,
    pub pre: InstancePre<RequestState>,
    pub exports: Exports,
    /// Instances kept between requests (`instance_reuse`).
    pub idle: super::reuse::IdleInstances,
    /// Whether this version has answered as never changing: only then are
    /// its requests looked up in the server's cache of such answers (the
    /// others pay nothing for it, not even the key's allocations).
    pub answers_immutably: std::sync::atomic::AtomicBool,
}

/// The exports of the plugin world a component provides. A new kind of
/// export is one more field here.
pub struct Exports {
    /// `wasi:http/incoming-handler`.
    pub http: Option<ProxyIndices>,
    /// `spike:host/authenticator`.
    pub authenticator: Option<AuthenticatorIndices>,
    /// `spike:host/room-handler`.
    pub room_handler: Option<RoomHandlerIndices>,
}

/// Why a version could not be loaded or activated.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read component {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: Arc<std::io::Error>,
    },
    #[error("not a valid component: {0}")]
    Compile(String),
    #[error("component does not fit the spike:host/plugin world: {0}")]
    World(String),
    #[error(
        "component does not fit the spike:host/plugin world: it does not export \
         wasi:http/incoming-handler, which its routes need"
    )]
    NoHttpHandler,
    #[error(
        "component serves nothing: a plugin without [[routes]] needs a component that \
         exports spike:host/room-handler"
    )]
    NoRoomHandler,
    #[error("no plugin named '{0}'")]
    NoSuchPlugin(String),
    /// A plugin that only declares rooms: its manifest names no component
    /// to load a version of.
    #[error("plugin '{0}' has no component: add component = \"<file>.wasm\" to its manifest")]
    NoComponent(String),
    #[error("{0}")]
    Manifest(#[from] super::manifest::ManifestError),
    /// A manifest that claims another plugin's name or route.
    #[error("{0}")]
    Conflict(String),
    #[error("no previous version to roll back to")]
    NoPreviousVersion,
    #[error("{0}")]
    NoSuchVersion(super::versions::FindError),
    #[error("storage: {0}")]
    Storage(Arc<StorageError>),
}

impl From<StorageError> for LoadError {
    fn from(e: StorageError) -> Self {
        Self::Storage(Arc::new(e))
    }
}

/// Compiles and links components; shared by every plugin.
#[derive(Clone)]
pub struct Loader {
    engine: Engine,
    linker: Linker<RequestState>,
    cache: CompileCache,
}

/// Why `component` did not link: wasmtime's reason, led by the versions
/// spike links where it imports a standard at another.
pub fn link_error(engine: &Engine, component: &Component, e: &wasmtime::Error) -> String {
    let kind = component.component_type();
    let imports: Vec<String> = (kind.imports(engine))
        .map(|(name, _)| name.to_string())
        .collect();
    match super::standards::unlinked_version(imports.iter().map(String::as_str)) {
        Some(why) => format!("{why}; {e:#}"),
        None => format!("{e:#}"),
    }
}

impl Loader {
    pub fn new(engine: &Engine, cache_dir: PathBuf) -> wasmtime::Result<Self> {
        Ok(Self {
            engine: engine.clone(),
            linker: linker::new(engine)?,
            cache: CompileCache::new(cache_dir, engine),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles (or loads from the cache) and links `bytes`, off the async
    /// workers.
    pub async fn load(
        &self,
        bytes: Arc<[u8]>,
        sha256: String,
        source: VersionSource,
    ) -> Result<LoadedPlugin, LoadError> {
        let loader = self.clone();
        tokio::task::spawn_blocking(move || {
            let start = Instant::now();
            let (component, cache) = loader
                .cache
                .load(&loader.engine, &bytes, &sha256)
                .map_err(LoadError::Compile)?;
            let pre = (loader.linker)
                .instantiate_pre(&component)
                .map_err(|e| LoadError::World(link_error(&loader.engine, &component, &e)))?;
            let exports = Exports {
                http: ProxyIndices::new(&pre).ok(),
                authenticator: AuthenticatorIndices::new(&pre).ok(),
                room_handler: RoomHandlerIndices::new(&pre).ok(),
            };
            Ok(LoadedPlugin {
                sha256,
                source,
                loaded_at_ms: now_ms(),
                load_time: start.elapsed(),
                cache,
                pre,
                exports,
                idle: Default::default(),
                answers_immutably: Default::default(),
            })
        })
        .await
        .map_err(|e| LoadError::Compile(format!("compile task failed: {e}")))?
    }
}
