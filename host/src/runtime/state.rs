//! What one request's `Store` holds: WASI and HTTP contexts, the plugin's
//! capabilities, and the meters that enforce its limits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{CallHook, ResourceLimiter, StoreContextMut, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::engine::EPOCH_TICK;
use super::manifest::{Limits, Manifest};
use super::memory_budget::MemoryBudget;
use crate::caps::blob::BlobView;
use crate::caps::guest_log::GuestLog;
use crate::caps::identity::{IdentityCtx, IdentityView};
use crate::caps::kv::KvView;
use crate::caps::outbound::OutboundHooks;
use crate::caps::rate_limit::RateLimitView;
use crate::caps::render::RenderView;
use crate::caps::rooms::{RoomEvent, RoomsCtx, RoomsView};
use crate::caps::secrets::SecretsView;
use crate::caps::services::CallOrigin;
use crate::caps::{Caps, PluginCaps};
use crate::metrics::{Metrics, PluginMetrics};

/// A guest asked for more memory than its manifest allows.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the plugin exceeded its memory limit of {limit_mib} MiB")]
pub struct MemoryLimitExceeded {
    pub limit_mib: u64,
}

/// A guest ran longer than its CPU budget.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the plugin exceeded its CPU time limit of {limit_ms} ms")]
pub struct CpuLimitExceeded {
    pub limit_ms: u128,
}

/// The data of one request's `Store`: the plugin's context, shared, and
/// what is truly per request (resources, WASI and HTTP state, meters). It
/// does not grow with each capability: those live in `PluginContext`.
pub struct RequestState {
    plugin: Arc<PluginContext>,
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: OutboundHooks,
    /// Who is calling, as the route's authenticator verified it.
    caller: IdentityCtx,
    /// The room event a room handler is running for.
    room: RoomsCtx,
    limiter: GuestLimiter,
    cpu: CpuMeter,
    /// What the guest reports of itself (`wasi:otel`).
    otel: crate::caps::otel::GuestTelemetry,
}

/// What every request of one plugin version runs with: its capabilities
/// under its grants, and its limits.
pub struct PluginContext {
    pub caps: PluginCaps,
    pub limits: Limits,
    /// The guest's environment variables (`[env]` of the manifest).
    pub env: Vec<(String, String)>,
    /// What `wasi:config/store` answers (`[config]`), sorted by key.
    pub config: Vec<(String, String)>,
    /// The host's total for all instances' linear memory.
    pub memory_budget: Arc<MemoryBudget>,
    /// The series its requests count into.
    pub metrics: PluginMetrics,
}

impl PluginContext {
    /// The one place a plugin's context is built (`serve` and `spike check`
    /// alike).
    pub fn new(
        caps: &Arc<Caps>,
        manifest: &Manifest,
        memory_budget: Arc<MemoryBudget>,
        metrics: &Arc<Metrics>,
    ) -> Arc<Self> {
        let caps = caps.for_plugin(&manifest.name, &manifest.grants);
        Arc::new(Self {
            metrics: PluginMetrics::new(metrics, &caps.name),
            caps,
            limits: manifest.limits.clone(),
            env: manifest.env.clone(),
            config: manifest.config.clone(),
            memory_budget,
        })
    }

    pub fn name(&self) -> &Arc<str> {
        &self.caps.name
    }
}

impl RequestState {
    fn new(plugin: &Arc<PluginContext>, caller: IdentityCtx) -> Self {
        let mut wasi = WasiCtx::builder();
        // No files and no sockets: a plugin reaches the world only through
        // the capabilities its manifest grants. Its environment is the
        // manifest's `[env]`, nothing of the host's.
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .envs(&plugin.env)
            .stdout(GuestLog::new(&plugin.caps, "stdout"))
            .stderr(GuestLog::new(&plugin.caps, "stderr"));
        Self {
            plugin: plugin.clone(),
            table: ResourceTable::new(),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            hooks: plugin.caps.outbound_hooks(CallOrigin {
                caller: caller.clone(),
                depth: 0,
            }),
            caller,
            room: None,
            limiter: GuestLimiter {
                memory_bytes: plugin.limits.memory_bytes,
                budget: plugin.memory_budget.clone(),
                reserved: 0,
            },
            cpu: CpuMeter {
                used: Duration::ZERO,
                in_wasm_since: None,
                limit: plugin.limits.cpu,
            },
            otel: Default::default(),
        }
    }

    /// A store for one request of `plugin` by `caller`, with its limits in
    /// force: the memory limiter, CPU metering and the epoch deadline.
    pub fn new_store(
        engine: &wasmtime::Engine,
        plugin: &Arc<PluginContext>,
        caller: IdentityCtx,
    ) -> wasmtime::Store<Self> {
        let mut store = wasmtime::Store::new(engine, Self::new(plugin, caller));
        store.limiter(|s| &mut s.limiter);
        store.call_hook(Self::on_call_hook);
        store.epoch_deadline_callback(Self::on_epoch_deadline);
        store.set_epoch_deadline(1);
        store
    }

    /// The plugin context this store was made for.
    pub fn context(&self) -> &Arc<PluginContext> {
        &self.plugin
    }

    /// Makes a kept store serve a new request, of `caller` (see
    /// `runtime::reuse`).
    pub fn begin_request(&mut self, caller: IdentityCtx) {
        self.hooks.set_origin(CallOrigin {
            caller: caller.clone(),
            depth: 0,
        });
        self.caller = caller;
    }

    /// Marks this store's request as made by a service call `depth` deep
    /// (`caps::services`), which its own service calls go deeper than.
    pub fn set_call_depth(&mut self, depth: u8) {
        self.hooks.set_depth(depth);
    }

