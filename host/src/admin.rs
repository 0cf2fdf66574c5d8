//! The admin API, for operators: load, upgrade and unload plugins, and
//! manage logins. It listens on its own address (keep it on loopback) and
//! requires the admin token. `weft plugin …` and `weft login …` call it.
//!
//! All routes are under `/_weft/admin/v1`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::api_error::{ApiError, ApiJson, ApiResult, bearer, token_matches};
use crate::logins::{BridgeState, LoginKey, LoginRecord, StateEvent, now_ms};
use crate::registry::{LoadOutcome, PluginInfo, Registry, RegistryError};
use crate::runtime::actor::ActorStatus;

/// The admin API's shared state.
#[derive(Clone)]
pub struct AdminState {
    /// The registry.
    pub registry: Arc<Registry>,
    /// The admin token.
    pub token: Arc<str>,
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
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .layer(DefaultBodyLimit::max(1 << 20))
        .with_state(state)
}

async fn require_token(
    State(state): State<AdminState>,
    headers: HeaderMap,
    request: axum::extract::Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = bearer(&headers).ok_or_else(ApiError::missing_token)?;
    if !token_matches(token, &state.token) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "M_UNKNOWN_TOKEN",
            "wrong admin token",
        ));
    }
    Ok(next.run(request).await)
}

fn registry_error(error: RegistryError) -> ApiError {
    match error {
        RegistryError::NotLoaded(_) | RegistryError::UnknownLogin(_) => {
            ApiError::not_found(error.to_string())
        }
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
        plugins: state.registry.plugins().await,
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
}

impl LoginView {
    fn new(record: LoginRecord, actor: Option<ActorStatus>) -> Self {
        Self {
            key: record.key.to_string(),
            plugin: record.key.plugin,
            id: record.key.id,
            owner: record.owner,
            remote_name: record.remote_name,
            state: record.state,
            actor,
        }
    }
}

/// # `GET /_weft/admin/v1/logins`
async fn list_logins(State(state): State<AdminState>) -> ApiResult<Json<Vec<LoginView>>> {
    let statuses = state.registry.statuses().await;
    let records = state.registry.services().logins.all()?;
    Ok(Json(
        records
            .into_iter()
            .map(|r| {
                let status = statuses.get(&r.key).cloned();
                LoginView::new(r, status)
            })
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
    let record = state.registry.services().logins.get(&key)?;
    let record = record.ok_or_else(|| ApiError::not_found(format!("no login {key}")))?;
    Ok((key, record))
}

/// # `GET /_weft/admin/v1/logins/{key}`
async fn get_login(
    State(state): State<AdminState>,
    Path(key): Path<String>,
) -> ApiResult<Json<LoginView>> {
    let (key, record) = login_record(&state, &key)?;
    let status = state.registry.login(&key).await.map(|h| h.status());
    Ok(Json(LoginView::new(record, status)))
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
    let existing = state.registry.services().logins.get(&key)?;
    let record = LoginRecord {
        key: key.clone(),
        owner: request.owner,
        remote_name: request.remote_name.unwrap_or_else(|| key.id.clone()),
        metadata: request.metadata.to_string(),
        state: BridgeState::now(StateEvent::Connecting, None, None),
        created_ms: existing.as_ref().map_or_else(now_ms, |r| r.created_ms),
    };
    let handle = state
        .registry
        .put_login(record.clone())
        .await
        .map_err(registry_error)?;
    let status = if existing.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(LoginView::new(record, handle.map(|h| h.status()))),
    ))
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
    let handle = state.registry.login(&key).await.ok_or_else(|| {
        ApiError::not_found(format!(
            "login {key} is not running (is its plugin loaded?)"
        ))
    })?;
    handle.resume();
    Ok(Json(LoginView::new(record, Some(handle.status()))))
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
        .registry
        .delete_login(&key, query.logout)
        .await
        .map_err(registry_error)?;
    Ok(Json(
        serde_json::json!({ "logout_error": logout_error.map(|e| e.to_string()) }),
    ))
}
