//! The echo service's HTTP API.
//!
//! - `POST /api/login`, `/api/logout`, `GET /api/me`: password sessions.
//! - `/api/device-code…`: the device-code login.
//! - `GET /api/chats`: the user's chats.
//! - `GET /api/events?after=&limit=`: the activity log after a cursor
//!   (messages expanded), with `latest`, the newest position.
//! - `GET /api/messages?after=`: new messages only (older connectors).
//! - `GET /api/chats/{chat}/history?limit=`: a chat's newest messages.
//! - `POST /api/chats/{chat}/messages` (text, HTML, reply, `file_id`),
//!   `PUT`/`DELETE …/messages/{id}`, `POST/DELETE
//!   …/messages/{id}/reactions[/{key}]`, `POST …/typing`, `POST …/read`.
//! - `POST /api/files` (the body, `content-type`, `x-file-name`), `GET
//!   /api/files/{id}`.
//! - `/_admin/…`: seeding, without auth.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    ActivityKind, DeviceCode, DeviceStatus, ECHO_BOT, EchoService, MAX_FILE_BYTES, Post, Refusal,
    ServiceState, StoredMessage, random_token,
};

pub(crate) fn router(service: EchoService) -> Router {
    let files = Router::new()
        .route("/api/files", post(upload_file))
        .layer(DefaultBodyLimit::max(MAX_FILE_BYTES));
    Router::new()
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/me", get(me))
        .route("/api/device-code", post(start_device_code))
        .route("/api/device-code/approve", post(approve_device_code))
        .route("/api/device-code/{device_id}", get(poll_device_code))
        .route("/api/chats", get(list_chats))
        .route("/api/events", get(list_events))
        .route("/api/messages", get(list_messages))
        .route("/api/chats/{chat}/history", get(history))
        .route("/api/chats/{chat}/messages", post(send_message))
        .route(
            "/api/chats/{chat}/messages/{message}",
            put(edit_message).delete(delete_message),
        )
        .route(
            "/api/chats/{chat}/messages/{message}/reactions",
            post(add_reaction),
        )
        .route(
            "/api/chats/{chat}/messages/{message}/reactions/{key}",
            delete(remove_reaction),
        )
        .route("/api/chats/{chat}/typing", post(typing))
        .route("/api/chats/{chat}/read", post(read))
        .route("/api/files/{id}", get(download_file))
        .route("/_admin/users", post(admin_add_user))
        .route("/_admin/chats", post(admin_add_chat))
        .route(
            "/_admin/chats/{chat}/messages",
            post(admin_say).get(admin_messages),
        )
        .route("/_admin/users/{user}/revoke", post(admin_revoke))
        .layer(DefaultBodyLimit::max(64 << 10))
        .merge(files)
        .with_state(service)
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Self::NotFound(message) => error(StatusCode::NOT_FOUND, message),
            Self::Invalid(message) => error(StatusCode::BAD_REQUEST, message),
        }
    }
}

