//! The two ways a Brmble client finds its server's services, both ending
//! in the credentials of `POST /auth/token`:
//!
//! - flow A, Mumble first: connect to Mumble, read the Brmble marker from
//!   the welcome text, call the API it names;
//! - flow B, API first: ask the API where its Mumble server is, connect to
//!   it, then call the API.
//!
//! Mumble comes before the token in both, as the design has it: the
//! Mumble server has seen the certificate before the API hands out the
//! account its hash keys. This client does not stay on Mumble: the
//! connection ends after `ServerSync`.

use crate::api::{self, Credentials};
use crate::http::RequestError;
use crate::identity::Identity;
use crate::marker::parse_welcome;
use crate::mumble::{self, MumbleError, MumbleOptions, ServerSync};

/// A Brmble server's services, as a client found them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The Brmble API's base URL (to persist for next time, flow A).
    pub api_url: String,
    /// The Mumble server's host (to persist for next time, flow B).
    pub mumble_host: String,
    /// The Mumble server's port.
    pub mumble_port: u16,
    /// What `POST /auth/token` answered.
    pub credentials: Credentials,
    /// The end of the Mumble handshake: session, welcome text, and the
    /// certificate hashes of both sides.
    pub server_sync: ServerSync,
}

/// Why a flow did not produce a [`Session`].
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// The Mumble server's welcome text has no Brmble marker: a plain
    /// Mumble server, with no Matrix. Not a failure of the connection;
    /// a client goes on in legacy mode.
    #[error("legacy Mumble server: its welcome text has no Brmble marker, so it offers no Matrix")]
    Legacy {
        /// What the server sent, welcome text included.
        server_sync: ServerSync,
    },
    /// Talking to the Mumble server failed.
    #[error(transparent)]
    Mumble(#[from] MumbleError),
    /// Calling the Brmble API failed.
    #[error(transparent)]
    Api(#[from] RequestError),
}

impl FlowError {
    /// Whether this is the legacy-server outcome rather than a failure.
    pub fn is_legacy(&self) -> bool {
        matches!(self, Self::Legacy { .. })
    }
}

/// Flow A with the default [`MumbleOptions`]: connect to Mumble at
/// `host:port`, find the API in the welcome text, get the credentials.
pub async fn flow_a(
    host: &str,
    port: u16,
    identity: &Identity,
    username: &str,
) -> Result<Session, FlowError> {
    flow_a_with(host, port, identity, username, &MumbleOptions::default()).await
}

/// [`flow_a`] with explicit Mumble options.
pub async fn flow_a_with(
    host: &str,
    port: u16,
    identity: &Identity,
    username: &str,
    options: &MumbleOptions,
) -> Result<Session, FlowError> {
    let server_sync = mumble::mumble_welcome_with(host, port, identity, username, options).await?;
    let Some(marker) = parse_welcome(&server_sync.welcome_text) else {
        return Err(FlowError::Legacy { server_sync });
    };
    let credentials = api::request_credentials(&marker.api_url, &identity.cert_hash()).await?;
    Ok(Session {
        api_url: marker.api_url,
        mumble_host: host.to_owned(),
        mumble_port: port,
        credentials,
        server_sync,
    })
}

/// Flow B with the default [`MumbleOptions`]: ask the API at `api_url`
/// where Mumble is, connect to it, get the credentials.
pub async fn flow_b(
    api_url: &str,
    identity: &Identity,
    username: &str,
) -> Result<Session, FlowError> {
    flow_b_with(api_url, identity, username, &MumbleOptions::default()).await
}

/// [`flow_b`] with explicit Mumble options.
pub async fn flow_b_with(
    api_url: &str,
    identity: &Identity,
    username: &str,
    options: &MumbleOptions,
) -> Result<Session, FlowError> {
    let api_url = api_url.trim_end_matches('/');
    let info = api::get_server_info(api_url).await?;
    let server_sync = mumble::mumble_welcome_with(
        &info.mumble_host,
        info.mumble_port,
        identity,
        username,
        options,
    )
    .await?;
    let credentials = api::request_credentials(api_url, &identity.cert_hash()).await?;
    Ok(Session {
        api_url: api_url.to_owned(),
        mumble_host: info.mumble_host,
        mumble_port: info.mumble_port,
        credentials,
        server_sync,
    })
}
