//! `weft bench`: figures for the runtime, printed, never asserted.
//!
//! It loads a connector (by default the probe fixture) on throwaway hosts
//! and measures what sizing a deployment needs: a cold compile, creating
//! an instance and calling into it, and then, for each number of live
//! logins asked for, how long they take to start, how much memory each
//! holds, how late their timers fire while all of them tick, and how long
//! an upgrade of every one takes; finally the memory of hibernating
//! logins. Storage is in memory, so its share is counted in the figures.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use weft_runtime::manifest::Manifest;
use weft_runtime::plugin::PluginSource;
use weft_runtime::{Allocator, LoginHandle, Phase, Registry};
use weft_storage::MemoryStorage;

use crate::config::Config;
use crate::host::{Host, HostOptions};
use crate::logins::{BridgeState, LoginKey, LoginRecord, StateEvent, now_ms};

/// What to measure.
pub struct BenchOptions {
    /// Live login counts to measure, one run each.
    pub logins: Vec<usize>,
    /// Hibernating logins to measure (0: skip).
    pub hibernating: usize,
    /// Instances to create and calls to time.
    pub samples: usize,
    /// The period of every live login's timer while lateness is measured.
    pub tick_ms: u64,
    /// How long to let the timers tick.
    pub tick_for: Duration,
    /// The allocator, instead of the default.
    pub allocator: Option<Allocator>,
    /// Run only this scenario, in this process (how `weft bench` runs
    /// each one in a child process).
    pub scenario: Option<Scenario>,
}

/// Duration samples, summarized as mean and quantiles.
pub struct Stats {
    samples: Vec<Duration>,
}

impl Stats {
    /// Summarizes `samples`.
    pub fn new(mut samples: Vec<Duration>) -> Self {
        samples.sort();
        Self { samples }
    }

    fn at(&self, quantile: f64) -> Duration {
        if self.samples.is_empty() {
            return Duration::ZERO;
        }
        let index = ((self.samples.len() as f64 - 1.0) * quantile).round() as usize;
        self.samples[index]
    }

    fn mean(&self) -> Duration {
        if self.samples.is_empty() {
            return Duration::ZERO;
        }
        self.samples.iter().sum::<Duration>() / self.samples.len() as u32
    }

    /// One line of the report: `what`, mean, p50, p99 and the count.
    pub fn line(&self, what: &str) -> String {
        format!(
            "{what:<40} mean {:>9.1?}  p50 {:>9.1?}  p99 {:>9.1?}  (n={})",
            self.mean(),
            self.at(0.5),
            self.at(0.99),
            self.samples.len()
        )
    }
}

/// The process's resident memory, in bytes (Linux).
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// The process's memory mappings (Linux), against `vm.max_map_count`.
pub fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps").map_or(0, |m| m.lines().count())
}

/// Resident memory by kind of mapping (Linux `/proc/self/smaps`): the
/// mappings of one size, permissions and file are one kind, so the
/// linear memories of ten thousand instances, or their fiber stacks, each
/// add up to one line. Gives (description, mappings, resident bytes),
/// most resident first.
pub fn resident_by_mapping_kind() -> Vec<(String, usize, u64)> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let mut kinds: std::collections::BTreeMap<String, (usize, u64)> = Default::default();
    let mut current: Option<String> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or_default();
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) =
                (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
        {
            let perms = fields.next().unwrap_or_default();
            let path = fields.nth(3).unwrap_or("[anon]");
            current = Some(format!("{perms} {:>9} {path}", kib(end - start)));
        } else if first == "Rss:"
            && let (Some(kind), Some(rss)) = (&current, fields.next())
        {
            let entry = kinds.entry(kind.clone()).or_default();
            entry.0 += 1;
            entry.1 += rss.parse::<u64>().unwrap_or(0) * 1024;
        }
    }
    let mut kinds: Vec<(String, usize, u64)> = kinds
        .into_iter()
        .map(|(kind, (count, rss))| (kind, count, rss))
        .collect();
    kinds.sort_by_key(|kind| std::cmp::Reverse(kind.2));
    kinds
}

