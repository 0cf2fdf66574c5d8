//! The echo service: a tiny chat network for the echo connector to bridge.
//!
//! Users log in with a password (or approve a device code), list their
//! chats, read messages after a cursor, and post messages. Every user gets
//! a direct chat with the echo bot, which answers each message with
//! `echo: <text>`. State is in memory.
//!
//! `/api/…` is what the connector uses (bearer token auth). `/_admin/…`
//! seeds users and chats and injects messages from other users; it has no
//! auth, so bind the service to loopback.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The echo bot's user id.
pub const ECHO_BOT: &str = "echo";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct User {
    id: String,
    display_name: String,
    // Never in API answers; the state file keeps it beside the user.
    #[serde(skip_serializing, default)]
    password: String,
}

/// What `--state-file` keeps: everything but pending device codes.
#[derive(Serialize, Deserialize)]
struct Snapshot {
    users: Vec<(User, String)>,
    tokens: BTreeMap<String, String>,
    chats: BTreeMap<String, Chat>,
    messages: Vec<StoredMessage>,
    next_seq: u64,
    next_chat: u64,
}

/// A chat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Chat {
    /// Its id.
    pub id: String,
    /// Its name (groups).
    pub name: Option<String>,
    /// `direct` or `group`.
    pub kind: String,
    /// Member user ids.
    pub members: Vec<String>,
}

/// A message as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredMessage {
    /// Its id, `m<seq>`.
    pub id: String,
    /// Its sequence number, across the whole service.
    pub seq: u64,
    /// The chat.
    pub chat_id: String,
    /// The sender's user id.
    pub sender: String,
    /// The text (after edits).
    pub text: String,
    /// An HTML body.
    pub html: Option<String>,
    /// The message it replies to.
    pub reply_to: Option<String>,
    /// When, in Unix milliseconds.
    pub ts: u64,
    /// How many times it was edited.
    pub edits: u32,
    /// Whether it was deleted.
    pub deleted: bool,
}

#[derive(Debug, Clone)]
enum DeviceStatus {
    Pending,
    Approved(String),
}

#[derive(Debug, Clone)]
struct DeviceCode {
    code: String,
    status: DeviceStatus,
}

#[derive(Default)]
struct ServiceState {
    users: BTreeMap<String, User>,
    tokens: BTreeMap<String, String>,
    chats: BTreeMap<String, Chat>,
    messages: Vec<StoredMessage>,
    next_seq: u64,
    next_chat: u64,
    devices: BTreeMap<String, DeviceCode>,
}

