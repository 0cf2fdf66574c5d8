//! The weft host: the Matrix side of weft. It embeds the plugin runtime
//! (`weft-runtime`) and storage (`weft-storage`) and adds the bridge, the
//! appservice, the provisioning and admin APIs, and the `weft` binary.
//! See `ARCHITECTURE.md` at the repository root for the map.

pub mod admin;
pub mod api_error;
pub mod appservice;
pub mod bench;
pub mod bridge;
pub mod capture;
pub mod cli;
pub mod config;
pub mod host;
pub mod login_process;
pub mod logins;
pub mod matrix;
pub mod metrics;
pub mod outbox;
pub mod provisioning;
pub mod routes;
mod secrets;
pub mod services;
pub mod status;
pub mod telemetry;
mod template;
pub mod token_auth;
pub mod trees;
pub mod watcher;

/// Installs the TLS crypto provider (ring) for every HTTP client in the
/// process. reqwest is built without a default provider, so this must run
/// before the first client is built; calling it again is harmless.
pub fn init_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
