//! `spike check`: does a component fit the plugin world, and what does it
//! cost to load and to instantiate? Given a manifest instead, its
//! component, and whether the manifest grants what the WASI standards the
//! component imports need (`runtime::standards`). For plugin authors
//! before they deploy, and for the benchmarks in `bench/`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use wasmtime::component::{Component, InstancePre};
use wasmtime_wasi_http::p2::bindings::ProxyIndices;

use crate::bindings::exports::spike::host::room_handler::GuestIndices as RoomHandlerIndices;

use super::compile_cache::CompileCache;
use super::engine::{PoolSettings, build_engine};
use super::linker;
use super::manifest::{Limits, Manifest};
use super::memory_budget::MemoryBudget;
use super::state::{PluginContext, RequestState};
use crate::caps::outbound::SystemResolver;
use crate::caps::{CapSettings, Caps, Grants};
use crate::metrics::Metrics;
use crate::storage::{Backends, StorageSettings};
use crate::util::sha256_hex;

/// What `spike check` reports.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub component: String,
    pub sha256: String,
    pub size_bytes: usize,
    /// Interfaces the component imports.
    pub imports: Vec<String>,
    /// Of those, the WASI standards spike links onto its capabilities, and
    /// (given a manifest) what the manifest grants each.
    pub standards: Vec<super::standards::StandardImport>,
    /// Interfaces it exports: `wasi:http/incoming-handler`,
    /// `spike:host/authenticator` for an authenticator plugin,
    /// `spike:host/room-handler` for a room handler.
    pub exports: Vec<String>,
    /// Compiling with Cranelift, as on a first load.
    pub compile_ms: f64,
    /// Loading the precompiled artifact from the compile cache.
    pub cached_load_ms: f64,
    pub cache_speedup: f64,
    /// Creating a `Store` and instantiating, as every request does
    /// (pooling allocator, copy-on-write memory image).
    pub instantiate_us_median: f64,
    pub instantiate_us_p99: f64,
}

const INSTANTIATIONS: usize = 2000;

/// Checks `path` (a component, or a plugin manifest naming one) and
/// measures it. Fails with the reason if it does not fit.
pub async fn check_component(path: &Path) -> anyhow::Result<CheckReport> {
    let manifest = match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => Some(super::manifest::load(path)?),
        _ => None,
    };
    let path = match &manifest {
        Some(m) => (m.component.as_deref()).ok_or_else(|| {
            anyhow::anyhow!("{}: the manifest names no component", path.display())
        })?,
        None => path,
    };
    let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let sha = sha256_hex(&bytes);
    let engine = build_engine(&PoolSettings {
        max_instances: 16,
        ..Default::default()
    })?;
    let linker = linker::new(&engine).map_err(|e| anyhow::anyhow!("{e:#}"))?;

    let start = Instant::now();
    let component = Component::new(&engine, &bytes)
        .map_err(|e| anyhow::anyhow!("not a valid component: {e:#}"))?;
    let compile = start.elapsed();

    let scratch = ScratchDir::new()?;
    let cached = cached_load_time(&engine, &bytes, &sha, &scratch)?;

    let pre = linker.instantiate_pre(&component).map_err(|e| {
        let why = super::loader::link_error(&engine, &component, &e);
        anyhow::anyhow!("does not fit the spike:host/plugin world: {why}")
    })?;
    // It must serve something: HTTP requests or room events.
    if ProxyIndices::new(&pre).is_err() && RoomHandlerIndices::new(&pre).is_err() {
        anyhow::bail!(
            "does not fit the spike:host/plugin world: it exports neither \
             wasi:http/incoming-handler nor spike:host/room-handler"
        );
    }

    let kind = component.component_type();
    let imports = (kind.imports(&engine)).map(|(name, _)| name.to_string());
    let exports = (kind.exports(&engine)).map(|(name, _)| name.to_string());
    let (imports, exports): (Vec<String>, _) = (imports.collect(), exports.collect());
    let standards =
        super::standards::listing(imports.iter().map(String::as_str), manifest.as_ref());
    let times = instantiation_times(&engine, &pre, path, &scratch).await?;
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    Ok(CheckReport {
        component: path.display().to_string(),
        sha256: sha,
        size_bytes: bytes.len(),
        imports,
        standards,
        exports,
        compile_ms: compile.as_secs_f64() * 1e3,
        cached_load_ms: cached.as_secs_f64() * 1e3,
        cache_speedup: compile.as_secs_f64() / cached.as_secs_f64().max(1e-9),
        instantiate_us_median: us(times[times.len() / 2]),
        instantiate_us_p99: us(times[times.len() * 99 / 100]),
    })
}

/// How long a second load from the compile cache takes (the first fills
/// it).
fn cached_load_time(
    engine: &wasmtime::Engine,
    bytes: &[u8],
    sha: &str,
    scratch: &ScratchDir,
) -> anyhow::Result<Duration> {
    let cache = CompileCache::new(scratch.0.join("compile-cache"), engine);
    cache.load(engine, bytes, sha).map_err(anyhow::Error::msg)?;
    let start = Instant::now();
    cache.load(engine, bytes, sha).map_err(anyhow::Error::msg)?;
    Ok(start.elapsed())
}

/// `INSTANTIATIONS` instantiations of `pre`, sorted by how long each took.
async fn instantiation_times(
    engine: &wasmtime::Engine,
    pre: &InstancePre<RequestState>,
    path: &Path,
    scratch: &ScratchDir,
) -> anyhow::Result<Vec<Duration>> {
    // The context every request of a plugin with nothing granted runs with:
    // instantiation is what is measured.
    let settings = StorageSettings {
        kv_sweep_interval: Duration::from_secs(3600),
    };
    let backends = Backends::open_redb(&scratch.0.join("data"), &settings)?;
    let metrics = Metrics::new();
    let caps = Caps::new(
        &backends,
        &CapSettings {
            max_object_bytes: 0,
            resolver: Arc::new(SystemResolver),
            // Never the operator's: a report has nothing to leak.
            secrets: Arc::default(),
            default_rate_limit: None,
            // Nothing is granted `render`: no browser starts.
            render: Default::default(),
            // Nor `sql`: no database is made.
            sql: None,
        },
        &metrics,
    );
    let manifest = Manifest {
        name: "check".into(),
        path: path.to_path_buf(),
        sha256: String::new(),
        component: Some(path.to_path_buf()),
        routes: Vec::new(),
        rooms: Vec::new(),
        grants: Grants::default(),
        limits: Limits::default(),
        env: Vec::new(),
        config: Vec::new(),
        demo: None,
    };
    let context = PluginContext::new(&caps, &manifest, MemoryBudget::new(u64::MAX), &metrics);
    let mut times = Vec::with_capacity(INSTANTIATIONS);
    for _ in 0..INSTANTIATIONS {
        let start = Instant::now();
        let mut store = RequestState::new_store(engine, &context, Default::default());
        pre.instantiate_async(&mut store)
            .await
            .map_err(|e| anyhow::anyhow!("instantiating: {e:#}"))?;
        times.push(start.elapsed());
        drop(store);
    }
    times.sort();
    drop((context, caps, backends));
    Ok(times)
}

/// A folder for the check's throwaway database, removed however the check ends.
struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    fn new() -> std::io::Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("spike-check-{}", crate::util::unique_suffix()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