/// The service.
#[derive(Clone, Default)]
pub struct EchoService {
    state: Arc<Mutex<ServiceState>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn random_token(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A request without a valid token.
struct Unauthorized(&'static str);

impl IntoResponse for Unauthorized {
    fn into_response(self) -> Response {
        error(StatusCode::UNAUTHORIZED, self.0)
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

impl EchoService {
    /// An empty service with only the echo bot.
    pub fn new() -> Self {
        let service = Self::default();
        service.state.lock().unwrap().users.insert(
            ECHO_BOT.into(),
            User {
                id: ECHO_BOT.into(),
                display_name: "Echo bot".into(),
                password: random_token(32),
            },
        );
        service
    }

    /// Adds a user (with a direct chat with the echo bot); returns the
    /// chat's id.
    pub fn add_user(&self, id: &str, password: &str, display_name: &str) -> String {
        let mut state = self.state.lock().unwrap();
        // Seeding an existing user (a restart with a state file) only
        // updates it.
        if let Some(chat) = state
            .chats
            .values()
            .find(|c| c.kind == "direct" && c.members == [id.to_owned(), ECHO_BOT.to_owned()])
            .map(|c| c.id.clone())
            && let Some(user) = state.users.get_mut(id)
        {
            user.password = password.into();
            user.display_name = display_name.into();
            return chat;
        }
        state.users.insert(
            id.into(),
            User {
                id: id.into(),
                display_name: display_name.into(),
                password: password.into(),
            },
        );
        let chat = Self::create_chat(&mut state, None, "direct", vec![id.into(), ECHO_BOT.into()]);
        Self::post(
            &mut state,
            &chat,
            ECHO_BOT,
            "Hi! I echo what you say.".into(),
            None,
            None,
        );
        chat
    }

    /// The id of the chat named `name`, if there is one.
    pub fn chat_named(&self, name: &str) -> Option<String> {
        self.state
            .lock()
            .unwrap()
            .chats
            .values()
            .find(|c| c.name.as_deref() == Some(name))
            .map(|c| c.id.clone())
    }

    /// Loads `path` if it exists, then saves the state there whenever it
    /// changes (checked every second), so a restart keeps users, chats,
    /// messages and tokens.
    pub fn persist_to(&self, path: std::path::PathBuf) -> std::io::Result<()> {
        if path.exists() {
            let snapshot: Snapshot = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
            let mut state = self.state.lock().unwrap();
            for (mut user, password) in snapshot.users {
                user.password = password;
                state.users.insert(user.id.clone(), user);
            }
            state.tokens = snapshot.tokens;
            state.chats = snapshot.chats;
            state.messages = snapshot.messages;
            state.next_seq = snapshot.next_seq;
            state.next_chat = snapshot.next_chat;
        }
        let service = self.clone();
        tokio::spawn(async move {
            let mut last = String::new();
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                let text = {
                    let state = service.state.lock().unwrap();
                    let snapshot = Snapshot {
                        users: state
                            .users
                            .values()
                            .map(|u| (u.clone(), u.password.clone()))
                            .collect(),
                        tokens: state.tokens.clone(),
                        chats: state.chats.clone(),
                        messages: state.messages.clone(),
                        next_seq: state.next_seq,
                        next_chat: state.next_chat,
                    };
                    serde_json::to_string(&snapshot).expect("the state serializes")
                };
                if text != last {
                    let tmp = path.with_extension("tmp");
                    if std::fs::write(&tmp, &text)
                        .and_then(|()| std::fs::rename(&tmp, &path))
                        .is_ok()
                    {
                        last = text;
                    }
                }
            }
        });
        Ok(())
    }

    /// Creates a chat; returns its id.
    pub fn add_chat(&self, name: Option<&str>, kind: &str, members: &[&str]) -> String {
        let mut state = self.state.lock().unwrap();
        Self::create_chat(
            &mut state,
            name.map(str::to_owned),
            kind,
            members.iter().map(|m| (*m).to_owned()).collect(),
        )
    }

    /// Posts a message as `sender`; returns its id.
    pub fn say(&self, chat: &str, sender: &str, text: &str) -> String {
        let mut state = self.state.lock().unwrap();
        Self::post(&mut state, chat, sender, text.into(), None, None).id
    }

    /// Posts a message with an HTML body as `sender`; returns its id.
    pub fn say_html(&self, chat: &str, sender: &str, text: &str, html: &str) -> String {
        let mut state = self.state.lock().unwrap();
        Self::post(
            &mut state,
            chat,
            sender,
            text.into(),
            Some(html.into()),
            None,
        )
        .id
    }

    /// Every message of `chat`, including deleted ones.
    pub fn messages(&self, chat: &str) -> Vec<StoredMessage> {
        self.state
            .lock()
            .unwrap()
            .messages
            .iter()
            .filter(|m| m.chat_id == chat)
            .cloned()
            .collect()
    }

    /// Invalidates every token of `user`.
    pub fn revoke_tokens(&self, user: &str) {
        self.state
            .lock()
            .unwrap()
            .tokens
            .retain(|_, owner| owner != user);
    }

    /// Approves a device code as `user` (what the user does on the
    /// service's side); returns whether the code existed.
    pub fn approve_code(&self, code: &str, user: &str) -> bool {
        let mut state = self.state.lock().unwrap();
        match state.devices.values_mut().find(|d| d.code == code) {
            Some(device) => {
                device.status = DeviceStatus::Approved(user.into());
                true
            }
            None => false,
        }
    }

    fn create_chat(
        state: &mut ServiceState,
        name: Option<String>,
        kind: &str,
        members: Vec<String>,
    ) -> String {
        state.next_chat += 1;
        let id = format!("c{}", state.next_chat);
        state.chats.insert(
            id.clone(),
            Chat {
                id: id.clone(),
                name,
                kind: kind.into(),
                members,
            },
        );
        id
    }

    fn post(
        state: &mut ServiceState,
        chat: &str,
        sender: &str,
        text: String,
        html: Option<String>,
        reply_to: Option<String>,
    ) -> StoredMessage {
        state.next_seq += 1;
        let message = StoredMessage {
            id: format!("m{}", state.next_seq),
            seq: state.next_seq,
            chat_id: chat.into(),
            sender: sender.into(),
            text: text.clone(),
            html,
            reply_to,
            ts: now_ms(),
            edits: 0,
            deleted: false,
        };
        state.messages.push(message.clone());
        let bot_in_chat = state
            .chats
            .get(chat)
            .is_some_and(|c| c.members.iter().any(|m| m == ECHO_BOT));
        if bot_in_chat && sender != ECHO_BOT {
            Self::post(
                state,
                chat,
                ECHO_BOT,
                format!("echo: {text}"),
                None,
                Some(message.id.clone()),
            );
        }
        message
    }

    fn user_of(&self, headers: &HeaderMap) -> Result<String, Unauthorized> {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(Unauthorized("missing token"))?;
        self.state
            .lock()
            .unwrap()
            .tokens
            .get(token)
            .cloned()
            .ok_or(Unauthorized("invalid token"))
    }

    fn issue_token(state: &mut ServiceState, user: &str) -> serde_json::Value {
        let token = random_token(40);
        state.tokens.insert(token.clone(), user.into());
        let display_name = state
            .users
            .get(user)
            .map(|u| u.display_name.clone())
            .unwrap_or_default();
        json!({ "token": token, "user_id": user, "display_name": display_name })
    }

    /// The service's HTTP API.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/api/login", post(login))
            .route("/api/logout", post(logout))
            .route("/api/me", get(me))
            .route("/api/device-code", post(start_device_code))
            .route("/api/device-code/approve", post(approve_device_code))
            .route("/api/device-code/{device_id}", get(poll_device_code))
            .route("/api/chats", get(list_chats))
            .route("/api/messages", get(list_messages))
            .route("/api/chats/{chat}/messages", post(send_message))
            .route(
                "/api/chats/{chat}/messages/{message}",
                put(edit_message).delete(delete_message),
            )
            .route("/_admin/users", post(admin_add_user))
            .route("/_admin/chats", post(admin_add_chat))
            .route(
                "/_admin/chats/{chat}/messages",
                post(admin_say).get(admin_messages),
            )
            .route("/_admin/users/{user}/revoke", post(admin_revoke))
            .layer(DefaultBodyLimit::max(64 << 10))
            .with_state(self.clone())
    }

    /// Serves the API on `addr` in a background task; returns the bound
    /// address.
    pub async fn serve(&self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let router = self.router();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(%e, "echo service stopped");
            }
        });
        Ok(local)
    }
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

async fn login(State(service): State<EchoService>, Json(body): Json<Credentials>) -> Response {
    let mut state = service.state.lock().unwrap();
    match state.users.get(&body.username) {
        Some(user) if user.password == body.password && user.id != ECHO_BOT => {
            Json(EchoService::issue_token(&mut state, &body.username)).into_response()
        }
        _ => error(StatusCode::UNAUTHORIZED, "wrong user name or password"),
    }
}

async fn logout(State(service): State<EchoService>, headers: HeaderMap) -> Response {
    if let Err(e) = service.user_of(&headers) {
        return e.into_response();
    }
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    service.state.lock().unwrap().tokens.remove(&token);
    Json(json!({})).into_response()
}

async fn me(State(service): State<EchoService>, headers: HeaderMap) -> Response {
    match service.user_of(&headers) {
        Ok(user) => {
            let state = service.state.lock().unwrap();
            Json(state.users.get(&user).cloned()).into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn start_device_code(State(service): State<EchoService>) -> Response {
    let device_id = random_token(24);
    let code = random_token(6);
    service.state.lock().unwrap().devices.insert(
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
    let valid = {
        let state = service.state.lock().unwrap();
        state
            .users
            .get(&body.username)
            .is_some_and(|u| u.password == body.password)
    };
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
    let mut state = service.state.lock().unwrap();
    let Some(device) = state.devices.get(&device_id).cloned() else {
        return Json(json!({ "status": "expired" })).into_response();
    };
    match device.status {
        DeviceStatus::Pending => Json(json!({ "status": "pending" })).into_response(),
        DeviceStatus::Approved(user) => {
            state.devices.remove(&device_id);
            let mut body = EchoService::issue_token(&mut state, &user);
            body["status"] = json!("approved");
            Json(body).into_response()
        }
    }
}

fn user_json(state: &ServiceState, id: &str) -> serde_json::Value {
    let name = state
        .users
        .get(id)
        .map(|u| u.display_name.clone())
        .unwrap_or_else(|| id.to_owned());
    json!({ "id": id, "display_name": name })
}

async fn list_chats(State(service): State<EchoService>, headers: HeaderMap) -> Response {
    let user = match service.user_of(&headers) {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let state = service.state.lock().unwrap();
    let chats: Vec<_> = state
        .chats
        .values()
        .filter(|c| c.members.contains(&user))
        .map(|c| {
            let members: Vec<_> = c.members.iter().map(|m| user_json(&state, m)).collect();
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

async fn list_messages(
    State(service): State<EchoService>,
    headers: HeaderMap,
    Query(query): Query<After>,
) -> Response {
    let user = match service.user_of(&headers) {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let state = service.state.lock().unwrap();
    let limit = query.limit.clamp(1, 500);
    let visible: Vec<&StoredMessage> = state
        .messages
        .iter()
        .filter(|m| m.seq > query.after && !m.deleted)
        .filter(|m| {
            state
                .chats
                .get(&m.chat_id)
                .is_some_and(|c| c.members.contains(&user))
        })
        .collect();
    let has_more = visible.len() > limit;
    let messages: Vec<_> = visible
        .into_iter()
        .take(limit)
        .map(|m| {
            json!({
                "id": m.id, "seq": m.seq, "chat_id": m.chat_id, "sender": user_json(&state, &m.sender),
                "text": m.text, "html": m.html, "reply_to": m.reply_to, "ts": m.ts,
            })
        })
        .collect();
    Json(json!({ "messages": messages, "has_more": has_more })).into_response()
}

#[derive(Deserialize)]
struct NewMessage {
    text: String,
    #[serde(default)]
    html: Option<String>,
    #[serde(default)]
    reply_to: Option<String>,
}

async fn send_message(
    State(service): State<EchoService>,
    headers: HeaderMap,
    Path(chat): Path<String>,
    Json(body): Json<NewMessage>,
) -> Response {
    let user = match service.user_of(&headers) {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let mut state = service.state.lock().unwrap();
    if !state
        .chats
        .get(&chat)
        .is_some_and(|c| c.members.contains(&user))
    {
        return error(StatusCode::NOT_FOUND, "no such chat");
    }
    let message = EchoService::post(
        &mut state,
        &chat,
        &user,
        body.text,
        body.html,
        body.reply_to,
    );
    Json(json!({ "id": message.id, "seq": message.seq })).into_response()
}

#[derive(Deserialize)]
struct Edit {
    text: String,
}

impl EchoService {
    /// Applies `change` to message `message` of `chat` if the token's user
    /// sent it.
    fn change_own_message(
        &self,
        headers: &HeaderMap,
        chat: &str,
        message: &str,
        change: impl FnOnce(&mut StoredMessage),
    ) -> Response {
        let user = match self.user_of(headers) {
            Ok(u) => u,
            Err(e) => return e.into_response(),
        };
        let mut state = self.state.lock().unwrap();
        match state
            .messages
            .iter_mut()
            .find(|m| m.id == message && m.chat_id == chat && m.sender == user)
        {
            Some(m) => {
                change(m);
                Json(json!({})).into_response()
            }
            None => error(StatusCode::NOT_FOUND, "no such message of yours"),
        }
    }
}

async fn edit_message(
    State(service): State<EchoService>,
    headers: HeaderMap,
    Path((chat, message)): Path<(String, String)>,
    Json(body): Json<Edit>,
) -> Response {
    service.change_own_message(&headers, &chat, &message, |m| {
        m.text = body.text;
        m.edits += 1;
    })
}

async fn delete_message(
    State(service): State<EchoService>,
    headers: HeaderMap,
    Path((chat, message)): Path<(String, String)>,
) -> Response {
    service.change_own_message(&headers, &chat, &message, |m| m.deleted = true)
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
