//! The Teams side's HTTP API: the skypetoken exchange, the chat service
//! (served twice, under `/msgapi` and `/api/chatsvc/consumer`, as the
//! real `chatService` and `chatServiceAfd` bases), file downloads and a
//! small media store.
//!
//! Every request passes two layers first: one records it for
//! [`crate::FakeTeams::calls`], the other answers 429 while
//! [`crate::FakeTeams::rate_limit_next`] is armed. Chat-service errors
//! come in the chat service's envelope, `{"errorCode","message",
//! "standardizedError"}`; bodies are bounded and malformed ones get 400.

use std::collections::BTreeMap;
use std::convert::Infallible;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, RawQuery, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::identity::{MBI_SCOPE, now};
use crate::state::{ChatKind, Draft, Refusal, TeamsCall, Typing};
use crate::wire::{self, Links};
use crate::{App, MAX_FILE_BYTES};

/// The largest chat-service body the fake reads: real messages are
/// limited to about 28 KB of content.
const MAX_BODY_BYTES: usize = 256 << 10;

/// The page size when a request gives none (§4.2).
const DEFAULT_PAGE_SIZE: usize = 100;

/// The largest page the fake serves, whatever is asked.
const MAX_PAGE_SIZE: usize = 500;

/// Which chat-service base a request came in on.
#[derive(Debug, Clone, Copy)]
struct Prefix(&'static str);

pub(crate) fn routes(app: &App) -> Router<App> {
    let chat = |prefix: &'static str| chat_routes().layer(Extension(Prefix(prefix)));
    Router::new()
        .route("/api/auth/v1.0/authz/consumer", post(authz))
        .route("/files/{id}", get(download_file))
        .route("/asm/v1/objects", post(create_object))
        .route("/asm/v1/objects/{id}", get(object_info))
        .route(
            "/asm/v1/objects/{id}/content/{view}",
            put(upload_object).layer(DefaultBodyLimit::max(MAX_FILE_BYTES)),
        )
        .route("/asm/v1/objects/{id}/views/{view}", get(download_object))
        .nest("/msgapi", chat("/msgapi"))
        .nest("/api/chatsvc/consumer", chat("/api/chatsvc/consumer"))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(from_fn_with_state(app.clone(), throttle))
        .layer(from_fn_with_state(app.clone(), record))
}

fn chat_routes() -> Router<App> {
    let conversation = "/v1/users/{user}/conversations/{conversation}";
    Router::new()
        .route("/v1/users/{user}/conversations", get(list_conversations))
        .route(conversation, get(get_conversation))
        .route(
            &format!("{conversation}/messages"),
            get(list_messages).post(send_message),
        )
        .route(
            &format!("{conversation}/messages/{{message}}"),
            put(edit_message).delete(delete_message),
        )
        .route(
            &format!("{conversation}/messages/{{message}}/properties"),
            put(add_emotion).delete(remove_emotion),
        )
        .route(
            &format!("{conversation}/properties"),
            put(set_conversation_property),
        )
        .route("/v1/threads/{thread}", get(get_thread))
        .route(
            "/v1/threads/{thread}/consumptionhorizons",
            get(consumption_horizons),
        )
        .route("/v1/users/{user}/endpoints", post(register_endpoint))
}

/// Records every Teams request, with the status it got.
async fn record(State(app): State<App>, request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    app.lock().record(TeamsCall {
        method,
        path,
        status: response.status().as_u16(),
    });
    response
}

/// # 429 while armed
///
/// The body the Teams client itself got (§6); `Retry-After` alternates
/// between seconds and an HTTP date, as clients must read both.
async fn throttle(State(app): State<App>, request: Request, next: Next) -> Response {
    let retry_after = app.lock().throttle();
    let Some(retry_after) = retry_after else {
        return next.run(request).await;
    };
    let mut response = chat_error(
        StatusCode::TOO_MANY_REQUESTS,
        429,
        "API calls quota exceeded! maximum admitted 15 per 1m.",
    );
    if let Ok(value) = HeaderValue::from_str(&retry_after) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// An error in the chat service's envelope.
pub(crate) fn chat_error(status: StatusCode, code: u64, message: &str) -> Response {
    (
        status,
        Json(json!({
            "errorCode": code,
            "message": message,
            "standardizedError": {
                "errorCode": code,
                "errorSubCode": 1,
                "errorDescription": message,
            },
        })),
    )
        .into_response()
}

/// A refusal, answered in the chat service's envelope.
pub(crate) struct ApiError {
    status: StatusCode,
    code: u64,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: u64, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        chat_error(self.status, self.code, &self.message)
    }
}

type Answer = Result<Response, ApiError>;

fn auth_failed() -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, 911, "Authentication failed.")
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, 400, message)
}

