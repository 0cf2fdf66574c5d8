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
}

impl HsError {
    /// The Matrix error code, if the homeserver sent one.
    pub fn errcode(&self) -> Option<&str> {
        match self {
            Self::Api { errcode, .. } => Some(errcode),
            _ => None,
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

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errcode: String,
    #[serde(default)]
    error: String,
    #[serde(default)]
    retry_after_ms: Option<u64>,
}

/// A client of the homeserver's client-server API, as the appservice.
#[derive(Clone)]
pub struct HomeserverClient {
    http: reqwest::Client,
    base_url: String,
    as_token: String,
    versions: SupportedVersions,
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
        })
    }

    /// Sends `request` as the bot, or as `as_user` (a ghost).
    pub async fn send<R>(
        &self,
        request: R,
        as_user: Option<&UserId>,
    ) -> Result<R::IncomingResponse, HsError>
    where
        R: OutgoingRequest + Metadata<PathBuilder = VersionHistory>,
        for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
    {
        let identity = match as_user {
            Some(user) => AppserviceUserIdentity::new(user),
            None => AppserviceUserIdentity::default(),
        };
        self.send_with(request, SendAccessToken::Always(&self.as_token), identity)
            .await
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
        let bytes = response
            .bytes()
            .await
            .map_err(|e| HsError::Network(e.without_url().to_string()))?;
        if status.as_u16() >= 400 {
            let body: ErrorBody = serde_json::from_slice(&bytes).unwrap_or(ErrorBody {
                errcode: "M_UNKNOWN".into(),
                error: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
                retry_after_ms: None,
            });
            return Err(HsError::Api {
                status: status.as_u16(),
                errcode: body.errcode,
                message: body.error,
                retry_after: body.retry_after_ms.map(Duration::from_millis),
            });
        }
        let http_response = http::Response::builder()
            .status(status)
            .body(bytes.as_ref())
            .map_err(|e| HsError::Protocol(e.to_string()))?;
        R::IncomingResponse::try_from_http_response_inner(http_response)
            .map_err(|e| HsError::Protocol(e.to_string()))
    }
}
