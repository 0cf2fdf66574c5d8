//! Matrix accounts and rooms through the host's application service
//! (since 0.1.3): for plugins that give their own users Matrix accounts,
//! such as a credential provider.
//!
//! The operator grants a plugin `appservice` and a localpart pattern; the
//! host refuses any user outside it, and any room the plugin did not
//! create. The plugin never sees the appservice token.
//!
//! ```no_run
//! use weft_sdk::appservice;
//! # fn f() -> weft_sdk::Result<()> {
//! let token = match appservice::register_user("42")? {
//!     Some(token) => token,
//!     None => appservice::login_user("42")?, // it already existed
//! };
//! let room = appservice::create_room("General", None)?;
//! appservice::join_room(&room, "42")?;
//! # let _ = token; Ok(()) }
//! ```

use std::fmt;

use crate::Error;
use crate::wit::imports::weft::plugin::appservice as wit;

/// Why an appservice call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppserviceError {
    /// Not granted, or the user or room is outside the grant.
    Denied(String),
    /// The homeserver cannot do this as it is set up (e.g. log users in
    /// when it delegates authentication); the message names the setting.
    Unsupported(String),
    /// The homeserver refused.
    Refused {
        /// The HTTP status.
        status: u16,
        /// The Matrix error code, e.g. `M_FORBIDDEN`.
        errcode: String,
        /// The homeserver's message.
        message: String,
    },
    /// The homeserver could not be reached or failed; try again later.
    Unavailable(String),
}

impl fmt::Display for AppserviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Denied(m) => write!(f, "denied: {m}"),
            Self::Unsupported(m) => write!(f, "unsupported: {m}"),
            Self::Refused {
                status,
                errcode,
                message,
            } => write!(f, "the homeserver refused ({status} {errcode}): {message}"),
            Self::Unavailable(m) => write!(f, "the homeserver is unavailable: {m}"),
        }
    }
}

impl std::error::Error for AppserviceError {}

impl From<wit::AppserviceError> for AppserviceError {
    fn from(error: wit::AppserviceError) -> Self {
        match error {
            wit::AppserviceError::Denied(m) => Self::Denied(m),
            wit::AppserviceError::Unsupported(m) => Self::Unsupported(m),
            wit::AppserviceError::Refused(r) => Self::Refused {
                status: r.status,
                errcode: r.errcode,
                message: r.message,
            },
            wit::AppserviceError::Unavailable(m) => Self::Unavailable(m),
        }
    }
}

impl From<AppserviceError> for Error {
    fn from(error: AppserviceError) -> Self {
        match error {
            AppserviceError::Unavailable(_) => Error::transient(error.to_string()),
            AppserviceError::Unsupported(_) => Error::Unsupported(error.to_string()),
            _ => Error::internal(error.to_string()),
        }
    }
}

/// The homeserver's server name: users are `@<localpart>:<server_name>`.
pub fn server_name() -> String {
    wit::server_name()
}

/// Registers `@<localpart>:<server>`: `Some(access_token)` when created,
/// `None` when the user already existed (log in with [`login_user`]).
pub fn register_user(localpart: &str) -> Result<Option<String>, AppserviceError> {
    Ok(wit::register_user(localpart)?)
}

/// A new access token (and device) for an existing user.
pub fn login_user(localpart: &str) -> Result<String, AppserviceError> {
    Ok(wit::login_user(localpart)?)
}

/// The user `access_token` belongs to, or `None` if the homeserver does
/// not know it (logged out, or never valid).
pub fn whoami(access_token: &str) -> Result<Option<String>, AppserviceError> {
    Ok(wit::whoami(access_token)?)
}

/// Creates a room as the bot; returns its id.
pub fn create_room(name: &str, topic: Option<&str>) -> Result<String, AppserviceError> {
    Ok(wit::create_room(&wit::RoomOptions {
        name: name.to_owned(),
        topic: topic.map(str::to_owned),
    })?)
}

/// Makes `@<localpart>:<server>` a member of `room_id` (a room this plugin
/// created). Doing it again is harmless.
pub fn join_room(room_id: &str, localpart: &str) -> Result<(), AppserviceError> {
    Ok(wit::join_room(room_id, localpart)?)
}
