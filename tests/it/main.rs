//! Integration tests: real components built from source, real storage,
//! real HTTP servers on loopback (and, for the Matrix side, a real
//! Synapse). One binary, one module per area.

mod authoring;
mod backfill;
mod bridge;
mod brmble;
mod capture;
mod chaos;
mod cli;
mod disk_full;
mod double_puppet;
mod hibernation;
mod homeserver_faults;
mod hot_load;
mod inbound;
mod isolation;
mod limits;
mod logging;
mod login_processes;
mod mas;
mod media;
mod metrics;
mod msal;
mod mumble;
mod outbound_http;
mod plugin_accounts;
mod providers;
mod provisioning;
mod receipts;
mod relations;
mod runtime;
mod secrets;
mod status_page;
mod teams;
mod timers;
mod token_auth;
mod wasi;
