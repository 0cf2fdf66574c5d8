//! What each instance's `Store` holds: its WASI context (which grants
//! nothing), its limits, and the context its host imports act in.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use weft_storage::{KeyBuf, Tree};

use crate::login::LoginKey;
use crate::plugin::LoadedPlugin;
use crate::runtime::Runtime;
use crate::timers::TimerTable;

/// What an instance is for; decides which imports do anything.
#[derive(Debug, Clone)]
pub(crate) enum InstanceRole {
    /// Serves one login: a connector instance, or a login provider's
    /// instance serving that login's connector.
    Login(LoginKey),
    /// Runs one login process, before any login exists.
    LoginProcess {
        /// The process id.
        process: String,
    },
    /// An instance with no login (e.g. a credential provider).
    Standalone,
}

/// Flags host imports raise for the actor that owns the instance.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Signals {
    /// The plugin reported bad credentials or a logout: stop its timers.
    pub(crate) pause_timers: bool,
    /// The plugin queued events during the call: flush storage after it.
    pub(crate) queued_events: bool,
}

/// The context an instance's imports act in.
pub(crate) struct InstanceContext {
    /// The plugin version the instance runs.
    pub(crate) plugin: Arc<LoadedPlugin>,
    /// What the instance is for.
    pub(crate) role: InstanceRole,
    /// The runtime: storage, HTTP clients, the host's services.
    pub(crate) runtime: Arc<Runtime>,
    /// The prefix of the instance's KV namespace.
    pub(crate) namespace: KeyBuf,
    /// Bytes the namespace holds, for the quota.
    pub(crate) kv_usage: u64,
    /// The login's timers; none for login processes and providers.
    pub(crate) timers: Option<Arc<Mutex<TimerTable>>>,
    /// This instance's cookies; never shared with another login.
    pub(crate) cookies: Arc<reqwest::cookie::Jar>,
    /// Log records this instance may still write this second.
    pub(crate) log_budget: LogBudget,
    /// Flags for the owning actor.
    pub(crate) signals: Signals,
    /// The message of a guest panic reported just before its trap.
    pub(crate) last_panic: Option<String>,
    /// The plugin's counters (`/metrics`).
    pub(crate) counters: Arc<crate::metrics::PluginCounters>,
}

impl InstanceContext {
    /// A context for an instance of `plugin` in `role`, with the login's
    /// `timers` if it has any.
    pub(crate) fn new(
        plugin: Arc<LoadedPlugin>,
        role: InstanceRole,
        runtime: Arc<Runtime>,
        timers: Option<Arc<Mutex<TimerTable>>>,
    ) -> weft_storage::Result<Self> {
        let namespace = kv_namespace(&role, plugin.id());
        let kv_usage = namespace_usage(runtime.kv.as_ref(), &namespace)?;
        let counters = runtime.metrics.plugin(plugin.id());
        Ok(Self {
            plugin,
            role,
            runtime,
            namespace,
            kv_usage,
            timers,
            cookies: Arc::new(reqwest::cookie::Jar::default()),
            log_budget: LogBudget::new(),
            signals: Signals::default(),
            last_panic: None,
            counters,
        })
    }
}

/// The KV namespace of an instance of `plugin` in `role`.
///
/// Login namespaces start with the login (`l`, its plugin, its id) and end
/// with the instance's plugin, so that deleting a login removes its state
/// in the connector and in every provider that served it with one prefix
/// removal. Components are terminated, so no namespace is a prefix of
/// another.
pub(crate) fn kv_namespace(role: &InstanceRole, plugin: &str) -> KeyBuf {
    match role {
        InstanceRole::Login(key) => login_kv_prefix(key).push(plugin),
        InstanceRole::LoginProcess { process } => {
            KeyBuf::new().push("p").push(plugin).push(process)
        }
        InstanceRole::Standalone => KeyBuf::new().push("s").push(plugin),
    }
}

/// The prefix of every KV namespace that serves login `key`.
pub(crate) fn login_kv_prefix(key: &LoginKey) -> KeyBuf {
    KeyBuf::new().push("l").push(&key.plugin).push(&key.id)
}

/// Bytes (keys and values) stored under `namespace`.
fn namespace_usage(tree: &dyn Tree, namespace: &KeyBuf) -> weft_storage::Result<u64> {
    let mut usage = 0;
    tree.for_each(namespace.as_bytes(), &mut |key, value| {
        usage += (key.len() - namespace.as_bytes().len() + value.len()) as u64;
        Ok(())
    })?;
    Ok(usage)
}

/// The data of an instance's `Store`.
pub(crate) struct PluginState {
    /// Built on first use: plugins built for `wasm32-unknown-unknown` (the
    /// SDK's default) never call WASI, and a context (its random
    /// generators above all) would cost every live login about a
    /// kilobyte.
    wasi: Option<Box<WasiCtx>>,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    /// When the call in progress must end.
    pub(crate) deadline: Instant,
    /// What the call in progress may still write.
    pub(crate) budget: CallBudget,
    pub(crate) ctx: InstanceContext,
}

/// How much one call may write: a plugin that floods the host with events
/// or KV writes within its quota is told to stop (with the transient
/// `storage` error, so it tries the rest in a later call) instead of
/// filling the outbox or the store faster than the host drains them. A
/// poll after a long outage fits: the echo example queues at most 1,000
/// events a poll.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallBudget {
    events: u32,
    kv_writes: u32,
}

