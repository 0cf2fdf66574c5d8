//! The bot as an OAuth client: an access token from the `client_credentials`
//! grant, for deployments that want the bot's own homeserver calls to
//! carry an OAuth token rather than the appservice token (`[oauth]
//! bot-device`).
//!
//! The token is fetched on first use, renewed a minute (or half its life,
//! if shorter) before it expires and whenever the homeserver answers 401,
//! and never logged: it lives only in this struct and in `Authorization`
//! headers. Calls that only an appservice may make (registering users,
//! masquerading as ghosts) keep the appservice token.

use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Mutex;

use super::client::HsError;

/// The scope that grants the client-server API.
pub const API_SCOPE: &str = "urn:matrix:client:api:*";

/// How long a token request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A client-credentials token source.
pub struct BotToken {
    http: reqwest::Client,
    token_endpoint: String,
    client_id: String,
    client_secret: String,
    scope: String,
    current: Mutex<Option<(String, Instant)>>,
}

impl std::fmt::Debug for BotToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BotToken")
            .field("token_endpoint", &self.token_endpoint)
            .field("client_id", &self.client_id)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<u64>,
}

impl BotToken {
    /// Tokens from `token_endpoint` for client `client_id`, with the API
    /// scope and the scope of device `device`.
    pub fn new(token_endpoint: &str, client_id: &str, client_secret: &str, device: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
            token_endpoint: token_endpoint.to_owned(),
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            scope: format!("{API_SCOPE} urn:matrix:client:device:{device}"),
            current: Mutex::new(None),
        }
    }

    /// A token good for at least a little while.
    pub async fn token(&self) -> Result<String, HsError> {
        let mut current = self.current.lock().await;
        if let Some((token, renew_at)) = current.as_ref()
            && Instant::now() < *renew_at
        {
            return Ok(token.clone());
        }
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "client_credentials")
            .append_pair("scope", &self.scope)
            .finish();
        let response = self
            .http
            .post(&self.token_endpoint)
            .basic_auth(&self.client_id, Some(&self.client_secret))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await
            .map_err(|e| HsError::Network(format!("the token endpoint: {}", e.without_url())))?;
        let status = response.status();
        if status.is_server_error() {
            return Err(HsError::Network(format!(
                "the token endpoint failed ({status})"
            )));
        }
        if !status.is_success() {
            return Err(HsError::Network(format!(
                "the token endpoint refused the bot's client credentials ({status}): check [oauth] client-id, client-secret and bot-device"
            )));
        }
        if response.content_length().is_some_and(|len| len > 64 << 10) {
            return Err(HsError::Protocol(
                "the token endpoint's answer is too large".into(),
            ));
        }
        let answer: TokenResponse = response
            .json()
            .await
            .map_err(|e| HsError::Protocol(format!("the token endpoint's answer: {e}")))?;
        // Clamped both ways: a server's odd `expires_in` must neither
        // overflow the clock nor make every call fetch a token.
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(300).clamp(10, 86_400));
        let margin = Duration::from_secs(60).min(lifetime / 2);
        tracing::debug!(
            expires_in_secs = lifetime.as_secs(),
            "the bot has a new OAuth token"
        );
        *current = Some((
            answer.access_token.clone(),
            Instant::now() + lifetime - margin,
        ));
        Ok(answer.access_token)
    }

    /// Forgets `token` (the homeserver refused it): the next call gets a
    /// new one. A token renewed meanwhile by another call is kept.
    pub async fn refused(&self, token: &str) {
        let mut current = self.current.lock().await;
        if current.as_ref().is_some_and(|(t, _)| t == token) {
            *current = None;
        }
    }
}
