//! The registry: which plugin versions are loaded, which logins and login
//! providers run, and the operator's hot-loading (load, upgrade, unload).
//! It is the runtime's entry point for the host.
//!
//! Loads are serialized, and so are new logins with them: a login created
//! while its plugin is being upgraded starts on the new version. An
//! upgrade compiles and links the new version first; only then does it
//! move the plugin's live logins and provider actors to it, one by one. If
//! any refuses, the ones already moved go back and the old version stays
//! current: an upgrade is all or nothing, and the error says which login
//! refused and why. Hibernating logins wake on the version current then.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;
use weft_storage::{KeyBuf, Storage, Table};

use crate::actor::{ActorStatus, LoginHandle, LoginSlot, WorkError};
use crate::config::{HttpConfig, PluginGrants, RuntimeConfig};
use crate::engine::Engine;
use crate::handler::{self, HandlerSlot, IncomingRequest, OutgoingResponse};
use crate::instance::{CallError, Instance, Permits};
use crate::login::LoginKey;
use crate::manifest::{Manifest, World};
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::net::HttpClients;
use crate::plugin::{self, LoadError, LoadedPlugin, PluginSource};
use crate::process::ProcessInstance;
use crate::provider::{ProviderHandle, ProviderKey, ProviderStatus};
use crate::runtime::{Runtime, trees};
use crate::scheduler::Scheduler;
use crate::services::HostServices;
use crate::state::{InstanceContext, InstanceRole, kv_namespace, login_kv_prefix};

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The plugin did not load; the old version (if any) keeps running.
    #[error("plugin not loaded: {0}")]
    Load(#[from] LoadError),
    /// The host refused the plugin beside the others (its namespace
    /// overlaps another's, for example).
    #[error("plugin not loaded: {0}")]
    Refused(String),
    /// The new version loaded but a login refused it; every login is back
    /// on the old version.
    #[error(
        "upgrade of {plugin} to {version} refused by login {login}: {message}; all logins stay on the old version"
    )]
    Upgrade {
        /// The plugin.
        plugin: String,
        /// The version refused.
        version: String,
        /// The login whose instance failed.
        login: String,
        /// Why.
        message: String,
    },
    /// No plugin with that id is loaded.
    #[error("no plugin `{0}` is loaded")]
    NotLoaded(String),
    /// An upgrade named a file with another plugin in it.
    #[error("the file holds plugin `{found}`, not `{expected}`")]
    IdMismatch {
        /// The plugin to upgrade.
        expected: String,
        /// What the file holds.
        found: String,
    },
    /// The plugin does not have the role the call needs.
    #[error("plugin `{plugin}` is a {world} plugin, not a {needed}")]
    WrongWorld {
        /// The plugin.
        plugin: String,
        /// Its world.
        world: &'static str,
        /// The world needed.
        needed: &'static str,
    },
    /// The plugin serves no HTTP routes (it lacks `http-handler`).
    #[error("plugin `{0}` serves no HTTP routes")]
    NoRoutes(String),
    /// Too many requests already wait for the plugin's handler.
    #[error("plugin `{0}` has too many requests waiting")]
    Busy(String),
    /// The request's method is not one a plugin can be asked.
    #[error("method {0} is not served")]
    Method(String),
    /// The plugin's instance could not be made or trapped.
    #[error(transparent)]
    Call(#[from] CallError),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] weft_storage::StorageError),
}

/// How often a long upgrade logs how far it is.
const UPGRADE_PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// What a load did.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum LoadOutcome {
    /// A plugin that was not loaded now is.
    Loaded {
        /// Its id.
        id: String,
        /// Its version.
        version: String,
        /// How many logins it has.
        logins: usize,
    },
    /// A loaded plugin moved to another version.
    Upgraded {
        /// Its id.
        id: String,
        /// The old version.
        from: String,
        /// The new version.
        to: String,
        /// How many logins moved (live ones, plus hibernating ones that
        /// wake on the new version).
        logins: usize,
    },
    /// The same file was already loaded.
    Unchanged {
        /// Its id.
        id: String,
        /// Its version.
        version: String,
    },
}

