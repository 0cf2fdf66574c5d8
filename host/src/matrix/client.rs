//! The homeserver client: ruma's request types, sent with reqwest.
//!
//! The appservice token always travels in the `Authorization` header,
//! never as `access_token` in a query string (MSC3861 deployments reject
//! that, and query strings end up in logs). Masquerading as a ghost adds
//! `?user_id=`. Every call has a timeout, and every failure says whether it
//! is worth retrying.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use ruma::UserId;
use ruma::api::auth_scheme::{AuthScheme, SendAccessToken};
use ruma::api::path_builder::VersionHistory;
use ruma::api::{
    AppserviceUserIdentity, IncomingResponse, Metadata, OutgoingRequest,
    OutgoingRequestAppserviceExt, SupportedVersions,
};
use serde::Deserialize;

/// How a failed call should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryKind {
    /// The homeserver could not be reached; try again.
    NetworkFailure,
    /// The homeserver is overloaded or rate-limiting; try again later.
    Transient {
        /// How long it asked us to wait.
        retry_after: Option<Duration>,
    },
    /// Trying again will not help.
    Permanent,
}

/// Why a homeserver call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HsError {
    /// The homeserver answered with an error.
    #[error("the homeserver answered {status} {errcode}: {message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The Matrix error code.
        errcode: String,
        /// The message.
        message: String,
        /// The requested delay, if rate-limited.
        retry_after: Option<Duration>,
    },
    /// The homeserver could not be reached.
    #[error("cannot reach the homeserver: {0}")]
    Network(String),
    /// The request or the answer could not be (de)serialized.
    #[error("bad request or answer: {0}")]
    Protocol(String),
    /// A file is larger than the limit it was fetched under.
    #[error("the file is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
}

impl HsError {
    /// The Matrix error code, if the homeserver sent one.
    pub fn errcode(&self) -> Option<&str> {
        match self {
            Self::Api { errcode, .. } => Some(errcode),
            _ => None,
        }
    }

