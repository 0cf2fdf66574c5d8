//! The wasmtime engine, its linker, the allocator and the epoch ticker.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::Semaphore;
use wasmtime::component::{Component, HasSelf, Linker};

use crate::bindings::imports;
use crate::config::{Allocator, RuntimeConfig};
use crate::state::PluginState;

/// Each instance's guest stack; plugins are not deeply recursive.
const WASM_STACK: usize = 512 << 10;
/// The fiber stack an async call runs on: the guest stack plus room for
/// the host functions it calls.
const ASYNC_STACK: usize = 1 << 20;
/// Guard region after each linear memory. Memories are reserved at their
/// cap (not 4 GiB), so bounds checks are explicit anyway; a small guard
/// keeps the address space of many instances small.
const MEMORY_GUARD: u64 = 64 << 10;
/// Function-table entries a plugin may have (Rust plugins use a few
/// thousand).
const TABLE_ELEMENTS: usize = 50_000;

/// The engine every plugin is compiled for, the linker that serves their
/// imports, and the limits shared by all instances. One per host.
pub(crate) struct Engine {
    engine: wasmtime::Engine,
    linker: Linker<PluginState>,
    /// Bounds guest calls running at once across all instances.
    calls: Arc<Semaphore>,
    allocator: Allocator,
}

impl Engine {
    /// Builds the engine, the linker and the epoch ticker. `cache_dir` is
    /// where compiled components are cached, if anywhere.
    pub(crate) fn new(config: &RuntimeConfig, cache_dir: Option<&Path>) -> Result<Self> {
        let (engine, allocator) = match config.allocator {
            Allocator::Pooling => match build(config, cache_dir, Allocator::Pooling) {
                Ok(engine) => (engine, Allocator::Pooling),
                Err(error) => {
                    // Hosts with a small address-space limit (ulimit -v)
                    // cannot reserve the pool; they still run, with
                    // per-instance mappings.
                    tracing::warn!(error = %format!("{error:#}"), "cannot reserve the instance pool; using the on-demand allocator");
                    (
                        build(config, cache_dir, Allocator::OnDemand)?,
                        Allocator::OnDemand,
                    )
                }
            },
            Allocator::OnDemand => (
                build(config, cache_dir, Allocator::OnDemand)?,
                Allocator::OnDemand,
            ),
        };
        let linker = build_linker(&engine)?;
        spawn_epoch_ticker(&engine, Duration::from_millis(config.epoch_tick_ms));
        Ok(Self {
            engine,
            linker,
            calls: Arc::new(Semaphore::new(config.max_concurrent_calls)),
            allocator,
        })
    }

    /// The engine.
    pub(crate) fn engine(&self) -> &wasmtime::Engine {
        &self.engine
    }

    /// The linker that serves every plugin's imports.
    pub(crate) fn linker(&self) -> &Linker<PluginState> {
        &self.linker
    }

    /// The permits for concurrent guest calls.
    pub(crate) fn call_permits(&self) -> &Arc<Semaphore> {
        &self.calls
    }

    /// The allocator in use.
    pub(crate) fn allocator(&self) -> Allocator {
        self.allocator
    }

    /// Compiles a component on the blocking pool (Cranelift is CPU-bound).
    pub(crate) async fn compile(&self, bytes: Vec<u8>) -> Result<Component> {
        let engine = self.engine.clone();
        let compiled = tokio::task::spawn_blocking(move || Component::new(&engine, &bytes))
            .await
            .context("the compile task failed")?;
        compiled.map_err(anyhow::Error::from)
    }
}

