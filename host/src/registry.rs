//! The registry: which plugin versions are loaded, which logins run, and
//! the operator's hot-loading (load, upgrade, unload).
//!
//! Loads are serialized. An upgrade compiles and links the new version
//! first; only then does it move the plugin's live logins to it, one by
//! one. If any login's new instance fails to start, the logins already
//! moved go back and the old version stays current: an upgrade is all or
//! nothing, and the error says which login refused and why.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use serde::Serialize;
use tokio::sync::Mutex;

use crate::config::Config;
use crate::logins::{LoginKey, LoginRecord};
use crate::runtime::actor::{self, ActorStatus, LoginHandle, WorkError};
use crate::runtime::manifest::World;
use crate::runtime::plugin::{self, LoadError, LoadedPlugin, PluginSource};
use crate::runtime::state::{PluginDirectory, Services, login_kv_prefix};
use crate::storage::{self, KeyBuf};

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The plugin did not load; the old version (if any) keeps running.
    #[error("plugin not loaded: {0}")]
    Load(#[from] LoadError),
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
    /// The plugin is not a connector, so it has no logins.
    #[error("plugin `{0}` is not a connector")]
    NotAConnector(String),
    /// No such login.
    #[error("no login `{0}`")]
    UnknownLogin(String),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
}

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
        /// How many logins started.
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
        /// How many live logins moved.
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
    /// Its live logins.
    pub logins: usize,
}

/// The current version of every loaded plugin; shared with instances so
/// routed imports find their provider.
#[derive(Default)]
pub struct PluginTable {
    plugins: RwLock<BTreeMap<String, Arc<LoadedPlugin>>>,
}

impl PluginDirectory for PluginTable {
    fn current(&self, id: &str) -> Option<Arc<LoadedPlugin>> {
        self.plugins
            .read()
            .expect("plugin table poisoned")
            .get(id)
            .cloned()
    }
}

impl PluginTable {
    fn set(&self, plugin: Arc<LoadedPlugin>) {
        self.plugins
            .write()
            .expect("plugin table poisoned")
            .insert(plugin.id().to_owned(), plugin);
    }

    fn remove(&self, id: &str) -> Option<Arc<LoadedPlugin>> {
        self.plugins
            .write()
            .expect("plugin table poisoned")
            .remove(id)
    }

    fn all(&self) -> Vec<Arc<LoadedPlugin>> {
        self.plugins
            .read()
            .expect("plugin table poisoned")
            .values()
            .cloned()
            .collect()
    }
}

/// Called after a plugin version becomes current (loaded or upgraded).
pub type LoadHook = Arc<dyn Fn(&LoadedPlugin) + Send + Sync>;

/// The registry.
pub struct Registry {
    config: Arc<Config>,
    on_loaded: RwLock<Option<LoadHook>>,
    services: Arc<Services>,
    plugins: Arc<PluginTable>,
    actors: Mutex<BTreeMap<LoginKey, LoginHandle>>,
    /// Serializes loads, upgrades and unloads.
    loading: Mutex<()>,
}

impl Registry {
    /// A registry over `services`, whose plugin directory is `plugins`.
    pub fn new(
        config: Arc<Config>,
        services: Arc<Services>,
        plugins: Arc<PluginTable>,
    ) -> Arc<Self> {
        Arc::new(Self {
            config,
            on_loaded: RwLock::new(None),
            services,
            plugins,
            actors: Mutex::new(BTreeMap::new()),
            loading: Mutex::new(()),
        })
    }

    /// Sets what runs after a plugin version becomes current.
    pub fn set_load_hook(&self, hook: LoadHook) {
        *self.on_loaded.write().expect("hook lock poisoned") = Some(hook);
    }

    fn loaded(&self, plugin: &LoadedPlugin) {
        if let Some(hook) = self.on_loaded.read().expect("hook lock poisoned").as_ref() {
            hook(plugin);
        }
    }

