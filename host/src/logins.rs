//! UserLogin records: one per remote account a Matrix user logged in with.
//!
//! The host owns these records, including the connector's metadata (its
//! tokens), and hands them to each instance through the `session` import.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::storage::{self, KeyBuf, Storage, Table, trees};

/// Identifies a login across plugins: the plugin id and the login id the
/// connector chose. Written `plugin:login-id` in APIs and commands.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LoginKey {
    /// The plugin id.
    pub plugin: String,
    /// The connector's login id, e.g. a normalized remote user id.
    pub id: String,
}

impl LoginKey {
    /// A key.
    pub fn new(plugin: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            plugin: plugin.into(),
            id: id.into(),
        }
    }

    /// Parses `plugin:login-id` (login ids may contain `:` themselves).
    pub fn parse(text: &str) -> Option<Self> {
        let (plugin, id) = text.split_once(':')?;
        (!plugin.is_empty() && !id.is_empty()).then(|| Self::new(plugin, id))
    }

    /// The storage key prefix of everything that belongs to this login.
    pub fn storage_prefix(&self) -> KeyBuf {
        KeyBuf::new().push(&self.plugin).push(&self.id)
    }
}

impl fmt::Display for LoginKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.plugin, self.id)
    }
}

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

/// The current time in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStorage;

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
    fn login_keys_with_colons_in_the_id_parse_back() {
        // Teams login ids look like `8:live:alice`.
        let key = LoginKey::parse("teams:8:live:alice").unwrap();
        assert_eq!(key, LoginKey::new("teams", "8:live:alice"));
        assert_eq!(key.to_string(), "teams:8:live:alice");
        assert_eq!(LoginKey::parse("no-colon"), None);
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
