//! The UserLogin an instance serves, and its metadata (the connector's
//! tokens), which the host stores.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::wit::imports::weft::plugin::session as wit;

/// A login as the host knows it.
pub use wit::LoginInfo;

/// The login this instance serves, or `None` while it runs a login process.
pub fn current() -> Option<LoginInfo> {
    wit::current()
}

/// The login's metadata, decoded, or `None` if it has none.
pub fn metadata<T: DeserializeOwned>() -> Result<Option<T>, Error> {
    let json = wit::metadata();
    if json.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str(&json)
        .map(Some)
        .map_err(|e| Error::internal(format!("login metadata does not decode: {e}")))
}

/// Replaces the login's metadata; durable when this returns.
pub fn set_metadata<T: Serialize + ?Sized>(metadata: &T) -> Result<(), Error> {
    let json = serde_json::to_string(metadata)?;
    wit::set_metadata(&json).map_err(Error::from)
}
