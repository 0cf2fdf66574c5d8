//! Structured logs that land in the host's `tracing` output, tagged with
//! the plugin, its version and the login.
//!
//! Use the macros: [`info!`](crate::info), [`warn!`](crate::warn),
//! [`error!`](crate::error), [`debug!`](crate::debug),
//! [`trace!`](crate::trace). Never log tokens.

use crate::wit::imports::weft::plugin::log as wit;

/// How severe a record is.
pub use wit::Level;

/// Writes one record with fields.
pub fn write(level: Level, message: &str, fields: &[(String, String)]) {
    wit::log(level, message, fields);
}

/// Logs at `info`: `info!("polled {} chats", n)`.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log::write($crate::log::Level::Info, &format!($($arg)+), &[]) };
}

/// Logs at `warn`.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log::write($crate::log::Level::Warn, &format!($($arg)+), &[]) };
}

/// Logs at `error`.
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log::write($crate::log::Level::Error, &format!($($arg)+), &[]) };
}

/// Logs at `debug`.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log::write($crate::log::Level::Debug, &format!($($arg)+), &[]) };
}

/// Logs at `trace`.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::log::write($crate::log::Level::Trace, &format!($($arg)+), &[]) };
}
