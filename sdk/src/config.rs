//! The operator's settings for this plugin, typed by the manifest.
//!
//! ```no_run
//! # fn demo() -> weft_sdk::Result<()> {
//! let base_url: String = weft_sdk::config::require("base-url")?;
//! let interval: u64 = weft_sdk::config::get("poll-interval-ms")?.unwrap_or(2000);
//! # Ok(()) }
//! ```

use serde::de::DeserializeOwned;

use crate::Error;
use crate::wit::imports::weft::plugin::config as wit;

/// The value of setting `name` (the operator's, else the manifest's
/// default), or `None` if it has neither.
pub fn get<T: DeserializeOwned>(name: &str) -> Result<Option<T>, Error> {
    match wit::get(name) {
        None => Ok(None),
        Some(json) => serde_json::from_str(&json)
            .map(Some)
            .map_err(|e| Error::internal(format!("setting `{name}` has an unexpected type: {e}"))),
    }
}

/// The value of setting `name`, or an error naming it if it is unset.
pub fn require<T: DeserializeOwned>(name: &str) -> Result<T, Error> {
    get(name)?.ok_or_else(|| Error::internal(format!("setting `{name}` is not set")))
}
