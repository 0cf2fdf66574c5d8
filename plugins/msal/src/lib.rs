//! The MSAL login provider: signs Microsoft accounts in for connectors
//! (the Teams connector first) and keeps their tokens fresh.
//!
//! A connector declares flows `from-provider = true` and
//! `uses.tokens = "msal"`; the host runs this plugin's flow of the same id
//! ([`flows`]) and hands its `complete` step to the connector: the account
//! id, its name, and the captured [`material`]. The connector turns that
//! into tokens with `tokens.from-captured`, and later renews them with
//! `tokens.refresh`; both land here ([`TokenProvider`]).
//!
//! Two kinds of login, with different lifetimes:
//! - the device code: a refresh token of the Teams personal client, not
//!   bound to a browser, which lasts months while it is used;
//! - a teams.live.com browser session ([`cache`], [`crypto`]): its refresh
//!   token belongs to a single-page app and Microsoft renews it for only 24
//!   hours from sign-in.
//!
//! Refresh tokens are handed out wrapped with their kind (`spa:`/`dc:`,
//! [`grant::RefreshKind`]) so `refresh` knows how to redeem them, and each
//! rotation is remembered briefly ([`rotation`]) so a repeated refresh of
//! an old token never loses the new one. Tokens are never logged.

mod cache;
mod crypto;
mod flows;
#[cfg(test)]
mod fuzz;
mod grant;
mod json;
mod jwt;
mod material;
mod rotation;
mod settings;

use weft_sdk::tokens::{TokenError, TokenProvider, TokenSet};
use weft_sdk::{Error, Login, LoginStep, Result, StepInput};

use crate::cache::{Cache, CacheError, Capture};
use crate::grant::{RefreshKind, TokenResponse, effective_scopes};
use crate::material::{Material, Next};
use crate::rotation::Rotation;
use crate::settings::Settings;

/// The provider. One value per instance: a login process's instance keeps
/// its running flow; a token instance keeps nothing (its memory is the
/// login's KV).
#[derive(Default)]
pub struct Msal {
    flow: Option<flows::Flow>,
}

impl Login for Msal {
    fn login_start(&mut self, flow_id: &str, _relogin: Option<&str>) -> Result<LoginStep> {
        if let Some(previous) = self.flow.take() {
            previous.cancel();
        }
        let (flow, step) = flows::start(flow_id, &Settings::load())?;
        self.flow = Some(flow);
        Ok(step)
    }

    fn login_submit(&mut self, step_id: &str, input: StepInput) -> Result<LoginStep> {
        let flow = self
            .flow
            .as_mut()
            .ok_or_else(|| Error::invalid_input("no MSAL login was started in this process"))?;
        flow.submit(step_id, &input, &Settings::load())
    }

    fn login_cancel(&mut self) {
        if let Some(flow) = self.flow.take() {
            flow.cancel();
        }
    }
}

impl TokenProvider for Msal {
    fn tokens_from_captured(
        &mut self,
        material: &str,
        scopes: &[String],
    ) -> Result<TokenSet, TokenError> {
        let settings = Settings::load();
        let scopes = effective_scopes(scopes);
        let now = now_secs();
        let next = match Material::parse(material)? {
            Material::BrowserCache(capture) => {
                let client = settings.web_client_id.as_str();
                Capture::from_value(&capture)
                    .and_then(|capture| Cache::load(&capture, &[client]))
                    .and_then(|cache| cache.pick(&scopes, client, now))
                    .and_then(|picked| material::browser_next(picked, &scopes, now))
                    .map_err(cache_error)?
            }
            Material::DeviceCode {
                token_response,
                received_at,
            } => material::device_code_next(&token_response, received_at, &scopes, now)?,
        };
        match next {
            Next::Ready(tokens) => {
                weft_sdk::info!(
                    "tokens from captured material: fresh for {}s, refresh token: {}",
                    tokens.expires_at.saturating_sub(now),
                    tokens.refresh_token.is_some()
                );
                Ok(tokens)
            }
            Next::Refresh {
                kind,
                refresh_token,
                account_id,
            } => {
                weft_sdk::info!(
                    "captured access token stale or for other scopes: redeeming the {} refresh token",
                    kind.name()
                );
                let mut tokens = redeem(&settings, kind, &refresh_token, &scopes)?;
                // The captured token is spent now: a later refresh of it
                // gets this rotation.
                let now = now_secs();
                let key = rotation::key_for(kind, &refresh_token);
                rotation::remember(&key, &Rotation::new(now, &scopes, tokens.clone()), now);
                tokens.account_id = account_id.or(tokens.account_id);
                Ok(tokens)
            }
        }
    }

