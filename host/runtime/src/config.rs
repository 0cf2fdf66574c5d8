//! The runtime's part of the operator's configuration. The host's config
//! file embeds these tables (`[runtime]`, `[http]`, `[plugin.<id>]`); the
//! runtime never sees the rest of it.
//!
//! Unknown keys are errors, so a typo never silently falls back to a
//! default. Every limit has a default chosen for a small host running many
//! idle logins; each is documented where it is declared.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// How instances get their memory, stacks and tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Allocator {
    /// One pre-reserved pool of slots for `max-instances` instances:
    /// instantiation is a slot lookup, address space is reserved once, and
    /// a full pool is a clear error instead of an exhausted kernel. The
    /// default, chosen by `weft bench` on a 2-core host.
    Pooling,
    /// Memory mapped per instance, with reservations sized from the
    /// memory cap. Needs no up-front reservation, but every instance costs
    /// several kernel mappings (`vm.max_map_count`).
    OnDemand,
}

/// Limits for wasm execution.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct RuntimeConfig {
    /// How often the epoch ticker runs. Guests yield to other tasks every
    /// tick, so this bounds how long one guest holds a worker thread
    /// (Spin uses 10 ms, Zed 100 ms).
    pub epoch_tick_ms: u64,
    /// The per-call deadline a plugin gets unless its manifest and the
    /// operator's grant say otherwise. A poll that makes a few HTTP calls
    /// fits well inside it.
    pub call_deadline_ms: u64,
    /// The memory a plugin gets unless granted otherwise, in MiB.
    pub memory_mb: u64,
    /// The most memory any plugin may be granted, in MiB: the size of a
    /// pooled memory slot, and of each instance's address reservation.
    pub max_memory_mb: u64,
    /// How many timers a login may have unless granted otherwise.
    pub timers: u32,
    /// The shortest timer period or delay, in milliseconds.
    pub min_timer_ms: u32,
    /// How many guest calls may run at once across all logins; the rest
    /// wait, so a storm of timers cannot starve the host. A login
    /// provider's call made on behalf of a connector runs under the
    /// connector's permit, never a second one.
    pub max_concurrent_calls: usize,
    /// Traps in a row after which a login stops restarting (crash loop).
    pub max_restarts: u32,
    /// The first restart delay after a trap; it doubles each time.
    pub restart_backoff_ms: u64,
    /// The longest restart delay.
    pub max_restart_backoff_ms: u64,
    /// After this long without a trap, a login's trap count resets.
    pub healthy_after_ms: u64,
    /// Cache compiled components on disk, under the data directory.
    pub compile_cache: bool,
    /// Where the compile cache lives, instead of `<data-dir>/compile-cache`.
    pub compile_cache_dir: Option<PathBuf>,
    /// Each login's mailbox: Matrix events wait here while the instance is
    /// busy; when it is full, senders wait.
    pub mailbox: usize,
    /// The most a plugin's KV namespace (one login) may hold, in MiB.
    pub kv_quota_mb: u64,
    /// The largest file a plugin may bridge either way unless granted
    /// otherwise, in MiB.
    pub max_media_mb: u64,
    /// How instances are allocated.
    pub allocator: Allocator,
    /// The most instances alive at once (logins, providers, login
    /// processes). With the pooling allocator this sizes the pool; past it,
    /// a new instance waits and its login reports why.
    pub max_instances: u32,
    /// Drop the instance of a login that has nothing to do soon, and
    /// create it again when its next timer fires or an event arrives, so
    /// memory grows with active logins rather than all of them.
    pub hibernate: bool,
    /// How long a login stays idle (and how far away its next timer must
    /// be) before it hibernates.
    pub hibernate_after_ms: u64,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            epoch_tick_ms: 10,
            call_deadline_ms: 10_000,
            memory_mb: 64,
            max_memory_mb: 256,
            timers: 16,
            min_timer_ms: 1_000,
            max_concurrent_calls: 64,
            max_restarts: 5,
            restart_backoff_ms: 500,
            max_restart_backoff_ms: 60_000,
            healthy_after_ms: 60_000,
            compile_cache: true,
            compile_cache_dir: None,
            mailbox: 256,
            kv_quota_mb: 64,
            max_media_mb: 16,
            allocator: Allocator::Pooling,
            max_instances: 12_000,
            hibernate: true,
            hibernate_after_ms: 30_000,
        }
    }
}

