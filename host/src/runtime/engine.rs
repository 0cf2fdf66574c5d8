//! The wasmtime engine, its linker, and the epoch ticker.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::Semaphore;
use wasmtime::component::{Component, HasSelf, Linker};

use super::bindings::imports;
use super::state::PluginState;
use crate::config::{Config, RuntimeConfig};

/// The engine every plugin is compiled for, and the linker that serves
/// their imports. One per host.
pub struct Runtime {
    engine: wasmtime::Engine,
    linker: Linker<PluginState>,
    /// Bounds guest calls running at once across all instances.
    calls: Arc<Semaphore>,
    config: RuntimeConfig,
}

impl Runtime {
    /// Builds the engine, the linker and the epoch ticker.
    pub fn new(config: &Config) -> Result<Arc<Self>> {
        let mut wasm = wasmtime::Config::new();
        wasm.wasm_component_model(true)
            // Guest code runs inside a future's `poll`; without epochs a
            // guest in a loop would hold a tokio worker forever. Each tick
            // the guest yields, and past its deadline it traps.
            .epoch_interruption(true)
            // A small guest stack: plugins are not deeply recursive, and
            // every live instance keeps one.
            .max_wasm_stack(512 << 10)
            .async_stack_size(1 << 20);
        if config.runtime.compile_cache {
            let dir = config
                .runtime
                .compile_cache_dir
                .clone()
                .unwrap_or_else(|| config.data_dir.join("compile-cache"));
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("failed to create {}", dir.display()))?;
            let mut cache = wasmtime::CacheConfig::new();
            cache.with_directory(dir);
            let cache = wasmtime::Cache::new(cache)
                .map_err(anyhow::Error::from)
                .context("failed to set up the compile cache")?;
            wasm.cache(Some(cache));
        }
        let engine = wasmtime::Engine::new(&wasm)
            .map_err(anyhow::Error::from)
            .context("failed to create the wasm engine")?;
        let linker = build_linker(&engine)?;
        spawn_epoch_ticker(&engine, Duration::from_millis(config.runtime.epoch_tick_ms));
        Ok(Arc::new(Self {
            engine,
            linker,
            calls: Arc::new(Semaphore::new(config.runtime.max_concurrent_calls)),
            config: config.runtime.clone(),
        }))
    }

    /// The engine.
    pub fn engine(&self) -> &wasmtime::Engine {
        &self.engine
    }

    /// The linker that serves every plugin's imports.
    pub fn linker(&self) -> &Linker<PluginState> {
        &self.linker
    }

    /// The permits for concurrent guest calls.
    pub fn call_permits(&self) -> &Arc<Semaphore> {
        &self.calls
    }

    /// The runtime limits.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Compiles a component on the blocking pool (Cranelift is CPU-bound).
    pub async fn compile(&self, bytes: Vec<u8>) -> Result<Component> {
        let engine = self.engine.clone();
        let compiled = tokio::task::spawn_blocking(move || Component::new(&engine, &bytes))
            .await
            .context("the compile task failed")?;
        compiled.map_err(anyhow::Error::from)
    }
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
