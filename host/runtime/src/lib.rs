//! weft's plugin runtime: everything about running plugins as sandboxed
//! WebAssembly components, and nothing about Matrix.
//!
//! The host builds one [`Registry`] with its storage and an implementation
//! of [`HostServices`] (the one way the runtime reaches the host: queue a
//! remote event, read and write a login's metadata, report a state), then
//! loads plugins and starts logins through it.
//!
//! - [`config`]: the runtime's part of the operator's config.
//! - [`manifest`] and [`capabilities`]: what a plugin asks for and gets.
//! - [`plugin`]: loading, compiling and pre-linking a plugin version.
//! - [`registry`]: loaded plugins, login slots, provider actors,
//!   hot-loading, login-process instances.
//! - [`actor`]: one actor per login: its instance, timers, restarts and
//!   hibernation.
//! - `provider`: one actor per (login, login provider).
//! - `instance`: one instance in its own store, called under a deadline.
//! - [`transport`]: where plugins' HTTP goes instead of the network, for
//!   the test harness.
//! - `engine`: the wasmtime engine, allocator, linker and epoch ticker.
//! - `imports`: the host side of each WIT import, one file per interface.
//! - [`events`], [`connector`], [`login_flow`]: the plain types that cross
//!   between the runtime and the host, converted from the WIT in `convert`.
//! - `memory_host` (feature `memory-host`): an in-memory host, to run the
//!   runtime without weft-host (the test harness, the runtime tests).

pub mod actor;
mod bindings;
pub mod capabilities;
pub mod config;
pub mod connector;
mod convert;
mod engine;
pub mod events;
pub mod handler;
mod imports;
mod instance;
mod login;
pub mod login_flow;
#[cfg(feature = "memory-host")]
pub mod memory_host;
/// The plugin manifest (its own crate, so `cargo weft build` checks
/// manifests with the host's own parser).
pub use weft_manifest as manifest;
mod metrics;
mod net;
pub mod plugin;
pub mod process;
mod provider;
pub mod registry;
mod runtime;
mod scheduler;
mod services;
mod state;
mod timers;
pub mod transport;

pub use actor::{ActorStatus, LoginHandle, Phase, SentHook, WorkError};
pub use config::{
    Allocator, ClientCertificates, HttpConfig, PluginGrants, RoutesGrant, RoutesTls, RuntimeConfig,
};
pub use instance::CallError;
pub use login::{LoginKey, now_ms};
pub use metrics::{HTTP_OUTCOMES, LATENCY_BUCKETS, MetricsSnapshot, PluginMetrics};
pub use net::is_private;
pub use provider::ProviderStatus;
pub use registry::{LoadOutcome, PluginInfo, Registry, RegistryError, RuntimeOptions};
/// The tree holding every plugin's KV (a host seals it: plugins keep
/// credentials there).
pub use runtime::trees::PLUGIN_KV as PLUGIN_KV_TREE;
pub use services::{
    AppserviceError, CapturePage, CaptureSession, HostServices, LoginInfo, PluginAppservice,
};
