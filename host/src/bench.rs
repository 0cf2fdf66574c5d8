//! `weft bench`: figures for the runtime, printed, never asserted.
//!
//! It loads a connector (by default the probe fixture) on a throwaway host
//! and measures what sizing a deployment needs: how long a cold compile
//! takes, how long a login's instance takes to create, what a call into a
//! guest costs, how much memory an idle login holds, and how long an
//! upgrade of every live login takes.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::config::Config;
use crate::host::{Host, HostOptions};
use crate::logins::{BridgeState, LoginKey, LoginRecord, StateEvent, now_ms};
use crate::runtime::Runtime;
use crate::runtime::actor::Phase;
use crate::runtime::instance::Instance;
use crate::runtime::manifest::Manifest;
use crate::runtime::plugin::PluginSource;
use crate::runtime::state::{InstanceContext, InstanceRole};
use crate::storage::MemoryStorage;

/// What to measure.
pub struct BenchOptions {
    /// How many logins to run at once for the memory and upgrade figures.
    pub logins: usize,
    /// How many instances to create and calls to make for the timings.
    pub samples: usize,
}

struct Stats {
    samples: Vec<Duration>,
}

impl Stats {
    fn new(mut samples: Vec<Duration>) -> Self {
        samples.sort();
        Self { samples }
    }

    fn at(&self, quantile: f64) -> Duration {
        let index = ((self.samples.len() as f64 - 1.0) * quantile).round() as usize;
        self.samples[index]
    }

    fn mean(&self) -> Duration {
        self.samples.iter().sum::<Duration>() / self.samples.len() as u32
    }

    fn line(&self, what: &str) -> String {
        format!(
            "{what:<34} mean {:>9.1?}  p50 {:>9.1?}  p99 {:>9.1?}  (n={})",
            self.mean(),
            self.at(0.5),
            self.at(0.99),
            self.samples.len()
        )
    }
}

/// The process's resident memory, in bytes (Linux).
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A config that grants the plugin everything its manifest asks for.
fn config_for(manifest: &Manifest, dir: &Path) -> Result<Config> {
    let http: Vec<String> = manifest
        .capabilities
        .http
        .iter()
        .map(|p| format!("{p:?}"))
        .collect();
    let text = format!(
        "data-dir = {:?}\n[plugins]\ndir = {:?}\nwatch = false\n[runtime]\ncompile-cache = false\nmin-timer-ms = 10\n[plugin.{}]\nhttp = [{}]\nprivate-networks = true\n",
        dir.join("data"),
        dir.join("plugins"),
        manifest.id,
        http.join(", "),
    );
    Config::from_toml(&text, dir)
}

/// Runs the benchmarks on the component at `path` and prints the figures.
pub async fn run(path: &Path, options: BenchOptions) -> Result<()> {
    crate::init_tls();
    let source = PluginSource::read(path)?;
    let manifest = Manifest::parse(&source.manifest)?;
    let dir = std::env::temp_dir().join(format!("weft-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = config_for(&manifest, &dir)?;
    println!(
        "weft bench: {} {} ({} bytes)",
        manifest.id,
        manifest.version,
        source.bytes.len()
    );

    // Cold compile, without the cache.
    let runtime = Runtime::new(&config)?;
    let started = Instant::now();
    let component = runtime.compile(source.bytes.clone()).await?;
    println!(
        "{:<34} {:>9.1?}",
        "compile (Cranelift, cold)",
        started.elapsed()
    );
    drop(component);

    let storage: Arc<dyn crate::storage::Storage> = Arc::new(MemoryStorage::new());
    let host = Host::start_with(
        config.clone(),
        HostOptions {
            storage: Some(storage),
            event_sink: None,
        },
    )
    .await?;
    let registry = host.registry().clone();
    registry
        .load_source(
            PluginSource {
                bytes: source.bytes.clone(),
                manifest: source.manifest.clone(),
                path: None,
            },
            None,
        )
        .await
        .context("the plugin does not load")?;
    let loaded = registry
        .plugin(&manifest.id)
        .context("the plugin is not current")?;

    // Instantiation of a login's instance, from the pre-linked component.
    let mut instantiate = Vec::with_capacity(options.samples);
    let mut calls = Vec::with_capacity(options.samples);
    for n in 0..options.samples {
        let role = InstanceRole::Login(LoginKey::new(&manifest.id, format!("bench-{n}")));
        let ctx = InstanceContext::new(loaded.clone(), role, host.services().clone(), None)?;
        let started = Instant::now();
        let mut instance = Instance::new(loaded.clone(), ctx).await?;
        instantiate.push(started.elapsed());
        let started = Instant::now();
        instance.stop().await?;
        calls.push(started.elapsed());
    }
    println!(
        "{}",
        Stats::new(instantiate).line("instantiate a login's instance")
    );
    println!(
        "{}",
        Stats::new(calls).line("call round trip (stop export)")
    );

    // Memory per idle login: actors with a running instance each.
    let before = rss_bytes();
    let started = Instant::now();
    let mut handles = Vec::with_capacity(options.logins);
    for n in 0..options.logins {
        let record = LoginRecord {
            key: LoginKey::new(&manifest.id, format!("idle-{n}")),
            owner: "@bench:localhost".into(),
            remote_name: format!("idle {n}"),
            metadata: "{}".into(),
            state: BridgeState::now(StateEvent::Connecting, None, None),
            created_ms: now_ms(),
        };
        handles.push(
            registry
                .put_login(record)
                .await?
                .context("the plugin is not a connector")?,
        );
    }
    for handle in &handles {
        handle
            .wait_for(Duration::from_secs(60), |s| s.phase == Phase::Running)
            .await;
    }
    let startup = started.elapsed();
    let after = rss_bytes();
    println!(
        "{:<34} {:>9.1?}  ({} logins)",
        "start logins", startup, options.logins
    );
    if let (Some(before), Some(after)) = (before, after) {
        let per = after.saturating_sub(before) / options.logins.max(1) as u64;
        println!(
            "{:<34} {:>9} KiB  (RSS {} → {} MiB)",
            "resident memory per idle login",
            per / 1024,
            before >> 20,
            after >> 20
        );
    }
    let linear: u64 =
        handles.iter().map(|h| h.status().memory_bytes).sum::<u64>() / options.logins.max(1) as u64;
    println!(
        "{:<34} {:>9} KiB",
        "linear memory per instance",
        linear / 1024
    );

    // An upgrade moves every live login to the new version.
    let mut next: toml::Table = toml::from_str(&source.manifest)?;
    let mut version = manifest.version.clone();
    version.patch += 1;
    next.insert("version".into(), version.to_string().into());
    let started = Instant::now();
    let outcome = registry
        .load_source(
            PluginSource {
                bytes: source.bytes,
                manifest: toml::to_string(&next)?,
                path: None,
            },
            None,
        )
        .await?;
    println!(
        "{:<34} {:>9.1?}  ({outcome:?})",
        "upgrade every live login (+compile)",
        started.elapsed()
    );

    host.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
