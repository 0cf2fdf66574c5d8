//! The application-service API the homeserver calls, and the HTTP server
//! it shares with the provisioning API.
//!
//! Every `/_matrix/app/v1` request must carry the registration's hs_token
//! as `Authorization: Bearer` (compared in constant time); a request
//! without it gets 401, a wrong one 403, and nothing is stored.
//!
//! A transaction is answered once its events are stored (see
//! [`crate::bridge::from_matrix`]), not once they are handled: a slow
//! connector never holds up the homeserver's queue.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use ruma::UserId;
use serde_json::{Value, json};

use crate::api_error::{ApiError, ApiJson, ApiResult, bearer, token_matches};
use crate::bridge::Bridge;
use crate::bridge::from_matrix::Transaction;

/// The appservice API's state.
#[derive(Clone)]
pub struct AppserviceState {
    /// The bridge.
    pub bridge: Arc<Bridge>,
    /// The token the homeserver presents.
    pub hs_token: Arc<str>,
}

/// The appservice and provisioning router.
pub fn router(
    bridge: Arc<Bridge>,
    hs_token: &str,
    max_body_bytes: usize,
    token_auth: Arc<crate::token_auth::TokenAuth>,
) -> Router {
    let state = AppserviceState {
        bridge: bridge.clone(),
        hs_token: hs_token.into(),
    };
    let appservice = Router::new()
        .route(
            "/_matrix/app/v1/transactions/{txn_id}",
            put(push_transaction),
        )
        .route("/_matrix/app/v1/users/{user_id}", get(query_user))
        .route("/_matrix/app/v1/rooms/{alias}", get(query_room))
        .route("/_matrix/app/v1/ping", post(ping))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            require_hs_token,
        ))
        .with_state(state);
    appservice
        .merge(crate::provisioning::router(bridge, token_auth))
        .layer(DefaultBodyLimit::max(max_body_bytes))
}

async fn require_hs_token(
    State(state): State<AppserviceState>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(token) = bearer(&headers) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "M_UNAUTHORIZED",
            "missing hs_token",
        ));
    };
    if !token_matches(token, &state.hs_token) {
        tracing::warn!("an appservice request with a wrong hs_token was refused");
        return Err(ApiError::forbidden("wrong hs_token"));
    }
    Ok(next.run(request).await)
}

/// # `PUT /_matrix/app/v1/transactions/{txnId}`
///
/// A retry of a transaction (or a new one reusing its id, as Synapse does
/// after a restart) is stored again: events already stored are recognised
/// by their ids and skipped.
async fn push_transaction(
    State(state): State<AppserviceState>,
    Path(txn_id): Path<String>,
    ApiJson(transaction): ApiJson<Transaction>,
) -> ApiResult<Json<Value>> {
    // A storage failure means the events were not stored: a 500 makes the
    // homeserver retry.
    state
        .bridge
        .accept_transaction(&txn_id, transaction)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(json!({})))
}

/// # `GET /_matrix/app/v1/users/{userId}`
///
/// The bot and ghosts of loaded connectors exist (they are registered on
/// the spot); any other user in no namespace of ours is not.
async fn query_user(
    State(state): State<AppserviceState>,
    Path(user_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let user = UserId::parse(user_id.as_str()).map_err(|_| ApiError::not_found("not a user id"))?;
    if !state.bridge.is_ours(&user) {
        return Err(ApiError::not_found("not a user of this bridge"));
    }
    state
        .bridge
        .register(&user)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(json!({})))
}

/// # `GET /_matrix/app/v1/rooms/{roomAlias}`
///
/// The bridge claims no aliases.
async fn query_room(Path(_alias): Path<String>) -> ApiResult<Json<Value>> {
    Err(ApiError::not_found("this bridge has no room aliases"))
}

/// # `POST /_matrix/app/v1/ping`
async fn ping() -> Json<Value> {
    Json(json!({}))
}
