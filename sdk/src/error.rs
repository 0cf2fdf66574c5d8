//! The error a plugin returns from its trait methods.

use std::fmt;

use crate::wit::imports::weft::plugin::types::PluginError;

/// A failure a plugin reports to the host.
///
/// The kind decides what the host does: `BadCredentials` moves the login to
/// the `BAD_CREDENTIALS` bridge state and stops its timers until the user
/// logs in again, `Transient` is retried, the others are reported. None of
/// them kills the instance; only a trap (a panic) does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The input was malformed or refused; the message is shown to the user.
    InvalidInput(String),
    /// The remote service rejected the login's credentials.
    BadCredentials(String),
    /// A temporary failure that may pass if tried again.
    Transient(String),
    /// The plugin does not implement the operation.
    Unsupported(String),
    /// Any other failure.
    Internal(String),
}

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::InvalidInput`].
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::InvalidInput(message.into())
    }

    /// An [`Error::BadCredentials`].
    pub fn bad_credentials(message: impl Into<String>) -> Self {
        Self::BadCredentials(message.into())
    }

    /// An [`Error::Transient`].
    pub fn transient(message: impl Into<String>) -> Self {
        Self::Transient(message.into())
    }

    /// An [`Error::Unsupported`] naming the operation.
    pub fn unsupported(operation: &str) -> Self {
        Self::Unsupported(format!("`{operation}` is not implemented by this plugin"))
    }

    /// An [`Error::Internal`].
    pub fn internal(message: impl Into<String>) -> Self {
        Self::Internal(message.into())
    }

    /// The message, whatever the kind.
    pub fn message(&self) -> &str {
        match self {
            Self::InvalidInput(m)
            | Self::BadCredentials(m)
            | Self::Transient(m)
            | Self::Unsupported(m)
            | Self::Internal(m) => m,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Self::InvalidInput(_) => "invalid input",
            Self::BadCredentials(_) => "bad credentials",
            Self::Transient(_) => "temporary failure",
            Self::Unsupported(_) => "unsupported",
            Self::Internal(_) => "internal error",
        };
        write!(f, "{kind}: {}", self.message())
    }
}

impl std::error::Error for Error {}

impl From<Error> for PluginError {
    fn from(error: Error) -> Self {
        match error {
            Error::InvalidInput(m) => Self::InvalidInput(m),
            Error::BadCredentials(m) => Self::BadCredentials(m),
            Error::Transient(m) => Self::Transient(m),
            Error::Unsupported(m) => Self::Unsupported(m),
            Error::Internal(m) => Self::Internal(m),
        }
    }
}

impl From<PluginError> for Error {
    fn from(error: PluginError) -> Self {
        match error {
            PluginError::InvalidInput(m) => Self::InvalidInput(m),
            PluginError::BadCredentials(m) => Self::BadCredentials(m),
            PluginError::Transient(m) => Self::Transient(m),
            PluginError::Unsupported(m) => Self::Unsupported(m),
            PluginError::Internal(m) => Self::Internal(m),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(error: serde_json::Error) -> Self {
        Self::Internal(format!("JSON: {error}"))
    }
}
