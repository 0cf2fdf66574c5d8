//! The admin API, for operators: load, upgrade and unload plugins, and
//! manage logins. It listens on its own address (keep it on loopback) and
//! requires the admin token. `weft plugin …` and `weft login …` call it.
//!
//! All routes are under `/_weft/admin/v1`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use weft_runtime::{ActorStatus, LoadOutcome, PluginInfo, ProviderStatus, Registry, RegistryError};

use crate::api_error::{ApiError, ApiJson, ApiResult, bearer, token_matches};
use crate::logins::{BridgeState, LoginError, LoginKey, LoginRecord, Logins, StateEvent, now_ms};
use crate::outbox::{DeadLetter, Outbox};

/// The admin API's shared state.
#[derive(Clone)]
pub struct AdminState {
    /// The registry.
    pub registry: Arc<Registry>,
    /// Logins.
    pub logins: Arc<Logins>,
    /// The outbox, for its dead letters.
    pub outbox: Arc<Outbox>,
    /// The bridge, for its inbound queue, if there is a Matrix side.
    pub bridge: Option<Arc<crate::bridge::Bridge>>,
    /// The admin token.
    pub token: Arc<str>,
    /// OAuth tokens with `[oauth] admin-scope`, if that is set.
    pub oauth: Option<Arc<crate::token_auth::TokenAuth>>,
    /// The last load error per plugin file, from the watcher and startup.
    pub load_errors: Arc<Mutex<BTreeMap<PathBuf, String>>>,
}

/// The admin router.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route(
            "/_weft/admin/v1/plugins",
            get(list_plugins).post(load_plugin),
        )
        .route(
            "/_weft/admin/v1/plugins/{id}",
            axum::routing::delete(unload_plugin),
        )
        .route("/_weft/admin/v1/plugins/{id}/upgrade", post(upgrade_plugin))
        .route(
            "/_weft/admin/v1/logins",
            get(list_logins).post(create_login),
        )
        .route(
            "/_weft/admin/v1/logins/{key}",
            get(get_login).delete(delete_login),
        )
        .route("/_weft/admin/v1/logins/{key}/restart", post(restart_login))
        .route("/_weft/admin/v1/dead-letters", get(list_dead_letters))
        .route("/_weft/admin/v1/inbound", get(inbound))
        .route("/_weft/admin/v1/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .layer(DefaultBodyLimit::max(1 << 20))
        .layer(middleware::from_fn_with_state(
            1 << 20,
            crate::api_error::refuse_oversized,
        ))
        .with_state(state.clone())
        // The status page: bearer token or a browser session of its own.
        .merge(crate::status::router(state))
}

async fn require_token(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    request: axum::extract::Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = bearer(&headers).ok_or_else(ApiError::missing_token)?;
    if token_matches(token, &state.token) {
        return Ok(next.run(request).await);
    }
    if let Some(oauth) = &state.oauth {
        // Every admin request changes or reveals the whole host: no
        // cached answers.
        let owner = oauth
            .owner(token, peer.ip(), crate::token_auth::Freshness::Fresh)
            .await?;
        if oauth.grants_admin(&owner) {
            tracing::info!(user = %owner.user, method = %request.method(), path = %request.uri().path(), "admin request with an OAuth token");
            return Ok(next.run(request).await);
        }
        return Err(ApiError::forbidden("the token lacks the admin scope"));
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "M_UNKNOWN_TOKEN",
        "wrong admin token",
    ))
}

fn registry_error(error: RegistryError) -> ApiError {
    match error {
        RegistryError::NotLoaded(_) => ApiError::not_found(error.to_string()),
        RegistryError::Storage(e) => ApiError::internal(e),
        other => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "W_PLUGIN_REFUSED",
            other.to_string(),
        ),
    }
}

#[derive(Serialize)]
struct PluginList {
    plugins: Vec<PluginInfo>,
    /// Files in the plugins directory that failed to load, with why.
    errors: BTreeMap<String, String>,
}

