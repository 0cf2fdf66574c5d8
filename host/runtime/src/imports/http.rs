//! `weft:plugin/http`: outgoing requests under the operator's grants.
//!
//! Every request is checked before it leaves: the URL must match one of
//! the plugin's granted patterns, an IP literal on a private network needs
//! the private-networks grant (and the resolver enforces the same for
//! names), the body and headers must be sane, and the timeout never
//! exceeds what is left of the plugin's call deadline. Responses are read
//! up to the plugin's size cap and no further.

use std::time::{Duration, Instant};

use reqwest::cookie::CookieStore;
use reqwest::header::{COOKIE, HeaderName, HeaderValue, SET_COOKIE};

use crate::bindings::imports::http::{Host, HttpError, Method, Request, Response};
use crate::net::is_private;
use crate::plugin::LoadedPlugin;
use crate::runtime::Runtime;
use crate::state::PluginState;
use crate::transport::{HttpTransport, TransportError, TransportRequest};

/// Headers the host sets itself; a plugin setting them is a bad request.
const HOST_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
];

impl Host for PluginState {
    async fn send(&mut self, request: Request) -> wasmtime::Result<Result<Response, HttpError>> {
        let started = Instant::now();
        let method = request.method;
        let ctx = &self.ctx;
        let cap = ctx.plugin.capabilities.max_response_bytes;
        let result = send(
            &ctx.runtime,
            &ctx.plugin,
            request,
            self.deadline,
            cap,
            Some(&ctx.cookies),
        )
        .await;
        let outcome = match &result {
            Ok(_) => 0,
            Err(HttpError::Denied(_)) => 1,
            Err(HttpError::Timeout) => 2,
            Err(HttpError::TooLarge(_)) => 3,
            Err(HttpError::Connect(_)) => 4,
            Err(HttpError::InvalidRequest(_)) => 5,
            Err(HttpError::Protocol(_)) => 6,
        };
        // The index into `metrics::HTTP_OUTCOMES`.
        self.ctx.counters.http(outcome);
        match &result {
            Ok(response) => tracing::debug!(
                plugin = self.ctx.plugin.id(),
                ?method,
                status = response.status,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "plugin HTTP request"
            ),
            Err(error) => tracing::debug!(
                plugin = self.ctx.plugin.id(),
                ?method,
                ?error,
                "plugin HTTP request failed"
            ),
        }
        Ok(result)
    }
}

/// Sends `request` for `plugin` under its grants, before `deadline` (less
/// a reserve for the plugin to handle a timeout), reading at most `cap`
/// bytes of the response, with `cookies` if the caller has a jar. The
/// `http` import and the host's fetches of a plugin's files both go
/// through here, so both follow the same rules.
pub(crate) async fn send(
    runtime: &Runtime,
    plugin: &LoadedPlugin,
    request: Request,
    deadline: Instant,
    cap: u64,
    cookies: Option<&reqwest::cookie::Jar>,
) -> Result<Response, HttpError> {
    {
        let caps = &plugin.capabilities;
        let config = &runtime.http_config;
        let url = url::Url::parse(&request.url)
            .map_err(|e| HttpError::InvalidRequest(format!("bad URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(HttpError::InvalidRequest("only http and https URLs".into()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(HttpError::InvalidRequest(
                "credentials in URLs are refused; send them in a header".into(),
            ));
        }
        let origin = url.origin().ascii_serialization();
        if !caps.http.iter().any(|pattern| pattern.matches(&url)) {
            return Err(HttpError::Denied(format!(
                "{origin} is not granted to plugin {}",
                plugin.id()
            )));
        }
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = literal
            && is_private(ip)
            && !caps.private_networks
        {
            return Err(HttpError::Denied(format!(
                "{origin} is a private address; the operator has not granted plugin {} private networks",
                plugin.id()
            )));
        }
        if request
            .body
            .as_ref()
            .is_some_and(|b| b.len() as u64 > config.max_request_bytes)
        {
            return Err(HttpError::InvalidRequest(format!(
                "request bodies are limited to {} bytes",
                config.max_request_bytes
            )));
        }

        let asked = request
            .timeout_ms
            .map(|ms| Duration::from_millis(ms.into()));
        // Leave the plugin a tenth of its call deadline (at most a second)
        // to handle a timeout, instead of being stopped with the request.
        let reserve = (plugin.capabilities.call_deadline / 10).min(Duration::from_secs(1));
        let remaining = deadline
            .saturating_duration_since(Instant::now())
            .saturating_sub(reserve);
        let timeout = asked
            .unwrap_or(Duration::from_millis(config.default_timeout_ms))
            .min(Duration::from_millis(config.max_timeout_ms))
            .min(remaining);
        if timeout.is_zero() {
            return Err(HttpError::Timeout);
        }
        let give_up = tokio::time::Instant::now() + timeout;

        let client = runtime.http.client(caps.private_networks);
        let mut builder = client
            .request(to_reqwest(request.method), url.clone())
            .timeout(timeout);
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &request.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| HttpError::InvalidRequest(format!("bad header name `{name}`")))?;
            if HOST_HEADERS.contains(&name.as_str()) {
                return Err(HttpError::InvalidRequest(format!(
                    "the host sets the `{name}` header itself"
                )));
            }
            let value = HeaderValue::from_str(value)
                .map_err(|_| HttpError::InvalidRequest(format!("bad value for header `{name}`")))?;
            headers.append(name, value);
        }
        if let Some(value) = cookies.and_then(|jar| jar.cookies(&url)) {
            headers.append(COOKIE, value);
        }
        if let Some(transport) = &runtime.transport {
            let request = TransportRequest {
                method: to_reqwest(request.method).as_str().to_owned(),
                url: url.to_string(),
                headers: pairs(&headers),
                body: request.body,
            };
            return send_through(transport.as_ref(), request, give_up, cap, cookies, &url).await;
        }
        builder = builder.headers(headers);
        if let Some(body) = request.body {
            builder = builder.body(body);
        }
        // The exchange runs as a task of its own, not in the guest call's
        // fiber: hyper's, rustls' and the resolver's frames would
        // otherwise dirty pages of the fiber stack that every live
        // instance keeps (see `weft-teams-bench`'s memory breakdown).
        let exchange = tokio::spawn(exchange(builder, give_up, cap));
        let _abandoned = AbortOnDrop(exchange.abort_handle());
        let (response, set_cookies) = exchange
            .await
            .map_err(|e| HttpError::Protocol(format!("the request's task failed: {e}")))?;
        // Cookies count even when the body is then refused or cut short.
        if let Some(jar) = cookies {
            jar.set_cookies(&mut set_cookies.iter(), &url);
        }
        response
    }
}

