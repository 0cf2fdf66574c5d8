//! Routing a connector's `tokens` import to a login provider's export.
//!
//! The connector's manifest names the provider (`uses.tokens = "msal"`);
//! the operator may override it. The provider runs in its own instance,
//! created on the first call, serving the same login (its KV namespace is
//! the login's, under the provider's id), so the connector uses the
//! provider's code without linking it in and without sharing its memory.
//! A provider that traps is discarded; the connector gets a typed
//! `unavailable` error, never a trap.

use std::sync::Arc;

use super::bindings::imports::tokens::{TokenError, TokenSet};
use super::bindings::login_provider::exports::weft::plugin::tokens as provider;
use super::instance::{CallError, Instance};
use super::manifest::World;
use super::state::{InstanceContext, PluginState};

/// The provider instance a connector instance's calls go to.
pub struct ProviderSlot {
    instance: Instance,
}

/// Which provider call to make.
pub(crate) enum TokenCall<'a> {
    FromCaptured {
        material: &'a str,
        scopes: &'a [String],
    },
    Refresh {
        refresh_token: &'a str,
        scopes: &'a [String],
    },
}

impl PluginState {
    async fn provider_slot(&mut self) -> Result<Box<ProviderSlot>, TokenError> {
        let caller = self.ctx.plugin.id().to_owned();
        let Some(provider_id) = self.ctx.plugin.capabilities.uses.get("tokens").cloned() else {
            return Err(TokenError::Unavailable(format!(
                "plugin {caller} names no token provider (capabilities.uses.tokens in its manifest)"
            )));
        };
        let services = self.ctx.services.clone();
        let Some(current) = services.plugins.current(&provider_id) else {
            return Err(TokenError::Unavailable(format!(
                "the token provider `{provider_id}` is not loaded"
            )));
        };
        if current.manifest.world != World::LoginProvider {
            return Err(TokenError::Unavailable(format!(
                "plugin `{provider_id}` is not a login provider"
            )));
        }
        if let Some(slot) = self.ctx.provider.take()
            && Arc::ptr_eq(slot.instance.plugin(), &current)
            && slot.instance.is_usable()
        {
            return Ok(slot);
        }
        let ctx = InstanceContext::new(current.clone(), self.ctx.role.clone(), services, None)
            .map_err(|e| TokenError::Transient(format!("the host's storage failed: {e}")))?;
        let instance = Instance::new(current, ctx).await.map_err(|e| {
            TokenError::Unavailable(format!(
                "the token provider `{provider_id}` failed to start: {e}"
            ))
        })?;
        Ok(Box::new(ProviderSlot { instance }))
    }

    /// Makes `call` on the provider, within what is left of this call's
    /// deadline.
    pub(crate) async fn route_tokens(
        &mut self,
        call: TokenCall<'_>,
    ) -> Result<TokenSet, TokenError> {
        let mut slot = self.provider_slot().await?;
        slot.instance.cap_deadline(Some(self.deadline));
        let result: Result<Result<provider::TokenSet, provider::TokenError>, CallError> = match call
        {
            TokenCall::FromCaptured { material, scopes } => {
                slot.instance.tokens_from_captured(material, scopes).await
            }
            TokenCall::Refresh {
                refresh_token,
                scopes,
            } => slot.instance.tokens_refresh(refresh_token, scopes).await,
        };
        if slot.instance.is_usable() {
            self.ctx.provider = Some(slot);
        }
        match result {
            Ok(Ok(set)) => Ok(TokenSet {
                access_token: set.access_token,
                expires_at: set.expires_at,
                refresh_token: set.refresh_token,
                scopes: set.scopes,
                account_id: set.account_id,
            }),
            Ok(Err(error)) => Err(match error {
                provider::TokenError::InvalidGrant(m) => TokenError::InvalidGrant(m),
                provider::TokenError::Transient(m) => TokenError::Transient(m),
                provider::TokenError::InvalidInput(m) => TokenError::InvalidInput(m),
                provider::TokenError::Unavailable(m) => TokenError::Unavailable(m),
            }),
            Err(error) => Err(TokenError::Unavailable(format!(
                "the token provider failed: {error}"
            ))),
        }
    }
}
