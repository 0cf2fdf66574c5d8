//! `weft:plugin/config`: the operator's settings, checked at load time.

use crate::bindings::imports::config::Host;
use crate::state::PluginState;

impl Host for PluginState {
    async fn get(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        Ok(self
            .ctx
            .plugin
            .settings
            .get(&name)
            .map(|value| value.to_string()))
    }
}