    fn refresh(&mut self, refresh_token: &str, scopes: &[String]) -> Result<TokenSet, TokenError> {
        let (kind, raw) = RefreshKind::unwrap(refresh_token.trim());
        if raw.is_empty() {
            return Err(TokenError::InvalidInput(
                "the refresh token is empty".into(),
            ));
        }
        let scopes = effective_scopes(scopes);
        let key = rotation::key_for(kind, raw);
        let now = now_secs();
        if let Some(record) = rotation::lookup(&key).filter(|r| r.answers(&scopes, now)) {
            // This token was spent already: never redeem it again.
            if record.tokens.expires_at > now {
                weft_sdk::info!(
                    "{} refresh token redeemed again: handing out its rotation's tokens",
                    kind.name()
                );
                return Ok(record.tokens);
            }
            if let Some(rotated) = &record.tokens.refresh_token {
                weft_sdk::info!(
                    "{} refresh token redeemed again: redeeming its rotation instead",
                    kind.name()
                );
                // Each step follows a newer record; the chain is as long
                // as the records kept, at most.
                return self.refresh(rotated, &scopes);
            }
        }
        let tokens = redeem(&Settings::load(), kind, raw, &scopes)?;
        rotation::remember(&key, &Rotation::new(now, &scopes, tokens.clone()), now);
        Ok(tokens)
    }
}

/// Redeems raw refresh token `raw` of `kind` for `scopes`.
fn redeem(
    settings: &Settings,
    kind: RefreshKind,
    raw: &str,
    scopes: &[String],
) -> Result<TokenSet, TokenError> {
    let request = grant::refresh_request(settings, kind, raw, scopes);
    let answer = grant::send(&request).and_then(|(status, body)| grant::classify(status, &body));
    let json = answer.map_err(|error| {
        weft_sdk::warn!("{} refresh failed: {error}", kind.name());
        TokenError::from(error)
    })?;
    let issued_at = now_secs();
    let response = TokenResponse::from_json(&json)
        .ok_or_else(|| TokenError::Transient("the token answer has no access token".into()))?;
    let tokens = response.token_set(kind, Some(raw), scopes, issued_at);
    weft_sdk::info!(
        "{} refresh: fresh for {}s, refresh token rotated: {}",
        kind.name(),
        tokens.expires_at.saturating_sub(issued_at),
        response.refresh_token.is_some()
    );
    Ok(tokens)
}

/// A capture that yields no tokens: malformed material is invalid input;
/// tokens that are gone mean logging in again.
fn cache_error(error: CacheError) -> TokenError {
    let message = format!("the captured browser session has no usable tokens: {error}");
    match error {
        CacheError::NoTokens { .. } | CacheError::Expired { .. } => {
            TokenError::InvalidGrant(message)
        }
        CacheError::NotJson(_)
        | CacheError::NotAnObject
        | CacheError::NoMsalEntries
        | CacheError::MissingKey
        | CacheError::BadKey(_)
        | CacheError::WrongKey => TokenError::InvalidInput(message),
    }
}

/// The wall clock in Unix seconds.
pub(crate) fn now_secs() -> u64 {
    weft_sdk::time::now_ms() / 1000
}

weft_sdk::register_login_provider!(Msal);
