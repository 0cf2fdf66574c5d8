//! Incoming HTTP requests for a plugin's routes (the `http-handler`
//! export).
//!
//! One warm instance per plugin serves them, one request at a time. So a
//! plugin needs no locking around its KV state (two first requests for the
//! same new account cannot both create it), and a burst costs one instance
//! rather than one per request. The instance has the plugin's own KV
//! namespace (it serves no login); it is replaced after a trap and when the
//! plugin is upgraded, and dropped when the plugin is unloaded. At most
//! [`MAX_WAITING`] requests wait for it; past that the caller hears
//! [`RegistryError::Busy`] at once instead of queueing without bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::bindings::http_handler;
use crate::bindings::imports::http::Method;
use crate::instance::Instance;

/// Requests that may wait for one plugin's handler instance.
pub const MAX_WAITING: usize = 64;

/// A request for a plugin's routes, as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingRequest {
    /// The method, upper case (`GET`, `POST`, ...).
    pub method: String,
    /// The path below the mount prefix, starting with `/`.
    pub path: String,
    /// The query string without `?`.
    pub query: Option<String>,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Vec<u8>,
    /// The client's IP address.
    pub client_address: String,
    /// The SHA-1 fingerprint of the client's TLS certificate, lowercase hex.
    pub client_certificate_sha1: Option<String>,
}

/// A plugin's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingResponse {
    /// The status code.
    pub status: u16,
    /// Header names and values.
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Vec<u8>,
}

/// The method as WIT names it, or `None` for one the interface lacks.
pub(crate) fn wit_request(request: IncomingRequest) -> Option<http_handler::IncomingRequest> {
    let method = match request.method.as_str() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "PATCH" => Method::Patch,
        "DELETE" => Method::Delete,
        "OPTIONS" => Method::Options,
        _ => return None,
    };
    Some(http_handler::IncomingRequest {
        method,
        path: request.path,
        query: request.query,
        headers: request.headers,
        body: request.body,
        client_address: request.client_address,
        client_certificate_sha1: request.client_certificate_sha1,
    })
}

pub(crate) fn from_wit(response: http_handler::OutgoingResponse) -> OutgoingResponse {
    OutgoingResponse {
        status: response.status,
        headers: response.headers,
        body: response.body,
    }
}

/// One plugin's handler instance and the requests waiting for it.
#[derive(Default)]
pub(crate) struct HandlerSlot {
    pub(crate) instance: tokio::sync::Mutex<Option<Instance>>,
    waiting: AtomicUsize,
}

/// A place in a slot's queue; leaving it (however the request ends)
/// frees the place.
pub(crate) struct Waiting(Arc<HandlerSlot>);

impl HandlerSlot {
    /// Takes a place in the queue, unless [`MAX_WAITING`] are taken.
    pub(crate) fn enter(self: &Arc<Self>) -> Option<Waiting> {
        let before = self.waiting.fetch_add(1, Ordering::AcqRel);
        let place = Waiting(self.clone());
        (before < MAX_WAITING).then_some(place)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}
