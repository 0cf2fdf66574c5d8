//! `weft-teams-bench`: what an idle Teams login costs the host. Figures,
//! printed, never asserted.
//!
//! The real Teams component (`plugins/teams`, with the MSAL provider it
//! uses) runs on a host with in-memory storage, its logins polling the fake
//! Teams (`examples/fake-teams`). For each number of logins asked for, this
//! process seeds the fake (accounts, two group chats per login with one
//! message each, MSAL tokens and a skypetoken per account, so every login
//! starts as a finished sign-in would leave it) and runs the host in a
//! child process of its own, so its resident memory is the host's alone:
//! the fake, and a previous run, stay out of it. The child creates the
//! logins, lets them discover their chats, bridge the first messages and
//! settle into polling with nothing new, then reports resident memory per
//! login, CPU and timer lateness at that steady state.
//!
//! ```text
//! cargo run --release -p weft-tests --bin weft-teams-bench -- --logins 1000,10000
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use fake_teams::{FakeTeams, TeamsAccount};
use futures::StreamExt;
use serde_json::{Value, json};
use weft_host::bench::{Stats, cpu_time, kib, mappings, resident_by_mapping_kind, rss_bytes};
use weft_host::config::Config;
use weft_host::host::{Host, HostOptions};
use weft_host::logins::{BridgeState, LoginKey, LoginRecord, StateEvent, now_ms};
use weft_host::outbox::{EventSink, Outbox};
use weft_runtime::{LoginHandle, Phase};
use weft_storage::MemoryStorage;

/// The scope of the token a Teams login holds (`plugins/teams`).
const MBI_SCOPE: &str = "service::api.fl.spaces.skype.com::MBI_SSL";

/// Logins per group chat: each login is in two, so the fake holds a fifth
/// as many chats as there are logins and a listing stays cheap for it.
const GROUP: usize = 10;

struct Options {
    logins: Vec<usize>,
    poll_ms: u64,
    discovery_ms: u64,
    warmup: Duration,
    measure: Duration,
    /// Child mode: run the host for this many logins.
    scenario: Option<usize>,
    /// Child mode: the fake's base URL.
    fake: Option<String>,
    /// Child mode: the logins to create, one JSON object a line.
    seed: Option<PathBuf>,
}