fn not_found(what: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, 404, what)
}

fn forbidden() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        403,
        "User is not a member of the conversation.",
    )
}

fn ok() -> Answer {
    Ok((StatusCode::OK, Json(json!({}))).into_response())
}

impl FromRequestParts<App> for Links {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Infallible> {
        // Links go back to the host the client used, if it looks like one
        // (it ends up in URLs and HTML).
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .filter(|h| {
                !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
            })
            .map_or_else(|| app.host(), str::to_owned);
        let root = format!("http://{host}");
        let prefix = parts.extensions.get::<Prefix>().map_or("", |p| p.0);
        Ok(Self {
            chat: format!("{root}{prefix}"),
            root,
        })
    }
}

/// The skypetoken of a request: `Authentication: skypetoken=…` (§4.1),
/// `X-Skypetoken: …` (enterprise, said to work on consumer too), or the
/// media store's `Authorization: skype_token …`.
fn skypetoken(headers: &HeaderMap) -> Option<&str> {
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(v) = value("authentication") {
        return strip_prefix_ignoring_case(v, "skypetoken=");
    }
    if let Some(v) = value("x-skypetoken") {
        return Some(v.trim());
    }
    let v = value("authorization")?;
    strip_prefix_ignoring_case(v, "skype_token ")
        .or_else(|| strip_prefix_ignoring_case(v, "skypetoken="))
}

fn strip_prefix_ignoring_case<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    value
        .get(..prefix.len())
        .filter(|head| head.eq_ignore_ascii_case(prefix))
        .map(|_| value[prefix.len()..].trim())
}

/// The MRI a request's live skypetoken belongs to; anything else is
/// answered 401 before the handler runs.
struct Caller(String);

impl FromRequestParts<App> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        let token = skypetoken(&parts.headers).ok_or_else(auth_failed)?;
        app.lock().caller(token).map(Self).ok_or_else(auth_failed)
    }
}

/// `{user}` must be `ME` (or the caller's own MRI).
fn check_user(user: &str, caller: &str) -> Result<(), ApiError> {
    if user.eq_ignore_ascii_case("ME") || user == caller {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            403,
            "Cannot access another user's resources.",
        ))
    }
}

/// A request's query, decoded; a field given twice keeps the last.
struct QueryArgs(BTreeMap<String, String>);

impl QueryArgs {
    fn parse(raw: Option<String>) -> Self {
        Self(
            url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn number(&self, name: &str) -> Result<Option<u64>, ApiError> {
        self.get(name)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| bad_request(format!("Invalid {name}: {v}")))
            })
            .transpose()
    }

    /// The page size: as asked (default 100, at most 500), but no more
    /// than a test's forced size.
    fn page_size(&self, forced: Option<usize>) -> Result<usize, ApiError> {
        let asked = self
            .number("pageSize")?
            .map_or(DEFAULT_PAGE_SIZE, |n| {
                usize::try_from(n).unwrap_or(MAX_PAGE_SIZE)
            })
            .clamp(1, MAX_PAGE_SIZE);
        Ok(forced.map_or(asked, |f| asked.min(f.max(1))))
    }

    /// The query of a link to the next page or sync: the same arguments
    /// with another `syncState`.
    fn with_sync_state(&self, cursor: &Cursor) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for name in ["startTime", "pageSize", "view", "targetType"] {
            if let Some(value) = self.get(name) {
                query.append_pair(name, value);
            }
        }
        query.append_pair("syncState", &cursor.encode());
        query.finish()
    }
}

