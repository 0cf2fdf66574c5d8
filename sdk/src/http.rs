//! Outgoing HTTP, made by the host on the plugin's behalf.
//!
//! ```no_run
//! # fn demo() -> weft_sdk::Result<()> {
//! use weft_sdk::http::Request;
//!
//! #[derive(serde::Deserialize)]
//! struct Me { id: String }
//!
//! let me: Me = Request::get("https://api.example.com/me")
//!     .bearer("token")
//!     .send()?
//!     .error_for_status()?
//!     .json()?;
//! # Ok(()) }
//! ```
//!
//! The host allows only URLs that match the plugin's granted patterns and
//! does not follow redirects. A request that is refused, times out or gets
//! an oversized response fails with a typed [`HttpError`].

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::wit::imports::weft::plugin::http as wit;

/// The request method.
pub use wit::Method;

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The operator has not granted this destination; the message says why.
    Denied(String),
    /// No complete response within the timeout.
    Timeout,
    /// The response was larger than the plugin's cap, in bytes.
    TooLarge(u64),
    /// The connection failed.
    Connect(String),
    /// The request was malformed.
    InvalidRequest(String),
    /// The server broke the protocol.
    Protocol(String),
    /// The server answered with an error status (from
    /// [`Response::error_for_status`]).
    Status {
        /// The status code.
        status: u16,
        /// The start of the body, for logs.
        body: String,
    },
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Denied(m) => write!(f, "request denied: {m}"),
            Self::Timeout => f.write_str("request timed out"),
            Self::TooLarge(limit) => write!(f, "response larger than {limit} bytes"),
            Self::Connect(m) => write!(f, "connection failed: {m}"),
            Self::InvalidRequest(m) => write!(f, "invalid request: {m}"),
            Self::Protocol(m) => write!(f, "protocol error: {m}"),
            Self::Status { status, body } => write!(f, "HTTP {status}: {body}"),
        }
    }
}

impl std::error::Error for HttpError {}

impl From<wit::HttpError> for HttpError {
    fn from(error: wit::HttpError) -> Self {
        match error {
            wit::HttpError::Denied(m) => Self::Denied(m),
            wit::HttpError::Timeout => Self::Timeout,
            wit::HttpError::TooLarge(n) => Self::TooLarge(n),
            wit::HttpError::Connect(m) => Self::Connect(m),
            wit::HttpError::InvalidRequest(m) => Self::InvalidRequest(m),
            wit::HttpError::Protocol(m) => Self::Protocol(m),
        }
    }
}

/// Maps an HTTP failure to the plugin error the host acts on: 401 and 403
/// mean the login's credentials are bad, timeouts, connection failures and
/// 5xx/429 are transient, the rest are internal.
impl From<HttpError> for Error {
    fn from(error: HttpError) -> Self {
        match &error {
            HttpError::Status {
                status: 401 | 403, ..
            } => Error::BadCredentials(error.to_string()),
            HttpError::Status { status, .. } if *status == 429 || *status >= 500 => {
                Error::Transient(error.to_string())
            }
            HttpError::Timeout | HttpError::Connect(_) => Error::Transient(error.to_string()),
            _ => Error::Internal(error.to_string()),
        }
    }
}

/// A request being built.
#[derive(Debug, Clone)]
#[must_use = "a request does nothing until it is sent"]
pub struct Request {
    inner: wit::Request,
    build_error: Option<String>,
}

impl Request {
    /// A request with `method` to `url`.
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        Self {
            inner: wit::Request {
                method,
                url: url.into(),
                headers: Vec::new(),
                body: None,
                timeout_ms: None,
            },
            build_error: None,
        }
    }

    /// A `GET` request.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new(Method::Get, url)
    }

    /// A `POST` request.
    pub fn post(url: impl Into<String>) -> Self {
        Self::new(Method::Post, url)
    }

    /// A `PUT` request.
    pub fn put(url: impl Into<String>) -> Self {
        Self::new(Method::Put, url)
    }

    /// A `DELETE` request.
    pub fn delete(url: impl Into<String>) -> Self {
        Self::new(Method::Delete, url)
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.inner.headers.push((name.into(), value.into()));
        self
    }

    /// Adds `Authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", format!("Bearer {token}"))
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.inner.body = Some(body.into());
        self
    }

    /// Sets a JSON body and its content type.
    pub fn json<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => {
                self.inner.body = Some(body);
                self.header("content-type", "application/json")
            }
            Err(error) => {
                self.build_error = Some(format!("cannot encode JSON body: {error}"));
                self
            }
        }
    }

    /// Sets a form-encoded body (`application/x-www-form-urlencoded`).
    pub fn form(mut self, fields: &[(&str, &str)]) -> Self {
        let body = fields
            .iter()
            .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        self.inner.body = Some(body.into_bytes());
        self.header("content-type", "application/x-www-form-urlencoded")
    }

    /// Limits how long the whole exchange may take. The host caps this at
    /// its own maximum.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.inner.timeout_ms = Some(timeout.as_millis().try_into().unwrap_or(u32::MAX));
        self
    }

    /// Sends the request and waits for the whole response.
    pub fn send(self) -> Result<Response, HttpError> {
        if let Some(error) = self.build_error {
            return Err(HttpError::InvalidRequest(error));
        }
        wit::send(&self.inner)
            .map(Response)
            .map_err(HttpError::from)
    }
}

fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// A complete response.
#[derive(Debug, Clone)]
pub struct Response(wit::Response);

impl Response {
    /// The status code.
    pub fn status(&self) -> u16 {
        self.0.status
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.0
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All headers, in order.
    pub fn headers(&self) -> &[(String, String)] {
        &self.0.headers
    }

    /// The body.
    pub fn bytes(&self) -> &[u8] {
        &self.0.body
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.0.body)
            .map_err(|e| Error::internal(format!("response is not the expected JSON: {e}")))
    }

    /// Turns a 4xx or 5xx status into [`HttpError::Status`].
    pub fn error_for_status(self) -> Result<Self, HttpError> {
        if self.0.status >= 400 {
            let mut body = self.text();
            body.truncate(200);
            Err(HttpError::Status {
                status: self.0.status,
                body,
            })
        } else {
            Ok(self)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoding_escapes_reserved_characters() {
        // Spaces become '+', reserved characters are percent-encoded.
        assert_eq!(form_encode("a b&c=d/é"), "a+b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn unauthorized_status_maps_to_bad_credentials() {
        // A 401 means the login must be renewed, not retried.
        let error = Error::from(HttpError::Status {
            status: 401,
            body: String::new(),
        });
        assert!(matches!(error, Error::BadCredentials(_)));
        // A 503 is worth retrying.
        let error = Error::from(HttpError::Status {
            status: 503,
            body: String::new(),
        });
        assert!(matches!(error, Error::Transient(_)));
    }
}