impl RuntimeConfig {
    /// Checks values that would make the runtime unusable.
    pub fn check(&self) -> Result<(), String> {
        if self.epoch_tick_ms == 0 || self.max_concurrent_calls == 0 || self.mailbox == 0 {
            return Err(
                "[runtime] epoch-tick-ms, max-concurrent-calls and mailbox must be positive".into(),
            );
        }
        if self.max_instances == 0 {
            return Err("[runtime] max-instances must be positive".into());
        }
        if self.memory_mb > self.max_memory_mb {
            return Err(format!(
                "[runtime] memory-mb ({}) is above max-memory-mb ({})",
                self.memory_mb, self.max_memory_mb
            ));
        }
        Ok(())
    }
}

/// Limits for plugins' outgoing HTTP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct HttpConfig {
    /// The timeout of a request that names none.
    pub default_timeout_ms: u64,
    /// The longest timeout a request may ask for.
    pub max_timeout_ms: u64,
    /// The largest response body a plugin gets unless granted otherwise.
    pub max_response_bytes: u64,
    /// The largest request body a plugin may send.
    pub max_request_bytes: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            default_timeout_ms: 10_000,
            max_timeout_ms: 60_000,
            max_response_bytes: 8 << 20,
            max_request_bytes: 4 << 20,
        }
    }
}

/// What the operator grants one plugin, and its settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PluginGrants {
    /// URL patterns the plugin may reach: `scheme://host[:port]`, where
    /// the host may be `*` or start with `*.`, and the port may be `*`.
    #[serde(default)]
    pub http: Vec<String>,
    /// Whether the plugin may reach loopback and private addresses (only
    /// for hosts it is granted). Off by default: a granted public name
    /// that resolves to a private address is refused.
    #[serde(default)]
    pub private_networks: bool,
    /// The most memory the plugin may ask for, in MiB.
    pub memory_mb: Option<u64>,
    /// The most timers per login.
    pub timers: Option<u32>,
    /// The longest per-call deadline it may ask for.
    pub call_deadline_ms: Option<u64>,
    /// The largest response body it may receive.
    pub max_response_bytes: Option<u64>,
    /// The largest file it may bridge either way, in bytes.
    pub max_media_bytes: Option<u64>,
    /// Which plugins it may use through the host, by interface, e.g.
    /// `tokens = "msal"`; overrides the manifest's choice.
    #[serde(default)]
    pub uses: BTreeMap<String, String>,
    /// The user namespace a connector's remote users live in (the prefix
    /// of their Matrix localparts, e.g. `teams_`), overriding the one its
    /// manifest asks for. The host checks it against the bot and the
    /// other connectors at load.
    pub ghost_prefix: Option<String>,
    /// Whether the plugin may use the host's application service (the
    /// `appservice` import) for the users its manifest's
    /// `appservice-users` names.
    #[serde(default)]
    pub appservice: bool,
    /// The localpart pattern of those users, overriding the manifest's.
    pub appservice_users: Option<String>,
    /// Where the host serves the plugin's HTTP routes (`http-handler`).
    pub routes: Option<RoutesGrant>,
    /// The plugin's settings, checked against its manifest's schema.
    #[serde(default)]
    pub settings: toml::Table,
}

/// A plugin's HTTP routes on the host's public listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RoutesGrant {
    /// The path prefix they are mounted under, e.g. `/brmble`.
    pub prefix: String,
    /// The largest request body, in bytes.
    #[serde(default = "default_route_body_bytes")]
    pub max_body_bytes: usize,
    /// The largest response body, in bytes.
    #[serde(default = "default_route_response_bytes")]
    pub max_response_bytes: usize,
    /// Requests per minute from one client address (a burst of this many,
    /// then evenly spread).
    #[serde(default = "default_route_rate")]
    pub requests_per_minute: u32,
    /// Serve these routes over TLS on a listener of their own (and only
    /// there), asking clients for certificates.
    pub tls: Option<RoutesTls>,
}

/// A TLS listener for a plugin's routes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RoutesTls {
    /// Where it listens.
    pub listen: std::net::SocketAddr,
    /// The server's certificate chain (PEM).
    pub certificate: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
    /// Whether a client must present a certificate (`required`) or may
    /// (`optional`). Any certificate is taken, self-signed included: what
    /// counts is that the client holds its key; the plugin gets the
    /// certificate's SHA-1 and decides what it identifies.
    #[serde(default)]
    pub client_certificates: ClientCertificates,
}

/// Whether a TLS listener requires client certificates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientCertificates {
    /// The handshake fails without one.
    #[default]
    Required,
    /// A client may present one.
    Optional,
}

fn default_route_body_bytes() -> usize {
    64 << 10
}

fn default_route_response_bytes() -> usize {
    1 << 20
}

fn default_route_rate() -> u32 {
    120
}
