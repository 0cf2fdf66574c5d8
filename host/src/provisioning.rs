//! The provisioning API under `/_matrix/provision/v3`, shaped like
//! bridgev2's so that existing Matrix clients can drive logins.
//!
//! Authentication: `Authorization: Bearer <token>`. The shared secret
//! (compared in constant time) lets its holder act as the `?user_id=`
//! given. Any other token is the user's own: an OAuth token introspected
//! at `[oauth] issuer`, or a Matrix access token checked with `/whoami`
//! ([`crate::token_auth`] caches, coalesces and rate-limits the checks).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use ruma::{OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::api_error::{ApiError, ApiResult, bearer, token_matches};
use crate::bridge::Bridge;
use crate::login_process::{ProcessError, Progress, StepInput, StepView};
use crate::logins::{BridgeState, LoginKey};
use crate::token_auth::{Freshness, TokenAuth};

/// The provisioning API's state.
#[derive(Clone)]
pub struct ProvisioningState {
    /// The bridge.
    pub bridge: Arc<Bridge>,
    auth: Arc<TokenAuth>,
}

/// The Matrix user a request acts as.
#[derive(Clone)]
struct ActingUser(OwnedUserId);

/// The largest request body the provisioning API reads.
const MAX_BODY_BYTES: usize = 1 << 20;

/// The provisioning router; `auth` checks users' own tokens.
pub fn router(bridge: Arc<Bridge>, auth: Arc<TokenAuth>) -> Router {
    let state = ProvisioningState { bridge, auth };
    Router::new()
        .route("/_matrix/provision/v3/whoami", get(whoami_handler))
        .route("/_matrix/provision/v3/login/flows", get(login_flows))
        .route(
            "/_matrix/provision/v3/login/start/{flow_id}",
            post(login_start),
        )
        .route(
            "/_matrix/provision/v3/login/step/{process_id}/{step_id}/{step_type}",
            post(login_step),
        )
        .route(
            "/_matrix/provision/v3/login/cancel/{process_id}",
            post(login_cancel),
        )
        .route("/_matrix/provision/v3/logins", get(list_logins))
        .route("/_matrix/provision/v3/logout/{login_id}", post(logout))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        // Login steps carry a few fields, or a browser's token cache for
        // cookie steps; a megabyte is ample. (Inner limits win over the
        // appservice server's larger one.) A declared length over it is
        // refused before authentication, on every endpoint.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(
            MAX_BODY_BYTES as u64,
            crate::api_error::refuse_oversized,
        ))
        .with_state(state)
}

#[derive(Deserialize)]
struct UserQuery {
    user_id: Option<String>,
}

async fn authenticate(
    State(state): State<ProvisioningState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<UserQuery>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let config = &state.bridge.config.provisioning;
    let secret = config
        .shared_secret
        .as_deref()
        .filter(|s| s.len() >= 16 && *s != "disable");
    let Some(secret) = secret else {
        return Err(ApiError::forbidden("the provisioning API is disabled"));
    };
    let token = bearer(&headers).ok_or_else(ApiError::missing_token)?;
    let claimed = match &query.user_id {
        Some(user) => Some(
            UserId::parse(user.as_str())
                .map_err(|_| ApiError::bad_request("user_id is not a Matrix user id"))?,
        ),
        None => None,
    };
    let user = if token_matches(token, secret) {
        claimed.ok_or_else(|| ApiError::bad_request("the shared secret needs ?user_id="))?
    } else if state.auth.is_enabled() {
        // A request that changes something never rides on an old answer:
        // a token logged out a moment ago must not start a login.
        let freshness = if request.method() == Method::GET {
            Freshness::Cached
        } else {
            Freshness::Fresh
        };
        let user = state.auth.owner(token, peer.ip(), freshness).await?.user;
        if claimed.is_some_and(|c| c != user) {
            return Err(ApiError::forbidden(
                "the access token belongs to another user",
            ));
        }
        user
    } else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "M_UNKNOWN_TOKEN",
            "invalid token",
        ));
    };
    if !state.bridge.permitted(&user) {
        return Err(ApiError::forbidden(
            "you are not allowed to use this bridge",
        ));
    }
    request.extensions_mut().insert(ActingUser(user));
    Ok(next.run(request).await)
}