/// Aborts a spawned exchange whose caller went away (a guest call past
/// its deadline, a login stopped), instead of letting it run to its
/// timeout for no one.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends the request and reads the response, up to `cap` bytes, by
/// `give_up`. Gives the response, and the `Set-Cookie` values of any
/// response that came.
async fn exchange(
    builder: reqwest::RequestBuilder,
    give_up: tokio::time::Instant,
    cap: u64,
) -> (Result<Response, HttpError>, Vec<HeaderValue>) {
    let response = match tokio::time::timeout_at(give_up, builder.send()).await {
        Err(_) => Err(HttpError::Timeout),
        Ok(sent) => sent.map_err(classify),
    };
    let response = match response {
        Ok(response) => response,
        Err(error) => return (Err(error), Vec::new()),
    };
    let set_cookies: Vec<HeaderValue> = response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .cloned()
        .collect();
    (read_body(response, give_up, cap).await, set_cookies)
}

/// The rest of an exchange once the response's head came: its body, up
/// to `cap` bytes, by `give_up`.
async fn read_body(
    mut response: reqwest::Response,
    give_up: tokio::time::Instant,
    cap: u64,
) -> Result<Response, HttpError> {
    if response.content_length().is_some_and(|len| len > cap) {
        return Err(HttpError::TooLarge(cap));
    }
    let status = response.status().as_u16();
    let headers = pairs(response.headers());
    let mut body = Vec::new();
    loop {
        let chunk = tokio::time::timeout_at(give_up, response.chunk())
            .await
            .map_err(|_| HttpError::Timeout)?
            .map_err(classify)?;
        let Some(chunk) = chunk else { break };
        if body.len() as u64 + chunk.len() as u64 > cap {
            // Stop reading: the rest never reaches memory.
            return Err(HttpError::TooLarge(cap));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// Sends `request` through the embedder's transport, under the same
/// deadline, cap and cookie jar as a request to the network.
async fn send_through(
    transport: &dyn HttpTransport,
    request: TransportRequest,
    give_up: tokio::time::Instant,
    cap: u64,
    cookies: Option<&reqwest::cookie::Jar>,
    url: &url::Url,
) -> Result<Response, HttpError> {
    let response = tokio::time::timeout_at(give_up, transport.send(request))
        .await
        .map_err(|_| HttpError::Timeout)?
        .map_err(|error| match error {
            TransportError::Connect(message) => HttpError::Connect(message),
            TransportError::Protocol(message) => HttpError::Protocol(message),
        })?;
    if response.body.len() as u64 > cap {
        return Err(HttpError::TooLarge(cap));
    }
    if let Some(jar) = cookies {
        let values: Vec<HeaderValue> = response
            .headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case(SET_COOKIE.as_str()))
            .filter_map(|(_, value)| HeaderValue::from_str(value).ok())
            .collect();
        jar.set_cookies(&mut values.iter(), url);
    }
    Ok(Response {
        status: response.status,
        headers: response.headers,
        body: response.body,
    })
}

/// Headers as (name, value) text pairs.
fn pairs(headers: &reqwest::header::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn to_reqwest(method: Method) -> reqwest::Method {
    match method {
        Method::Get => reqwest::Method::GET,
        Method::Head => reqwest::Method::HEAD,
        Method::Post => reqwest::Method::POST,
        Method::Put => reqwest::Method::PUT,
        Method::Patch => reqwest::Method::PATCH,
        Method::Delete => reqwest::Method::DELETE,
        Method::Options => reqwest::Method::OPTIONS,
    }
}

/// Sorts a reqwest error into the WIT variant. The URL is dropped from the
/// message: its query string may hold a token.
fn classify(error: reqwest::Error) -> HttpError {
    let error = error.without_url();
    let message = {
        use std::error::Error as _;
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    };
    if error.is_timeout() {
        HttpError::Timeout
    } else if error.is_connect() {
        if message.contains("private addresses") {
            HttpError::Denied(message)
        } else {
            HttpError::Connect(message)
        }
    } else if error.is_builder() || error.is_request() && message.contains("builder") {
        HttpError::InvalidRequest(message)
    } else {
        HttpError::Protocol(message)
    }
}
