//! UserLogins: one per remote account a Matrix user logged in with.
//!
//! The host owns these records, including the connector's metadata (its
//! tokens), and hands them to each instance through the runtime's
//! `session` import. [`Logins`] is the one way logins are created,
//! renewed and deleted, whoever asks (a login process, the admin API, a
//! logout), so deleting one always stops its actor, drops its queued
//! events and unbridges its portals.

use std::fmt;
use std::sync::{Arc, RwLock};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use weft_runtime::events::StateKind;
use weft_runtime::{LoginHandle, Registry, RegistryError, WorkError};
pub use weft_runtime::{LoginKey, now_ms};
use weft_storage::{self as storage, KeyBuf, Storage, Table};

use crate::outbox::Outbox;
use crate::trees;

/// A login's bridge state, as in bridgev2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StateEvent {
    /// Connecting or reconnecting.
    Connecting,
    /// Connected and syncing.
    Connected,
    /// Lost the connection; retrying by itself.
    TransientDisconnect,
    /// The credentials were rejected: the user must log in again.
    BadCredentials,
    /// Failed for another reason (including a crash loop).
    UnknownError,
    /// The remote session ended.
    LoggedOut,
}

impl From<StateKind> for StateEvent {
    fn from(kind: StateKind) -> Self {
        match kind {
            StateKind::Connecting => Self::Connecting,
            StateKind::Connected => Self::Connected,
            StateKind::TransientDisconnect => Self::TransientDisconnect,
            StateKind::BadCredentials => Self::BadCredentials,
            StateKind::UnknownError => Self::UnknownError,
            StateKind::LoggedOut => Self::LoggedOut,
        }
    }
}

impl StateEvent {
    /// Whether the login needs the user to act (log in again).
    pub fn needs_relogin(self) -> bool {
        matches!(self, Self::BadCredentials | Self::LoggedOut)
    }

    /// Whether this is an error state.
    pub fn is_error(self) -> bool {
        matches!(
            self,
            Self::BadCredentials | Self::UnknownError | Self::LoggedOut | Self::TransientDisconnect
        )
    }
}

/// A login's current state, with its reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeState {
    /// The state.
    pub state_event: StateEvent,
    /// When it was entered, in Unix milliseconds.
    pub timestamp_ms: u64,
    /// A machine-readable error code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A human-readable message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl BridgeState {
    /// A state entered now.
    pub fn now(state_event: StateEvent, error: Option<String>, message: Option<String>) -> Self {
        Self {
            state_event,
            timestamp_ms: now_ms(),
            error,
            message,
        }
    }
}

/// One UserLogin.
#[derive(Clone, Serialize, Deserialize)]
pub struct LoginRecord {
    /// The plugin and login id.
    pub key: LoginKey,
    /// The Matrix user who owns it.
    pub owner: String,
    /// The remote account's display name.
    pub remote_name: String,
    /// The connector's metadata (JSON text). Holds tokens: never logged.
    pub metadata: String,
    /// The bridge state.
    pub state: BridgeState,
    /// When it was created, in Unix milliseconds.
    pub created_ms: u64,
}

impl fmt::Debug for LoginRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginRecord")
            .field("key", &self.key)
            .field("owner", &self.owner)
            .field("remote_name", &self.remote_name)
            .field(
                "metadata",
                &format_args!("<{} bytes, redacted>", self.metadata.len()),
            )
            .field("state", &self.state)
            .finish()
    }
}

/// The login table.
#[derive(Clone)]
pub struct LoginStore {
    table: Table<LoginRecord>,
}

impl LoginStore {
    /// Opens the table in `storage`.
    pub fn open(storage: &Arc<dyn Storage>) -> storage::Result<Self> {
        Ok(Self {
            table: Table::open(storage.as_ref(), trees::LOGINS)?,
        })
    }

    fn key(key: &LoginKey) -> KeyBuf {
        key.storage_prefix()
    }

    /// The login `key`.
    pub fn get(&self, key: &LoginKey) -> storage::Result<Option<LoginRecord>> {
        self.table.get(&Self::key(key))
    }

    /// Stores `record`, replacing any with the same key.
    pub fn put(&self, record: &LoginRecord) -> storage::Result<()> {
        self.table.put(&Self::key(&record.key), record)
    }

    /// Removes the login `key`.
    pub fn remove(&self, key: &LoginKey) -> storage::Result<Option<LoginRecord>> {
        self.table.remove(&Self::key(key))
    }