    pub fn kv_view(&mut self) -> KvView<'_> {
        self.plugin.caps.kv(&mut self.table)
    }

    pub fn blob_view(&mut self) -> BlobView<'_> {
        self.plugin.caps.blob(&mut self.table)
    }

    pub fn secrets_view(&mut self) -> SecretsView<'_> {
        self.plugin.caps.secrets(&mut self.table)
    }

    pub fn rate_limit_view(&mut self) -> RateLimitView<'_> {
        self.plugin.caps.rate_limit(&mut self.table)
    }

    pub fn identity_view(&mut self) -> IdentityView<'_> {
        self.plugin.caps.identity(&self.caller, &mut self.table)
    }

    pub fn rooms_view(&mut self) -> RoomsView<'_> {
        self.plugin.caps.rooms(&self.room, &mut self.table)
    }

    pub fn render_view(&mut self) -> RenderView<'_> {
        self.plugin.caps.render(&mut self.table)
    }

    pub fn sql_view(&mut self) -> crate::caps::sql::SqlView<'_> {
        self.plugin.caps.sql(&mut self.table)
    }

    pub fn config_view(&mut self) -> crate::caps::wasi_config::ConfigView<'_> {
        crate::caps::wasi_config::ConfigView {
            values: &self.plugin.config,
        }
    }

    pub fn otel_view(&mut self) -> crate::caps::otel::OtelView<'_> {
        crate::caps::otel::OtelView {
            state: &mut self.otel,
            plugin: &self.plugin,
        }
    }

    /// Makes this store's calls handle `event` (a room handler's).
    pub fn set_room_event(&mut self, event: RoomEvent) {
        self.room = Some(event);
    }

    /// The room event, with what the handler asked for.
    pub fn room_event(&self) -> Option<&RoomEvent> {
        self.room.as_ref()
    }

    /// Starts the meters again for a new call into the guest: each call
    /// (an HTTP request today, a room event later) gets the plugin's whole
    /// CPU budget.
    pub fn begin_call(&mut self) {
        let _ = self.end_call();
        self.cpu.in_wasm_since = None;
        // The guest's spans are children of its guest call span, current
        // now (the call runs inside it).
        self.otel.begin(crate::telemetry::current_span());
    }

    /// Counts the CPU the last call used in the plugin's series, once
    /// per call however it ended; what it used.
    pub fn end_call(&mut self) -> Duration {
        let used = std::mem::take(&mut self.cpu.used);
        if !used.is_zero() {
            self.plugin.metrics.used(used, None);
        }
        used
    }

    /// The call hook: tracks when the guest is running wasm, so that time
    /// spent waiting in host calls (I/O) is not charged as CPU time.
    pub fn on_call_hook(
        mut store: StoreContextMut<'_, Self>,
        hook: CallHook,
    ) -> wasmtime::Result<()> {
        let cpu = &mut store.data_mut().cpu;
        match hook {
            CallHook::CallingWasm | CallHook::ReturningFromHost => {
                cpu.in_wasm_since = Some(Instant::now())
            }
            CallHook::ReturningFromWasm | CallHook::CallingHost => {
                if let Some(t) = cpu.in_wasm_since.take() {
                    cpu.used += t.elapsed();
                }
            }
        }
        Ok(())
    }

    /// The epoch deadline callback, run every tick while the guest runs
    /// wasm: traps when the CPU budget is spent, and otherwise yields so that
    /// a busy guest never holds an async worker away from other requests for
    /// more than a tick.
    pub fn on_epoch_deadline(
        mut store: StoreContextMut<'_, Self>,
    ) -> wasmtime::Result<UpdateDeadline> {
        let cpu = &mut store.data_mut().cpu;
        let used = cpu.used_now();
        if used > cpu.limit {
            return Err(wasmtime::Error::new(CpuLimitExceeded {
                limit_ms: cpu.limit.as_millis(),
            }));
        }
        // The deadline also passes for a guest that has only just started
        // (the tick came while it waited to run): yield only a guest that
        // has really used a tick's worth of CPU.
        if used < EPOCH_TICK {
            return Ok(UpdateDeadline::Continue(1));
        }
        // This callback runs as a host call (the call hook has stopped the
        // guest's clock), so the time it spends parked after yielding is
        // not charged to it.
        Ok(UpdateDeadline::Yield(1))
    }
}

impl WasiView for RequestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for RequestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Measures the time a request spends running wasm: wall time between the
/// call hooks that say the guest entered and left wasm.
impl Drop for RequestState {
    /// The instance ends: what it used is counted.
    fn drop(&mut self) {
        let used = std::mem::take(&mut self.cpu.used);
        self.plugin.metrics.used(used, Some(self.limiter.reserved));
    }
}

struct CpuMeter {
    used: Duration,
    in_wasm_since: Option<Instant>,
    limit: Duration,
}

impl CpuMeter {
    fn used_now(&self) -> Duration {
        self.used + self.in_wasm_since.map_or(Duration::ZERO, |t| t.elapsed())
    }
}

/// Enforces the manifest's memory limit per instance, and the host's
/// budget across instances.
struct GuestLimiter {
    memory_bytes: u64,
    budget: Arc<MemoryBudget>,
    /// What this store holds of the budget, returned on drop.
    reserved: u64,
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Trap rather than fail the grow: a guest that cannot allocate
        // would abort anyway, and a trap names the cause.
        if desired as u64 > self.memory_bytes {
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                limit_mib: self.memory_bytes >> 20,
            }));
        }
        // Called with `current` 0 when a memory is created, so the initial
        // size is reserved too.
        let more = (desired as u64).saturating_sub(current as u64);
        self.budget.reserve(more).map_err(wasmtime::Error::new)?;
        self.reserved += more;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

impl Drop for GuestLimiter {
    fn drop(&mut self) {
        self.budget.release(self.reserved);
    }
}
