//! The HTTP plumbing shared by the Brmble API and the Matrix calls: one
//! client with timeouts, JSON bodies read with a size cap, and errors that
//! keep the status and the Matrix-style `errcode` for callers to branch on.

use std::fmt::Write as _;
use std::time::Duration;

use serde::de::DeserializeOwned;

/// The limit on one request, connecting included: generous for a
/// homeserver under load, short enough that a client never hangs.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest response body read: the answers here are small JSON
/// objects; a room map of thousands of channels is still far below this.
const MAX_BODY: usize = 4 << 20;

/// Why an HTTP call failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The URL cannot be requested.
    #[error("`{0}` is not a valid http(s) URL")]
    InvalidUrl(String),
    /// The HTTP client could not be set up.
    #[error("failed to set up the HTTP client")]
    Client(#[source] reqwest::Error),
    /// The request did not get an answer (connection, TLS, timeout).
    #[error("{what} failed")]
    Network {
        /// `METHOD URL`.
        what: String,
        /// What reqwest said.
        source: reqwest::Error,
    },
    /// The server answered with an error status.
    #[error("{what} answered {status}{}", detail(.errcode.as_deref(), .message.as_deref()))]
    Status {
        /// `METHOD URL`.
        what: String,
        /// The status.
        status: reqwest::StatusCode,
        /// The `errcode` of a `{"errcode":…,"error":…}` body.
        errcode: Option<String>,
        /// The `error` of such a body.
        message: Option<String>,
    },
    /// The answer is not the JSON expected, or too large.
    #[error("{what} answered with an unexpected body: {reason}")]
    Body {
        /// `METHOD URL`.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
}

fn detail(errcode: Option<&str>, message: Option<&str>) -> String {
    let mut out = String::new();
    if let Some(errcode) = errcode {
        let _ = write!(out, ": {errcode}");
    }
    if let Some(message) = message {
        let _ = write!(out, ": {message}");
    }
    out
}

impl RequestError {
    /// The HTTP status of an error answer.
    pub fn status(&self) -> Option<reqwest::StatusCode> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The `errcode` of an error answer (`M_FORBIDDEN`, …).
    pub fn errcode(&self) -> Option<&str> {
        match self {
            Self::Status { errcode, .. } => errcode.as_deref(),
            _ => None,
        }
    }

    /// Whether trying again later may succeed: no answer, 429, or 5xx.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Network { .. } => true,
            Self::Status { status, .. } => {
                status.is_server_error() || *status == reqwest::StatusCode::TOO_MANY_REQUESTS
            }
            Self::InvalidUrl(_) | Self::Client(_) | Self::Body { .. } => false,
        }
    }
}

/// The client for every call of this crate.
pub(crate) fn client() -> Result<reqwest::Client, RequestError> {
    // The workspace's reqwest brings no crypto provider of its own; ring
    // is the one rustls is built with here. Installing fails harmlessly
    // when the program already chose one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("brmble-client/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(RequestError::Client)
}

/// `base` joined with `path` (which starts with `/`), checked to be an
/// absolute http(s) URL.
pub(crate) fn endpoint(base: &str, path: &str) -> Result<reqwest::Url, RequestError> {
    let joined = format!("{}{path}", base.trim_end_matches('/'));
    match reqwest::Url::parse(&joined) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => Ok(url),
        _ => Err(RequestError::InvalidUrl(base.to_owned())),
    }
}

/// Sends `request` and reads a JSON answer, or the error it describes.
pub(crate) async fn send_json<T: DeserializeOwned>(
    request: reqwest::RequestBuilder,
) -> Result<T, RequestError> {
    let (client, request) = request.build_split();
    let request = request.map_err(RequestError::Client)?;
    // The URL carries no secret: tokens only ever go in a header.
    let what = format!("{} {}", request.method(), request.url());
    let mut response = client
        .execute(request)
        .await
        .map_err(|source| RequestError::Network {
            what: what.clone(),
            // `what` already names the URL.
            source: source.without_url(),
        })?;
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|source| RequestError::Network {
            what: what.clone(),
            source: source.without_url(),
        })?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(RequestError::Body {
                what,
                reason: format!("over {MAX_BODY} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        #[derive(serde::Deserialize)]
        struct ErrorBody {
            errcode: Option<String>,
            error: Option<String>,
        }
        let (errcode, message) = match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(ErrorBody { errcode, error }) => (errcode, error),
            // Not JSON (a proxy's HTML page): a short excerpt helps more
            // than nothing.
            Err(_) => (None, excerpt(&body)),
        };
        return Err(RequestError::Status {
            what,
            status,
            errcode,
            message,
        });
    }
    serde_json::from_slice(&body).map_err(|e| RequestError::Body {
        what,
        reason: e.to_string(),
    })
}

fn excerpt(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut cut: String = text.chars().take(200).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    Some(cut)
}