impl Options {
    fn parse() -> Result<Self> {
        let mut options = Self {
            logins: vec![1000],
            poll_ms: 10_000,
            discovery_ms: 30_000,
            warmup: Duration::from_secs(25),
            measure: Duration::from_secs(30),
            scenario: None,
            fake: None,
            seed: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            if flag == "-h" || flag == "--help" {
                println!(
                    "weft-teams-bench [--logins 1000,10000] [--poll-ms 10000] \
                     [--discovery-ms 30000] [--warmup-secs 25] [--measure-secs 30]"
                );
                std::process::exit(0);
            }
            let value = args
                .next()
                .with_context(|| format!("{flag} needs a value"))?;
            let number = |v: &str| -> Result<u64> {
                v.parse()
                    .with_context(|| format!("{flag}: `{v}` is not a number"))
            };
            match flag.as_str() {
                "--logins" => {
                    options.logins = value
                        .split(',')
                        .map(|n| number(n.trim()).map(|n| n as usize))
                        .collect::<Result<_>>()?;
                }
                "--poll-ms" => options.poll_ms = number(&value)?,
                "--discovery-ms" => options.discovery_ms = number(&value)?,
                "--warmup-secs" => options.warmup = Duration::from_secs(number(&value)?),
                "--measure-secs" => options.measure = Duration::from_secs(number(&value)?),
                "--scenario" => options.scenario = Some(number(&value)? as usize),
                "--fake" => options.fake = Some(value),
                "--seed" => options.seed = Some(value.into()),
                other => bail!("unknown flag {other} (see --help)"),
            }
        }
        Ok(options)
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    weft_host::init_tls();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let options = Options::parse()?;
    match options.scenario {
        Some(count) => run_host(&options, count).await,
        None => run(&options).await,
    }
}

/// The parent: the fake Teams, seeded for each run, and one child process
/// per run.
async fn run(options: &Options) -> Result<()> {
    let teams = weft_tests::component("teams");
    let bytes = std::fs::metadata(&teams)?.len();
    println!(
        "weft-teams-bench: {} ({bytes} bytes) with msal, {} CPUs; poll every {} ms, discovery every {} ms",
        teams.display(),
        std::thread::available_parallelism().map_or(1, usize::from),
        options.poll_ms,
        options.discovery_ms,
    );
    let fake = FakeTeams::start().await;
    let dir = tempfile::tempdir()?;
    let exe = std::env::current_exe().context("cannot find this binary")?;
    for &count in options.logins.iter().filter(|&&n| n > 0) {
        let started = Instant::now();
        let seed = dir.path().join(format!("logins-{count}.jsonl"));
        seed_fake(&fake, count, &seed).await?;
        println!(
            "\n-- {count} Teams logins, {} group chats in the fake (seeded in {:.1?}) --",
            2 * count.div_ceil(GROUP),
            started.elapsed()
        );
        let status = tokio::process::Command::new(&exe)
            .args(["--scenario", &count.to_string()])
            .args(["--fake", &fake.base_url()])
            .arg("--seed")
            .arg(&seed)
            .args(["--poll-ms", &options.poll_ms.to_string()])
            .args(["--discovery-ms", &options.discovery_ms.to_string()])
            .args(["--warmup-secs", &options.warmup.as_secs().to_string()])
            .args(["--measure-secs", &options.measure.as_secs().to_string()])
            .status()
            .await
            .context("cannot run the host")?;
        if !status.success() {
            bail!("the {count}-login run failed ({status})");
        }
    }
    Ok(())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Adds `count` accounts to the fake, each in two group chats (blocks of
/// [`GROUP`] accounts, the second set offset by half a block) with a peer
/// who said hello in each, and writes each account's login — tokens from
/// the identity platform, a skypetoken from `authz/consumer` — to `seed`.
async fn seed_fake(fake: &FakeTeams, count: usize, seed: &Path) -> Result<()> {
    let run = format!("r{count}");
    let peer = fake.add_account(&format!("{run}-peer"), "Bench Peer");
    let accounts: Vec<TeamsAccount> = (0..count)
        .map(|i| fake.add_account(&format!("{run}-u{i}"), &format!("Bench User {i}")))
        .collect();
    for offset in [0, GROUP / 2] {
        let mut start = 0;
        while start < count {
            let end = if start == 0 {
                GROUP - offset
            } else {
                start + GROUP
            }
            .min(count);
            let mut members: Vec<&TeamsAccount> = accounts[start..end].iter().collect();
            members.push(&peer);
            let chat = fake.group(&format!("{run} block {offset}/{start}"), &members);
            fake.post(&chat, &peer, "hello, team");
            start = end;
        }
    }
    let client = reqwest::Client::new();
    let authz = fake.authz_url();
    let logins: Vec<Result<String>> = futures::stream::iter(&accounts)
        .map(|account| {
            let tokens = fake.identity().issue_spa_tokens(&account.account);
            let (client, authz) = (&client, &authz);
            async move {
                let now = unix_now();
                let answer: Value = client
                    .post(authz)
                    .bearer_auth(&tokens.access_token)
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                let skype = &answer["skypeToken"];
                let expires_in = match &skype["expiresIn"] {
                    Value::String(s) => s.parse().unwrap_or(3600),
                    other => other.as_u64().unwrap_or(3600),
                };
                // What the Teams connector stores when a sign-in completes
                // (plugins/teams/src/session.rs).
                let session = json!({
                    "mri": account.mri,
                    "tokens": {
                        "access_token": tokens.access_token,
                        "expires_at": tokens.access_expires_on,
                        "refresh_token": format!("spa:{}", tokens.refresh_token),
                        "scopes": [MBI_SCOPE],
                        "account_id": account.account.home_account_id,
                    },
                    "tokens_at": now,
                    "skypetoken": skype["skypetoken"],
                    "skypetoken_at": now,
                    "skypetoken_expires_at": now + expires_in,
                    "chat_service": answer["regionGtms"]["chatService"],
                    "signin_name": skype["signinname"],
                });
                let line = json!({
                    "id": account.mri,
                    "name": account.display_name,
                    "metadata": session,
                });
                Ok(line.to_string())
            }
        })
        .buffered(16)
        .collect()
        .await;
    let mut text = String::new();
    for line in logins {
        text.push_str(&line.context("the fake did not issue a skypetoken")?);
        text.push('\n');
    }
    std::fs::write(seed, text)?;
    Ok(())
}

/// Drains the outbox as the bridge would, keeping nothing.
#[derive(Default)]
struct DrainSink {
    outbox: OnceLock<Weak<Outbox>>,
    events: AtomicU64,
    draining: tokio::sync::Mutex<()>,
}

struct SinkHandle(Arc<DrainSink>);

impl EventSink for SinkHandle {
    fn events_queued(&self, login: &LoginKey) {
        let sink = self.0.clone();
        let login = login.clone();
        tokio::spawn(async move {
            let _one_at_a_time = sink.draining.lock().await;
            let Some(outbox) = sink.outbox.get().and_then(Weak::upgrade) else {
                return;
            };
            while let Ok(batch) = outbox.peek(&login, 100) {
                if batch.is_empty() {
                    return;
                }
                for queued in batch {
                    sink.events.fetch_add(1, Ordering::Relaxed);
                    let _ = outbox.ack(&login, queued.seq);
                }
            }
        });
    }
}

/// The child: a host with the Teams and MSAL components and `count`
/// logins, measured.
async fn run_host(options: &Options, count: usize) -> Result<()> {
    let base = options.fake.as_deref().context("--fake is missing")?;
    let seed = options.seed.as_deref().context("--seed is missing")?;
    let lines = std::fs::read_to_string(seed)?;
    let logins: Vec<Value> = lines
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let dir = tempfile::tempdir()?;
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins)?;
    for package in ["msal", "teams"] {
        weft_tests::host::copy_component(package, &plugins);
    }
    // The host's defaults, but for an instance pool that fits every login
    // (and a compile cache shared with the tests). A 10 s poll is well
    // under `hibernate-after-ms` (30 s), so no login hibernates.
    let text = format!(
        r#"
data-dir = {data:?}

[plugins]
dir = {plugins:?}
watch = false

[runtime]
compile-cache-dir = {cache:?}
max-instances = {instances}

[plugin.msal]
http = ["http://127.0.0.1:*"]
private-networks = true

[plugin.msal.settings]
authority-url = "{base}"

[plugin.teams]
http = ["http://127.0.0.1:*"]
private-networks = true

[plugin.teams.settings]
auth-url = "{base}/api/auth"
chat-service-url = "{base}"
media-url = "{base}"
poll-interval-ms = {poll}
discovery-interval-ms = {discovery}
"#,
        data = dir.path().join("data"),
        cache = weft_tests::workspace().join("target/test-compile-cache"),
        instances = (count + count / 5 + 64).max(1000),
        poll = options.poll_ms,
        discovery = options.discovery_ms,
    );
    let config = Config::from_toml(&text, dir.path())?;
    let sink = Arc::new(DrainSink::default());
    let storage: Arc<dyn weft_storage::Storage> = Arc::new(MemoryStorage::new());
    let host = Host::start_with(
        config,
        HostOptions {
            storage: Some(storage),
            event_sink: Some(Arc::new(SinkHandle(sink.clone()))),
        },
    )
    .await?;
    let _ = sink.outbox.set(Arc::downgrade(host.outbox()));
    let registry = host.registry().clone();
    if registry.plugin("teams").is_none() || registry.plugin("msal").is_none() {
        bail!("the teams and msal components did not load");
    }
    println!("allocator: {:?}", registry.allocator());

    let (rss_before, maps_before) = (rss_bytes(), mappings());
    let events_before = sink.events.load(Ordering::Relaxed);
    let started = Instant::now();
    let mut handles: Vec<LoginHandle> = Vec::with_capacity(count);
    for login in &logins {
        let id = login["id"].as_str().context("a login without an id")?;
        let record = LoginRecord {
            key: LoginKey::new("teams", id),
            owner: "@bench:localhost".into(),
            remote_name: login["name"].as_str().unwrap_or(id).into(),
            metadata: login["metadata"].to_string(),
            state: BridgeState::now(StateEvent::Connecting, None, None),
            created_ms: now_ms(),
        };
        let handle = host
            .logins()
            .put(record)
            .await?
            .context("teams is not a connector")?;
        handles.push(handle);
    }
    for handle in &handles {
        handle
            .wait_for(Duration::from_secs(300), |s| s.phase == Phase::Running)
            .await
            .with_context(|| format!("login {} did not start", handle.key()))?;
    }
    let startup = started.elapsed();
    let rss_started = rss_bytes();
    println!("{:<40} {:>9.1?}", "start every login", startup);

    // Connect (discovery) comes a second after the start, first polls
    // within the host's spread of first firings; then nothing is new.
    tokio::time::sleep(options.warmup).await;
    let events_warm = sink.events.load(Ordering::Relaxed);
    let (rss_after, maps_after) = (rss_bytes(), mappings());
    let per = |bytes: u64| kib(bytes / count.max(1) as u64);
    println!(
        "{:<40} {:>12}  (RSS {} → {} MiB, {} MiB once started)",
        "resident memory per idle Teams login",
        per(rss_after.saturating_sub(rss_before)),
        rss_before >> 20,
        rss_after >> 20,
        rss_started >> 20,
    );
    println!(
        "{:<40} {:>12.1}  ({maps_before} → {maps_after})",
        "memory mappings per login",
        maps_after.saturating_sub(maps_before) as f64 / count.max(1) as f64,
    );
    println!("where the resident memory is (the largest kinds of mapping):");
    for (kind, count, rss) in resident_by_mapping_kind().into_iter().take(6) {
        println!(
            "  {kind:<60} x{count:<6} {:>10}  ({} a login)",
            kib(rss),
            per(rss)
        );
    }
    let linear: u64 = handles.iter().map(|h| h.status().memory_bytes).sum();
    println!(
        "{:<40} {:>12}  (committed wasm memory, within the RSS)",
        "linear memory per instance",
        per(linear)
    );
    println!(
        "{:<40} {:>12}  (discovery and first polls; warm-up {:?})",
        "events bridged before steady state",
        events_warm - events_before,
        options.warmup
    );

    registry.take_timer_lateness();
    let metrics_before = registry.metrics();
    let cpu_before = cpu_time();
    tokio::time::sleep(options.measure).await;
    let cpu = cpu_time().saturating_sub(cpu_before);
    let metrics = registry.metrics();
    let lateness: Vec<Duration> = registry
        .take_timer_lateness()
        .into_iter()
        .map(|ms| Duration::from_millis(ms.into()))
        .collect();
    let secs = options.measure.as_secs_f64();
    println!(
        "{}",
        Stats::new(lateness).line("timer lateness at steady state")
    );
    println!(
        "{:<40} {:>11.1}%  (over {:?})",
        "CPU at steady state (of one core)",
        cpu.as_secs_f64() * 100.0 / secs,
        options.measure
    );
    println!(
        "{:<40} {:>12.1}  ({:.1} guest calls/s, {} traps, {} events)",
        "timer firings per second",
        (metrics.timers_fired - metrics_before.timers_fired) as f64 / secs,
        (metrics.calls - metrics_before.calls) as f64 / secs,
        metrics.traps - metrics_before.traps,
        sink.events.load(Ordering::Relaxed) - events_warm,
    );
    let rss_end = rss_bytes();
    println!(
        "{:<40} {:>12}  (RSS {} MiB after measuring)",
        "resident memory per login, at the end",
        per(rss_end.saturating_sub(rss_before)),
        rss_end >> 20
    );
    let mut phases = BTreeMap::new();
    let mut states = BTreeMap::new();
    for handle in &handles {
        *phases
            .entry(format!("{:?}", handle.status().phase))
            .or_insert(0usize) += 1;
        if let Ok(Some(record)) = host.logins().store.get(handle.key()) {
            *states
                .entry(format!("{:?}", record.state.state_event))
                .or_insert(0usize) += 1;
        }
    }
    println!("{:<40} {phases:?}; states {states:?}", "phases");
    drop(handles);
    host.shutdown().await;
    Ok(())
}