/// A config that grants the plugin everything its manifest asks for.
fn config_for(manifest: &Manifest, dir: &Path, runtime: &str, settings: &str) -> Result<Config> {
    let http: Vec<String> = manifest
        .capabilities
        .http
        .iter()
        .map(|p| format!("{p:?}"))
        .collect();
    let text = format!(
        "data-dir = {:?}\n[plugins]\ndir = {:?}\nwatch = false\n[runtime]\ncompile-cache = false\nmin-timer-ms = 10\nmax-concurrent-calls = 64\n{runtime}\n[plugin.{}]\nhttp = [{}]\nprivate-networks = true\n[plugin.{}.settings]\n{settings}\n",
        dir.join("data"),
        dir.join("plugins"),
        manifest.id,
        http.join(", "),
        manifest.id,
    );
    Config::from_toml(&text, dir)
}

fn record(plugin: &str, name: String) -> LoginRecord {
    LoginRecord {
        key: LoginKey::new(plugin, name.clone()),
        owner: "@bench:localhost".into(),
        remote_name: name,
        metadata: "{}".into(),
        state: BridgeState::now(StateEvent::Connecting, None, None),
        created_ms: now_ms(),
    }
}

async fn start_host(config: Config, source: &PluginSource) -> Result<Host> {
    let storage: Arc<dyn weft_storage::Storage> = Arc::new(MemoryStorage::new());
    let host = Host::start_with(
        config,
        HostOptions {
            storage: Some(storage),
            event_sink: None,
        },
    )
    .await?;
    host.registry()
        .load_source(copy(source), None)
        .await
        .context("the plugin does not load")?;
    Ok(host)
}

fn copy(source: &PluginSource) -> PluginSource {
    PluginSource {
        bytes: source.bytes.clone(),
        manifest: source.manifest.clone(),
        path: None,
    }
}

/// Creates `count` logins named `<prefix>-<n>` and waits until each is in
/// a phase `done` accepts.
async fn create_logins(
    host: &Host,
    plugin: &str,
    prefix: &str,
    count: usize,
    done: impl Fn(Phase) -> bool,
) -> Result<Vec<LoginHandle>> {
    let mut handles = Vec::with_capacity(count);
    for n in 0..count {
        let handle = host
            .logins()
            .put(record(plugin, format!("{prefix}-{n}")))
            .await?
            .context("the plugin is not a connector")?;
        handles.push(handle);
    }
    for handle in &handles {
        handle
            .wait_for(Duration::from_secs(300), |s| done(s.phase))
            .await
            .with_context(|| format!("login {} did not settle", handle.key()))?;
    }
    Ok(handles)
}

/// `bytes` in KiB, for the report.
pub fn kib(bytes: u64) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

/// One measurement, run in a process of its own so that none inherits the
/// memory another one grew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Compile, instantiate, call.
    Basics,
    /// This many live logins with ticking timers.
    Live(usize),
    /// This many hibernating logins.
    Hibernating(usize),
}

impl std::str::FromStr for Scenario {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let count = |n: &str| n.parse().map_err(|_| format!("bad count in `{s}`"));
        match s.split_once(':') {
            None if s == "basics" => Ok(Self::Basics),
            Some(("live", n)) => Ok(Self::Live(count(n)?)),
            Some(("hibernating", n)) => Ok(Self::Hibernating(count(n)?)),
            _ => Err(format!("unknown scenario `{s}`")),
        }
    }
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Basics => f.write_str("basics"),
            Self::Live(n) => write!(f, "live:{n}"),
            Self::Hibernating(n) => write!(f, "hibernating:{n}"),
        }
    }
}

