//! Plugins' HTTP routes (the `http-handler` export) on the public
//! listener.
//!
//! The operator mounts a plugin under a prefix (`[plugin.<id>.routes]
//! prefix = "/brmble"`). The host owns everything about the transport: it
//! rate-limits each client address, reads at most `max-body-bytes` of the
//! body (413 past that, before the plugin sees anything), gives the plugin
//! its call deadline (504 past that), caps the response, and turns plugin
//! failures into JSON errors. The runtime serves one request at a time per
//! plugin (`weft_runtime::handler`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use weft_runtime::connector::PluginError;
use weft_runtime::handler::IncomingRequest;
use weft_runtime::{PluginGrants, Registry, RegistryError, RoutesGrant};

use crate::api_error::ApiError;
use tls::ClientCertificate;

mod tls;

/// How long a request may wait for the plugin's instance, on top of the
/// call itself (requests are served one at a time).
const QUEUE_WAIT: Duration = Duration::from_secs(10);

/// How long a client may take to send its body.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Response headers a plugin may not set: the transport's own.
const RESERVED_HEADERS: &[&str] = &[
    "connection",
    "content-length",
    "transfer-encoding",
    "keep-alive",
    "upgrade",
    "trailer",
    // Not the plugin's to set on the host's origin.
    "set-cookie",
    "service-worker-allowed",
    "content-security-policy",
];

/// One mounted plugin.
struct Mount {
    registry: Arc<Registry>,
    plugin: String,
    grant: RoutesGrant,
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

/// Checks the operator's route grants: prefixes that are paths of their
/// own, not the host's, and not shared by two plugins.
pub fn check(grants: &BTreeMap<String, PluginGrants>) -> anyhow::Result<()> {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for (plugin, routes) in grants
        .iter()
        .filter_map(|(id, g)| g.routes.as_ref().map(|r| (id, r)))
    {
        let prefix = routes.prefix.as_str();
        let valid = prefix.starts_with('/')
            && prefix.len() > 1
            && !prefix.ends_with('/')
            && prefix[1..].split('/').all(|segment| {
                !segment.is_empty()
                    && segment != "."
                    && segment != ".."
                    && segment
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-._~".contains(c))
            });
        if !valid {
            anyhow::bail!(
                "[plugin.{plugin}.routes] prefix `{prefix}`: use a path like `/{plugin}` (letters, digits, -._~ segments, no trailing slash)"
            );
        }
        let first = prefix.split('/').nth(1).unwrap_or_default();
        if ["_matrix", "login", "_weft"].contains(&first) {
            anyhow::bail!(
                "[plugin.{plugin}.routes] prefix `{prefix}` is under the host's own `/{first}`"
            );
        }
        if routes.requests_per_minute == 0 {
            anyhow::bail!("[plugin.{plugin}.routes] requests-per-minute must be at least 1");
        }
        for (other_prefix, other) in &seen {
            let nested = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}/"));
            if nested(prefix, other_prefix) || nested(other_prefix, prefix) {
                anyhow::bail!(
                    "[plugin.{plugin}.routes] prefix `{prefix}` overlaps [plugin.{other}.routes] prefix `{other_prefix}`"
                );
            }
        }
        seen.insert(prefix.to_owned(), plugin.clone());
    }
    Ok(())
}

/// The routes of every plugin the operator mounted on the plain public
/// listener (those with `tls` are served only on their own TLS listener,
/// [`serve_tls`]). A plugin that is not loaded (yet) answers 503.
pub fn router(registry: &Arc<Registry>, grants: &BTreeMap<String, PluginGrants>) -> Router {
    grants
        .iter()
        .filter_map(|(id, g)| g.routes.as_ref().map(|r| (id, r)))
        .filter(|(_, grant)| grant.tls.is_none())
        .fold(Router::new(), |router, (plugin, grant)| {
            router.merge(mount(registry, plugin, grant))
        })
}

