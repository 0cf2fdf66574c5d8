//! The wasm runtime: plugins, their instances, and the imports they call.
//!
//! - [`engine`]: the wasmtime engine, linker and epoch ticker.
//! - [`manifest`] and [`capabilities`]: what a plugin asks for and gets.
//! - [`plugin`]: compiling and pre-linking a plugin version.
//! - [`instance`]: one instance in its own store, called under a deadline.
//! - [`actor`]: the task that owns a login's instance, its timers and its
//!   restarts.
//! - [`imports`]: the host side of each WIT import.

pub mod actor;
pub mod bindings;
pub mod capabilities;
pub mod engine;
pub mod http_client;
mod imports;
pub mod instance;
pub mod manifest;
pub mod plugin;
pub mod state;
pub mod timers;
mod tokens_route;

pub use engine::Runtime;