impl CallBudget {
    /// Events one call may queue.
    pub(crate) const EVENTS: u32 = 5_000;
    /// KV writes (sets, deletes, swaps) one call may make.
    pub(crate) const KV_WRITES: u32 = 5_000;

    /// Takes one event from the budget; `false` once it is spent.
    pub(crate) fn take_event(&mut self) -> bool {
        Self::take(&mut self.events)
    }

    /// Takes one KV write from the budget; `false` once it is spent.
    pub(crate) fn take_kv_write(&mut self) -> bool {
        Self::take(&mut self.kv_writes)
    }

    fn take(left: &mut u32) -> bool {
        let ok = *left > 0;
        *left = left.saturating_sub(1);
        ok
    }
}

impl Default for CallBudget {
    fn default() -> Self {
        Self {
            events: Self::EVENTS,
            kv_writes: Self::KV_WRITES,
        }
    }
}

impl PluginState {
    /// A state for an instance in context `ctx`.
    pub(crate) fn new(ctx: InstanceContext) -> Self {
        let limiter = MemoryLimiter::new(ctx.plugin.capabilities.memory_bytes);
        Self {
            wasi: None,
            table: ResourceTable::new(),
            limiter,
            deadline: Instant::now(),
            budget: CallBudget::default(),
            ctx,
        }
    }

    /// The login this instance serves, if any.
    pub(crate) fn login(&self) -> Option<&LoginKey> {
        match &self.ctx.role {
            InstanceRole::Login(key) => Some(key),
            _ => None,
        }
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        // No preopens, no environment, no arguments, no inherited stdio,
        // and every socket address denied: WASI serves only clocks and
        // randomness, the rest answers "not permitted".
        let ctx = self.wasi.get_or_insert_with(|| {
            Box::new(
                WasiCtx::builder()
                    .allow_ip_name_lookup(false)
                    .allow_tcp(false)
                    .allow_udp(false)
                    .build(),
            )
        });
        WasiCtxView {
            ctx,
            table: &mut self.table,
        }
    }
}

/// A memory cap over all of an instance's linear memories together.
///
/// wasmtime's `StoreLimits` caps each memory on its own; a component built
/// from several modules (the WASI adapter has its own memory) could then
/// use a multiple of the cap. This counts them together.
pub(crate) struct MemoryLimiter {
    cap: u64,
    used: u64,
    /// Set when a growth was refused: the trap that follows is the memory
    /// cap, not a bug.
    pub(crate) exceeded: bool,
}

/// The error that traps a guest that grew past its memory cap.
#[derive(Debug, thiserror::Error)]
#[error("the plugin tried to use more than its memory cap of {cap_mib} MiB")]
pub(crate) struct MemoryCapExceeded {
    /// The cap, in MiB.
    pub(crate) cap_mib: u64,
}

impl MemoryLimiter {
    fn new(cap: u64) -> Self {
        Self {
            cap,
            used: 0,
            exceeded: false,
        }
    }

    /// Bytes of linear memory in use.
    pub(crate) fn used(&self) -> u64 {
        self.used
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current) as u64;
        if self.used + growth > self.cap {
            self.exceeded = true;
            // An error (not `false`) traps right away instead of letting
            // the guest's allocator see a failed grow and abort later.
            return Err(MemoryCapExceeded {
                cap_mib: self.cap >> 20,
            }
            .into());
        }
        self.used += growth;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Function tables of real plugins hold a few thousand entries.
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        // A component instantiates a handful of core instances (the
        // module, the WASI adapter, shims).
        32
    }

    fn tables(&self) -> usize {
        32
    }

    fn memories(&self) -> usize {
        8
    }
}

/// A token bucket for a plugin's log records: a plugin that logs in a loop
/// must not flood the host's logs.
pub(crate) struct LogBudget {
    tokens: f64,
    last: Instant,
    /// Records dropped since the last one let through.
    pub(crate) dropped: u64,
}

impl LogBudget {
    const PER_SECOND: f64 = 50.0;
    const BURST: f64 = 200.0;

    /// A full bucket.
    pub(crate) fn new() -> Self {
        Self {
            tokens: Self::BURST,
            last: Instant::now(),
            dropped: 0,
        }
    }

    /// Whether one more record may go through now.
    pub(crate) fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * Self::PER_SECOND;
        self.tokens = (self.tokens + refill).min(Self::BURST);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.dropped += 1;
            false
        }
    }
}

impl Default for LogBudget {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_cap_counts_all_memories_together() {
        let mut limiter = MemoryLimiter::new(10 << 20);
        // Two memories of 4 MiB fit in 10 MiB...
        assert!(limiter.memory_growing(0, 4 << 20, None).unwrap());
        assert!(limiter.memory_growing(0, 4 << 20, None).unwrap());
        // ...but growing either by 4 MiB more does not.
        assert!(limiter.memory_growing(4 << 20, 8 << 20, None).is_err());
        assert!(limiter.exceeded);
    }

    #[test]
    fn a_log_flood_is_cut_to_the_burst() {
        let mut budget = LogBudget::new();
        let allowed = (0..1000).filter(|_| budget.take()).count();
        // The burst goes through (plus at most a few refilled tokens);
        // the rest is counted as dropped.
        assert!((200..210).contains(&allowed), "{allowed}");
        assert_eq!(budget.dropped as usize, 1000 - allowed);
    }
}