fn process_error(error: ProcessError) -> ApiError {
    let message = error.to_string();
    let (status, errcode) = match &error {
        ProcessError::NotFound(_) | ProcessError::UnknownFlow(_) => {
            (StatusCode::NOT_FOUND, "M_NOT_FOUND")
        }
        ProcessError::Cancelled => (StatusCode::GONE, "FI.MAU.BRIDGE.LOGIN_CANCELLED"),
        ProcessError::TimedOut => (StatusCode::GONE, "FI.MAU.BRIDGE.LOGIN_TIMED_OUT"),
        ProcessError::AlreadyFinished => (StatusCode::GONE, "FI.MAU.BRIDGE.LOGIN_ALREADY_FINISHED"),
        ProcessError::WrongStep { .. } => (StatusCode::BAD_REQUEST, "M_BAD_STATE"),
        ProcessError::TooManyLogins(_) => (StatusCode::FORBIDDEN, "FI.MAU.BRIDGE.TOO_MANY_LOGINS"),
        ProcessError::TooManyProcesses(_) | ProcessError::Busy => {
            return ApiError::new(StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED", message)
                .with_retry_after(Duration::from_secs(30));
        }
        ProcessError::LoginConflict => (StatusCode::CONFLICT, "FI.MAU.BRIDGE.LOGIN_CONFLICT"),
        ProcessError::Plugin(_) | ProcessError::Retry(_) | ProcessError::Failed(_) => {
            (StatusCode::BAD_REQUEST, "FI.MAU.BRIDGE.LOGIN_FAILED")
        }
        ProcessError::Crashed(_) => (StatusCode::BAD_GATEWAY, "FI.MAU.BRIDGE.LOGIN_FAILED"),
        ProcessError::Registry(_) | ProcessError::Login(_) => return ApiError::internal(error),
    };
    ApiError::new(status, errcode, message)
}

#[derive(Serialize)]
struct StepResponse {
    /// The login process id (bridgev2 calls it `login_id`).
    login_id: String,
    #[serde(flatten)]
    step: StepView,
}

#[derive(Serialize)]
struct LoginView {
    id: String,
    name: String,
    network: String,
    state: StateView,
}

#[derive(Serialize)]
struct StateView {
    state_event: crate::logins::StateEvent,
    timestamp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

impl From<BridgeState> for StateView {
    fn from(state: BridgeState) -> Self {
        Self {
            state_event: state.state_event,
            timestamp: state.timestamp_ms / 1000,
            error: state.error,
            message: state.message,
        }
    }
}

/// # `GET /_matrix/provision/v3/whoami`
async fn whoami_handler(
    State(state): State<ProvisioningState>,
    Extension(ActingUser(user)): Extension<ActingUser>,
) -> ApiResult<Json<Value>> {
    let bridge = &state.bridge;
    let logins: Vec<LoginView> = bridge
        .logins
        .store
        .of_owner(user.as_str())?
        .into_iter()
        .map(|r| LoginView {
            id: r.key.to_string(),
            name: r.remote_name,
            network: r.key.plugin,
            state: r.state.into(),
        })
        .collect();
    let networks: Vec<Value> = bridge
        .registry
        .connectors()
        .iter()
        .map(|p| json!({ "id": p.id(), "displayname": p.manifest.network_name(), "version": p.version().to_string() }))
        .collect();
    Ok(Json(json!({
        "network": networks.first().cloned().unwrap_or(Value::Null),
        "networks": networks,
        "login_flows": bridge.processes.flows(),
        "homeserver": bridge.namespaces.domain,
        "bridge_bot": bridge.bot(),
        "command_prefix": "",
        "management_room": bridge.management_room(user.as_str()).map_err(ApiError::internal)?,
        "logins": logins,
    })))
}

/// # `GET /_matrix/provision/v3/login/flows`
async fn login_flows(State(state): State<ProvisioningState>) -> Json<Value> {
    Json(json!({ "flows": state.bridge.processes.flows() }))
}

#[derive(Deserialize)]
struct StartQuery {
    /// A login to replace (relogin).
    login_id: Option<String>,
}

/// # `POST /_matrix/provision/v3/login/start/{flowID}`
async fn login_start(
    State(state): State<ProvisioningState>,
    Extension(ActingUser(user)): Extension<ActingUser>,
    Path(flow): Path<String>,
    Query(query): Query<StartQuery>,
) -> ApiResult<Json<StepResponse>> {
    let relogin = match query.login_id {
        Some(id) => Some(
            LoginKey::parse(&id)
                .ok_or_else(|| ApiError::bad_request("login_id is plugin:login-id"))?,
        ),
        None => None,
    };
    let (process, step) = state
        .bridge
        .processes
        .start(user.as_str(), &flow, relogin)
        .await
        .map_err(process_error)?;
    Ok(Json(StepResponse {
        login_id: process,
        step,
    }))
}

/// # `POST /_matrix/provision/v3/login/step/{processID}/{stepID}/{stepType}`
///
/// `user_input` and `cookies` take a JSON object of field values;
/// `display_and_wait` takes no body and long-polls.
async fn login_step(
    State(state): State<ProvisioningState>,
    Extension(ActingUser(user)): Extension<ActingUser>,
    Path((process, step_id, step_type)): Path<(String, String, String)>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<Json<StepResponse>> {
    // A body over the limit (sent without a length) is a JSON 413 too.
    let body = body?;
    let processes = &state.bridge.processes;
    let current = processes
        .current(&process, user.as_str())
        .await
        .map_err(process_error)?;
    if current.kind != step_type {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "M_BAD_STATE",
            format!(
                "the current step is a `{}` step, not `{step_type}`",
                current.kind
            ),
        ));
    }
    let fields = || -> ApiResult<Vec<(String, String)>> {
        let map: BTreeMap<String, String> = serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "M_BAD_JSON",
                format!("expected a JSON object of strings: {e}"),
            )
        })?;
        Ok(map.into_iter().collect())
    };
    let progress = match step_type.as_str() {
        "user_input" => {
            processes
                .submit(
                    &process,
                    user.as_str(),
                    &step_id,
                    StepInput::UserInput(fields()?),
                )
                .await
        }
        "cookies" => {
            processes
                .submit(
                    &process,
                    user.as_str(),
                    &step_id,
                    StepInput::Cookies(fields()?),
                )
                .await
        }
        "display_and_wait" => processes.wait(&process, user.as_str(), &step_id).await,
        "complete" => Err(ProcessError::AlreadyFinished),
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown step type `{other}`"
            )));
        }
    }
    .map_err(process_error)?;
    if let Progress::Completed(done) = &progress
        && let Some(old) = &done.replaced
    {
        state
            .bridge
            .delete_login(old, false, "the login was replaced")
            .await
            .map_err(ApiError::internal)?;
    }
    Ok(Json(StepResponse {
        login_id: process,
        step: progress.step().clone(),
    }))
}