/// A loaded plugin, as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PluginInfo {
    /// Its id.
    pub id: String,
    /// Its version.
    pub version: String,
    /// Its role.
    pub world: World,
    /// Its network's name.
    pub name: String,
    /// Where it was loaded from.
    pub source: Option<String>,
    /// SHA-256 of component and manifest.
    pub digest: String,
    /// Its logins (live or hibernating).
    pub logins: usize,
}

/// What the runtime needs to start.
pub struct RuntimeOptions {
    /// Limits for wasm execution.
    pub runtime: RuntimeConfig,
    /// Limits for plugins' HTTP.
    pub http: HttpConfig,
    /// The operator's grants, by plugin id.
    pub grants: BTreeMap<String, PluginGrants>,
    /// Where compiled components are cached, if anywhere.
    pub compile_cache: Option<std::path::PathBuf>,
    /// Where plugins' HTTP requests go instead of the network (after the
    /// grant checks); `None` in a host. The test harness sets one.
    pub transport: Option<Arc<dyn crate::transport::HttpTransport>>,
    /// Whether timers fire only when asked
    /// ([`LoginHandle::fire_timer`](crate::LoginHandle::fire_timer)):
    /// a test harness's manual clock. `false` in a host.
    pub manual_timers: bool,
}

/// The registry.
pub struct Registry {
    runtime: Arc<Runtime>,
    grants: RwLock<BTreeMap<String, PluginGrants>>,
    plugins: RwLock<BTreeMap<String, Arc<LoadedPlugin>>>,
    logins: Mutex<BTreeMap<LoginKey, Arc<LoginSlot>>>,
    providers: Mutex<BTreeMap<ProviderKey, ProviderHandle>>,
    /// The instance serving each plugin's HTTP routes.
    handlers: Mutex<BTreeMap<String, Arc<HandlerSlot>>>,
    /// Serializes loads, upgrades, unloads and new logins.
    loading: tokio::sync::Mutex<()>,
    scheduler_task: tokio::task::JoinHandle<()>,
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.scheduler_task.abort();
        // A registry let go without `shutdown` (an embedder that drops its
        // host, a test that ends): every actor holds the runtime, and with
        // it the engine's instance pool, and would run on for as long as
        // the tokio runtime does. Closing their mailboxes ends them.
        let logins = std::mem::take(
            &mut *self
                .logins
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for slot in logins.into_values() {
            slot.close();
        }
        // A provider's actor ends when its handle, the only sender, goes.
        drop(std::mem::take(
            &mut *self
                .providers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        ));
    }
}

impl Registry {
    /// Builds the engine and the registry over `storage`, serving the
    /// host through `host`. Must run inside a tokio runtime.
    pub fn new(
        options: RuntimeOptions,
        storage: Arc<dyn Storage>,
        host: Arc<dyn HostServices>,
    ) -> anyhow::Result<Arc<Self>> {
        options
            .runtime
            .check()
            .map_err(|message| anyhow::anyhow!(message))?;
        let engine = Engine::new(&options.runtime, options.compile_cache.as_deref())?;
        let kv = storage.tree(trees::PLUGIN_KV)?;
        let timers = Table::open(storage.as_ref(), trees::TIMERS)?;
        let http = HttpClients::new()?;
        let scheduler = Scheduler::default();
        let scheduler_task = scheduler.spawn();
        Ok(Arc::new_cyclic(|registry| Self {
            runtime: Arc::new(Runtime {
                engine,
                config: options.runtime,
                http_config: options.http,
                http,
                transport: options.transport,
                manual_timers: options.manual_timers,
                storage,
                kv,
                timers,
                host,
                registry: registry.clone(),
                scheduler,
                metrics: Metrics::default(),
            }),
            grants: RwLock::new(options.grants),
            plugins: RwLock::new(BTreeMap::new()),
            logins: Mutex::new(BTreeMap::new()),
            providers: Mutex::new(BTreeMap::new()),
            handlers: Mutex::new(BTreeMap::new()),
            loading: tokio::sync::Mutex::new(()),
            scheduler_task,
        }))
    }

    /// Replaces the operator's grants. Loaded plugins keep what they were
    /// granted until they are loaded again (an upgrade, or a reload).
    pub fn set_grants(&self, grants: BTreeMap<String, PluginGrants>) {
        *self.grants.write().expect("grants lock poisoned") = grants;
    }

