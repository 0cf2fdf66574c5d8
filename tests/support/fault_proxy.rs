//! A proxy between the host and Synapse that fails some requests on
//! purpose: a rate limit with `retry_after_ms`, a 500, and a dropped
//! connection, before the request reaches Synapse or, for message sends,
//! after (so the host never learns that its message went through).
//!
//! Once armed, every third request fails, the faults taking turns; the
//! others pass through untouched. Unarmed, it is a recording proxy: every
//! request it saw is kept ([`FaultProxy::seen`]), so a test can count the
//! calls a host made or check where their tokens went.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// A fault the proxy injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 429 `M_LIMIT_EXCEEDED` with `retry_after_ms`.
    RateLimited,
    /// 500 from a failing homeserver.
    ServerError,
    /// The connection drops before the request is forwarded.
    DroppedBefore,
    /// The request is forwarded (a message is sent), then the connection
    /// drops before the answer.
    DroppedAfter,
}

const FAULTS: [Fault; 4] = [
    Fault::RateLimited,
    Fault::ServerError,
    Fault::DroppedBefore,
    Fault::DroppedAfter,
];

/// The running proxy.
pub struct FaultProxy {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<ProxyState>,
}

struct ProxyState {
    upstream: String,
    /// Rewrites the upstream's base URL in answers to the proxy's own, so
    /// a client follows links (e.g. a discovery document's endpoints)
    /// through the proxy.
    rewrite_to: std::sync::OnceLock<String>,
    http: reqwest::Client,
    requests: AtomicUsize,
    armed: std::sync::atomic::AtomicBool,
    /// The homeserver is "down": every request fails to connect.
    down: std::sync::atomic::AtomicBool,
    injected: std::sync::Mutex<Vec<(Fault, String)>>,
    seen: std::sync::Mutex<Vec<Seen>>,
}

/// A request the proxy saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Its method.
    pub method: String,
    /// Its path and query string.
    pub path_and_query: String,
    /// Whether it had an `Authorization` header.
    pub authorization: bool,
    /// The bearer token it carried, if any (a test proxy may keep it).
    pub bearer: Option<String>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (Synapse's base URL).
    pub async fn start(upstream: &str) -> Self {
        Self::start_with(upstream, false).await
    }

    /// Starts a proxy to `upstream` that also rewrites the upstream's base
    /// URL in its answers to the proxy's, so that links in them (an OAuth
    /// discovery document's endpoints) lead back through it.
    pub async fn start_rewriting(upstream: &str) -> Self {
        Self::start_with(upstream, true).await
    }

    async fn start_with(upstream: &str, rewrite: bool) -> Self {
        // A proxy may start before any host, which would otherwise install
        // reqwest's TLS provider.
        weft_host::init_tls();
        let state = Arc::new(ProxyState {
            rewrite_to: std::sync::OnceLock::new(),
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            requests: AtomicUsize::new(0),
            armed: std::sync::atomic::AtomicBool::new(false),
            down: std::sync::atomic::AtomicBool::new(false),
            injected: std::sync::Mutex::default(),
            seen: std::sync::Mutex::default(),
        });
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(state.clone());
        let addr = crate::servers::serve(app).await;
        if rewrite {
            let _ = state.rewrite_to.set(format!("http://{addr}"));
        }
        Self { addr, state }
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts failing requests.
    pub fn arm(&self) {
        self.state.armed.store(true, Ordering::SeqCst);
    }

    /// Takes the homeserver down (every request's connection drops before
    /// it is forwarded) or brings it back.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// Every request seen so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// The faults injected so far, with the path of each request.
    pub fn injected(&self) -> Vec<(Fault, String)> {
        self.state.injected.lock().unwrap().clone()
    }
}

/// A response whose body fails at once: the client gets a broken
/// connection instead of an answer.
fn dropped() -> Response {
    let failing = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other("connection dropped by the proxy"))
    });
    Response::new(Body::from_stream(failing))
}

async fn forward(State(state): State<Arc<ProxyState>>, request: Request) -> Response {
    let armed = state.armed.load(Ordering::SeqCst);
    let n = match armed {
        true => state.requests.fetch_add(1, Ordering::SeqCst),
        // Never the third of three: passes through.
        false => 0,
    };
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    state.seen.lock().unwrap().push(Seen {
        method: request.method().to_string(),
        path_and_query: path.clone(),
        authorization: request
            .headers()
            .contains_key(axum::http::header::AUTHORIZATION),
        bearer: request
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned),
    });
    if state.down.load(Ordering::SeqCst) {
        return dropped();
    }
    let is_send = request.method() == axum::http::Method::PUT && path.contains("/send/");
    let fault = (n % 3 == 2).then(|| FAULTS[(n / 3) % FAULTS.len()]);
    // Dropping after forwarding only matters where a retry could
    // duplicate: message sends (the others are idempotent or fail the
    // same way).
    let fault = match fault {
        Some(Fault::DroppedAfter) if !is_send => Some(Fault::DroppedBefore),
        other => other,
    };
    if let Some(fault) = fault {
        state.injected.lock().unwrap().push((fault, path.clone()));
        match fault {
            Fault::RateLimited => {
                let body = serde_json::json!({
                    "errcode": "M_LIMIT_EXCEEDED", "error": "Too many requests", "retry_after_ms": 200,
                });
                return (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
            }
            Fault::ServerError => {
                let body =
                    serde_json::json!({ "errcode": "M_UNKNOWN", "error": "Internal server error" });
                return (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body)).into_response();
            }
            Fault::DroppedBefore => return dropped(),
            Fault::DroppedAfter => {}
        }
    }
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 64 << 20).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let mut upstream = state
        .http
        .request(parts.method, format!("{}{path}", state.upstream))
        .body(body);
    for (name, value) in &parts.headers {
        if name != axum::http::header::HOST {
            upstream = upstream.header(name, value);
        }
    }
    let Ok(response) = upstream.send().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    if fault == Some(Fault::DroppedAfter) {
        // Synapse has the message; the host will not hear so.
        return dropped();
    }
    let status = response.status();
    let headers = response.headers().clone();
    let mut bytes = response.bytes().await.unwrap_or_default();
    if let Some(own) = state.rewrite_to.get()
        && let Ok(text) = std::str::from_utf8(&bytes)
    {
        bytes = Bytes::from(text.replace(&state.upstream, own));
    }
    let mut answer = Response::new(Body::from(bytes));
    *answer.status_mut() = status;
    for (name, value) in &headers {
        if name != axum::http::header::TRANSFER_ENCODING
            && name != axum::http::header::CONTENT_LENGTH
        {
            answer.headers_mut().insert(name, value.clone());
        }
    }
    answer
}