/// Starts a TLS listener for each plugin whose routes have `tls`; returns
/// each plugin's bound address and accept loop.
pub async fn serve_tls(
    registry: &Arc<Registry>,
    grants: &BTreeMap<String, PluginGrants>,
    shutdown: &tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Vec<(String, SocketAddr, tokio::task::JoinHandle<()>)>> {
    let mut listeners = Vec::new();
    for (plugin, grant) in grants
        .iter()
        .filter_map(|(id, g)| g.routes.as_ref().map(|r| (id, r)))
    {
        let Some(tls) = &grant.tls else { continue };
        let router = mount(registry, plugin, grant);
        let (addr, task) = tls::serve(plugin, tls, router, shutdown.clone()).await?;
        tracing::info!(%plugin, %addr, "plugin routes listening with TLS");
        listeners.push((plugin.clone(), addr, task));
    }
    Ok(listeners)
}

/// The routes of one plugin under its prefix.
fn mount(registry: &Arc<Registry>, plugin: &str, grant: &RoutesGrant) -> Router {
    let per_minute = NonZeroU32::new(grant.requests_per_minute).unwrap_or(NonZeroU32::MIN);
    let mount = Arc::new(Mount {
        registry: registry.clone(),
        plugin: plugin.to_owned(),
        grant: grant.clone(),
        limiter: RateLimiter::keyed(Quota::per_minute(per_minute)),
    });
    let prefix = grant.prefix.clone();
    Router::new()
        .route(&prefix, axum::routing::any(serve).with_state(mount.clone()))
        .route(
            &format!("{prefix}/{{*rest}}"),
            axum::routing::any(serve).with_state(mount),
        )
}

/// The address a client is counted under: an IPv6 client by its /64, as
/// one host usually has a whole /64 to pick addresses from.
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let segments = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(
                segments[0],
                segments[1],
                segments[2],
                segments[3],
                0,
                0,
                0,
                0,
            ))
        }
        IpAddr::V6(v6) => IpAddr::V4(v6.to_ipv4_mapped().expect("checked above")),
        v4 => v4,
    }
}

/// Rate-limit entries kept before those of idle clients are dropped.
const TRACKED_CLIENTS: usize = 10_000;

async fn serve(
    State(mount): State<Arc<Mount>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    certificate: Option<Extension<ClientCertificate>>,
    request: Request,
) -> Response {
    let certificate = certificate.and_then(|Extension(ClientCertificate(sha1))| sha1);
    match handle(&mount, peer, certificate, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn handle(
    mount: &Mount,
    peer: SocketAddr,
    certificate: Option<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let client = client_key(peer.ip());
    if mount.limiter.len() > TRACKED_CLIENTS {
        mount.limiter.retain_recent();
    }
    if let Err(not_until) = mount.limiter.check_key(&client) {
        let wait = not_until.wait_time_from(governor::clock::Clock::now(
            &governor::clock::DefaultClock::default(),
        ));
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "M_LIMIT_EXCEEDED",
            "too many requests from this address",
        )
        .with_retry_after(wait.max(Duration::from_secs(1))));
    }
    let (parts, body) = request.into_parts();
    let path = parts
        .uri
        .path()
        .strip_prefix(mount.grant.prefix.as_str())
        .unwrap_or_default();
    let path = if path.is_empty() { "/" } else { path }.to_owned();
    let headers = parts
        .headers
        .iter()
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect();
    let read = Limited::new(body, mount.grant.max_body_bytes).collect();
    let read = tokio::time::timeout(BODY_TIMEOUT, read)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "M_UNKNOWN",
                "the body did not arrive in time",
            )
        })?;
    let body = match read {
        Ok(collected) => collected.to_bytes().to_vec(),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "M_TOO_LARGE",
                format!(
                    "the body is larger than {} bytes",
                    mount.grant.max_body_bytes
                ),
            ));
        }
        Err(error) => {
            return Err(ApiError::bad_request(format!(
                "the body did not arrive: {error}"
            )));
        }
    };
    let request = IncomingRequest {
        method: parts.method.as_str().to_owned(),
        path,
        query: parts.uri.query().map(str::to_owned),
        headers,
        body,
        client_address: peer.ip().to_string(),
        client_certificate_sha1: certificate,
    };
    let plugin = mount.registry.plugin(&mount.plugin);
    let deadline = plugin
        .as_ref()
        .map_or(Duration::ZERO, |p| p.capabilities.call_deadline)
        + QUEUE_WAIT;
    // The call runs to its end whatever happens to this request (a client
    // that hangs up, the timeout below): a call cut off half-way would
    // leave the plugin's work half done and its instance unusable.
    let registry = mount.registry.clone();
    let plugin_id = mount.plugin.clone();
    let call = tokio::spawn(async move { registry.handle_http(&plugin_id, request).await });
    let outcome = tokio::time::timeout(deadline, call)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "M_UNKNOWN",
                "the plugin did not answer in time",
            )
        })?
        .map_err(ApiError::internal)?;
    match outcome {
        Ok(Ok(response)) => Ok(to_response(mount, response)),
        Ok(Err(error)) => Err(plugin_failure(&mount.plugin, error)),
        Err(error) => Err(registry_failure(error)),
    }
}