/// # `GET /_weft/admin/v1/plugins`
async fn list_plugins(State(state): State<AdminState>) -> Json<PluginList> {
    let errors = state
        .load_errors
        .lock()
        .expect("load error map poisoned")
        .iter()
        .map(|(path, error)| (path.display().to_string(), error.clone()))
        .collect();
    Json(PluginList {
        plugins: state.registry.plugins(),
        errors,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadRequest {
    path: PathBuf,
}

/// # `POST /_weft/admin/v1/plugins`
///
/// Loads the plugin in `path`, or upgrades to it if its id is loaded.
async fn load_plugin(
    State(state): State<AdminState>,
    ApiJson(request): ApiJson<LoadRequest>,
) -> ApiResult<Json<LoadOutcome>> {
    state
        .registry
        .load_file(&request.path)
        .await
        .map(Json)
        .map_err(registry_error)
}

/// # `POST /_weft/admin/v1/plugins/{id}/upgrade`
async fn upgrade_plugin(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<LoadRequest>,
) -> ApiResult<Json<LoadOutcome>> {
    state
        .registry
        .upgrade_file(&id, &request.path)
        .await
        .map(Json)
        .map_err(registry_error)
}

/// # `DELETE /_weft/admin/v1/plugins/{id}`
async fn unload_plugin(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    state.registry.unload(&id).await.map_err(registry_error)?;
    Ok(Json(serde_json::json!({})))
}

/// A login as the admin API shows it: never its metadata.
#[derive(Serialize)]
struct LoginView {
    key: String,
    plugin: String,
    id: String,
    owner: String,
    remote_name: String,
    state: BridgeState,
    actor: Option<ActorStatus>,
    /// The login providers serving it now.
    providers: Vec<ProviderStatus>,
}

impl LoginView {
    fn new(record: LoginRecord, registry: &Registry) -> Self {
        let actor = registry.login(&record.key).map(|h| h.status());
        let providers = registry.providers_of(&record.key);
        Self {
            key: record.key.to_string(),
            plugin: record.key.plugin,
            id: record.key.id,
            owner: record.owner,
            remote_name: record.remote_name,
            state: record.state,
            actor,
            providers,
        }
    }
}

fn login_error(error: LoginError) -> ApiError {
    match error {
        LoginError::Unknown(_) => ApiError::not_found(error.to_string()),
        LoginError::Runtime(e) => registry_error(e),
        LoginError::Storage(e) => ApiError::internal(e),
    }
}

/// # `GET /_weft/admin/v1/logins`
async fn list_logins(State(state): State<AdminState>) -> ApiResult<Json<Vec<LoginView>>> {
    let records = state.logins.store.all()?;
    Ok(Json(
        records
            .into_iter()
            .map(|r| LoginView::new(r, &state.registry))
            .collect(),
    ))
}

fn parse_key(key: &str) -> ApiResult<LoginKey> {
    LoginKey::parse(key).ok_or_else(|| {
        ApiError::bad_request(format!("`{key}` is not a login key (plugin:login-id)"))
    })
}

/// The login named in a path, or 404.
fn login_record(state: &AdminState, key: &str) -> ApiResult<(LoginKey, LoginRecord)> {
    let key = parse_key(key)?;
    let record = state.logins.store.get(&key)?;
    let record = record.ok_or_else(|| ApiError::not_found(format!("no login {key}")))?;
    Ok((key, record))
}

/// # `GET /_weft/admin/v1/logins/{key}`
async fn get_login(
    State(state): State<AdminState>,
    Path(key): Path<String>,
) -> ApiResult<Json<LoginView>> {
    let (_, record) = login_record(&state, &key)?;
    Ok(Json(LoginView::new(record, &state.registry)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateLogin {
    plugin: String,
    id: String,
    owner: String,
    #[serde(default)]
    remote_name: Option<String>,
    /// The connector's metadata (any JSON value).
    #[serde(default)]
    metadata: serde_json::Value,
}

/// # `POST /_weft/admin/v1/logins`
///
/// Creates (or renews) a login directly, without a login process: for
/// operators and tests.
async fn create_login(
    State(state): State<AdminState>,
    ApiJson(request): ApiJson<CreateLogin>,
) -> ApiResult<(StatusCode, Json<LoginView>)> {
    if request.id.is_empty() || request.id.len() > 255 {
        return Err(ApiError::bad_request("a login id has 1 to 255 bytes"));
    }
    if !request.owner.starts_with('@') || !request.owner.contains(':') {
        return Err(ApiError::bad_request(
            "the owner must be a Matrix user id like @alice:example.org",
        ));
    }
    let key = LoginKey::new(request.plugin, request.id);
    let existing = state.logins.store.get(&key)?;
    let record = LoginRecord {
        key: key.clone(),
        owner: request.owner,
        remote_name: request.remote_name.unwrap_or_else(|| key.id.clone()),
        metadata: request.metadata.to_string(),
        state: BridgeState::now(StateEvent::Connecting, None, None),
        created_ms: existing.as_ref().map_or_else(now_ms, |r| r.created_ms),
    };
    state
        .logins
        .put(record.clone())
        .await
        .map_err(login_error)?;
    let status = if existing.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(LoginView::new(record, &state.registry))))
}

/// # `POST /_weft/admin/v1/logins/{key}/restart`
///
/// Starts a fresh instance of the login and resumes its timers: how an
/// operator brings back a login stopped in a crash loop once the cause is
/// fixed.
async fn restart_login(
    State(state): State<AdminState>,
    Path(key): Path<String>,
) -> ApiResult<Json<LoginView>> {
    let (key, record) = login_record(&state, &key)?;
    let handle = state.registry.login(&key).ok_or_else(|| {
        ApiError::not_found(format!(
            "login {key} is not running (is its plugin loaded?)"
        ))
    })?;
    handle.resume();
    Ok(Json(LoginView::new(record, &state.registry)))
}

#[derive(Deserialize)]
struct DeleteQuery {
    #[serde(default)]
    logout: bool,
}

/// # `DELETE /_weft/admin/v1/logins/{key}?logout=true`
async fn delete_login(
    State(state): State<AdminState>,
    Path(key): Path<String>,
    Query(query): Query<DeleteQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let key = parse_key(&key)?;
    let logout_error = state
        .logins
        .delete(&key, query.logout, "an operator deleted the login")
        .await
        .map_err(login_error)?;
    Ok(Json(
        serde_json::json!({ "logout_error": logout_error.map(|e| e.to_string()) }),
    ))
}

#[derive(Deserialize)]
struct DeadLetterQuery {
    #[serde(default = "default_dead_letter_limit")]
    limit: usize,
    /// Include each entry's stored content (it may hold private messages).
    #[serde(default)]
    content: bool,
}

fn default_dead_letter_limit() -> usize {
    100
}

/// # `GET /_weft/admin/v1/dead-letters?limit=&content=`
///
/// Remote events that could not be bridged, oldest first.
async fn list_dead_letters(
    State(state): State<AdminState>,
    Query(query): Query<DeadLetterQuery>,
) -> ApiResult<Json<Vec<DeadLetter>>> {
    Ok(Json(
        state
            .outbox
            .dead_letters(query.limit.min(10_000), query.content)?,
    ))
}

/// # `GET /_weft/admin/v1/metrics`
///
/// Prometheus metrics ([`crate::metrics`]).
async fn metrics(State(state): State<AdminState>) -> ApiResult<Response> {
    let sources = crate::metrics::Sources {
        registry: state.registry.clone(),
        logins: state.logins.clone(),
        outbox: state.outbox.clone(),
        bridge: state.bridge.clone(),
    };
    let text = crate::metrics::render(&sources).map_err(ApiError::internal)?;
    Ok(axum::response::IntoResponse::into_response((
        [(http::header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        text,
    )))
}

/// # `GET /_weft/admin/v1/inbound?limit=`
///
/// The Matrix side's inbound queue: how many events wait in each room,
/// and the events that could not be handled (without their content).
async fn inbound(
    State(state): State<AdminState>,
    Query(query): Query<DeadLetterQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let Some(bridge) = &state.bridge else {
        return Err(ApiError::not_found("this host has no Matrix side"));
    };
    Ok(Json(serde_json::json!({
        "pending": bridge.inbound_pending()?,
        "dead_letters": bridge.inbound_dead_letters(query.limit.min(10_000))?,
    })))
}
