//! Integration tests: real components built from source, real storage,
//! real HTTP servers on loopback (and, for the Matrix side, a real
//! Synapse). One binary, one module per area.

mod bridge;
mod hibernation;
mod hot_load;
mod isolation;
mod limits;
mod logging;
mod login_processes;
mod outbound_http;
mod providers;
mod provisioning;
mod runtime;
mod timers;
mod wasi;
