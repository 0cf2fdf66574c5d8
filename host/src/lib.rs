//! The weft host: runs Matrix-bridge connectors as sandboxed WebAssembly
//! components. See `ARCHITECTURE.md` at the repository root for the map.

pub mod admin;
pub mod api_error;
pub mod config;
pub mod host;
pub mod logins;
pub mod outbox;
pub mod registry;
pub mod runtime;
pub mod storage;
pub mod telemetry;
pub mod watcher;
