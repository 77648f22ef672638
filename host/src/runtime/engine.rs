//! The wasmtime `Engine` every plugin shares, and the clock that interrupts
//! guests.
//!
//! Instances come from a pooling allocator with copy-on-write memory images,
//! so a fresh instance per request costs microseconds. Guests are interrupted
//! by epochs: `EpochTicker` advances the engine's epoch every `EPOCH_TICK`,
//! and each store's deadline callback (see `runtime::state`) charges the
//! request for the ticks it spends running and yields to other tasks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances: the granularity of CPU limits and of
/// yielding a busy guest to other requests.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Sizes of the instance pool.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Instances that can be alive at once (concurrent requests, all plugins).
    pub max_instances: u32,
    /// The largest linear memory any plugin may be granted.
    pub max_memory_bytes: u64,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_instances: 1000,
            max_memory_bytes: 4 << 30,
        }
    }
}

/// Builds the engine. Falls back to on-demand allocation (slower, same
/// behaviour) if the pool cannot reserve its virtual memory, e.g. under a
/// tight `ulimit -v`.
pub fn build_engine(pool: &PoolSettings) -> anyhow::Result<Engine> {
    let mut config = base_config();
    let n = pool.max_instances;
    let mut pooling = PoolingAllocationConfig::new();
    pooling
        .total_component_instances(n)
        // A component is a few core instances (the guest, plus shims and
        // adapters in other toolchains' output).
        .total_core_instances(n.saturating_mul(4))
        .total_memories(n.saturating_mul(2))
        .total_tables(n.saturating_mul(4))
        .total_stacks(n)
        .max_memories_per_component(4)
        .max_tables_per_component(8)
        .table_elements(50_000)
        .max_memory_size(pool.max_memory_bytes as usize)
        // Resetting a used slot with madvise makes the kernel shoot down TLB
        // entries on every core (an IPI per request, a quarter of the CPU
        // under load in our profile). Instead: find the pages a request
        // dirtied with PAGEMAP_SCAN (Linux 6.7+) and restore them with
        // memcpy, up to this many bytes; madvise only beyond that, for each
        // slot as it is freed (`decommit_batch_size(1)`: a batch would keep
        // freed slots out of the pool until it filled).
        .pagemap_scan(wasmtime::Enabled::Auto)
        .linear_memory_keep_resident(1 << 20)
        .table_keep_resident(64 * 1024)
        // A stack is given back to the kernel past its top
        // `STACK_KEEP_RESIDENT` when its request ends (`MAX_WASM_STACK`).
        .async_stack_keep_resident(STACK_KEEP_RESIDENT)
        .decommit_batch_size(1);
    config.async_stack_zeroing(true);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    match Engine::new(&config) {
        Ok(engine) => Ok(engine),
        Err(e) => {
            tracing::warn!("instance pool unavailable ({e}); allocating instances on demand");
            Engine::new(&base_config()).map_err(|e| anyhow::anyhow!("creating the engine: {e}"))
        }
    }
}

/// The native stack wasm code may use. wasmtime's default (512 KiB) let
/// the transpiler (swc, which recurses per level of the syntax tree and has
/// no `stacker` in wasm) take about 350 nested brackets; with 8 MiB it takes
/// about 5,600, and its own scan (`components/transpile/src/depth.rs`)
/// refuses sources deeper than 1,000 first. A bigger stack costs only what
/// a request really touches, and that only while it runs: when it ends,
/// the top `STACK_KEEP_RESIDENT` of its stack is zeroed in place and the
/// rest handed back to the kernel (`madvise`, which costs nothing where
/// the request did not reach). Kept, what deep requests touched stayed
/// resident with their pool slots, outside the memory budget: 80 stack
/// overflows at once took an idle server from 382 to 1,418 MiB (the
/// hostile probe), and up to `ASYNC_STACK` × `--max-instances` (10 GiB)
/// was possible.
pub const MAX_WASM_STACK: usize = 8 << 20;

/// The top of a stack kept resident between requests, zeroed in place
/// (`memset`): what a small request uses, so that it neither faults pages
/// in again nor makes a system call for them.
const STACK_KEEP_RESIDENT: usize = 64 << 10;

/// Each request's fiber stack: the wasm stack plus room for the host
/// functions it calls (wasmtime's default keeps 1.5 MiB for them).
const ASYNC_STACK: usize = MAX_WASM_STACK + (2 << 20);

fn base_config() -> Config {
    let mut config = Config::new();
    config.max_wasm_stack(MAX_WASM_STACK);
    config.async_stack_size(ASYNC_STACK);
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.memory_init_cow(true);
    config
}

/// Advances the engine's epoch every `EPOCH_TICK` until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    pub fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        // A plain thread, not a tokio task: it must tick even when every
        // async worker is busy running guests.
        std::thread::Builder::new()
            .name("spike-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch thread");
        Self { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
