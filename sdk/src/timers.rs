//! Host-driven timers: how a connector runs its poll loop.
//!
//! A plugin never loops waiting. It sets a named timer and returns; the
//! host calls [`Connector::on_timer`](crate::Connector::on_timer) when it
//! is due. Timers belong to the login and survive restarts and upgrades.

use std::fmt;
use std::time::Duration;

use crate::Error;
use crate::wit::imports::weft::plugin::timers as wit;

/// Why a timer could not be set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimerError {
    /// The name is empty or too long.
    InvalidName(String),
    /// The login has the maximum number of timers already.
    TooMany(u32),
    /// The period is shorter than the host's minimum, in milliseconds.
    TooShort(u32),
}

impl fmt::Display for TimerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidName(m) => write!(f, "invalid timer name: {m}"),
            Self::TooMany(n) => write!(f, "at most {n} timers are allowed"),
            Self::TooShort(ms) => write!(f, "timers must be at least {ms} ms"),
        }
    }
}

impl std::error::Error for TimerError {}

impl From<wit::TimerError> for TimerError {
    fn from(error: wit::TimerError) -> Self {
        match error {
            wit::TimerError::InvalidName(m) => Self::InvalidName(m),
            wit::TimerError::TooMany(n) => Self::TooMany(n),
            wit::TimerError::TooShort(ms) => Self::TooShort(ms),
        }
    }
}

impl From<TimerError> for Error {
    fn from(error: TimerError) -> Self {
        Error::Internal(format!("timers: {error}"))
    }
}

fn millis(duration: Duration) -> u32 {
    duration.as_millis().try_into().unwrap_or(u32::MAX)
}

/// Calls `on_timer(name)` every `period` until cancelled; replaces a timer
/// of the same name.
pub fn set_interval(name: &str, period: Duration) -> Result<(), TimerError> {
    Ok(wit::set_interval(name, millis(period))?)
}

/// Calls `on_timer(name)` once after `delay`; replaces a timer of the same
/// name.
pub fn set_timeout(name: &str, delay: Duration) -> Result<(), TimerError> {
    Ok(wit::set_timeout(name, millis(delay))?)
}

/// Cancels timer `name`; returns whether it existed.
pub fn cancel(name: &str) -> bool {
    wit::cancel(name)
}