    /// The operator's grants for plugin `id`.
    pub fn grants(&self, id: &str) -> PluginGrants {
        self.grants
            .read()
            .expect("grants lock poisoned")
            .get(id)
            .cloned()
            .unwrap_or_default()
    }

    /// The limits the runtime runs with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.runtime.config
    }

    /// The allocator in use (the pooling one may have been unavailable).
    pub fn allocator(&self) -> crate::config::Allocator {
        self.runtime.engine.allocator()
    }

    /// The runtime's counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.runtime.metrics.snapshot()
    }

    /// Each plugin's counters (every plugin that ran since the start).
    pub fn plugin_metrics(&self) -> Vec<crate::metrics::PluginMetrics> {
        self.runtime.metrics.plugins()
    }

    /// Takes the timer lateness samples recorded since the last call, in
    /// milliseconds (for `weft bench`).
    pub fn take_timer_lateness(&self) -> Vec<u32> {
        self.runtime.metrics.take_lateness()
    }

    /// Pending wake-ups of hibernating logins.
    pub fn scheduled_wakeups(&self) -> usize {
        self.runtime.scheduler.len()
    }

    /// The current version of plugin `id`.
    pub fn plugin(&self, id: &str) -> Option<Arc<LoadedPlugin>> {
        self.plugins
            .read()
            .expect("plugin table poisoned")
            .get(id)
            .cloned()
    }

    fn all_plugins(&self) -> Vec<Arc<LoadedPlugin>> {
        self.plugins
            .read()
            .expect("plugin table poisoned")
            .values()
            .cloned()
            .collect()
    }

    fn set_current(&self, plugin: Arc<LoadedPlugin>) {
        self.plugins
            .write()
            .expect("plugin table poisoned")
            .insert(plugin.id().to_owned(), plugin.clone());
        self.runtime.host.plugin_current(&plugin);
    }

    /// The current version of every loaded connector.
    pub fn connectors(&self) -> Vec<Arc<LoadedPlugin>> {
        self.all_plugins()
            .into_iter()
            .filter(|p| p.manifest.world == World::Connector)
            .collect()
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, BTreeMap<LoginKey, Arc<LoginSlot>>> {
        self.logins.lock().expect("login table poisoned")
    }

    fn slots_of(&self, plugin: &str) -> Vec<Arc<LoginSlot>> {
        self.slots()
            .iter()
            .filter(|(k, _)| k.plugin == plugin)
            .map(|(_, s)| s.clone())
            .collect()
    }

    /// Every loaded plugin.
    pub fn plugins(&self) -> Vec<PluginInfo> {
        let slots = self.slots();
        self.all_plugins()
            .into_iter()
            .map(|p| PluginInfo {
                id: p.id().to_owned(),
                version: p.version().to_string(),
                world: p.manifest.world,
                name: p.manifest.network_name(),
                source: p.source.as_ref().map(|s| s.display().to_string()),
                digest: p.digest.clone(),
                logins: slots.keys().filter(|k| k.plugin == p.id()).count(),
            })
            .collect()
    }

    /// Loads (or upgrades to) the plugin in file `path`.
    pub async fn load_file(&self, path: &Path) -> Result<LoadOutcome, RegistryError> {
        let source = PluginSource::read(path)?;
        self.load_source(source, None).await
    }

    /// Upgrades plugin `id` to the one in file `path`.
    pub async fn upgrade_file(&self, id: &str, path: &Path) -> Result<LoadOutcome, RegistryError> {
        if self.plugin(id).is_none() {
            return Err(RegistryError::NotLoaded(id.to_owned()));
        }
        let source = PluginSource::read(path)?;
        self.load_source(source, Some(id)).await
    }

    /// Loads a plugin from memory; `expect` requires a plugin id.
    pub async fn load_source(
        &self,
        source: PluginSource,
        expect: Option<&str>,
    ) -> Result<LoadOutcome, RegistryError> {
        let _guard = self.loading.lock().await;
        let id = Manifest::parse(&source.manifest)
            .map_err(LoadError::from)?
            .id;
        if let Some(expected) = expect
            && expected != id
        {
            return Err(RegistryError::IdMismatch {
                expected: expected.to_owned(),
                found: id,
            });
        }
        let current = self.plugin(&id);
        if let Some(current) = &current
            && current.digest == source.digest()
        {
            return Ok(LoadOutcome::Unchanged {
                id,
                version: current.version().to_string(),
            });
        }
        let runtime = &self.runtime;
        let grants = self.grants(&id);
        let loaded = Arc::new(
            plugin::load(
                &runtime.engine,
                source,
                &grants,
                &runtime.config,
                &runtime.http_config,
            )
            .await?,
        );
        let others: Vec<Arc<LoadedPlugin>> = self
            .all_plugins()
            .into_iter()
            .filter(|p| p.id() != id)
            .collect();
        runtime
            .host
            .admit(&loaded, &others)
            .map_err(RegistryError::Refused)?;
        match current {
            None => {
                self.set_current(loaded.clone());
                let logins = self.start_logins(&loaded)?;
                tracing::info!(plugin = %id, version = %loaded.version(), logins, "plugin loaded");
                Ok(LoadOutcome::Loaded {
                    id,
                    version: loaded.version().to_string(),
                    logins,
                })
            }
            Some(old) => self.upgrade(old, loaded).await,
        }
    }

    async fn upgrade(
        &self,
        old: Arc<LoadedPlugin>,
        new: Arc<LoadedPlugin>,
    ) -> Result<LoadOutcome, RegistryError> {
        let id = new.id().to_owned();
        let logins: Vec<LoginHandle> = self
            .slots_of(&id)
            .into_iter()
            .map(LoginHandle::new)
            .collect();
        let providers: Vec<(ProviderKey, ProviderHandle)> = self
            .providers
            .lock()
            .expect("provider table poisoned")
            .iter()
            .filter(|((_, provider), _)| *provider == id)
            .map(|(k, h)| (k.clone(), h.clone()))
            .collect();
        let mut moved_logins: Vec<&LoginHandle> = Vec::new();
        let mut moved_providers: Vec<&ProviderHandle> = Vec::new();
        let mut refusal = None;
        // Across thousands of logins an upgrade takes a while: say how far
        // it is every few seconds.
        let started = std::time::Instant::now();
        let mut reported = started;
        for handle in &logins {
            if reported.elapsed() >= UPGRADE_PROGRESS_EVERY {
                reported = std::time::Instant::now();
                tracing::info!(
                    plugin = %id,
                    to = %new.version(),
                    moved = moved_logins.len(),
                    logins = logins.len(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "upgrading: {} of {} logins moved",
                    moved_logins.len(),
                    logins.len()
                );
            }
            match handle.upgrade(new.clone()).await {
                Ok(()) => moved_logins.push(handle),
                Err(message) => {
                    refusal = Some((handle.key().to_string(), message));
                    break;
                }
            }
        }
        if refusal.is_none() {
            for ((login, _), handle) in &providers {
                match handle.upgrade(new.clone()).await {
                    Ok(()) => moved_providers.push(handle),
                    Err(message) => {
                        refusal = Some((login.to_string(), message));
                        break;
                    }
                }
            }
        }
        if let Some((login, message)) = refusal {
            for done in moved_logins {
                if let Err(error) = done.upgrade(old.clone()).await {
                    tracing::error!(login = %done.key(), %error, "failed to move a login back to the old version");
                }
            }
            for done in moved_providers {
                if let Err(error) = done.upgrade(old.clone()).await {
                    tracing::error!(%error, "failed to move a login provider back to the old version");
                }
            }
            return Err(RegistryError::Upgrade {
                plugin: id,
                version: new.version().to_string(),
                login,
                message,
            });
        }
        // New instances (login processes, providers, woken logins) use
        // the new version from now on.
        self.set_current(new.clone());
        tracing::info!(plugin = %id, from = %old.version(), to = %new.version(), logins = logins.len(), "plugin upgraded");
        Ok(LoadOutcome::Upgraded {
            id,
            from: old.version().to_string(),
            to: new.version().to_string(),
            logins: logins.len(),
        })
    }

    /// Unloads plugin `id`: its logins and provider actors stop (their
    /// records stay, and they start again when it is loaded again).
    pub async fn unload(&self, id: &str) -> Result<(), RegistryError> {
        let _guard = self.loading.lock().await;
        if self
            .plugins
            .write()
            .expect("plugin table poisoned")
            .remove(id)
            .is_none()
        {
            return Err(RegistryError::NotLoaded(id.to_owned()));
        }
        let slots: Vec<Arc<LoginSlot>> = {
            let mut all = self.slots();
            let keys: Vec<LoginKey> = all.keys().filter(|k| k.plugin == id).cloned().collect();
            keys.iter().filter_map(|k| all.remove(k)).collect()
        };
        for slot in slots {
            LoginHandle::new(slot).stop().await;
        }
        let providers: Vec<ProviderHandle> = {
            let mut all = self.providers.lock().expect("provider table poisoned");
            let keys: Vec<ProviderKey> = all.keys().filter(|(_, p)| p == id).cloned().collect();
            keys.iter().filter_map(|k| all.remove(k)).collect()
        };
        for provider in providers {
            provider.stop().await;
        }
        self.handlers
            .lock()
            .expect("handler table poisoned")
            .remove(id);
        tracing::info!(plugin = %id, "plugin unloaded");
        Ok(())
    }

    /// Makes a slot for every stored login of connector `plugin`. Each
    /// starts right away (its `start` runs), then hibernates when idle.
    fn start_logins(&self, plugin: &Arc<LoadedPlugin>) -> Result<usize, RegistryError> {
        if plugin.manifest.world != World::Connector {
            return Ok(0);
        }
        let keys = self.runtime.host.logins_of(plugin.id())?;
        let mut slots = self.slots();
        for key in &keys {
            if !slots.contains_key(key) {
                let slot = LoginSlot::new(key.clone(), plugin.clone(), self.runtime.clone());
                slot.wake();
                slots.insert(key.clone(), slot);
            }
        }
        Ok(keys.len())
    }

    /// Starts login `key` (the host has stored it) on its plugin's current
    /// version, or resumes it if it runs (a relogin). `None` if its plugin
    /// is not loaded; it starts when the plugin loads.
    pub async fn start_login(&self, key: &LoginKey) -> Result<Option<LoginHandle>, RegistryError> {
        // Waits for a load or upgrade in progress, so the login starts on
        // the version that is current once it is done.
        let _guard = self.loading.lock().await;
        let Some(plugin) = self.plugin(&key.plugin) else {
            return Ok(None);
        };
        if plugin.manifest.world != World::Connector {
            return Err(RegistryError::WrongWorld {
                plugin: plugin.id().to_owned(),
                world: plugin.manifest.world.wit_name(),
                needed: "connector",
            });
        }
        let mut slots = self.slots();
        if let Some(slot) = slots.get(key) {
            let handle = LoginHandle::new(slot.clone());
            handle.resume();
            return Ok(Some(handle));
        }
        let slot = LoginSlot::new(key.clone(), plugin, self.runtime.clone());
        slot.wake();
        slots.insert(key.clone(), slot.clone());
        Ok(Some(LoginHandle::new(slot)))
    }

    /// Login `key`'s actor, if its plugin is loaded.
    pub fn login(&self, key: &LoginKey) -> Option<LoginHandle> {
        self.slots().get(key).cloned().map(LoginHandle::new)
    }

    /// Every login's status.
    pub fn statuses(&self) -> BTreeMap<LoginKey, ActorStatus> {
        self.slots()
            .iter()
            .map(|(k, s)| (k.clone(), LoginHandle::new(s.clone()).status()))
            .collect()
    }

    /// How many logins have an actor (and so, usually, an instance) now.
    pub fn live_logins(&self) -> usize {
        self.slots().values().filter(|s| s.is_live()).count()
    }

    /// The provider actors serving login `key`.
    pub fn providers_of(&self, key: &LoginKey) -> Vec<ProviderStatus> {
        self.providers
            .lock()
            .expect("provider table poisoned")
            .iter()
            .filter(|((login, _), _)| login == key)
            .map(|(_, h)| h.status())
            .collect()
    }

    /// The actor of provider `provider` for login `login`, started if
    /// needed.
    pub(crate) fn provider(
        &self,
        login: &LoginKey,
        provider: &str,
    ) -> Result<ProviderHandle, String> {
        let current = self.login_provider(provider)?;
        let key = (login.clone(), provider.to_owned());
        let mut providers = self.providers.lock().expect("provider table poisoned");
        let handle = providers
            .entry(key.clone())
            .or_insert_with(|| ProviderHandle::spawn(key, current, self.runtime.clone()));
        Ok(handle.clone())
    }

    /// A provider actor for login process `process` of connector `caller`,
    /// outside the table: the caller's handle is the only one, and the
    /// actor ends with it.
    pub(crate) fn process_provider(
        &self,
        caller: &str,
        process: &str,
        provider: &str,
    ) -> Result<ProviderHandle, String> {
        let current = self.login_provider(provider)?;
        let key = (
            LoginKey::new(caller, format!("process {process}")),
            provider.to_owned(),
        );
        let role = InstanceRole::LoginProcess {
            process: process.to_owned(),
        };
        Ok(ProviderHandle::spawn_as(
            key,
            role,
            current,
            self.runtime.clone(),
        ))
    }

    /// Login provider `provider`, if it is loaded and is one.
    pub fn login_provider(&self, provider: &str) -> Result<Arc<LoadedPlugin>, String> {
        let Some(current) = self.plugin(provider) else {
            return Err(format!("the token provider `{provider}` is not loaded"));
        };
        if current.manifest.world != World::LoginProvider {
            return Err(format!("plugin `{provider}` is not a login provider"));
        }
        Ok(current)
    }

    /// A provider actor asks to end: it may if no handle is out and its
    /// mailbox is `empty`. Returns whether it was removed.
    pub(crate) fn release_provider(&self, key: &ProviderKey, empty: bool) -> bool {
        let mut providers = self.providers.lock().expect("provider table poisoned");
        match providers.get(key) {
            Some(handle) if handle.is_unshared() && empty => {
                providers.remove(key);
                true
            }
            Some(_) => false,
            None => true,
        }
    }

    async fn stop_providers_of(&self, key: &LoginKey) {
        let providers: Vec<ProviderHandle> = {
            let mut all = self.providers.lock().expect("provider table poisoned");
            let keys: Vec<ProviderKey> = all.keys().filter(|(l, _)| l == key).cloned().collect();
            keys.iter().filter_map(|k| all.remove(k)).collect()
        };
        for provider in providers {
            provider.stop().await;
        }
    }

    /// Ends login `key` in the runtime: its actor (logging out of the
    /// remote service first if `logout`; its failure does not stop the
    /// deletion), its provider actors, its KV in every plugin that served
    /// it, and its timers. The host removes its own records of it.
    pub async fn delete_login(
        &self,
        key: &LoginKey,
        logout: bool,
    ) -> Result<Option<WorkError>, RegistryError> {
        let slot = self.slots().remove(key);
        let mut logout_error = None;
        if let Some(slot) = slot {
            let handle = LoginHandle::new(slot);
            if logout {
                if let Err(error) = handle.logout().await {
                    tracing::warn!(login = %key, %error, "remote logout failed; deleting the login anyway");
                    logout_error = Some(error);
                }
            } else {
                handle.stop().await;
            }
        }
        self.stop_providers_of(key).await;
        let runtime = &self.runtime;
        runtime.kv.remove_prefix(login_kv_prefix(key).as_bytes())?;
        runtime.timers.remove(&key.storage_prefix())?;
        runtime.flush().await?;
        Ok(logout_error)
    }

    /// A fresh instance of `plugin` for login process `process`, in its own
    /// KV namespace. Its calls take permits like any other.
    pub async fn process(
        &self,
        plugin: &Arc<LoadedPlugin>,
        process: &str,
    ) -> Result<ProcessInstance, RegistryError> {
        let role = InstanceRole::LoginProcess {
            process: process.to_owned(),
        };
        let ctx = InstanceContext::new(plugin.clone(), role, self.runtime.clone(), None)?;
        Metrics::bump(&self.runtime.metrics.instances_created);
        let instance = Instance::new(plugin.clone(), ctx, Permits::Own).await?;
        Ok(ProcessInstance::new(
            instance,
            self.runtime.clone(),
            process,
        ))
    }

    /// Asks credential provider `plugin` for credentials, in a fresh
    /// instance with the plugin's own KV namespace (it serves no login).
    pub async fn issue_credential(
        &self,
        plugin: &str,
        request: crate::connector::CredentialRequest,
    ) -> Result<Result<crate::connector::Credential, crate::connector::PluginError>, RegistryError>
    {
        let plugin = self
            .plugin(plugin)
            .ok_or_else(|| RegistryError::NotLoaded(plugin.to_owned()))?;
        if plugin.manifest.world != World::CredentialProvider {
            return Err(RegistryError::WrongWorld {
                plugin: plugin.id().to_owned(),
                world: plugin.manifest.world.wit_name(),
                needed: "credential-provider",
            });
        }
        // The plugin's KV namespace is the one its routes use: take the
        // routes' turn, so the two never race over it.
        let slot = self.handler_slot(plugin.id());
        let _turn = slot.instance.lock().await;
        let ctx = InstanceContext::new(
            plugin.clone(),
            InstanceRole::Standalone,
            self.runtime.clone(),
            None,
        )?;
        Metrics::bump(&self.runtime.metrics.instances_created);
        let mut instance = Instance::new(plugin, ctx, Permits::Own).await?;
        Metrics::bump(&self.runtime.metrics.calls);
        let request = crate::bindings::credentials::CredentialRequest {
            subject: request.subject,
            claims: request.claims,
        };
        Ok(instance
            .issue_credential(&request)
            .await?
            .map(|c| crate::connector::Credential {
                user_id: c.user_id,
                access_token: c.access_token,
                homeserver_url: c.homeserver_url,
                extra: c.extra,
            })
            .map_err(crate::instance::plugin_error))
    }

    /// The slot that serializes plugin `id`'s routes (and credential
    /// calls), made on first use.
    fn handler_slot(&self, id: &str) -> Arc<HandlerSlot> {
        self.handlers
            .lock()
            .expect("handler table poisoned")
            .entry(id.to_owned())
            .or_default()
            .clone()
    }

    /// Has plugin `plugin` answer an HTTP request for its routes (see
    /// [`handler`]): one request at a time per plugin, in an instance with
    /// the plugin's own KV namespace.
    pub async fn handle_http(
        &self,
        plugin: &str,
        request: IncomingRequest,
    ) -> Result<Result<OutgoingResponse, crate::connector::PluginError>, RegistryError> {
        let plugin = self
            .plugin(plugin)
            .ok_or_else(|| RegistryError::NotLoaded(plugin.to_owned()))?;
        if !plugin.linked.exports("http-handler") {
            return Err(RegistryError::NoRoutes(plugin.id().to_owned()));
        }
        let method = request.method.clone();
        let request = handler::wit_request(request).ok_or(RegistryError::Method(method))?;
        let slot = self.handler_slot(plugin.id());
        let Some(_place) = slot.enter() else {
            return Err(RegistryError::Busy(plugin.id().to_owned()));
        };
        let mut instance = slot.instance.lock().await;
        // Read again now that it is this request's turn: an upgrade or an
        // unload may have come while it waited, and a waiter must never
        // bring back the old version or run beside a new slot.
        let still_mounted = self
            .handlers
            .lock()
            .expect("handler table poisoned")
            .get(plugin.id())
            .is_some_and(|current| Arc::ptr_eq(current, &slot));
        let plugin = match self.plugin(plugin.id()) {
            Some(plugin) if still_mounted => plugin,
            _ => return Err(RegistryError::NotLoaded(plugin.id().to_owned())),
        };
        let current = instance
            .as_ref()
            .is_some_and(|i| i.is_usable() && Arc::ptr_eq(i.plugin(), &plugin));
        if !current {
            *instance = None;
            let ctx = InstanceContext::new(
                plugin.clone(),
                InstanceRole::Standalone,
                self.runtime.clone(),
                None,
            )?;
            Metrics::bump(&self.runtime.metrics.instances_created);
            *instance = Some(Instance::new(plugin.clone(), ctx, Permits::Own).await?);
        }
        let serving = instance.as_mut().expect("made above");
        Metrics::bump(&self.runtime.metrics.calls);
        match serving.handle_http(&request).await {
            Ok(outcome) => Ok(outcome
                .map(handler::from_wit)
                .map_err(crate::instance::plugin_error)),
            Err(error) => {
                // The store is unusable after a trap or a timeout.
                *instance = None;
                Err(error.into())
            }
        }
    }

    /// Removes the KV state of login process `process` of `plugin`.
    pub fn clear_process_state(&self, plugin: &str, process: &str) -> Result<(), RegistryError> {
        let namespace = kv_namespace(
            &InstanceRole::LoginProcess {
                process: process.to_owned(),
            },
            plugin,
        );
        self.runtime.kv.remove_prefix(namespace.as_bytes())?;
        Ok(())
    }

    /// Removes the KV state of every login process: none survives a
    /// restart, so what they left behind (a crash ended them before they
    /// cleared it) is only stale, and may hold tokens.
    pub fn clear_all_process_state(&self) -> Result<(), RegistryError> {
        let namespace = KeyBuf::new().push("p");
        self.runtime.kv.remove_prefix(namespace.as_bytes())?;
        Ok(())
    }

    /// Stops every actor, retiring instances gracefully.
    pub async fn shutdown(&self) {
        let slots: Vec<Arc<LoginSlot>> = std::mem::take(&mut *self.slots()).into_values().collect();
        futures::future::join_all(slots.into_iter().map(|s| async move {
            LoginHandle::new(s).stop().await;
        }))
        .await;
        let providers: Vec<ProviderHandle> =
            std::mem::take(&mut *self.providers.lock().expect("provider table poisoned"))
                .into_values()
                .collect();
        futures::future::join_all(providers.iter().map(ProviderHandle::stop)).await;
        self.scheduler_task.abort();
    }

    /// The plugin KV of login `key` as stored for plugin `plugin`, every
    /// key and value (for the admin API and tests).
    pub fn login_kv(
        &self,
        key: &LoginKey,
        plugin: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, RegistryError> {
        let namespace: KeyBuf = login_kv_prefix(key).push(plugin);
        let entries = self
            .runtime
            .kv
            .scan(namespace.as_bytes(), None, usize::MAX)?;
        Ok(entries
            .into_iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(&k[namespace.as_bytes().len()..]).into_owned(),
                    v,
                )
            })
            .collect())
    }

    /// Fetches a file that plugin `plugin` queued by URL, under the
    /// plugin's HTTP grant (the same rules as its `http` import), reading
    /// at most its media limit, within `timeout`. Returns the response's
    /// content type and the bytes.
    pub async fn fetch_media(
        &self,
        plugin: &str,
        url: &str,
        headers: &[(String, String)],
        timeout: std::time::Duration,
    ) -> Result<(Option<String>, Vec<u8>), String> {
        let plugin = self
            .plugin(plugin)
            .ok_or_else(|| format!("plugin {plugin} is not loaded"))?;
        let request = crate::bindings::imports::http::Request {
            method: crate::bindings::imports::http::Method::Get,
            url: url.to_owned(),
            headers: headers.to_vec(),
            body: None,
            timeout_ms: u32::try_from(timeout.as_millis()).ok(),
        };
        // The deadline the import would use, with the reserve it keeps
        // for the plugin added back: the host handles the timeout itself.
        let reserve =
            (plugin.capabilities.call_deadline / 10).min(std::time::Duration::from_secs(1));
        let deadline = std::time::Instant::now() + timeout + reserve;
        let cap = plugin.capabilities.max_media_bytes;
        let response =
            crate::imports::http::send(&self.runtime, &plugin, request, deadline, cap, None)
                .await
                .map_err(|e| format!("{e:?}"))?;
        if !(200..300).contains(&response.status) {
            return Err(format!("the file's server answered {}", response.status));
        }
        let content_type = response
            .headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
            .map(|(_, value)| value.clone());
        Ok((content_type, response.body))
    }

    /// Compiles `bytes` without loading them (for `weft bench`).
    pub async fn compile_only(&self, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.runtime.engine.compile(bytes).await.map(drop)
    }
}
