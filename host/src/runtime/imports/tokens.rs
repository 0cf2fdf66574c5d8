//! `weft:plugin/tokens` as a connector imports it: routed to a provider.

use crate::runtime::bindings::imports::tokens::{Host, TokenError, TokenSet};
use crate::runtime::state::PluginState;
use crate::runtime::tokens_route::TokenCall;

impl Host for PluginState {
    async fn from_captured(
        &mut self,
        material: String,
        scopes: Vec<String>,
    ) -> wasmtime::Result<Result<TokenSet, TokenError>> {
        Ok(self
            .route_tokens(TokenCall::FromCaptured {
                material: &material,
                scopes: &scopes,
            })
            .await)
    }

    async fn refresh(
        &mut self,
        refresh_token: String,
        scopes: Vec<String>,
    ) -> wasmtime::Result<Result<TokenSet, TokenError>> {
        Ok(self
            .route_tokens(TokenCall::Refresh {
                refresh_token: &refresh_token,
                scopes: &scopes,
            })
            .await)
    }
}
