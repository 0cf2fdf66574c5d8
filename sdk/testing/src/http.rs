//! The fake HTTP layer: canned responses by method and URL, and a record
//! of every request the plugin sent.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use weft_runtime::transport::{HttpTransport, TransportError, TransportRequest, TransportResponse};

/// A canned response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// How long the "server" takes to answer (`None`: at once).
    pub delay: Option<Duration>,
}

impl Reply {
    /// An empty response with `status`.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            delay: None,
        }
    }

    /// A JSON response.
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Self::status(status)
            .header("content-type", "application/json")
            .body(body.to_string())
    }

    /// A plain-text response.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self::status(status)
            .header("content-type", "text/plain; charset=utf-8")
            .body(body.into())
    }

    /// A response that never comes: the plugin's request times out.
    pub fn hang() -> Self {
        Self::status(504).after(Duration::from_secs(24 * 3600))
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Answers after `delay`.
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }
}

/// A request the plugin sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// The method, upper case.
    pub method: String,
    /// The full URL.
    pub url: String,
    /// The headers, as sent (the host's cookie header included).
    pub headers: Vec<(String, String)>,
    /// The body, if any.
    pub body: Option<Vec<u8>>,
}

impl RecordedRequest {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The URL's path.
    pub fn path(&self) -> String {
        url::Url::parse(&self.url)
            .map(|u| u.path().to_owned())
            .unwrap_or_default()
    }

    /// The first value of query parameter `name`.
    pub fn query(&self, name: &str) -> Option<String> {
        let url = url::Url::parse(&self.url).ok()?;
        url.query_pairs()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.into_owned())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(self.body.as_deref().unwrap_or_default()).into_owned()
    }

    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(self.body.as_deref().unwrap_or_default())
            .unwrap_or(serde_json::Value::Null)
    }
}

type Responder = Arc<dyn Fn(&RecordedRequest) -> Reply + Send + Sync>;

struct Route {
    method: String,
    url: String,
    respond: Responder,
    /// How many more times it answers (`None`: always).
    remaining: Option<usize>,
}

impl Route {
    /// A route's URL matches the request's exactly, or, when the route's
    /// has no query, the request's without its query.
    fn matches(&self, request: &RecordedRequest) -> bool {
        if self.remaining == Some(0) || !self.method.eq_ignore_ascii_case(&request.method) {
            return false;
        }
        if self.url == request.url {
            return true;
        }
        !self.url.contains('?')
            && request
                .url
                .split_once('?')
                .is_some_and(|(base, _)| base == self.url)
    }
}

#[derive(Default)]
struct State {
    routes: Vec<Route>,
    requests: Vec<RecordedRequest>,
    unanswered: VecDeque<RecordedRequest>,
}

/// The fake network a harness's plugins see. Cheap to clone; clones share
/// routes and records.
///
/// Routes added later take precedence, so a test can override an answer
/// for one step of its story. A request no route answers fails as a
/// connection error (the plugin sees `http-error::connect`), and is kept
/// in [`unanswered`](Self::unanswered).
#[derive(Clone, Default)]
pub struct FakeHttp {
    state: Arc<Mutex<State>>,
}

impl FakeHttp {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake HTTP state poisoned")
    }

    fn add(&self, method: &str, url: &str, remaining: Option<usize>, respond: Responder) {
        // Written as the runtime writes request URLs (`https://a.test`
        // becomes `https://a.test/`), so both compare equal.
        let url = url::Url::parse(url).map_or_else(|_| url.to_owned(), |u| u.to_string());
        self.lock().routes.push(Route {
            method: method.to_owned(),
            url,
            respond,
            remaining,
        });
    }

    /// Answers every `method` request to `url` with `reply`.
    pub fn on(&self, method: &str, url: &str, reply: Reply) {
        self.add(method, url, None, Arc::new(move |_| reply.clone()));
    }

    /// Answers the next `method` request to `url` with `reply`, once.
    pub fn once(&self, method: &str, url: &str, reply: Reply) {
        self.add(method, url, Some(1), Arc::new(move |_| reply.clone()));
    }

    /// Answers every `method` request to `url` with what `respond` makes
    /// of it.
    pub fn on_fn(
        &self,
        method: &str,
        url: &str,
        respond: impl Fn(&RecordedRequest) -> Reply + Send + Sync + 'static,
    ) {
        self.add(method, url, None, Arc::new(respond));
    }

    /// Every request sent so far, in order (answered or not).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// The requests sent so far to URLs that start with `prefix`.
    pub fn requests_to(&self, prefix: &str) -> Vec<RecordedRequest> {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.url.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// The requests no route answered.
    pub fn unanswered(&self) -> Vec<RecordedRequest> {
        self.lock().unanswered.iter().cloned().collect()
    }

    /// Forgets the requests recorded so far (the routes stay).
    pub fn clear_requests(&self) {
        let mut state = self.lock();
        state.requests.clear();
        state.unanswered.clear();
    }
}

impl HttpTransport for FakeHttp {
    fn send(
        &self,
        request: TransportRequest,
    ) -> BoxFuture<'static, Result<TransportResponse, TransportError>> {
        let recorded = RecordedRequest {
            method: request.method,
            url: request.url,
            headers: request.headers,
            body: request.body,
        };
        let respond = {
            let mut state = self.lock();
            state.requests.push(recorded.clone());
            let route = state.routes.iter_mut().rev().find(|r| r.matches(&recorded));
            match route {
                Some(route) => {
                    if let Some(remaining) = &mut route.remaining {
                        *remaining -= 1;
                    }
                    Some(route.respond.clone())
                }
                None => {
                    state.unanswered.push_back(recorded.clone());
                    None
                }
            }
        };
        // Called without the lock: a responder may add routes.
        let reply = respond.map(|respond| respond(&recorded));
        Box::pin(async move {
            let Some(reply) = reply else {
                return Err(TransportError::Connect(format!(
                    "weft-testing: no canned response for {} {}",
                    recorded.method, recorded.url
                )));
            };
            if let Some(delay) = reply.delay {
                tokio::time::sleep(delay).await;
            }
            Ok(TransportResponse {
                status: reply.status,
                headers: reply.headers,
                body: reply.body,
            })
        })
    }
}
