//! `weft:plugin/session`: the login the instance serves, and its metadata.

use crate::bindings::imports::session::{Host, LoginInfo};
use crate::bindings::imports::types::PluginError;
use crate::state::PluginState;

/// The largest metadata a connector may store per login.
const MAX_METADATA: usize = 256 << 10;

impl Host for PluginState {
    async fn current(&mut self) -> wasmtime::Result<Option<LoginInfo>> {
        let Some(key) = self.login().cloned() else {
            return Ok(None);
        };
        let login = self.ctx.runtime.host.login(&key)?;
        Ok(login.map(|l| LoginInfo {
            id: l.id,
            owner: l.owner,
            remote_name: l.remote_name,
        }))
    }

    async fn metadata(&mut self) -> wasmtime::Result<String> {
        let Some(key) = self.login().cloned() else {
            return Ok(String::new());
        };
        Ok(self.ctx.runtime.host.metadata(&key)?.unwrap_or_default())
    }

    async fn set_metadata(
        &mut self,
        metadata: String,
    ) -> wasmtime::Result<Result<(), PluginError>> {
        let Some(key) = self.login().cloned() else {
            return Ok(Err(PluginError::InvalidInput(
                "this instance serves no login".into(),
            )));
        };
        if metadata.len() > MAX_METADATA {
            return Ok(Err(PluginError::InvalidInput(format!(
                "metadata is limited to {MAX_METADATA} bytes"
            ))));
        }
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&metadata) {
            return Ok(Err(PluginError::InvalidInput(format!(
                "metadata must be JSON: {e}"
            ))));
        }
        let runtime = self.ctx.runtime.clone();
        if !runtime.host.set_metadata(&key, metadata)? {
            return Ok(Err(PluginError::Internal(
                "the login no longer exists".into(),
            )));
        }
        // Tokens just refreshed must survive a crash: the old ones may
        // already be revoked by the remote service.
        runtime.flush().await?;
        Ok(Ok(()))
    }
}