    /// Every login, ordered by plugin then id.
    pub fn all(&self) -> storage::Result<Vec<LoginRecord>> {
        Ok(self
            .table
            .scan(&KeyBuf::new())?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }

    /// The logins of plugin `plugin`.
    pub fn of_plugin(&self, plugin: &str) -> storage::Result<Vec<LoginRecord>> {
        Ok(self
            .table
            .scan(&KeyBuf::new().push(plugin))?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }

    /// The logins owned by Matrix user `owner`.
    pub fn of_owner(&self, owner: &str) -> storage::Result<Vec<LoginRecord>> {
        Ok(self
            .all()?
            .into_iter()
            .filter(|r| r.owner == owner)
            .collect())
    }

    /// Replaces the metadata of login `key`; returns whether it exists.
    pub fn set_metadata(&self, key: &LoginKey, metadata: String) -> storage::Result<bool> {
        self.update(key, |record| record.metadata = metadata)
    }

    /// Sets the bridge state of login `key`; returns whether it exists.
    pub fn set_state(&self, key: &LoginKey, state: BridgeState) -> storage::Result<bool> {
        self.update(key, |record| record.state = state)
    }

    /// Applies `change` to login `key`. Each login is written by its own
    /// actor and the API handlers that replace it, never concurrently with
    /// itself in ways that matter, so read-modify-write is enough.
    fn update(
        &self,
        key: &LoginKey,
        change: impl FnOnce(&mut LoginRecord),
    ) -> storage::Result<bool> {
        let Some(mut record) = self.get(key)? else {
            return Ok(false);
        };
        change(&mut record);
        self.put(&record)?;
        Ok(true)
    }
}

/// What else happens when a login is deleted: the bridge unbridges its
/// portals.
pub trait DeletionHook: Send + Sync + 'static {
    /// Login `key` was deleted for `reason` ("logged out", "the login was
    /// replaced", ...).
    fn login_deleted<'a>(&'a self, key: &'a LoginKey, reason: &'a str) -> BoxFuture<'a, ()>;
}

/// Why a login operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// No such login.
    #[error("no login `{0}`")]
    Unknown(LoginKey),
    /// The runtime refused (the plugin is not a connector, storage failed).
    #[error(transparent)]
    Runtime(#[from] RegistryError),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
}

/// Creates, renews and deletes logins: the one path for all of them.
pub struct Logins {
    /// The records.
    pub store: LoginStore,
    registry: Arc<Registry>,
    outbox: Arc<Outbox>,
    storage: Arc<dyn Storage>,
    hook: RwLock<Option<Arc<dyn DeletionHook>>>,
}

impl Logins {
    /// The service over `store`.
    pub fn new(
        store: LoginStore,
        registry: Arc<Registry>,
        outbox: Arc<Outbox>,
        storage: Arc<dyn Storage>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            registry,
            outbox,
            storage,
            hook: RwLock::new(None),
        })
    }

    /// Sets what runs after a login is deleted.
    pub fn set_deletion_hook(&self, hook: Arc<dyn DeletionHook>) {
        *self.hook.write().expect("hook lock poisoned") = Some(hook);
    }

    /// Stops calling the deletion hook (at shutdown: the hook holds the
    /// bridge, which holds this).
    pub fn clear_deletion_hook(&self) {
        *self.hook.write().expect("hook lock poisoned") = None;
    }

    /// Stores a new login (or renews an existing one: a relogin, whose
    /// paused timers resume) and starts its actor if its plugin is loaded.
    pub async fn put(&self, record: LoginRecord) -> Result<Option<LoginHandle>, LoginError> {
        if let Some(plugin) = self.registry.plugin(&record.key.plugin)
            && plugin.manifest.world != weft_runtime::manifest::World::Connector
        {
            return Err(RegistryError::WrongWorld {
                plugin: plugin.id().to_owned(),
                world: plugin.manifest.world.wit_name(),
                needed: "connector",
            }
            .into());
        }
        self.store.put(&record)?;
        storage::flush_async(&self.storage).await?;
        Ok(self.registry.start_login(&record.key).await?)
    }

    /// Deletes login `key` and all it holds: its actor (logging out of the
    /// remote service first if `logout`; a failure there does not stop
    /// the deletion), its KV and timers, its queued events, its record
    /// (tokens included) and, through the hook, its portals. Returns the
    /// remote logout's error, if any.
    pub async fn delete(
        &self,
        key: &LoginKey,
        logout: bool,
        reason: &str,
    ) -> Result<Option<WorkError>, LoginError> {
        if self.store.get(key)?.is_none() {
            return Err(LoginError::Unknown(key.clone()));
        }
        let logout_error = self.registry.delete_login(key, logout).await?;
        self.outbox.clear(key)?;
        self.store.remove(key)?;
        storage::flush_async(&self.storage).await?;
        let hook = self.hook.read().expect("hook lock poisoned").clone();
        if let Some(hook) = hook {
            hook.login_deleted(key, reason).await;
        }
        tracing::info!(login = %key, reason, "login deleted");
        Ok(logout_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_storage::MemoryStorage;

    fn record(plugin: &str, id: &str, owner: &str) -> LoginRecord {
        LoginRecord {
            key: LoginKey::new(plugin, id),
            owner: owner.into(),
            remote_name: id.into(),
            metadata: r#"{"token":"secret-token"}"#.into(),
            state: BridgeState::now(StateEvent::Connecting, None, None),
            created_ms: 0,
        }
    }

    #[test]
    fn debug_output_never_contains_the_metadata() {
        let text = format!("{:?}", record("echo", "alice", "@a:x"));
        // Tokens live in the metadata; logs must not carry them.
        assert!(!text.contains("secret-token"), "{text}");
    }

    #[test]
    fn logins_are_listed_per_plugin_and_per_owner() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let logins = LoginStore::open(&storage).unwrap();
        logins.put(&record("echo", "a", "@u:x")).unwrap();
        logins.put(&record("echo", "b", "@v:x")).unwrap();
        logins.put(&record("echo-2", "a", "@u:x")).unwrap();
        // `echo` must not match `echo-2`'s logins.
        assert_eq!(logins.of_plugin("echo").unwrap().len(), 2);
        assert_eq!(logins.of_owner("@u:x").unwrap().len(), 2);
    }
}