fn done(result: Result<(), Refusal>) -> Response {
    match result {
        Ok(()) => Json(json!({})).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

/// A request without a valid token.
struct Unauthorized(&'static str);

impl IntoResponse for Unauthorized {
    fn into_response(self) -> Response {
        error(StatusCode::UNAUTHORIZED, self.0)
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// The user a request's bearer token belongs to; a request without a
/// valid one is answered 401 before its handler runs.
struct Authed(String);

impl FromRequestParts<EchoService> for Authed {
    type Rejection = Unauthorized;

    async fn from_request_parts(
        parts: &mut Parts,
        service: &EchoService,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(&parts.headers).ok_or(Unauthorized("missing token"))?;
        service
            .lock()
            .tokens
            .get(token)
            .cloned()
            .map(Authed)
            .ok_or(Unauthorized("invalid token"))
    }
}

impl ServiceState {
    fn issue_token(&mut self, user: &str) -> Value {
        let token = random_token(40);
        self.tokens.insert(token.clone(), user.into());
        let display_name = self
            .users
            .get(user)
            .map(|u| u.display_name.clone())
            .unwrap_or_default();
        json!({ "token": token, "user_id": user, "display_name": display_name })
    }

    fn user_json(&self, id: &str) -> Value {
        let name = self
            .users
            .get(id)
            .map(|u| u.display_name.clone())
            .unwrap_or_else(|| id.to_owned());
        json!({ "id": id, "display_name": name })
    }

    fn message_json(&self, m: &StoredMessage) -> Value {
        json!({
            "id": m.id, "seq": m.seq, "chat_id": m.chat_id, "sender": self.user_json(&m.sender),
            "text": m.text, "html": m.html, "reply_to": m.reply_to, "ts": m.ts, "file": m.file,
        })
    }
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

async fn login(State(service): State<EchoService>, Json(body): Json<Credentials>) -> Response {
    let mut state = service.lock();
    match state.users.get(&body.username) {
        Some(user) if user.password == body.password && user.id != ECHO_BOT => {
            Json(state.issue_token(&body.username)).into_response()
        }
        _ => error(StatusCode::UNAUTHORIZED, "wrong user name or password"),
    }
}

async fn logout(State(service): State<EchoService>, _: Authed, headers: HeaderMap) -> Response {
    let token = bearer(&headers).unwrap_or_default().to_owned();
    service.lock().tokens.remove(&token);
    Json(json!({})).into_response()
}

async fn me(State(service): State<EchoService>, Authed(user): Authed) -> Response {
    Json(service.lock().users.get(&user).cloned()).into_response()
}

async fn start_device_code(State(service): State<EchoService>) -> Response {
    let device_id = random_token(24);
    let code = random_token(6);
    service.lock().devices.insert(
        device_id.clone(),
        DeviceCode {
            code: code.clone(),
            status: DeviceStatus::Pending,
        },
    );
    Json(json!({ "code": code, "device_id": device_id })).into_response()
}

#[derive(Deserialize)]
struct Approval {
    code: String,
    username: String,
    password: String,
}

async fn approve_device_code(
    State(service): State<EchoService>,
    Json(body): Json<Approval>,
) -> Response {
    let valid = service
        .lock()
        .users
        .get(&body.username)
        .is_some_and(|u| u.password == body.password);
    if !valid {
        return error(StatusCode::UNAUTHORIZED, "wrong user name or password");
    }
    if service.approve_code(&body.code, &body.username) {
        Json(json!({})).into_response()
    } else {
        error(StatusCode::NOT_FOUND, "no such code")
    }
}

async fn poll_device_code(
    State(service): State<EchoService>,
    Path(device_id): Path<String>,
) -> Response {
    let mut state = service.lock();
    let Some(device) = state.devices.get(&device_id).cloned() else {
        return Json(json!({ "status": "expired" })).into_response();
    };
    match device.status {
        DeviceStatus::Pending => Json(json!({ "status": "pending" })).into_response(),
        DeviceStatus::Approved(user) => {
            state.devices.remove(&device_id);
            let mut body = state.issue_token(&user);
            body["status"] = json!("approved");
            Json(body).into_response()
        }
    }
}

async fn list_chats(State(service): State<EchoService>, Authed(user): Authed) -> Response {
    let state = service.lock();
    let chats: Vec<_> = state
        .chats
        .values()
        .filter(|c| c.members.contains(&user))
        .map(|c| {
            let members: Vec<_> = c.members.iter().map(|m| state.user_json(m)).collect();
            json!({ "id": c.id, "name": c.name, "kind": c.kind, "members": members })
        })
        .collect();
    Json(chats).into_response()
}

#[derive(Deserialize)]
struct After {
    #[serde(default)]
    after: u64,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    100
}

/// # `GET /api/events?after=&limit=`
///
/// What happened in the user's chats after position `after`, oldest
/// first. A message event carries the message (a deleted one is left
/// out; its deletion follows).
async fn list_events(
    State(service): State<EchoService>,
    Authed(user): Authed,
    Query(query): Query<After>,
) -> Response {
    let state = service.lock();
    let limit = query.limit.clamp(1, 500);
    let visible: Vec<_> = state
        .activity
        .iter()
        .filter(|a| a.seq > query.after && state.is_member(&a.chat_id, &user))
        .collect();
    let has_more = visible.len() > limit;
    let events: Vec<Value> = visible
        .into_iter()
        .take(limit)
        .filter_map(|a| {
            let mut event = serde_json::to_value(a).ok()?;
            event["actor"] = state.user_json(&a.actor);
            if let ActivityKind::Message { message_id } = &a.kind {
                let message = state
                    .messages
                    .iter()
                    .find(|m| &m.id == message_id && !m.deleted);
                // A message deleted since is skipped, but its position
                // still counts.
                event["message"] = message.map_or(Value::Null, |m| state.message_json(m));
            }
            Some(event)
        })
        .collect();
    Json(json!({ "events": events, "has_more": has_more, "latest": state.next_seq }))
        .into_response()
}

async fn list_messages(
    State(service): State<EchoService>,
    Authed(user): Authed,
    Query(query): Query<After>,
) -> Response {
    let state = service.lock();
    let limit = query.limit.clamp(1, 500);
    let visible: Vec<&StoredMessage> = state
        .messages
        .iter()
        .filter(|m| m.seq > query.after && !m.deleted && state.is_member(&m.chat_id, &user))
        .collect();
    let has_more = visible.len() > limit;
    let messages: Vec<_> = visible
        .into_iter()
        .take(limit)
        .map(|m| state.message_json(m))
        .collect();
    Json(json!({ "messages": messages, "has_more": has_more })).into_response()
}

#[derive(Deserialize)]
struct Limit {
    #[serde(default = "default_limit")]
    limit: usize,
}

/// # `GET /api/chats/{chat}/history?limit=`
///
/// The chat's newest messages, oldest first.
async fn history(
    State(service): State<EchoService>,
    Authed(user): Authed,
    Path(chat): Path<String>,
    Query(query): Query<Limit>,
) -> Response {
    let state = service.lock();
    if !state.is_member(&chat, &user) {
        return error(StatusCode::NOT_FOUND, "no such chat");
    }
    let messages: Vec<&StoredMessage> = state
        .messages
        .iter()
        .filter(|m| m.chat_id == chat && !m.deleted)
        .collect();
    let skip = messages.len().saturating_sub(query.limit.clamp(1, 500));
    let messages: Vec<Value> = messages[skip..]
        .iter()
        .map(|m| state.message_json(m))
        .collect();
    Json(json!({ "messages": messages })).into_response()
}

#[derive(Deserialize)]
struct NewMessage {
    #[serde(default)]
    text: String,
    #[serde(default)]
    html: Option<String>,
    #[serde(default)]
    reply_to: Option<String>,
    #[serde(default)]
    file_id: Option<String>,
}

async fn send_message(
    State(service): State<EchoService>,
    Authed(user): Authed,
    Path(chat): Path<String>,
    Json(body): Json<NewMessage>,
) -> Response {
    let delay = service.lock().send_delays.get(&user).copied();
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let mut state = service.lock();
    if !state.is_member(&chat, &user) {
        return error(StatusCode::NOT_FOUND, "no such chat");
    }
    if let Some(file) = &body.file_id
        && !state.files.contains_key(file)
    {
        return error(StatusCode::NOT_FOUND, "no such file");
    }
    let post = Post {
        text: body.text,
        html: body.html,
        reply_to: body.reply_to,
        file_id: body.file_id,
    };
    let message = state.post(&chat, &user, post);
    Json(json!({ "id": message.id, "seq": message.seq })).into_response()
}

#[derive(Deserialize)]
struct Edit {
    text: String,
}

async fn edit_message(
    State(service): State<EchoService>,
    Authed(user): Authed,
    Path((chat, message)): Path<(String, String)>,
    Json(body): Json<Edit>,
) -> Response {
    done(service.lock().edit(&chat, &message, &user, &body.text))
}

async fn delete_message(
    State(service): State<EchoService>,
    Authed(user): Authed,
    Path((chat, message)): Path<(String, String)>,
) -> Response {
    done(service.lock().delete(&chat, &message, &user))
}

#[derive(Deserialize)]
struct NewReaction {
    key: String,
}

/// Answers the reaction's id: its key (one reaction per key and user).
async fn add_reaction(
    State(service): State<EchoService>,
    Authed(user): Authed,
    Path((chat, message)): Path<(String, String)>,
    Json(body): Json<NewReaction>,
) -> Response {
    match service
        .lock()
        .react(&chat, &message, &user, &body.key, false)
    {
        Ok(()) => Json(json!({ "id": body.key })).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

async fn remove_reaction(
    State(service): State<EchoService>,
    Authed(user): Authed,
    Path((chat, message, key)): Path<(String, String, String)>,
) -> Response {
    done(service.lock().react(&chat, &message, &user, &key, true))
}

#[derive(Deserialize)]
struct TypingBody {
    typing: bool,
}

async fn typing(
    State(service): State<EchoService>,
    Authed(user): Authed,
    Path(chat): Path<String>,
    Json(body): Json<TypingBody>,
) -> Response {
    done(service.set_typing(&chat, &user, body.typing))
}

#[derive(Deserialize)]
struct ReadBody {
    up_to: String,
}

async fn read(
    State(service): State<EchoService>,
    Authed(user): Authed,
    Path(chat): Path<String>,
    Json(body): Json<ReadBody>,
) -> Response {
    done(service.mark_read(&chat, &user, &body.up_to))
}

/// # `POST /api/files`
///
/// The body is the file; `content-type` its type, `x-file-name` its name.
async fn upload_file(
    State(service): State<EchoService>,
    _: Authed,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let Some(name) = header("x-file-name").filter(|n| !n.is_empty() && n.len() <= 255) else {
        return error(StatusCode::BAD_REQUEST, "x-file-name is required");
    };
    let mime_type =
        header(header::CONTENT_TYPE.as_str()).unwrap_or_else(|| "application/octet-stream".into());
    let id = service.lock().store_file(&name, &mime_type, body.to_vec());
    Json(json!({ "id": id })).into_response()
}

async fn download_file(
    State(service): State<EchoService>,
    _: Authed,
    Path(id): Path<String>,
) -> Response {
    match service.file(&id) {
        Some((_, mime_type, bytes)) => ([(header::CONTENT_TYPE, mime_type)], bytes).into_response(),
        None => error(StatusCode::NOT_FOUND, "no such file"),
    }
}

#[derive(Deserialize)]
struct NewUser {
    username: String,
    password: String,
    #[serde(default)]
    display_name: Option<String>,
}

async fn admin_add_user(State(service): State<EchoService>, Json(body): Json<NewUser>) -> Response {
    let name = body.display_name.unwrap_or_else(|| body.username.clone());
    let chat = service.add_user(&body.username, &body.password, &name);
    Json(json!({ "user_id": body.username, "echo_chat": chat })).into_response()
}

#[derive(Deserialize)]
struct NewChat {
    #[serde(default)]
    name: Option<String>,
    #[serde(default = "group")]
    kind: String,
    members: Vec<String>,
}

fn group() -> String {
    "group".into()
}

async fn admin_add_chat(State(service): State<EchoService>, Json(body): Json<NewChat>) -> Response {
    let members: Vec<&str> = body.members.iter().map(String::as_str).collect();
    let id = service.add_chat(body.name.as_deref(), &body.kind, &members);
    Json(json!({ "id": id })).into_response()
}

#[derive(Deserialize)]
struct Say {
    sender: String,
    text: String,
}

async fn admin_say(
    State(service): State<EchoService>,
    Path(chat): Path<String>,
    Json(body): Json<Say>,
) -> Response {
    Json(json!({ "id": service.say(&chat, &body.sender, &body.text) })).into_response()
}

async fn admin_messages(State(service): State<EchoService>, Path(chat): Path<String>) -> Response {
    Json(service.messages(&chat)).into_response()
}

async fn admin_revoke(State(service): State<EchoService>, Path(user): Path<String>) -> Response {
    service.revoke_tokens(&user);
    Json(json!({})).into_response()
}
