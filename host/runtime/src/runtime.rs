//! What every instance shares: the engine, the limits, the HTTP clients,
//! the runtime's storage, and the host's services.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use weft_storage::{Storage, Table, Tree};

use crate::config::{HttpConfig, RuntimeConfig};
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::net::HttpClients;
use crate::registry::Registry;
use crate::scheduler::Scheduler;
use crate::services::HostServices;
use crate::timers::Timer;
use crate::transport::HttpTransport;

/// The trees the runtime keeps in the host's storage.
pub(crate) mod trees {
    /// Each plugin's KV, keyed by namespace then the plugin's key.
    pub const PLUGIN_KV: &str = "plugin_kv";
    /// Each login's timers: (plugin, login id) → timer table.
    pub(crate) const TIMERS: &str = "timers";
}

/// The runtime's shared state. One per host.
pub(crate) struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) config: RuntimeConfig,
    pub(crate) http_config: HttpConfig,
    pub(crate) http: HttpClients,
    /// Where plugins' requests go instead of the network, if anywhere.
    pub(crate) transport: Option<Arc<dyn HttpTransport>>,
    /// Timers fire only when asked (`LoginHandle::fire_timer`).
    pub(crate) manual_timers: bool,
    pub(crate) storage: Arc<dyn Storage>,
    /// Every plugin's KV namespaces.
    pub(crate) kv: Arc<dyn Tree>,
    /// Every login's persisted timers.
    pub(crate) timers: Table<BTreeMap<String, Timer>>,
    pub(crate) host: Arc<dyn HostServices>,
    /// The registry, for imports routed to another plugin (a connector's
    /// `tokens` calls go to its login provider's actor).
    pub(crate) registry: Weak<Registry>,
    /// Wakes hibernating logins.
    pub(crate) scheduler: Scheduler,
    pub(crate) metrics: Metrics,
}

impl Runtime {
    /// Flushes the runtime's storage on the blocking pool.
    pub(crate) async fn flush(&self) -> weft_storage::Result<()> {
        weft_storage::flush_async(&self.storage).await
    }
}