    /// Host services.
    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }

    /// The current version of plugin `id`.
    pub fn plugin(&self, id: &str) -> Option<Arc<LoadedPlugin>> {
        self.plugins.current(id)
    }

    /// The current version of every loaded connector.
    pub fn connectors(&self) -> Vec<Arc<LoadedPlugin>> {
        self.plugins
            .all()
            .into_iter()
            .filter(|p| p.manifest.world == World::Connector)
            .collect()
    }

    /// Every loaded plugin.
    pub async fn plugins(&self) -> Vec<PluginInfo> {
        let actors = self.actors.lock().await;
        self.plugins
            .all()
            .into_iter()
            .map(|p| PluginInfo {
                id: p.id().to_owned(),
                version: p.version().to_string(),
                world: p.manifest.world,
                name: p.manifest.network_name(),
                source: p.source.as_ref().map(|s| s.display().to_string()),
                digest: p.digest.clone(),
                logins: actors.keys().filter(|k| k.plugin == p.id()).count(),
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
        if self.plugins.current(id).is_none() {
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
        let id = crate::runtime::manifest::Manifest::parse(&source.manifest)
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
        let current = self.plugins.current(&id);
        if let Some(current) = &current
            && current.digest == source.digest()
        {
            return Ok(LoadOutcome::Unchanged {
                id,
                version: current.version().to_string(),
            });
        }
        let loaded = Arc::new(plugin::load(&self.services.runtime, source, &self.config).await?);
        match current {
            None => {
                self.plugins.set(loaded.clone());
                self.loaded(&loaded);
                let logins = self.start_logins(&loaded).await?;
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
        let handles: Vec<LoginHandle> = self
            .actors
            .lock()
            .await
            .iter()
            .filter(|(k, _)| k.plugin == id)
            .map(|(_, h)| h.clone())
            .collect();
        let mut moved = Vec::new();
        for handle in &handles {
            if let Err(message) = handle.upgrade(new.clone()).await {
                for done in &moved {
                    let done: &LoginHandle = done;
                    if let Err(error) = done.upgrade(old.clone()).await {
                        tracing::error!(login = %done.key, %error, "failed to move a login back to the old version");
                    }
                }
                return Err(RegistryError::Upgrade {
                    plugin: id,
                    version: new.version().to_string(),
                    login: handle.key.to_string(),
                    message,
                });
            }
            moved.push(handle.clone());
        }
        // New instances (login processes, providers) use the new version
        // from now on.
        self.plugins.set(new.clone());
        self.loaded(&new);
        tracing::info!(plugin = %id, from = %old.version(), to = %new.version(), logins = moved.len(), "plugin upgraded");
        Ok(LoadOutcome::Upgraded {
            id,
            from: old.version().to_string(),
            to: new.version().to_string(),
            logins: moved.len(),
        })
    }

    /// Unloads plugin `id`: its logins stop (their records stay, and they
    /// start again when it is loaded again).
    pub async fn unload(&self, id: &str) -> Result<(), RegistryError> {
        let _guard = self.loading.lock().await;
        if self.plugins.remove(id).is_none() {
            return Err(RegistryError::NotLoaded(id.to_owned()));
        }
        let handles: Vec<LoginHandle> = {
            let mut actors = self.actors.lock().await;
            let keys: Vec<LoginKey> = actors.keys().filter(|k| k.plugin == id).cloned().collect();
            keys.iter().filter_map(|k| actors.remove(k)).collect()
        };
        for handle in handles {
            handle.stop().await;
        }
        tracing::info!(plugin = %id, "plugin unloaded");
        Ok(())
    }

    /// Starts the actors of every stored login of connector `plugin`.
    async fn start_logins(&self, plugin: &Arc<LoadedPlugin>) -> Result<usize, RegistryError> {
        if plugin.manifest.world != World::Connector {
            return Ok(0);
        }
        let records = self.services.logins.of_plugin(plugin.id())?;
        let mut actors = self.actors.lock().await;
        for record in &records {
            if !actors.contains_key(&record.key) {
                let handle =
                    actor::spawn(record.key.clone(), plugin.clone(), self.services.clone())?;
                actors.insert(record.key.clone(), handle);
            }
        }
        Ok(records.len())
    }

    /// Stores a new login (or renews an existing one: relogin) and starts
    /// or resumes its actor if its plugin is loaded.
    pub async fn put_login(
        &self,
        record: LoginRecord,
    ) -> Result<Option<LoginHandle>, RegistryError> {
        let plugin = self.plugins.current(&record.key.plugin);
        if let Some(plugin) = &plugin
            && plugin.manifest.world != World::Connector
        {
            return Err(RegistryError::NotAConnector(plugin.id().to_owned()));
        }
        self.services.logins.put(&record)?;
        storage::flush_async(&self.services.storage).await?;
        let Some(plugin) = plugin else {
            return Ok(None);
        };
        let mut actors = self.actors.lock().await;
        if let Some(handle) = actors.get(&record.key) {
            handle.resume();
            return Ok(Some(handle.clone()));
        }
        let handle = actor::spawn(record.key.clone(), plugin, self.services.clone())?;
        actors.insert(record.key.clone(), handle.clone());
        Ok(Some(handle))
    }

    /// The actor of login `key`, if it runs.
    pub async fn login(&self, key: &LoginKey) -> Option<LoginHandle> {
        self.actors.lock().await.get(key).cloned()
    }

    /// Every running login's status.
    pub async fn statuses(&self) -> BTreeMap<LoginKey, ActorStatus> {
        self.actors
            .lock()
            .await
            .iter()
            .map(|(k, h)| (k.clone(), h.status()))
            .collect()
    }

    /// Deletes login `key` and all it holds (KV in every plugin that served
    /// it, timers, queued events). With `logout`, the connector logs out of
    /// the remote service first; its failure does not stop the deletion.
    pub async fn delete_login(
        &self,
        key: &LoginKey,
        logout: bool,
    ) -> Result<Option<WorkError>, RegistryError> {
        let record = self
            .services
            .logins
            .get(key)?
            .ok_or_else(|| RegistryError::UnknownLogin(key.to_string()))?;
        let handle = self.actors.lock().await.remove(key);
        let mut logout_error = None;
        if let Some(handle) = handle {
            if logout {
                if let Err(error) = handle.logout().await {
                    tracing::warn!(login = %key, %error, "remote logout failed; deleting the login anyway");
                    logout_error = Some(error);
                }
            } else {
                handle.stop().await;
            }
        }
        let services = &self.services;
        services.kv.remove_prefix(login_kv_prefix(key).as_bytes())?;
        actor::timer_table(services)?.remove(&key.storage_prefix())?;
        services.outbox.clear(key)?;
        services.logins.remove(&record.key)?;
        storage::flush_async(&services.storage).await?;
        tracing::info!(login = %key, "login deleted");
        Ok(logout_error)
    }

    /// Stops every actor, retiring instances gracefully.
    pub async fn shutdown(&self) {
        let handles: Vec<LoginHandle> = std::mem::take(&mut *self.actors.lock().await)
            .into_values()
            .collect();
        futures::future::join_all(handles.iter().map(LoginHandle::stop)).await;
    }

    /// The plugin KV of login `key` as stored for plugin `plugin` (for the
    /// admin API and tests): every key and value.
    pub fn login_kv(
        &self,
        key: &LoginKey,
        plugin: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, RegistryError> {
        let namespace: KeyBuf = login_kv_prefix(key).push(plugin);
        let entries = self
            .services
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
}