/// Where a listing resumes: the opaque `syncState` of `backwardLink` (the
/// next, older page) and of `_metadata.syncState` (what changed since).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Cursor {
    /// `startTime`.
    #[serde(default)]
    t: u64,
    /// `endTime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    e: Option<u64>,
    /// Only what changed after this tick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    s: Option<u64>,
    /// Messages: only ids below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    b: Option<u64>,
    /// Conversations: only those after this `(version, key)` in the
    /// listing's order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    a: Option<(u64, String)>,
}

impl Cursor {
    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(text: &str) -> Result<Self, ApiError> {
        URL_SAFE_NO_PAD
            .decode(text)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| bad_request("Invalid syncState."))
    }

    /// The listing a request asks for: its `syncState`, else its
    /// `startTime`/`endTime`.
    fn of(query: &QueryArgs) -> Result<Self, ApiError> {
        match query.get("syncState") {
            Some(state) => Self::decode(state),
            None => Ok(Self {
                t: query.number("startTime")?.unwrap_or(0),
                e: query.number("endTime")?,
                ..Self::default()
            }),
        }
    }
}

/// A JSON object body; anything else is a 400.
fn object_body(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(bad_request("The body must be a JSON object.")),
        Err(e) => Err(bad_request(format!("Malformed JSON: {e}"))),
    }
}

/// A string field, or a number written as one.
fn text_field(body: &Map<String, Value>, name: &str) -> Option<String> {
    match body.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// # `POST /api/auth/v1.0/authz/consumer`
///
/// Trades an `MBI_SSL` access token from the identity platform for a
/// skypetoken and the region's service URLs (§3), all pointing back at
/// this server. A missing, unknown, expired or other-scope token gets the
/// 401 PT handles.
async fn authz(State(app): State<App>, links: Links, headers: HeaderMap) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| strip_prefix_ignoring_case(v, "bearer "));
    let info = bearer
        .and_then(|token| app.identity.access_token(token))
        .filter(|info| info.expires_on > now())
        .filter(|info| {
            info.scope
                .split_whitespace()
                .any(|s| s.eq_ignore_ascii_case(MBI_SCOPE))
        });
    let refused = || {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({"status": {"code": 40120, "text": "Authentication failed. Bad username or password."}})),
        )
            .into_response()
    };
    let Some(info) = info else {
        return refused();
    };
    let mut state = app.lock();
    let Some(profile) = state
        .profiles
        .values()
        .find(|p| p.account.home_account_id == info.account.home_account_id)
        .cloned()
    else {
        return refused();
    };
    let (token, lifetime) = state.issue_skypetoken(&profile);
    // Some accounts get `expiresIn` as a string.
    let expires_in = if profile.index % 3 == 1 {
        Value::from(lifetime.to_string())
    } else {
        Value::from(lifetime)
    };
    let root = &links.root;
    Json(json!({
        "skypeToken": {
            "skypetoken": token,
            "expiresIn": expires_in,
            "skypeid": profile.skype_id,
            "signinname": profile.account.username,
            "isBusinessTenant": false,
        },
        "regionGtms": {
            "ams": format!("{root}/asm"),
            "chatService": format!("{root}/msgapi"),
            "chatServiceAfd": format!("{root}/api/chatsvc/consumer"),
            "middleTier": format!("{root}/api/mt"),
            "search": format!("{root}/msgsearch"),
            "unifiedPresence": format!("{root}/presence"),
            "authSvcEndpointMetadata": {
                "endpointUrl": format!("{root}/api/auth"),
                "tokenScopes": [MBI_SCOPE],
            },
        },
        "regionSettings": {"isFederationEnabled": true},
        "consumerLicenseDetails": {},
    }))
    .into_response()
}