fn to_response(mount: &Mount, response: weft_runtime::handler::OutgoingResponse) -> Response {
    let Ok(status) = StatusCode::from_u16(response.status) else {
        tracing::warn!(plugin = %mount.plugin, status = response.status, "a route answered with an invalid status");
        return ApiError::internal("the plugin's answer was invalid").into_response();
    };
    if response.body.len() > mount.grant.max_response_bytes {
        tracing::warn!(plugin = %mount.plugin, bytes = response.body.len(), "a route's answer is larger than max-response-bytes");
        return ApiError::internal("the plugin's answer was too large").into_response();
    }
    let mut built = Response::new(Body::from(response.body));
    *built.status_mut() = status;
    let headers = built.headers_mut();
    for (name, value) in response.headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) else {
            tracing::debug!(plugin = %mount.plugin, header = %name, "dropping an invalid response header");
            continue;
        };
        if RESERVED_HEADERS.contains(&name.as_str()) {
            continue;
        }
        headers.append(name, value);
    }
    headers
        .entry("cache-control")
        .or_insert(HeaderValue::from_static("no-store"));
    // The routes share an origin with the host's login pages: whatever a
    // plugin answers runs nothing and reaches nothing there.
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static("sandbox; default-src 'none'; frame-ancestors 'none'"),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    built
}

fn plugin_failure(plugin: &str, error: PluginError) -> ApiError {
    match error {
        PluginError::InvalidInput(message) => ApiError::bad_request(message),
        PluginError::BadCredentials(message) => {
            ApiError::new(StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN", message)
        }
        PluginError::Transient(message) => {
            tracing::warn!(%plugin, %message, "a route failed for now");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "M_UNAVAILABLE",
                "temporarily unavailable; try again later",
            )
            .with_retry_after(Duration::from_secs(5))
        }
        PluginError::Unsupported(_) => ApiError::not_found("no such route"),
        PluginError::Internal(message) => {
            ApiError::internal(format_args!("plugin {plugin}: {message}"))
        }
    }
}

fn registry_failure(error: RegistryError) -> ApiError {
    match error {
        RegistryError::NotLoaded(plugin) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "M_UNAVAILABLE",
            format!("plugin {plugin} is not loaded"),
        )
        .with_retry_after(Duration::from_secs(5)),
        RegistryError::Busy(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "M_LIMIT_EXCEEDED",
            "too many requests are waiting; try again shortly",
        )
        .with_retry_after(Duration::from_secs(1)),
        RegistryError::Method(method) => ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "M_UNRECOGNIZED",
            format!("method {method} is not served"),
        ),
        RegistryError::NoRoutes(plugin) => {
            ApiError::not_found(format!("plugin {plugin} serves no routes"))
        }
        other => ApiError::internal(other),
    }
}
