//! A small client for a Brmble server: a Mumble server whose users also
//! get a Matrix account, keyed by the SHA-1 of their client certificate.
//!
//! It does what a Brmble client does before its frontend takes over:
//! find the server's API (from Mumble's welcome text, [`flow_a`], or given,
//! [`flow_b`]), connect to Mumble with the user's [`Identity`], fetch the
//! [`Credentials`] for the certificate, and hand them on as the
//! [`server_credentials_message`]. [`join_and_say`] then uses them the way
//! the frontend would: join the channels' rooms and post.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! let identity = brmble_client::Identity::load_or_create("brmble-identity".as_ref())?;
//! let session = brmble_client::flow_a("mumble.example.org", 64738, &identity, "alice").await?;
//! println!("{}", brmble_client::server_credentials_message(&session.credentials));
//! let event_id =
//!     brmble_client::join_and_say(&session.credentials.matrix, "1", "hello from Mumble").await?;
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

mod api;
mod flow;
mod http;
mod identity;
mod marker;
mod matrix;
mod mumble;
mod proto;

pub use api::{
    Credentials, MatrixCredentials, ServerInfo, get_server_info, request_credentials,
    server_credentials_message,
};
pub use flow::{FlowError, Session, flow_a, flow_a_with, flow_b, flow_b_with};
pub use http::{REQUEST_TIMEOUT, RequestError};
pub use identity::{CERT_FILE, DEFAULT_COMMON_NAME, Identity, IdentityError, KEY_FILE};
pub use marker::{Marker, parse_welcome};
pub use matrix::{MatrixError, join_and_say};
pub use mumble::{
    DEFAULT_MAX_FRAME_LEN, DEFAULT_PORT, DEFAULT_TIMEOUT, MumbleError, MumbleOptions, RejectKind,
    ServerSync, mumble_welcome, mumble_welcome_with,
};
pub use proto::DecodeError;
