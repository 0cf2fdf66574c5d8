//! Serving HTTP routes (since 0.1.3): the operator mounts a credential
//! provider's routes under a path prefix of the host's public listener,
//! and the host hands each request to
//! [`CredentialProvider::handle_request`](crate::CredentialProvider::handle_request).
//!
//! The host enforces the limits (body sizes, the call deadline, a rate
//! per client address) and serves one request at a time per plugin, so a
//! handler may read, decide and write its KV state without racing another
//! request.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::http::Method;

/// A request for one of the plugin's routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The path below the mount prefix, starting with `/`.
    pub path: String,
    /// The query string without `?`.
    pub query: Option<String>,
    /// Header names (lower case) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Vec<u8>,
    /// The client's IP address, as the host saw it.
    pub client_address: String,
    /// The SHA-1 fingerprint (lowercase hex) of the client's TLS
    /// certificate, when the operator turned client certificates on for
    /// these routes and the client presented one.
    pub client_certificate_sha1: Option<String>,
}

impl Request {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the body is declared JSON (`application/json`, any
    /// parameters).
    pub fn is_json(&self) -> bool {
        self.header("content-type").is_some_and(|value| {
            value
                .split(';')
                .next()
                .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
        })
    }

    /// The body parsed as JSON; an [`Error::InvalidInput`] saying what is
    /// wrong otherwise.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body)
            .map_err(|error| Error::invalid_input(format!("the body is not valid: {error}")))
    }
}

/// The plugin's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names and values.
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Vec<u8>,
}

impl Response {
    /// A response with `body` as JSON.
    pub fn json(status: u16, body: &impl Serialize) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::to_vec(body).unwrap_or_default(),
        }
    }

    /// A JSON error in the Matrix style: `{"errcode": ..., "error": ...}`.
    pub fn error(status: u16, errcode: &str, message: &str) -> Self {
        Self::json(
            status,
            &serde_json::json!({ "errcode": errcode, "error": message }),
        )
    }

    /// 404 with a JSON error.
    pub fn not_found() -> Self {
        Self::error(404, "M_NOT_FOUND", "no such route")
    }
}
