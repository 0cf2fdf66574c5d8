//! Logins as the runtime knows them: a key, and the clock it stamps
//! things with. What a login *is* (its owner, metadata, bridge state)
//! belongs to the host, which the runtime asks through
//! [`HostServices`](crate::HostServices).

use std::fmt;

use serde::{Deserialize, Serialize};
use weft_storage::KeyBuf;

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

/// The current time in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_keys_with_colons_in_the_id_parse_back() {
        // Teams login ids look like `8:live:alice`.
        let key = LoginKey::parse("teams:8:live:alice").unwrap();
        assert_eq!(key, LoginKey::new("teams", "8:live:alice"));
        assert_eq!(key.to_string(), "teams:8:live:alice");
        assert_eq!(LoginKey::parse("no-colon"), None);
    }
}
