//! `weft:plugin/tokens` as a connector imports it: a message to the actor
//! of its login provider for the same login.
//!
//! The connector's manifest names the provider (`uses.tokens = "msal"`);
//! the operator may override it. The provider's actor serializes calls
//! for the login (so a refresh token is never redeemed twice at once) and
//! runs them under the connector's call permit and within what is left of
//! the connector's deadline.

use crate::bindings::imports::tokens::{Host, TokenError, TokenSet};
use crate::manifest::World;
use crate::provider::TokenCall;
use crate::state::{InstanceRole, PluginState};

impl PluginState {
    async fn route_tokens(&mut self, call: TokenCall) -> Result<TokenSet, TokenError> {
        let caller = self.ctx.plugin.id().to_owned();
        // Only connectors use providers: a provider calling one (itself,
        // say) would fan out instances until the deadline.
        if self.ctx.plugin.manifest.world != World::Connector {
            return Err(TokenError::Unavailable(format!(
                "plugin {caller} is not a connector; only connectors call token providers"
            )));
        }
        let Some(provider) = self.ctx.plugin.capabilities.uses.get("tokens").cloned() else {
            return Err(TokenError::Unavailable(format!(
                "plugin {caller} names no token provider (capabilities.uses.tokens in its manifest)"
            )));
        };
        let Some(registry) = self.ctx.runtime.registry.upgrade() else {
            return Err(TokenError::Unavailable("the host is shutting down".into()));
        };
        let handle = match &self.ctx.role {
            InstanceRole::Login(login) => registry.provider(login, &provider),
            // A login process (e.g. a connector finishing a provider's
            // login) gets a provider instance of its own, in the process's
            // namespace, for this call only.
            InstanceRole::LoginProcess { process } => {
                registry.process_provider(&caller, process, &provider)
            }
            InstanceRole::Standalone => Err("token calls need a login or a login process".into()),
        }
        .map_err(TokenError::Unavailable)?;
        handle.call(call, self.deadline).await
    }
}

impl Host for PluginState {
    async fn from_captured(
        &mut self,
        material: String,
        scopes: Vec<String>,
    ) -> wasmtime::Result<Result<TokenSet, TokenError>> {
        Ok(self
            .route_tokens(TokenCall::FromCaptured { material, scopes })
            .await)
    }

    async fn refresh(
        &mut self,
        refresh_token: String,
        scopes: Vec<String>,
    ) -> wasmtime::Result<Result<TokenSet, TokenError>> {
        Ok(self
            .route_tokens(TokenCall::Refresh {
                refresh_token,
                scopes,
            })
            .await)
    }
}