fn build(
    config: &RuntimeConfig,
    cache_dir: Option<&Path>,
    allocator: Allocator,
) -> Result<wasmtime::Engine> {
    let max_memory = config.max_memory_mb << 20;
    let mut wasm = wasmtime::Config::new();
    wasm.wasm_component_model(true)
        // Guest code runs inside a future's `poll`; without epochs a
        // guest in a loop would hold a tokio worker forever. Each tick
        // the guest yields, and past its deadline it traps.
        .epoch_interruption(true)
        .max_wasm_stack(WASM_STACK)
        .async_stack_size(ASYNC_STACK)
        // Reserve each memory at the largest cap any plugin may have,
        // not the 4 GiB default: ten thousand instances then need a few
        // TiB of address space instead of tens.
        .memory_reservation(max_memory)
        .memory_guard_size(MEMORY_GUARD)
        .memory_reservation_for_growth(0)
        // Copy-on-write images map each memory's initial data from a file:
        // two more kernel mappings per instance, and an upgrade must map
        // the new image into every slot. Plugins' data segments are small,
        // so copying them costs nothing measurable, and ten thousand live
        // instances then fit the kernel's default vm.max_map_count
        // (`weft bench`: 2 mappings per instance instead of 4, and an
        // upgrade of 10,000 logins that does not run out of mappings).
        .memory_init_cow(false);
    if allocator == Allocator::Pooling {
        let instances = config.max_instances;
        let mut pool = wasmtime::PoolingAllocationConfig::new();
        // A component is a handful of core instances (the module, the WASI
        // adapter, shims), with up to two memories and a few tables.
        pool.total_component_instances(instances)
            .total_core_instances(instances.saturating_mul(6))
            .total_memories(instances.saturating_mul(2))
            .total_tables(instances.saturating_mul(4))
            // Each live store keeps one fiber stack for its calls.
            .total_stacks(instances)
            .max_memory_size(max_memory as usize)
            .max_memories_per_component(4)
            .max_tables_per_component(8)
            .max_core_instances_per_component(16)
            .table_elements(TABLE_ELEMENTS)
            // Reuse any free slot (least recently used first) before a
            // never-used one, so the set of touched slots, their mappings
            // and RSS follow the peak of live instances, also across an
            // upgrade (whose new module has no slots of its own yet).
            .max_unused_warm_slots(0);
        wasm.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    }
    if let Some(dir) = cache_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("failed to create {}", dir.display()))?;
        let mut cache = wasmtime::CacheConfig::new();
        cache.with_directory(dir);
        let cache = wasmtime::Cache::new(cache)
            .map_err(anyhow::Error::from)
            .context("failed to set up the compile cache")?;
        wasm.cache(Some(cache));
    }
    wasmtime::Engine::new(&wasm)
        .map_err(anyhow::Error::from)
        .context("failed to create the wasm engine")
}

fn build_linker(engine: &wasmtime::Engine) -> Result<Linker<PluginState>> {
    let mut linker = Linker::new(engine);
    // All of WASI p2, so that plugins built for wasm32-wasip1/p2 link; the
    // context each store gets grants nothing (no preopens, no env, no
    // sockets, no stdio), so only clocks and randomness do anything.
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from)?;
    type Host = HasSelf<PluginState>;
    fn get(state: &mut PluginState) -> &mut PluginState {
        state
    }
    imports::types::add_to_linker::<_, Host>(&mut linker, get)?;
    imports::http::add_to_linker::<_, Host>(&mut linker, get)?;
    imports::kv::add_to_linker::<_, Host>(&mut linker, get)?;
    imports::log::add_to_linker::<_, Host>(&mut linker, get)?;
    imports::config::add_to_linker::<_, Host>(&mut linker, get)?;
    imports::timers::add_to_linker::<_, Host>(&mut linker, get)?;
    imports::session::add_to_linker::<_, Host>(&mut linker, get)?;
    imports::matrix::add_to_linker::<_, Host>(&mut linker, get)?;
    imports::tokens::add_to_linker::<_, Host>(&mut linker, get)?;
    imports::capture::add_to_linker::<_, Host>(&mut linker, get)?;
    crate::bindings::appservice::add_to_linker::<_, Host>(&mut linker, get)?;
    Ok(linker)
}

/// Increments the engine's epoch every `tick` until the engine is dropped.
fn spawn_epoch_ticker(engine: &wasmtime::Engine, tick: Duration) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("weft-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(tick);
            }
        })
        .expect("failed to start the epoch ticker thread");
}