/// # `GET /v1/users/ME/conversations?startTime=&pageSize=&view=&targetType=`
///
/// The caller's chats, most recently active first, `pageSize` at a time:
/// `_metadata.backwardLink` is the full URL of the next page while there
/// is one, `_metadata.syncState` a URL for what changes from now on.
async fn list_conversations(
    State(app): State<App>,
    Caller(caller): Caller,
    links: Links,
    Path(user): Path<String>,
    RawQuery(raw): RawQuery,
) -> Answer {
    check_user(&user, &caller)?;
    let query = QueryArgs::parse(raw);
    let cursor = Cursor::of(&query)?;
    let mut state = app.lock();
    let page = query.page_size(state.switches.page_size)?;
    let since = Cursor {
        s: Some(state.tick()),
        ..Cursor::default()
    };
    let mut chats: Vec<_> = state
        .chats
        .values()
        .filter(|c| c.is_member(&caller) && c.version >= cursor.t)
        .filter(|c| cursor.s.is_none_or(|since| c.version > since))
        .collect();
    chats.sort_by(|x, y| y.version.cmp(&x.version).then_with(|| x.key.cmp(&y.key)));
    let total = chats.len();
    if let Some((version, key)) = &cursor.a {
        chats.retain(|c| c.version < *version || (c.version == *version && c.key > *key));
    }
    let more = chats.len() > page;
    chats.truncate(page);
    let conversations: Vec<Value> = chats
        .iter()
        .map(|c| wire::conversation(c, &caller, &links, &state.files))
        .collect();
    let list_url = format!("{}/v1/users/ME/conversations", links.chat);
    let mut metadata = json!({
        "totalCount": total,
        "lastCompleteSegmentStartTime": cursor.t,
        "lastCompleteSegmentEndTime": wire::now_ms(),
        "syncState": format!("{list_url}?{}", query.with_sync_state(&since)),
    });
    if more && let Some(last) = chats.last() {
        let next = Cursor {
            a: Some((last.version, last.key.clone())),
            ..cursor
        };
        metadata["backwardLink"] = json!(format!("{list_url}?{}", query.with_sync_state(&next)));
    }
    Ok(Json(json!({"conversations": conversations, "_metadata": metadata})).into_response())
}

/// # `GET /v1/users/ME/conversations/{id}`
///
/// One conversation, as in the listing.
async fn get_conversation(
    State(app): State<App>,
    Caller(caller): Caller,
    links: Links,
    Path((user, conversation)): Path<(String, String)>,
) -> Answer {
    check_user(&user, &caller)?;
    let state = app.lock();
    let chat = state
        .resolve_for(&caller, &conversation)
        .and_then(|key| state.chats.get(&key))
        .ok_or_else(|| not_found("Conversation not found."))?;
    Ok(Json(wire::conversation(chat, &caller, &links, &state.files)).into_response())
}

/// The chat `conversation` names for the caller.
fn chat_of(app: &App, caller: &str, user: &str, conversation: &str) -> Result<String, ApiError> {
    check_user(user, caller)?;
    app.lock()
        .resolve_for(caller, conversation)
        .ok_or_else(|| not_found("Conversation not found."))
}

/// Refuses requests on chat `key`'s messages while a test makes them fail.
fn check_failing(app: &App, key: &str) -> Result<(), ApiError> {
    match app.lock().switches.failing.get(key) {
        Some(&status) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Err(ApiError::new(
                status,
                u64::from(status.as_u16()),
                status.canonical_reason().unwrap_or("Internal Server Error"),
            ))
        }
        None => Ok(()),
    }
}

/// The chat `conversation` names for the caller, unless a test made its
/// messages fail.
fn messages_of(
    app: &App,
    caller: &str,
    user: &str,
    conversation: &str,
) -> Result<String, ApiError> {
    let key = chat_of(app, caller, user, conversation)?;
    check_failing(app, &key)?;
    Ok(key)
}

