//! The host side of every `weft:plugin` import, one file per interface.
//!
//! Each import acts only within its instance's context: the plugin's
//! grants, its KV namespace, its login. Expected failures are returned as
//! the interface's WIT error; only a host bug traps.

mod appservice;
mod capture;
mod config;
pub(crate) mod http;
mod kv;
mod log;
mod matrix;
mod session;
mod timers;
mod tokens;

use crate::bindings::imports::types;
use crate::state::PluginState;

impl types::Host for PluginState {}
