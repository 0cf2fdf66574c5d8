//! Errors of the host's HTTP APIs, in Matrix's `{errcode, error}` shape.
//!
//! Client errors (4xx) go back as they are and are not logged above debug;
//! server errors (5xx) are logged in full and the client gets a generic
//! message, so internal details never leak.

use axum::Json;
use axum::extract::FromRequest;
use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error response.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The status.
    pub status: StatusCode,
    /// The Matrix-style error code, e.g. `M_FORBIDDEN`.
    pub errcode: &'static str,
    /// The message for the client.
    pub message: String,
    /// How long the client should wait before trying again, for 429s.
    pub retry_after: Option<std::time::Duration>,
}

/// `Result` with [`ApiError`].
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// An error with `status`, `errcode` and `message`.
    pub fn new(status: StatusCode, errcode: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            errcode,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Adds `retry_after_ms` to the body and a `Retry-After` header.
    pub fn with_retry_after(mut self, delay: std::time::Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    /// 400 `M_BAD_JSON` / `M_INVALID_PARAM`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_INVALID_PARAM", message)
    }

    /// 401 `M_MISSING_TOKEN` / 403 `M_FORBIDDEN`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "M_FORBIDDEN", message)
    }

    /// 401 `M_MISSING_TOKEN`.
    pub fn missing_token() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "M_MISSING_TOKEN",
            "missing access token",
        )
    }

    /// 404 `M_NOT_FOUND`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "M_NOT_FOUND", message)
    }

    /// 500 with the detail logged, not returned.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "M_UNKNOWN",
            "internal error; see the host's log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_client_error() {
            tracing::debug!(status = %self.status, errcode = self.errcode, message = %self.message, "request refused");
        }
        let mut body = json!({ "errcode": self.errcode, "error": self.message });
        if let Some(delay) = self.retry_after {
            body["retry_after_ms"] = json!(delay.as_millis() as u64);
        }
        let mut response = (self.status, Json(body)).into_response();
        if let Some(delay) = self.retry_after {
            let seconds = delay.as_secs().max(1).to_string();
            if let Ok(value) = http::HeaderValue::from_str(&seconds) {
                response
                    .headers_mut()
                    .insert(http::header::RETRY_AFTER, value);
            }
        }
        response
    }
}

impl From<weft_storage::StorageError> for ApiError {
    fn from(error: weft_storage::StorageError) -> Self {
        Self::internal(error)
    }
}

/// `axum::Json`, but a malformed body is an [`ApiError`] in the API's own
/// shape (400 `M_NOT_JSON` / `M_BAD_JSON`), and a body over the router's
/// limit is 413 `M_TOO_LARGE`.
#[derive(Debug, FromRequest)]
#[from_request(via(Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let errcode = match &rejection {
            _ if status == StatusCode::PAYLOAD_TOO_LARGE => "M_TOO_LARGE",
            JsonRejection::MissingJsonContentType(_) => "M_NOT_JSON",
            JsonRejection::JsonSyntaxError(_) => "M_NOT_JSON",
            _ => "M_BAD_JSON",
        };
        Self::new(status, errcode, rejection.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        let status = rejection.status();
        let errcode = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "M_TOO_LARGE"
        } else {
            "M_UNKNOWN"
        };
        Self::new(status, errcode, rejection.body_text())
    }
}

/// Middleware: refuses a request whose declared body is over `max` bytes
/// with 413 `M_TOO_LARGE` before any handler runs, so an endpoint that
/// reads no body does not accept a huge one in silence. (A body without a
/// declared length is cut at the router's `DefaultBodyLimit` where it is
/// read, and never read where it is not.)
pub async fn refuse_oversized(
    axum::extract::State(max): axum::extract::State<u64>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let declared = request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > max) {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "M_TOO_LARGE",
            format!("request bodies here are limited to {max} bytes"),
        )
        .into_response();
    }
    next.run(request).await
}

/// Compares a presented token with the expected one in constant time.
pub fn token_matches(presented: &str, expected: &str) -> bool {
    use subtle::ConstantTimeEq;
    presented.len() == expected.len() && bool::from(presented.as_bytes().ct_eq(expected.as_bytes()))
}

/// The bearer token of a request, if it has one.
pub fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}
