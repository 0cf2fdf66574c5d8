//! Durable key-value state in the plugin's own namespace.
//!
//! The host scopes every key to this plugin and the login the instance
//! serves; there is no way to name another namespace. Values here survive
//! traps, upgrades and restarts, so this is where a connector keeps its
//! cursors.
//!
//! ```no_run
//! # fn demo() -> weft_sdk::Result<()> {
//! use weft_sdk::kv;
//!
//! let cursor: u64 = kv::get("cursor")?.unwrap_or(0);
//! kv::set("cursor", &(cursor + 1))?;
//! # Ok(()) }
//! ```

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::wit::imports::weft::plugin::kv as wit;

/// Why a key-value operation failed. A failed operation changed nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvError {
    /// The key is empty or too long.
    InvalidKey(String),
    /// The value is too large, in bytes.
    ValueTooLarge(u64),
    /// The namespace would exceed its quota, in bytes.
    QuotaExceeded(u64),
    /// The host's storage failed.
    Storage(String),
    /// The stored value is not the JSON the caller expected.
    Decode(String),
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidKey(m) => write!(f, "invalid key: {m}"),
            Self::ValueTooLarge(n) => write!(f, "value larger than {n} bytes"),
            Self::QuotaExceeded(n) => write!(f, "namespace quota of {n} bytes exceeded"),
            Self::Storage(m) => write!(f, "storage failed: {m}"),
            Self::Decode(m) => write!(f, "stored value does not decode: {m}"),
        }
    }
}

impl std::error::Error for KvError {}

impl From<wit::KvError> for KvError {
    fn from(error: wit::KvError) -> Self {
        match error {
            wit::KvError::InvalidKey(m) => Self::InvalidKey(m),
            wit::KvError::ValueTooLarge(n) => Self::ValueTooLarge(n),
            wit::KvError::QuotaExceeded(n) => Self::QuotaExceeded(n),
            wit::KvError::Storage(m) => Self::Storage(m),
        }
    }
}

impl From<KvError> for Error {
    fn from(error: KvError) -> Self {
        Error::Internal(format!("kv: {error}"))
    }
}

/// Reads `key` and decodes it from JSON.
pub fn get<T: DeserializeOwned>(key: &str) -> Result<Option<T>, KvError> {
    match get_raw(key)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| KvError::Decode(format!("{key}: {e}"))),
    }
}

/// Stores `value` under `key` as JSON.
pub fn set<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<(), KvError> {
    let bytes = serde_json::to_vec(value).map_err(|e| KvError::Decode(e.to_string()))?;
    set_raw(key, &bytes)
}

/// Reads the raw bytes of `key`.
pub fn get_raw(key: &str) -> Result<Option<Vec<u8>>, KvError> {
    Ok(wit::get(key)?)
}

/// Stores raw bytes under `key`.
pub fn set_raw(key: &str, value: &[u8]) -> Result<(), KvError> {
    Ok(wit::set(key, value)?)
}

/// Removes `key`; returns whether it existed.
pub fn delete(key: &str) -> Result<bool, KvError> {
    Ok(wit::delete(key)?)
}

/// Every key that starts with `prefix`, in byte order (pages through the
/// host's listing).
pub fn list_keys(prefix: &str) -> Result<Vec<String>, KvError> {
    const PAGE: u32 = 500;
    let mut keys = Vec::new();
    let mut start_after: Option<String> = None;
    loop {
        let page = wit::list_keys(prefix, start_after.as_deref(), PAGE)?;
        let done = page.len() < PAGE as usize;
        start_after = page.last().cloned();
        keys.extend(page);
        if done {
            return Ok(keys);
        }
    }
}

/// Atomically replaces `key`'s raw value with `replacement` if it currently
/// equals `expected` (`None`: absent; a `replacement` of `None` deletes).
/// Returns whether it swapped.
pub fn compare_and_swap(
    key: &str,
    expected: Option<&[u8]>,
    replacement: Option<&[u8]>,
) -> Result<bool, KvError> {
    Ok(wit::compare_and_swap(key, expected, replacement)?)
}