/// # `POST /_matrix/provision/v3/login/cancel/{processID}`
async fn login_cancel(
    State(state): State<ProvisioningState>,
    Extension(ActingUser(user)): Extension<ActingUser>,
    Path(process): Path<String>,
) -> ApiResult<Json<Value>> {
    state
        .bridge
        .processes
        .cancel(&process, user.as_str())
        .await
        .map_err(process_error)?;
    Ok(Json(json!({})))
}

/// # `GET /_matrix/provision/v3/logins`
async fn list_logins(
    State(state): State<ProvisioningState>,
    Extension(ActingUser(user)): Extension<ActingUser>,
) -> ApiResult<Json<Value>> {
    let ids: Vec<String> = state
        .bridge
        .logins
        .store
        .of_owner(user.as_str())?
        .into_iter()
        .map(|r| r.key.to_string())
        .collect();
    Ok(Json(json!({ "login_ids": ids })))
}

/// # `POST /_matrix/provision/v3/logout/{loginID}`
///
/// `all` logs out of every login of the user.
async fn logout(
    State(state): State<ProvisioningState>,
    Extension(ActingUser(user)): Extension<ActingUser>,
    Path(login): Path<String>,
) -> ApiResult<Json<Value>> {
    let mine = state.bridge.logins.store.of_owner(user.as_str())?;
    let keys: Vec<LoginKey> = if login == "all" {
        mine.into_iter().map(|r| r.key).collect()
    } else {
        let key = LoginKey::parse(&login)
            .ok_or_else(|| ApiError::bad_request("a login id is plugin:login-id"))?;
        if !mine.iter().any(|r| r.key == key) {
            return Err(ApiError::not_found(format!("you have no login {login}")));
        }
        vec![key]
    };
    for key in keys {
        state
            .bridge
            .delete_login(&key, true, "logged out")
            .await
            .map_err(ApiError::internal)?;
    }
    Ok(Json(json!({})))
}