/// Runs the benchmarks on the component at `path` and prints the figures:
/// each scenario in a child process (`weft bench --scenario …`), unless
/// `options.scenario` names the one to run here.
pub async fn run(path: &Path, options: BenchOptions) -> Result<()> {
    if let Some(scenario) = options.scenario {
        return run_scenario(path, &options, scenario).await;
    }
    let source = PluginSource::read(path)?;
    let manifest = Manifest::parse(&source.manifest)?;
    println!(
        "weft bench: {} {} ({} bytes), {} CPUs",
        manifest.id,
        manifest.version,
        source.bytes.len(),
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    let mut scenarios = vec![Scenario::Basics];
    scenarios.extend(
        options
            .logins
            .iter()
            .filter(|&&n| n > 0)
            .map(|&n| Scenario::Live(n)),
    );
    if options.hibernating > 0 {
        scenarios.push(Scenario::Hibernating(options.hibernating));
    }
    let exe = std::env::current_exe().context("cannot find the weft binary")?;
    for scenario in scenarios {
        let mut command = tokio::process::Command::new(&exe);
        command
            .arg("bench")
            .arg("--plugin")
            .arg(path)
            .args(["--samples", &options.samples.to_string()])
            .args(["--tick-ms", &options.tick_ms.to_string()])
            .args(["--tick-secs", &options.tick_for.as_secs().to_string()])
            .args(["--scenario", &scenario.to_string()]);
        match options.allocator {
            Some(Allocator::Pooling) => drop(command.args(["--allocator", "pooling"])),
            Some(Allocator::OnDemand) => drop(command.args(["--allocator", "on-demand"])),
            None => {}
        }
        let status = command.status().await.context("cannot run a benchmark")?;
        if !status.success() {
            anyhow::bail!("the {scenario} benchmark failed ({status})");
        }
    }
    Ok(())
}

async fn run_scenario(path: &Path, options: &BenchOptions, scenario: Scenario) -> Result<()> {
    crate::init_tls();
    let source = PluginSource::read(path)?;
    let manifest = Manifest::parse(&source.manifest)?;
    let dir = std::env::temp_dir().join(format!("weft-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let allocator = match options.allocator {
        Some(Allocator::OnDemand) => "allocator = \"on-demand\"\n",
        Some(Allocator::Pooling) => "allocator = \"pooling\"\n",
        None => "",
    };
    let bench = Bench {
        source,
        manifest,
        dir: dir.clone(),
        allocator,
    };
    let result = match scenario {
        Scenario::Basics => bench.basics(options).await,
        Scenario::Live(count) => bench.live(options, count).await,
        Scenario::Hibernating(count) => bench.hibernating(count).await,
    };
    let _ = std::fs::remove_dir_all(&dir);
    result
}

struct Bench {
    source: PluginSource,
    manifest: Manifest,
    dir: std::path::PathBuf,
    allocator: &'static str,
}

impl Bench {
    fn live_runtime(&self, count: usize) -> String {
        format!(
            "{}hibernate = false\nmax-instances = {}\n",
            self.allocator,
            (count + count / 5 + 64).max(1000)
        )
    }

    async fn basics(&self, options: &BenchOptions) -> Result<()> {
        let (source, manifest, dir) = (&self.source, &self.manifest, &self.dir);
        let live_runtime = self.live_runtime(0);
        let config = config_for(manifest, dir, &live_runtime, "")?;
        let host = start_host(config, source).await?;
        let registry: &Arc<Registry> = host.registry();
        println!("allocator: {:?}", registry.allocator());
        let started = Instant::now();
        registry.compile_only(source.bytes.clone()).await?;
        println!(
            "{:<40} {:>9.1?}",
            "compile (Cranelift, cold)",
            started.elapsed()
        );
        let plugin = registry
            .plugin(&manifest.id)
            .context("the plugin is not current")?;
        let mut instantiate = Vec::with_capacity(options.samples);
        let mut calls = Vec::with_capacity(options.samples);
        for n in 0..options.samples {
            let started = Instant::now();
            let mut process = registry.process(&plugin, &format!("bench-{n}")).await?;
            instantiate.push(started.elapsed());
            let started = Instant::now();
            process.cancel().await;
            calls.push(started.elapsed());
        }
        println!(
            "{}",
            Stats::new(instantiate).line("instantiate an instance")
        );
        println!(
            "{}",
            Stats::new(calls).line("call round trip (login-flow.cancel)")
        );
        host.shutdown().await;
        Ok(())
    }

    async fn live(&self, options: &BenchOptions, count: usize) -> Result<()> {
        let (source, manifest, dir) = (&self.source, &self.manifest, &self.dir);
        let live_runtime = self.live_runtime(count);
        println!(
            "\n-- {count} live logins, each with a {} ms timer --",
            options.tick_ms
        );
        let settings = format!("start-interval-ms = {}", options.tick_ms);
        let config = config_for(manifest, dir, &live_runtime, &settings)?;
        let host = start_host(config, source).await?;
        let (rss_before, maps_before) = (rss_bytes(), mappings());
        let started = Instant::now();
        let handles =
            create_logins(&host, &manifest.id, "live", count, |p| p == Phase::Running).await?;
        let startup = started.elapsed();
        let (rss_after, maps_after) = (rss_bytes(), mappings());
        println!("{:<40} {:>9.1?}", "start every login", startup);
        println!(
            "{:<40} {:>12}  (RSS {} → {} MiB)",
            "resident memory per live login",
            kib(rss_after.saturating_sub(rss_before) / count.max(1) as u64),
            rss_before >> 20,
            rss_after >> 20
        );
        println!(
            "{:<40} {:>12.1}  ({maps_before} → {maps_after})",
            "memory mappings per live login",
            maps_after.saturating_sub(maps_before) as f64 / count.max(1) as f64,
        );
        let linear: u64 =
            handles.iter().map(|h| h.status().memory_bytes).sum::<u64>() / count.max(1) as u64;
        println!("{:<40} {:>12}", "linear memory per instance", kib(linear));

        let registry = host.registry();
        registry.take_timer_lateness();
        let cpu_before = cpu_time();
        tokio::time::sleep(options.tick_for).await;
        let cpu = cpu_time().saturating_sub(cpu_before);
        let lateness: Vec<Duration> = registry
            .take_timer_lateness()
            .into_iter()
            .map(|ms| Duration::from_millis(ms.into()))
            .collect();
        println!(
            "{}",
            Stats::new(lateness).line("timer lateness while all tick")
        );
        println!(
            "{:<40} {:>11.1}%",
            "CPU while ticking (of one core)",
            cpu.as_secs_f64() * 100.0 / options.tick_for.as_secs_f64()
        );

        let mut next: toml::Table = toml::from_str(&source.manifest)?;
        let mut version = manifest.version.clone();
        version.patch += 1;
        next.insert("version".into(), version.to_string().into());
        let started = Instant::now();
        let outcome = registry
            .load_source(
                PluginSource {
                    bytes: source.bytes.clone(),
                    manifest: toml::to_string(&next)?,
                    path: None,
                },
                None,
            )
            .await?;
        println!(
            "{:<40} {:>9.1?}  ({outcome:?})",
            "upgrade every live login (+compile)",
            started.elapsed()
        );
        drop(handles);
        host.shutdown().await;
        Ok(())
    }

    async fn hibernating(&self, count: usize) -> Result<()> {
        let (source, manifest, dir, allocator) =
            (&self.source, &self.manifest, &self.dir, self.allocator);
        println!("\n-- {count} hibernating logins (timers an hour away) --");
        let runtime = format!("{allocator}hibernate = true\nhibernate-after-ms = 50\n");
        let config = config_for(manifest, dir, &runtime, "start-interval-ms = 3600000")?;
        let host = start_host(config, source).await?;
        let rss_before = rss_bytes();
        let started = Instant::now();
        // In batches, so the live ones fit the instance pool while they
        // start before they hibernate.
        let batch = 5_000.min(count);
        let mut created = 0;
        while created < count {
            let n = batch.min(count - created);
            let handles = create_logins(&host, &manifest.id, &format!("sleepy{created}"), n, |p| {
                p == Phase::Hibernating
            })
            .await?;
            drop(handles);
            created += n;
        }
        let elapsed = started.elapsed();
        // A new interval first fires within ten seconds (the host spreads
        // first firings), waking its login once; wait until every login
        // has done that and is asleep again.
        let settle = Instant::now();
        tokio::time::sleep(Duration::from_secs(11)).await;
        while host.registry().live_logins() > 0 && settle.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let rss_after = rss_bytes();
        println!(
            "{:<40} {:>9.1?}",
            "start and hibernate every login", elapsed
        );
        let mut phases = std::collections::BTreeMap::new();
        for status in host.registry().statuses().values() {
            *phases
                .entry(format!("{:?}", status.phase))
                .or_insert(0usize) += 1;
        }
        let metrics = host.registry().metrics();
        println!(
            "{:<40} {phases:?}; {} hibernations, {} wakes",
            "phases", metrics.hibernations, metrics.wakes
        );
        println!(
            "{:<40} {:>12}  (RSS {} → {} MiB; {} live, {} wake-ups scheduled)",
            "resident memory per hibernating login",
            kib(rss_after.saturating_sub(rss_before) / count as u64),
            rss_before >> 20,
            rss_after >> 20,
            host.registry().live_logins(),
            host.registry().scheduled_wakeups(),
        );
        host.shutdown().await;
        Ok(())
    }
}

/// CPU time used by the process so far (Linux).
pub fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name: utime is the 14th, stime the 15th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Clock ticks are 100 per second on Linux.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}