    /// Whether the homeserver itself is down or failing: unreachable, or
    /// a 5xx.
    pub fn is_outage(&self) -> bool {
        match self {
            Self::Network(_) => true,
            Self::Api { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// How to treat the failure.
    pub fn retry(&self) -> RetryKind {
        match self {
            Self::Network(_) => RetryKind::NetworkFailure,
            Self::Api {
                status,
                retry_after,
                ..
            } if *status == 429 || *status >= 500 => RetryKind::Transient {
                retry_after: *retry_after,
            },
            _ => RetryKind::Permanent,
        }
    }
}

/// The backoff for retrying homeserver calls: 500 ms doubling to a
/// minute, with jitter so many workers do not retry in step. A
/// homeserver's own `Retry-After` / `retry_after_ms` wins over it.
pub fn retry_backoff() -> backon::ExponentialBackoff {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(60))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// A `Retry-After` header: delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errcode: String,
    #[serde(default)]
    error: String,
    #[serde(default)]
    retry_after_ms: Option<u64>,
}

/// The error a homeserver answered with; its own `retry_after_ms` wins
/// over the `Retry-After` header.
fn api_error(status: u16, body: &[u8], retry_after_header: Option<Duration>) -> HsError {
    let body: ErrorBody = serde_json::from_slice(body).unwrap_or(ErrorBody {
        errcode: "M_UNKNOWN".into(),
        error: String::from_utf8_lossy(body).chars().take(200).collect(),
        retry_after_ms: None,
    });
    HsError::Api {
        status,
        errcode: body.errcode,
        message: body.error,
        retry_after: body
            .retry_after_ms
            .map(Duration::from_millis)
            .or(retry_after_header),
    }
}

/// A client of the homeserver's client-server API, as the appservice.
#[derive(Clone)]
pub struct HomeserverClient {
    http: reqwest::Client,
    base_url: String,
    as_token: String,
    versions: SupportedVersions,
    /// The bot's OAuth token source, if the bot is an OAuth client.
    bot_token: Option<std::sync::Arc<super::bot_token::BotToken>>,
}

impl HomeserverClient {
    /// A client for `base_url` with the appservice token.
    pub fn new(base_url: &str, as_token: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("weft/", env!("CARGO_PKG_VERSION")))
            .build()?;
        // Every endpoint the bridge uses exists since v1.1; claiming v1.11
        // lets ruma pick the current paths.
        let versions = SupportedVersions::from_parts(&["v1.11".to_owned()], &BTreeMap::new());
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            as_token: as_token.to_owned(),
            versions,
            bot_token: None,
        })
    }

    /// The bot's own calls (not registering users, not masquerading) carry
    /// tokens from `bot_token` from now on.
    pub fn with_bot_token(mut self, bot_token: super::bot_token::BotToken) -> Self {
        self.bot_token = Some(std::sync::Arc::new(bot_token));
        self
    }

    /// Sends `request` with the appservice token, as the appservice
    /// itself: for what only an appservice may do (registering its users,
    /// logging them in), even when the bot is an OAuth client.
    pub async fn send_as_appservice<R>(&self, request: R) -> Result<R::IncomingResponse, HsError>
    where
        R: OutgoingRequest + Metadata<PathBuilder = VersionHistory>,
        for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
    {
        self.send_with(
            request,
            SendAccessToken::Always(&self.as_token),
            AppserviceUserIdentity::default(),
        )
        .await
    }

    /// Sends `request` as the bot, or as `as_user` (a ghost). The bot's
    /// own calls carry its OAuth token if it has one (renewed and tried
    /// once more on a 401); a ghost's always the appservice token.
    pub async fn send<R>(
        &self,
        request: R,
        as_user: Option<&UserId>,
    ) -> Result<R::IncomingResponse, HsError>
    where
        R: OutgoingRequest + Metadata<PathBuilder = VersionHistory> + Clone,
        for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
    {
        match (as_user, &self.bot_token) {
            (Some(user), _) => {
                let identity = AppserviceUserIdentity::new(user);
                self.send_with(request, SendAccessToken::Always(&self.as_token), identity)
                    .await
            }
            (None, None) => self.send_as_appservice(request).await,
            (None, Some(bot)) => {
                let token = bot.token().await?;
                let first = self
                    .send_with(
                        request.clone(),
                        SendAccessToken::Always(&token),
                        AppserviceUserIdentity::default(),
                    )
                    .await;
                match first {
                    Err(HsError::Api { status: 401, .. }) => {
                        bot.refused(&token).await;
                        let renewed = bot.token().await?;
                        self.send_with(
                            request,
                            SendAccessToken::Always(&renewed),
                            AppserviceUserIdentity::default(),
                        )
                        .await
                    }
                    other => other,
                }
            }
        }
    }

    /// A client that masquerades with another appservice's token: the
    /// double-puppeting registration's, which may act as any local user.
    pub fn with_token(&self, as_token: &str) -> Self {
        Self {
            as_token: as_token.to_owned(),
            bot_token: None,
            ..self.clone()
        }
    }

    /// Whether the homeserver answers at all (`GET
    /// /_matrix/client/versions`, which needs no token): what the outage
    /// prober asks.
    pub async fn answers(&self) -> bool {
        let answer = self
            .http
            .get(format!("{}/_matrix/client/versions", self.base_url))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        answer.is_ok_and(|response| response.status().is_success())
    }

    /// Whether the homeserver delegates authentication to an OAuth server
    /// (MSC3861 / MAS): it then publishes auth metadata (MSC2965, stable
    /// since Matrix 1.15, or under its unstable path).
    pub async fn delegates_auth(&self) -> Result<bool, HsError> {
        for path in [
            "/_matrix/client/v1/auth_metadata",
            "/_matrix/client/unstable/org.matrix.msc2965/auth_metadata",
        ] {
            let response = self
                .http
                .get(format!("{}{path}", self.base_url))
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .map_err(|e| HsError::Network(e.without_url().to_string()))?;
            let status = response.status();
            if status.is_success() {
                return Ok(true);
            }
            if status.is_server_error() {
                let bytes = response.bytes().await.unwrap_or_default();
                return Err(api_error(status.as_u16(), &bytes, None));
            }
        }
        Ok(false)
    }

    /// Downloads `mxc` with authenticated media (the token in the
    /// `Authorization` header), reading at most `max_bytes`. Returns the
    /// content type and the bytes.
    pub async fn download(
        &self,
        mxc: &ruma::MxcUri,
        max_bytes: u64,
    ) -> Result<(Option<String>, Vec<u8>), HsError> {
        let (server, media_id) = mxc
            .parts()
            .map_err(|e| HsError::Protocol(format!("bad content URI: {e}")))?;
        let url = format!(
            "{}/_matrix/client/v1/media/download/{}/{}",
            self.base_url,
            percent_encoding::utf8_percent_encode(
                server.as_str(),
                percent_encoding::NON_ALPHANUMERIC
            ),
            percent_encoding::utf8_percent_encode(media_id, percent_encoding::NON_ALPHANUMERIC)
        );
        let mut response = self
            .http
            .get(&url)
            .bearer_auth(&self.as_token)
            .send()
            .await
            .map_err(|e| HsError::Network(e.without_url().to_string()))?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            let bytes = response.bytes().await.unwrap_or_default();
            return Err(api_error(status.as_u16(), &bytes, retry_after));
        }
        if response.content_length().is_some_and(|len| len > max_bytes) {
            return Err(HsError::TooLarge { limit: max_bytes });
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| HsError::Network(e.without_url().to_string()))?
        {
            if (bytes.len() + chunk.len()) as u64 > max_bytes {
                return Err(HsError::TooLarge { limit: max_bytes });
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok((content_type, bytes))
    }

    /// Uploads a file to the media repository as `as_user` (a ghost, so
    /// the file is theirs); returns its content URI.
    pub async fn upload(
        &self,
        bytes: Vec<u8>,
        content_type: &str,
        file_name: &str,
        as_user: &UserId,
    ) -> Result<ruma::OwnedMxcUri, HsError> {
        let mut request = ruma::api::client::media::create_content::v3::Request::new(bytes);
        request.content_type = Some(content_type.to_owned());
        request.filename = Some(file_name.to_owned());
        Ok(self.send(request, Some(as_user)).await?.content_uri)
    }

    /// Sends `request` with a user's own access token (e.g. `/whoami` for
    /// provisioning auth).
    pub async fn send_as_token<R>(
        &self,
        request: R,
        token: &str,
    ) -> Result<R::IncomingResponse, HsError>
    where
        R: OutgoingRequest + Metadata<PathBuilder = VersionHistory>,
        for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
    {
        self.send_with(
            request,
            SendAccessToken::Always(token),
            AppserviceUserIdentity::default(),
        )
        .await
    }

    async fn send_with<R>(
        &self,
        request: R,
        token: SendAccessToken<'_>,
        identity: AppserviceUserIdentity<'_>,
    ) -> Result<R::IncomingResponse, HsError>
    where
        R: OutgoingRequest + Metadata<PathBuilder = VersionHistory>,
        for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
    {
        let http_request = request
            .try_into_http_request_with_identity::<Vec<u8>>(
                &self.base_url,
                token,
                identity,
                Cow::Borrowed(&self.versions),
            )
            .map_err(|e| HsError::Protocol(e.to_string()))?;
        let (parts, body) = http_request.into_parts();
        let url = parts.uri.to_string();
        let response = self
            .http
            .request(parts.method, &url)
            .headers(parts.headers)
            .body(body)
            .send()
            .await
            .map_err(|e| HsError::Network(e.without_url().to_string()))?;
        let status = response.status();
        let retry_after_header = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let bytes = response
            .bytes()
            .await
            .map_err(|e| HsError::Network(e.without_url().to_string()))?;
        if status.as_u16() >= 400 {
            return Err(api_error(status.as_u16(), &bytes, retry_after_header));
        }
        let http_response = http::Response::builder()
            .status(status)
            .body(bytes.as_ref())
            .map_err(|e| HsError::Protocol(e.to_string()))?;
        R::IncomingResponse::try_from_http_response_inner(http_response)
            .map_err(|e| HsError::Protocol(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_as_seconds_or_as_an_http_date() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        // A date in the past means "now".
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        // A date ahead is the time until it.
        let ahead = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(90));
        let wait = parse_retry_after(&ahead).unwrap();
        assert!(
            (Duration::from_secs(85)..=Duration::from_secs(90)).contains(&wait),
            "{wait:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn rate_limits_and_server_errors_are_transient_and_keep_their_delay() {
        let limited = HsError::Api {
            status: 429,
            errcode: "M_LIMIT_EXCEEDED".into(),
            message: String::new(),
            retry_after: Some(Duration::from_secs(3)),
        };
        assert_eq!(
            limited.retry(),
            RetryKind::Transient {
                retry_after: Some(Duration::from_secs(3))
            }
        );
        let refused = HsError::Api {
            status: 403,
            errcode: "M_FORBIDDEN".into(),
            message: String::new(),
            retry_after: None,
        };
        assert_eq!(refused.retry(), RetryKind::Permanent);
    }
}