/// # `GET /v1/users/ME/conversations/{id}/messages?startTime=&pageSize=&view=`
///
/// The chat's messages that arrived at or after `startTime` (and, with
/// `endTime`, not after it), **newest first**, `pageSize` at a time, with
/// control and thread-activity messages among them. `backwardLink`
/// continues with older ones; `syncState` later gives what arrived or
/// changed (edits, deletions, reactions) after this answer.
async fn list_messages(
    State(app): State<App>,
    Caller(caller): Caller,
    links: Links,
    Path((user, conversation)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Answer {
    let key = messages_of(&app, &caller, &user, &conversation)?;
    let query = QueryArgs::parse(raw);
    let cursor = Cursor::of(&query)?;
    let mut state = app.lock();
    let page = query.page_size(state.switches.page_size)?;
    let sync = Cursor {
        s: Some(state.tick()),
        ..Cursor::default()
    };
    let chat = state
        .chats
        .get(&key)
        .ok_or_else(|| not_found("Conversation not found."))?;
    let mut matching: Vec<_> = chat
        .messages_since(cursor.t)
        .iter()
        .filter(|m| cursor.e.is_none_or(|end| m.id <= end))
        .filter(|m| cursor.s.is_none_or(|since| m.version > since))
        .filter(|m| cursor.b.is_none_or(|before| m.id < before))
        .collect();
    matching.reverse();
    let more = matching.len() > page;
    matching.truncate(page);
    let messages: Vec<Value> = matching
        .iter()
        .map(|m| wire::message(chat, &caller, m, &links, &state.files))
        .collect();
    let url = format!("{}/messages", links.conversation(&chat.id_for(&caller)));
    let mut metadata = json!({
        "lastCompleteSegmentStartTime": matching.last().map_or(cursor.t, |m| m.id),
        "lastCompleteSegmentEndTime": matching.first().map_or_else(wire::now_ms, |m| m.id),
        "syncState": format!("{url}?{}", query.with_sync_state(&sync)),
    });
    if more && let Some(oldest) = matching.last() {
        let next = Cursor {
            b: Some(oldest.id),
            ..cursor
        };
        metadata["backwardLink"] = json!(format!("{url}?{}", query.with_sync_state(&next)));
    }
    Ok(Json(json!({"messages": messages, "_metadata": metadata})).into_response())
}

fn created(body: Value) -> Response {
    (StatusCode::CREATED, Json(body)).into_response()
}

/// # `POST /v1/users/ME/conversations/{id}/messages`
///
/// Sends a message (§4.4): 201, `{"OriginalArrivalTime": <ms>}` and a
/// `Location` ending in the new id. `Control/Typing` and
/// `Control/ClearTyping` are recorded as typing, not stored. A
/// `clientmessageid` the caller already sent in this chat answers the
/// message it made then, without a duplicate; a `skypeeditedid` edits
/// the caller's message with that `clientmessageid` (the Skype way).
async fn send_message(
    State(app): State<App>,
    Caller(caller): Caller,
    links: Links,
    Path((user, conversation)): Path<(String, String)>,
    body: Bytes,
) -> Answer {
    let key = chat_of(&app, &caller, &user, &conversation)?;
    let body = object_body(&body)?;
    let messagetype = text_field(&body, "messagetype").unwrap_or_else(|| "Text".to_owned());
    let typing = match messagetype.as_str() {
        "Control/Typing" => Some(true),
        "Control/ClearTyping" => Some(false),
        _ => None,
    };
    if typing.is_none() {
        *app.lock().switches.sends.entry(key.clone()).or_default() += 1;
    }
    check_failing(&app, &key)?;
    let mut state = app.lock();
    if let Some(typing) = typing {
        let at_ms = wire::now_ms();
        state.switches.typing.entry(key).or_default().push(Typing {
            mri: caller,
            typing,
            at_ms,
        });
        return Ok(created(json!({"OriginalArrivalTime": at_ms})));
    }
    let content =
        text_field(&body, "content").ok_or_else(|| bad_request("content is required."))?;
    if let Some(edited) = text_field(&body, "skypeeditedid") {
        let id = state
            .sent_before(&key, &caller, &edited)
            .ok_or_else(|| not_found("Message not found."))?;
        state
            .edit(&key, id, Some(&caller), content, Some(messagetype))
            .map_err(refused)?;
        return Ok(created(json!({"OriginalArrivalTime": wire::now_ms()})));
    }
    let clientmessageid = text_field(&body, "clientmessageid");
    let existing = clientmessageid
        .as_deref()
        .and_then(|cmid| state.sent_before(&key, &caller, cmid));
    let id = existing.unwrap_or_else(|| {
        let mut draft = Draft::new(&messagetype, content);
        draft.contenttype = text_field(&body, "contenttype");
        draft.clientmessageid = clientmessageid;
        draft.display_name = text_field(&body, "imdisplayname").filter(|n| !n.is_empty());
        if let Some(Value::Object(properties)) = body.get("properties") {
            draft.properties = properties.clone();
        }
        state.post(&key, &caller, draft)
    });
    let location = format!("{}/messages/{id}", links.conversation(&conversation));
    let mut response = created(json!({"OriginalArrivalTime": id}));
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

fn refused(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::NoSuchMessage | Refusal::Deleted => not_found("Message not found."),
        Refusal::NotYours => ApiError::new(
            StatusCode::FORBIDDEN,
            403,
            "Only the sender can change a message.",
        ),
    }
}

fn message_id(text: &str) -> Result<u64, ApiError> {
    text.parse().map_err(|_| not_found("Message not found."))
}

/// # `PUT /v1/users/ME/conversations/{id}/messages/{msgId}`
///
/// Edits the caller's message: `{"content": …}` (and optionally
/// `messagetype`). It gets `properties.edittime` and `skypeeditedid`.
async fn edit_message(
    State(app): State<App>,
    Caller(caller): Caller,
    Path((user, conversation, message)): Path<(String, String, String)>,
    body: Bytes,
) -> Answer {
    let key = messages_of(&app, &caller, &user, &conversation)?;
    let id = message_id(&message)?;
    let body = object_body(&body)?;
    let content =
        text_field(&body, "content").ok_or_else(|| bad_request("content is required."))?;
    let messagetype = text_field(&body, "messagetype");
    app.lock()
        .edit(&key, id, Some(&caller), content, messagetype)
        .map_err(refused)?;
    ok()
}

/// # `DELETE /v1/users/ME/conversations/{id}/messages/{msgId}`
///
/// Deletes the caller's message: content emptied, `properties.deletetime`
/// set; deleting it again is fine.
async fn delete_message(
    State(app): State<App>,
    Caller(caller): Caller,
    Path((user, conversation, message)): Path<(String, String, String)>,
) -> Answer {
    let key = messages_of(&app, &caller, &user, &conversation)?;
    let id = message_id(&message)?;
    match app.lock().delete(&key, id, Some(&caller)) {
        Ok(()) | Err(Refusal::Deleted) => ok(),
        Err(refusal) => Err(refused(refusal)),
    }
}

/// The `emotions` of a reaction body: an object, or that object as a
/// JSON string.
fn emotion(body: &[u8]) -> Result<(String, Option<Value>), ApiError> {
    let body = object_body(body)?;
    let emotions = match body.get("emotions") {
        Some(Value::Object(map)) => map.clone(),
        Some(Value::String(text)) => match serde_json::from_str(text) {
            Ok(Value::Object(map)) => map,
            _ => return Err(bad_request("Invalid emotions.")),
        },
        _ => return Err(bad_request("emotions is required.")),
    };
    let key = text_field(&emotions, "key")
        .filter(|k| !k.is_empty() && k.len() <= 64)
        .ok_or_else(|| bad_request("emotions.key is required."))?;
    Ok((key, emotions.get("value").cloned()))
}

/// The reaction a `…/messages/{msgId}/properties?name=emotions` request
/// is about: its chat, message, key and value.
fn reaction_of(
    app: &App,
    caller: &str,
    (user, conversation, message): &(String, String, String),
    raw: Option<String>,
    body: &[u8],
) -> Result<(String, u64, String, Option<Value>), ApiError> {
    let key = messages_of(app, caller, user, conversation)?;
    match QueryArgs::parse(raw).get("name") {
        Some("emotions") => {}
        Some(other) => return Err(bad_request(format!("Unsupported property: {other}"))),
        None => return Err(bad_request("name is required.")),
    }
    let id = message_id(message)?;
    let (emotion, value) = emotion(body)?;
    Ok((key, id, emotion, value))
}

/// # `PUT /v1/users/ME/conversations/{id}/messages/{msgId}/properties?name=emotions`
///
/// Adds the caller's reaction: `{"emotions":{"key":"like","value":<ms>}}`.
async fn add_emotion(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(path): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Answer {
    let (key, id, emotion, value) = reaction_of(&app, &caller, &path, raw, &body)?;
    let value = value.unwrap_or_else(|| Value::from(wire::now_ms()));
    app.lock()
        .react(&key, id, &caller, &emotion, Some(value))
        .map_err(refused)?;
    ok()
}

/// # `DELETE /v1/users/ME/conversations/{id}/messages/{msgId}/properties?name=emotions`
///
/// Takes back the caller's reaction: `{"emotions":{"key":"like"}}`.
async fn remove_emotion(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(path): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Answer {
    let (key, id, emotion, _) = reaction_of(&app, &caller, &path, raw, &body)?;
    app.lock()
        .react(&key, id, &caller, &emotion, None)
        .map_err(refused)?;
    ok()
}

/// # `PUT /v1/users/ME/conversations/{id}/properties?name=consumptionhorizon`
///
/// Sets the caller's read marker,
/// `{"consumptionhorizon":"<msgId>;<tsMs>;<clientmessageid>"}`. Other
/// properties are accepted and ignored.
async fn set_conversation_property(
    State(app): State<App>,
    Caller(caller): Caller,
    Path((user, conversation)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Answer {
    let key = chat_of(&app, &caller, &user, &conversation)?;
    let query = QueryArgs::parse(raw);
    let name = query
        .get("name")
        .ok_or_else(|| bad_request("name is required."))?;
    let body = object_body(&body)?;
    if name != "consumptionhorizon" {
        return ok();
    }
    let horizon = text_field(&body, "consumptionhorizon")
        .ok_or_else(|| bad_request("consumptionhorizon is required."))?;
    let parts: Vec<&str> = horizon.split(';').collect();
    if parts.len() != 3 || parts[..2].iter().any(|p| p.parse::<u64>().is_err()) {
        return Err(bad_request(
            "consumptionhorizon must be <msgId>;<tsMs>;<clientmessageid>.",
        ));
    }
    app.lock().set_horizon(&key, &caller, horizon);
    ok()
}

/// The thread `id` if the caller is in it: legacy 1:1s (`8:…`) are not
/// threads.
fn thread_of(app: &App, caller: &str, id: &str) -> Result<String, ApiError> {
    let state = app.lock();
    let chat = state
        .chats
        .get(id)
        .filter(|c| c.kind != ChatKind::LegacyDm)
        .ok_or_else(|| not_found("Thread not found."))?;
    if !chat.is_member(caller) {
        return Err(forbidden());
    }
    Ok(chat.key.clone())
}

/// # `GET /v1/threads/{id}?view=msnp24Equivalent`
///
/// The thread's properties and members (§4.2); in some chats members
/// carry ids only.
async fn get_thread(
    State(app): State<App>,
    Caller(caller): Caller,
    links: Links,
    Path(thread): Path<String>,
) -> Answer {
    let key = thread_of(&app, &caller, &thread)?;
    let state = app.lock();
    let chat = state
        .chats
        .get(&key)
        .ok_or_else(|| not_found("Thread not found."))?;
    Ok(Json(wire::thread(chat, &links, |mri| state.display_name(mri))).into_response())
}

/// # `GET /v1/threads/{id}/consumptionhorizons`
///
/// Every member's read marker, in the field reports' shape; a member who
/// never set one shows `0;0;0`.
async fn consumption_horizons(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(thread): Path<String>,
) -> Answer {
    let key = thread_of(&app, &caller, &thread)?;
    let state = app.lock();
    let chat = state
        .chats
        .get(&key)
        .ok_or_else(|| not_found("Thread not found."))?;
    let horizons: Vec<Value> = chat
        .members
        .iter()
        .map(|m| match chat.horizons.get(&m.mri) {
            Some(h) => json!({"id": m.mri, "consumptionhorizon": h.value, "messageVisibilityTime": h.at_ms}),
            None => json!({"id": m.mri, "consumptionhorizon": "0;0;0", "messageVisibilityTime": chat.created_ms}),
        })
        .collect();
    Ok(
        Json(json!({"id": chat.key, "version": chat.version, "consumptionhorizons": horizons}))
            .into_response(),
    )
}

/// # `POST /v1/users/ME/endpoints`
///
/// The legacy long-poll registration, which consumer Teams refuses now
/// (§4.6: 403 `application/problem+json`).
async fn register_endpoint(_: Caller) -> Response {
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "application/problem+json")],
        json!({
            "type": "https://tools.ietf.org/html/rfc7231#section-6.5.3",
            "title": "Forbidden",
            "status": 403,
            "traceId": "00-fake-teams-00",
            "ContextId": "server=msgapi-production-consumer-neu-01-0",
        })
        .to_string(),
    )
        .into_response()
}

fn file_response(name: &str, mime_type: &str, bytes: Vec<u8>) -> Response {
    let disposition = format!(
        "attachment; filename=\"{}\"",
        name.replace(['"', '\\', '\r', '\n'], "_")
    );
    let mut response = ([(header::CONTENT_TYPE, mime_type.to_owned())], bytes).into_response();
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

/// # `GET /files/{id}`
///
/// A shared file's bytes (`fileInfo.fileUrl`); needs a skypetoken.
async fn download_file(State(app): State<App>, _: Caller, Path(id): Path<String>) -> Answer {
    let state = app.lock();
    let file = state
        .files
        .get(&id)
        .ok_or_else(|| not_found("File not found."))?;
    Ok(file_response(
        &file.name,
        &file.mime_type,
        file.bytes.clone(),
    ))
}

/// # `POST /asm/v1/objects`
///
/// Creates an empty media object (`{"type":"pish/image","filename":…}`)
/// to upload a picture into; answers its id.
async fn create_object(State(app): State<App>, _: Caller, body: Bytes) -> Answer {
    let body = object_body(&body)?;
    let name = text_field(&body, "filename").unwrap_or_else(|| "image".to_owned());
    let mime_type = match text_field(&body, "type").as_deref() {
        Some("pish/image") | None => "image/png",
        Some(_) => "application/octet-stream",
    };
    let id = app.lock().store_file(&name, mime_type, Vec::new());
    Ok(created(json!({"id": id})))
}

/// # `PUT /asm/v1/objects/{id}/content/{view}`
///
/// Uploads a media object's bytes.
async fn upload_object(
    State(app): State<App>,
    _: Caller,
    Path((id, _view)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let mut state = app.lock();
    let file = state
        .files
        .get_mut(&id)
        .ok_or_else(|| not_found("Object not found."))?;
    file.bytes = body.to_vec();
    if let Some(mime_type) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.starts_with("image/"))
    {
        mime_type.clone_into(&mut file.mime_type);
    }
    Ok(created(json!({})))
}

/// # `GET /asm/v1/objects/{id}`
async fn object_info(
    State(app): State<App>,
    _: Caller,
    links: Links,
    Path(id): Path<String>,
) -> Answer {
    let state = app.lock();
    let file = state
        .files
        .get(&id)
        .ok_or_else(|| not_found("Object not found."))?;
    let url = links.object(&id);
    Ok(Json(json!({
        "type": "pish/image",
        "filename": file.name,
        "size": file.bytes.len(),
        "view_location": format!("{url}/views/imgo"),
        "views": [
            {"view_id": "imgo", "view_state": "ready", "view_location": format!("{url}/views/imgo")},
            {"view_id": "imgt1", "view_state": "ready", "view_location": format!("{url}/views/imgt1")},
        ],
    }))
    .into_response())
}

/// # `GET /asm/v1/objects/{id}/views/{view}`
///
/// A media object's bytes (`imgo`, the original; `imgt1`, the thumbnail,
/// the same bytes here).
async fn download_object(
    State(app): State<App>,
    _: Caller,
    Path((id, _view)): Path<(String, String)>,
) -> Answer {
    let state = app.lock();
    let file = state
        .files
        .get(&id)
        .ok_or_else(|| not_found("Object not found."))?;
    Ok(file_response(
        &file.name,
        &file.mime_type,
        file.bytes.clone(),
    ))
}
