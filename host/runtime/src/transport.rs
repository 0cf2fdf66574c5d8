//! Where a plugin's outgoing HTTP request goes once every grant check has
//! passed: the network (the default), or a transport the embedder gives
//! the runtime. The test harness gives one that answers from canned
//! responses and records each request, so a plugin's tests run without a
//! network but under the same grants, size caps and deadlines.

use futures::future::BoxFuture;

/// A request that passed the plugin's grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportRequest {
    /// The method, upper case (`GET`).
    pub method: String,
    /// The URL.
    pub url: String,
    /// The plugin's headers, and the cookies its jar holds for the URL.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Option<Vec<u8>>,
}

/// What the transport answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportResponse {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// Why the transport gave no answer (the plugin sees the matching
/// `http-error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// Nothing answered at that address.
    #[error("connection failed: {0}")]
    Connect(String),
    /// The answer was not HTTP.
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// Sends plugins' requests instead of the network. The runtime still
/// applies the request's deadline and the plugin's response cap.
pub trait HttpTransport: Send + Sync + 'static {
    /// Answers `request`.
    fn send(
        &self,
        request: TransportRequest,
    ) -> BoxFuture<'static, Result<TransportResponse, TransportError>>;
}
