//! The Microsoft Teams connector: consumer Teams (teams.live.com), one
//! login per Teams account, split portals.
//!
//! **Login.** Every login flow is the MSAL provider's (`plugins/msal`):
//! the host runs it and hands its captured material to
//! [`Login::finish_provider_login`], which turns it into tokens for the
//! `MBI_SSL` scope (`tokens.from-captured`), exchanges the access token
//! for a skypetoken (`POST {auth-url}/v1.0/authz/consumer`), and completes
//! the login with the account's normalized MRI (`8:` + skypeid) as its
//! id. The login's metadata is a [`session::Session`]: the token set, the
//! skypetoken, the chat service, the MRI.
//!
//! **Tokens.** Before every sync, [`session::token_step`] decides what to
//! renew: nothing, the skypetoken, or (through MSAL's `tokens.refresh`)
//! the access token first, stored before it is used. With nothing left to
//! renew with, the call fails with bad credentials: the host pauses the
//! login until the user logs in again. A 401 from the chat service gets
//! one skypetoken renewal and a retry.
//!
//! **Sync**, on host timers: `discover` (and `connect`, once after a
//! start) lists the conversations and resyncs the chats that are new or
//! changed; `poll` lists them and fetches the messages of the chats whose
//! last message changed, since each chat's cursor ([`sync::ThreadState`]
//! in KV). A chat that fails backs off alone; a 429 pauses the login for
//! its `Retry-After`. Every sync works within a time budget, so a call
//! never outlives the host's deadline.
//!
//! **Matrix → Teams.** Messages are sent with a 19-digit
//! `clientmessageid` that is stored before the send and reused by its
//! retries, so a message is never duplicated and its echo is recognised.
//! Edits, deletions, reactions, read markers and typing go through as the
//! reference documents them; files from Matrix are not (no documented
//! upload), so the host sends their names as text.
//!
//! Tokens are never logged.

mod api;
#[cfg(test)]
mod fuzz;
mod html;
mod ids;
mod model;
mod session;
mod sync;
mod timefmt;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use weft_sdk::events::{self, BridgeStateKind, EventError, EventSender, HistoryItem, RemoteEvent};
use weft_sdk::http::{Method, Request, Response};
use weft_sdk::tokens::{self, TokenError};
use weft_sdk::{
    Completion, Connector, Error, Login, MatrixEdit, MatrixMedia, MatrixMessage, MatrixReaction,
    ProviderGrant, Result, config, kv, timers,
};

use crate::api::{Budget, TeamsError};
use crate::model::{Chat, ConversationPage, HorizonPage, MessagePage, Msg, ThreadInfo};
use crate::session::{Authz, SCOPE, Session, TokenStep};
use crate::sync::{ChatMark, MediaAuth, Out, Skip, ThreadState};

const POLL_TIMER: &str = "poll";
const DISCOVER_TIMER: &str = "discover";
const CONNECT_TIMER: &str = "connect";

/// KV: the login's own state ([`LoginState`]).
const LOGIN_KEY: &str = "login";
/// KV: the chat index ([`ChatMark`] by thread id).
const CHATS_KEY: &str = "chats";
/// KV: messages sent from Matrix ([`SentLog`]).
const SENT_KEY: &str = "sent";
/// KV: the account's display name, as Teams shows it on its own messages.
const OWN_NAME_KEY: &str = "own-name";
/// KV: a chat's [`ThreadState`], under `thread/<thread id>`.
const THREAD_PREFIX: &str = "thread/";

/// Messages per page.
const MESSAGE_PAGE: u32 = 50;
/// At most this many pages of new messages per chat and poll.
const MAX_MESSAGE_PAGES: usize = 10;
/// At most this many pages of the conversation list.
const MAX_CONVERSATION_PAGES: usize = 20;
/// A fetch starts this far before the cursor's time (same-millisecond
/// messages); the cursor drops what it has seen.
const LOOKBACK_MS: u64 = 1000;
/// When a changed chat has no new message, the last day's newest page is
/// read for edits, deletions and reactions.
const UPDATE_WINDOW_MS: u64 = 24 * 3600 * 1000;
/// A chat that appears after the login's first sync starts this long
/// before the last complete sync.
const RESUME_OVERLAP_MS: u64 = 120_000;
/// The last complete sync's time is stored at most this often.
const SYNCED_AT_STEP_MS: u64 = 60_000;
/// Messages sent from Matrix that are remembered (for retries and echoes).
const SENT_LOG_LEN: usize = 200;
/// Tries of a send.
const SEND_ATTEMPTS: u32 = 4;
/// After the login sends, how long the others' read markers are looked
/// at (until they have all read it).
const READS_WINDOW_MS: u64 = 10 * 60 * 1000;

/// Unix milliseconds.
fn now_ms() -> u64 {
    weft_sdk::time::now_ms()
}

/// Unix seconds.
fn now_secs() -> u64 {
    now_ms() / 1000
}

// ---------------------------------------------------------------------
// Settings and KV records

/// The operator's settings (`weft.toml`), each falling back to its
/// default.
#[derive(Debug, Clone)]
struct Settings {
    auth_url: String,
    chat_service_url: String,
    /// The media service's origin, whose host may start with `*.`.
    media_url: String,
    poll_ms: u64,
    discovery_ms: u64,
    budget_ms: u64,
}

impl Settings {
    fn load() -> Self {
        let url = |name: &str, default: &str| match config::get::<String>(name) {
            Ok(Some(value)) if !value.trim().is_empty() => {
                value.trim().trim_end_matches('/').to_owned()
            }
            Ok(_) => default.to_owned(),
            Err(error) => {
                weft_sdk::warn!("setting `{name}` ignored: {error}");
                default.to_owned()
            }
        };
        let number = |name: &str, default: u64, min: u64, max: u64| match config::get::<u64>(name) {
            Ok(Some(value)) => value.clamp(min, max),
            Ok(None) => default,
            Err(error) => {
                weft_sdk::warn!("setting `{name}` ignored: {error}");
                default
            }
        };
        Self {
            auth_url: url("auth-url", "https://teams.live.com/api/auth"),
            chat_service_url: url("chat-service-url", "https://msgapi.teams.live.com"),
            media_url: url("media-url", "https://*.asm.skype.com"),
            poll_ms: number("poll-interval-ms", 10_000, 1000, 3_600_000),
            discovery_ms: number("discovery-interval-ms", 30_000, 1000, 86_400_000),
            budget_ms: number("call-budget-ms", 8000, 2000, 60_000),
        }
    }

    /// The origins the plugin may reach.
    fn origins(&self) -> Vec<String> {
        [&self.auth_url, &self.chat_service_url]
            .into_iter()
            .filter_map(|url| ids::origin(url))
            .collect()
    }
}

/// The login's own state (KV `login`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct LoginState {
    /// The periods of the timers set: (poll, discovery).
    #[serde(default)]
    timers: Option<(u64, u64)>,
    /// After a 429: no sync before this time.
    #[serde(default)]
    paused_until_ms: u64,
    /// The last complete sync, at a minute's precision (0: never).
    #[serde(default)]
    synced_at_ms: u64,
    /// The last bridge state reported.
    #[serde(default)]
    state: Option<String>,
    /// When a chat's read markers were last looked at.
    #[serde(default)]
    reads_checked_ms: u64,
    /// A fingerprint of the tokens the last instance started with: new
    /// ones mean a relogin (or renewed tokens).
    #[serde(default)]
    tokens: u64,
}

/// A fingerprint of a session's tokens, to notice new ones without
/// keeping a copy. (Another build may compute another one: that only
/// makes the login report its state once more.)
fn tokens_fingerprint(session: &Session) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    session.tokens.access_token.hash(&mut hasher);
    session.tokens.refresh_token.hash(&mut hasher);
    hasher.finish()
}

fn load<T: DeserializeOwned>(key: &str) -> Result<Option<T>, TeamsError> {
    match kv::get(key) {
        Ok(value) => Ok(value),
        Err(kv::KvError::Decode(message)) => {
            // Written by a version that no longer reads it: start over.
            weft_sdk::warn!("stored {key} unreadable, reset: {message}");
            Ok(None)
        }
        Err(error) => Err(error.into()),
    }
}

fn thread_key(thread_id: &str) -> String {
    format!("{THREAD_PREFIX}{thread_id}")
}

/// One message sent from Matrix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SentEntry {
    /// The Matrix event id.
    event: String,
    /// The `clientmessageid` it was sent with.
    client_id: String,
    /// Its Teams id, once sent.
    #[serde(default)]
    remote_id: Option<String>,
}

/// Messages sent from Matrix (KV `sent`), newest last, and the last
/// `clientmessageid` issued.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct SentLog {
    #[serde(default)]
    last_client_id: u64,
    #[serde(default)]
    entries: Vec<SentEntry>,
}

impl SentLog {
    fn load() -> Result<Self, TeamsError> {
        Ok(load(SENT_KEY)?.unwrap_or_default())
    }

    fn save(&self) -> Result<(), TeamsError> {
        Ok(kv::set(SENT_KEY, self)?)
    }

    fn find(&self, event: &str) -> Option<&SentEntry> {
        self.entries.iter().find(|e| e.event == event)
    }

    /// A new `clientmessageid` for Matrix event `event`.
    fn issue(&mut self, event: &str) -> String {
        let id = api::next_client_message_id(
            self.last_client_id,
            now_ms(),
            weft_sdk::time::random_u64(),
        );
        self.last_client_id = id;
        self.entries.push(SentEntry {
            event: event.to_owned(),
            client_id: id.to_string(),
            remote_id: None,
        });
        let excess = self.entries.len().saturating_sub(SENT_LOG_LEN);
        self.entries.drain(..excess);
        id.to_string()
    }

    fn set_remote(&mut self, event: &str, remote_id: &str) {
        if let Some(entry) = self.entries.iter_mut().find(|e| e.event == event) {
            entry.remote_id = Some(remote_id.to_owned());
        }
    }

    fn client_ids(&self) -> BTreeSet<String> {
        self.entries.iter().map(|e| e.client_id.clone()).collect()
    }
}

// ---------------------------------------------------------------------
// A call's context: settings, session, budget

/// Exchanges an access token for a skypetoken.
///
/// # `POST {auth-url}/v1.0/authz/consumer`
fn acquire_skypetoken(
    settings: &Settings,
    access_token: &str,
    budget: &Budget,
) -> Result<Authz, TeamsError> {
    let request = Request::post(api::authz_url(&settings.auth_url))
        .bearer(access_token)
        .header("accept", "application/json; ver=1.0")
        .body(Vec::new());
    let response = api::send(request, budget).map_err(|error| match error {
        // Refused for the token (enterprise answers 403 for licences).
        TeamsError::Status { status: 403, .. } => TeamsError::Unauthorized,
        other => other,
    })?;
    session::parse_authz(response.bytes(), now_secs()).map_err(TeamsError::Malformed)
}

/// Everything one call to the connector needs: the settings, the login's
/// session (renewed as needed) and the call's time budget.
struct Ctx {
    settings: Settings,
    session: Session,
    budget: Budget,
    /// Whether the skypetoken was renewed after a 401 in this call.
    renewed: bool,
}

impl Ctx {
    fn open() -> Result<Self, TeamsError> {
        let settings = Settings::load();
        let session: Session = weft_sdk::session::metadata()
            .map_err(|e| {
                TeamsError::Relogin(format!(
                    "the login's metadata is unreadable: {}",
                    e.message()
                ))
            })?
            .ok_or_else(|| TeamsError::Relogin("this login has no Teams tokens".into()))?;
        Ok(Self {
            budget: Budget::new(settings.budget_ms),
            settings,
            session,
            renewed: false,
        })
    }

    /// Opens a context with a skypetoken that is good.
    fn ready() -> Result<Self, TeamsError> {
        let mut ctx = Self::open()?;
        ctx.ensure_token(false)?;
        Ok(ctx)
    }

    fn base(&self) -> &str {
        &self.session.chat_service
    }

    fn save(&self) -> Result<(), TeamsError> {
        weft_sdk::session::set_metadata(&self.session).map_err(|e| TeamsError::Host(e.to_string()))
    }

    /// EnsureValidSkypeToken: renews what [`session::token_step`] says.
    fn ensure_token(&mut self, skypetoken_rejected: bool) -> Result<(), TeamsError> {
        let mut step = session::token_step(&self.session, now_secs(), skypetoken_rejected);
        let mut refreshed = false;
        loop {
            match step {
                TokenStep::Ready => return Ok(()),
                TokenStep::Relogin(why) => return Err(TeamsError::Relogin(why.into())),
                TokenStep::Refresh => {
                    self.refresh()?;
                    refreshed = true;
                    step = TokenStep::AcquireSkypeToken;
                }
                TokenStep::AcquireSkypeToken => {
                    match acquire_skypetoken(
                        &self.settings,
                        &self.session.tokens.access_token,
                        &self.budget,
                    ) {
                        Ok(authz) => {
                            let chat_service = session::pick_chat_service(
                                &authz,
                                &self.settings.chat_service_url,
                                &self.settings.origins(),
                            );
                            let lifetime = authz.expires_in;
                            session::apply_authz(
                                &mut self.session,
                                authz,
                                chat_service,
                                now_secs(),
                            );
                            self.save()?;
                            weft_sdk::info!("skypetoken renewed, valid for {lifetime}s");
                            return Ok(());
                        }
                        Err(TeamsError::Unauthorized) if !refreshed && self.has_refresh_token() => {
                            weft_sdk::info!("Teams refused the access token: refreshing it first");
                            step = TokenStep::Refresh;
                        }
                        Err(TeamsError::Unauthorized) => {
                            return Err(TeamsError::Relogin(
                                "Teams refused the account's token".into(),
                            ));
                        }
                        Err(error) => return Err(error),
                    }
                }
            }
        }
    }

    fn has_refresh_token(&self) -> bool {
        self.session
            .tokens
            .refresh_token
            .as_deref()
            .is_some_and(|t| !t.trim().is_empty())
    }

    /// Refreshes the access token through the MSAL provider and stores the
    /// rotated set before anything uses it.
    fn refresh(&mut self) -> Result<(), TeamsError> {
        let Some(token) = self
            .session
            .tokens
            .refresh_token
            .clone()
            .filter(|t| !t.trim().is_empty())
        else {
            return Err(TeamsError::Relogin("there is no refresh token".into()));
        };
        match tokens::refresh(&token, &[SCOPE.to_owned()]) {
            Ok(fresh) => {
                session::apply_refresh(&mut self.session, fresh, now_secs());
                self.save()?;
                weft_sdk::info!(
                    "access token refreshed through the login provider, valid for {}s",
                    self.session.tokens.expires_at.saturating_sub(now_secs())
                );
                Ok(())
            }
            Err(TokenError::InvalidGrant(m) | TokenError::InvalidInput(m)) => Err(
                TeamsError::Relogin(format!("the refresh token was rejected: {m}")),
            ),
            Err(TokenError::Transient(m) | TokenError::Unavailable(m)) => {
                Err(TeamsError::Provider(m))
            }
        }
    }

    fn call_once(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Response, TeamsError> {
        let token = self.session.skypetoken.as_deref().unwrap_or_default();
        api::send(api::chat_request(method, url, token, body), &self.budget)
    }

    /// A chat-service call; a 401 renews the skypetoken once per call and
    /// retries, a second one means logging in again.
    fn call(
        &mut self,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Response, TeamsError> {
        let relogin = || TeamsError::Relogin("Teams refused a fresh skypetoken".into());
        match self.call_once(method, url, body) {
            Err(TeamsError::Unauthorized) if !self.renewed => {
                self.renewed = true;
                weft_sdk::info!("Teams refused the skypetoken: renewing it");
                self.ensure_token(true)?;
                self.call_once(method, url, body)
                    .map_err(|error| match error {
                        TeamsError::Unauthorized => relogin(),
                        other => other,
                    })
            }
            Err(TeamsError::Unauthorized) => Err(relogin()),
            other => other,
        }
    }

    /// [`Self::call`] for a send: 429s (after their `Retry-After`), 5xx
    /// and timeouts are tried again, with the same body (so the same
    /// `clientmessageid`: Teams never gets two messages).
    fn call_retrying(
        &mut self,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Response, TeamsError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.call(method, url, body) {
                Err(error)
                    if attempt < SEND_ATTEMPTS
                        && matches!(
                            error,
                            TeamsError::RateLimited(_)
                                | TeamsError::Network(_)
                                | TeamsError::Status { status: 500.., .. }
                        ) =>
                {
                    let wait = match &error {
                        TeamsError::RateLimited(wait) => *wait,
                        _ => Duration::from_millis(250 << (attempt - 1)),
                    };
                    if !self.budget.wait(wait) {
                        return Err(error);
                    }
                    weft_sdk::debug!("{error}; trying again (attempt {})", attempt + 1);
                }
                other => return other,
            }
        }
    }

    fn get_json<T: DeserializeOwned + Default>(&mut self, url: &str) -> Result<T, TeamsError> {
        let response = self.call(Method::Get, url, None)?;
        if response.bytes().iter().all(u8::is_ascii_whitespace) {
            return Ok(T::default());
        }
        response
            .json()
            .map_err(|e| TeamsError::Malformed(e.message().to_owned()))
    }

    /// Every chat of the conversation list, following its pages on the
    /// chat service's origin only; system feeds are left out.
    fn list_chats(&mut self) -> Result<Vec<Chat>, TeamsError> {
        let mut url = api::conversations_url(self.base());
        let mut chats = Vec::new();
        let mut seen = BTreeSet::new();
        for _ in 0..MAX_CONVERSATION_PAGES {
            let page: ConversationPage = self.get_json(&url)?;
            let (page_chats, link) = page.into_parts();
            if page_chats.is_empty() {
                break;
            }
            for chat in page_chats {
                if !ids::is_system_feed(&chat.thread_id) && seen.insert(chat.thread_id.clone()) {
                    chats.push(chat);
                }
            }
            match link.and_then(|link| ids::follow_link(self.base(), &link)) {
                Some(next) if next != url => url = next,
                _ => break,
            }
        }
        Ok(chats)
    }

    /// Pages of messages from `url` (newest first), following older pages
    /// on the chat service until `done` says a page reached far enough (or
    /// `pages` are read). Also returns the first page's `syncState` link.
    fn fetch_pages(
        &mut self,
        url: String,
        pages: usize,
        mut done: impl FnMut(&[Msg]) -> bool,
    ) -> Result<(Vec<Msg>, Option<String>), TeamsError> {
        let mut url = url;
        let mut all = Vec::new();
        let mut sync_state = None;
        for index in 0..pages {
            let page: MessagePage = self.get_json(&url)?;
            let parts = page.into_parts();
            if index == 0 {
                sync_state = parts
                    .sync_state
                    .and_then(|link| ids::follow_link(self.base(), &link));
            }
            let finished = parts.messages.is_empty() || done(&parts.messages);
            all.extend(parts.messages);
            if finished {
                return Ok((all, sync_state));
            }
            match parts
                .backward_link
                .and_then(|link| ids::follow_link(self.base(), &link))
            {
                Some(next) if next != url => url = next,
                _ => return Ok((all, sync_state)),
            }
        }
        weft_sdk::warn!("more than {pages} pages of messages at once: older ones were not read");
        Ok((all, sync_state))
    }

    fn media_auth(&self) -> MediaAuth {
        MediaAuth {
            origins: self
                .settings
                .origins()
                .into_iter()
                .chain(ids::origin(self.base()))
                .collect(),
            media_service: ids::origin(&self.settings.media_url).unwrap_or_default(),
            skypetoken: self.session.skypetoken.clone().unwrap_or_default(),
        }
    }
}

/// The conversation id to use in URLs for chat `chat_id`.
fn conversation_of(chat_id: &str) -> Result<String, TeamsError> {
    let state: Option<ThreadState> = load(&thread_key(chat_id))?;
    Ok(state
        .and_then(|s| s.conversation_id)
        .unwrap_or_else(|| chat_id.to_owned()))
}

/// The HTML sent to Teams for a Matrix message.
fn outgoing_html(text: &str, html: Option<&str>, reply_to: Option<&str>) -> String {
    let body = match html.filter(|h| !h.trim().is_empty()) {
        Some(html) => html::strip_mx_reply(html),
        None => html::escape(text),
    };
    match reply_to {
        Some(target) => format!("{}{body}", html::reply_quote(target)),
        None => body,
    }
}

/// The name Teams shows on the account's own messages, and when the
/// newest message that showed it was sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct OwnName {
    name: String,
    at_ms: u64,
}

/// Remembers the name Teams shows on the newest of the account's own
/// messages among `messages` (sender, time), if newer than the one
/// remembered. Sends carry it (`imdisplayname`): the login's name is its
/// sign-in name, and a send under that would rename the account's ghost
/// in the chat's other portals. A message showing the login's name (an
/// earlier send from Matrix, say) teaches nothing. Best effort: a failure
/// is logged, and a later message tries again.
fn remember_own_name<'a>(messages: impl Iterator<Item = (&'a EventSender, u64)>) {
    let login_name = weft_sdk::session::current().map(|l| l.remote_name);
    let newest = messages
        .filter(|(sender, _)| sender.is_from_me)
        .filter_map(|(sender, at_ms)| {
            let name = sender.user.display_name.as_deref()?.trim();
            (!name.is_empty() && Some(name) != login_name.as_deref()).then_some((name, at_ms))
        })
        .max_by_key(|(_, at_ms)| *at_ms);
    let Some((name, at_ms)) = newest else {
        return;
    };
    let result = load::<OwnName>(OWN_NAME_KEY).and_then(|known| match known {
        Some(known) if known.at_ms >= at_ms || known.name == name => Ok(()),
        _ => Ok(kv::set(
            OWN_NAME_KEY,
            &OwnName {
                name: name.to_owned(),
                at_ms,
            },
        )?),
    });
    if let Err(error) = result {
        weft_sdk::warn!("could not remember the account's name: {error}");
    }
}

/// The sender and time of a planned event, if it is a message.
fn sender_of(out: &Out) -> Option<(&EventSender, u64)> {
    match out {
        Out::Event(RemoteEvent::Message(message)) => Some((&message.sender, message.timestamp_ms)),
        Out::Media(media) => Some((&media.sender, media.timestamp_ms)),
        Out::Event(_) => None,
    }
}

/// Queues one event. An event the host refuses as malformed is logged and
/// dropped (a file becomes a note saying so), so one bad message never
/// blocks its chat.
fn queue(out: Out) -> Result<(), TeamsError> {
    match out {
        Out::Event(event) => match events::queue(event) {
            Err(EventError::Invalid(reason)) => {
                weft_sdk::warn!("an event was not bridged: {reason}");
                Ok(())
            }
            other => Ok(other?),
        },
        Out::Media(media) => match events::queue_media(media.clone()) {
            Err(EventError::Invalid(reason)) => {
                weft_sdk::warn!("a file was not bridged: {reason}");
                let note = events::Message {
                    chat_id: media.chat_id,
                    message_id: media.message_id,
                    sender: media.sender,
                    timestamp_ms: media.timestamp_ms,
                    stream_order: media.stream_order,
                    text: format!("📎 {} (not bridged: {reason})", media.attachment.file_name),
                    html: None,
                    reply_to: media.reply_to,
                };
                match events::queue(RemoteEvent::Message(note)) {
                    Err(EventError::Invalid(_)) => Ok(()),
                    other => Ok(other?),
                }
            }
            other => Ok(other?),
        },
    }
}

/// Whether an error stops the whole sync rather than one chat.
fn stops_sync(error: &TeamsError) -> bool {
    matches!(
        error,
        TeamsError::Unauthorized
            | TeamsError::Relogin(_)
            | TeamsError::Host(_)
            | TeamsError::Denied(_)
            | TeamsError::OutOfTime
            | TeamsError::RateLimited(_)
            | TeamsError::Provider(_)
    )
}

// ---------------------------------------------------------------------
// The connector

/// The connector. Its fields are a cache only; what lasts is in KV and in
/// the login's metadata.
#[derive(Default)]
pub struct Teams {
    /// Message types already logged as skipped, to log each once.
    logged_types: BTreeSet<String>,
}

impl Teams {
    fn log_skipped(&mut self, skipped: Vec<Skip>) {
        for skip in skipped {
            match skip {
                Skip::Quiet(kind) => {
                    if self.logged_types.insert(kind.clone()) {
                        weft_sdk::debug!("not bridging `{kind}` messages");
                    }
                }
                Skip::Unsupported(kind) => {
                    if self.logged_types.insert(kind.clone()) {
                        weft_sdk::info!("skipping `{kind}` messages: not supported");
                    }
                }
                Skip::Empty => {}
            }
        }
    }

    /// A sync: `full` resyncs every changed chat (discovery); a poll only
    /// new ones. Both fetch the messages of chats that changed.
    fn sync(&mut self, full: bool, login: &mut LoginState) -> Result<(), TeamsError> {
        let now = now_ms();
        if login.paused_until_ms > now {
            weft_sdk::debug!(
                "rate-limited: no sync for {}s",
                (login.paused_until_ms - now) / 1000
            );
            return Ok(());
        }
        let mut ctx = Ctx::ready()?;
        let chats = ctx.list_chats()?;
        let mut index: BTreeMap<String, ChatMark> = load(CHATS_KEY)?.unwrap_or_default();
        let index_before = index.clone();
        let result = self.sync_chats(&mut ctx, &chats, &mut index, full, login);
        if index != index_before {
            kv::set(CHATS_KEY, &index)?;
        }
        result
    }

    fn sync_chats(
        &mut self,
        ctx: &mut Ctx,
        chats: &[Chat],
        index: &mut BTreeMap<String, ChatMark>,
        full: bool,
        login: &mut LoginState,
    ) -> Result<(), TeamsError> {
        let now = now_ms();
        let mut to_fetch = Vec::new();
        let mut to_resync = Vec::new();
        for chat in chats {
            match index.get(&chat.thread_id) {
                None => to_resync.push(chat),
                Some(mark) => {
                    let reshaped = mark.shape.as_deref() != Some(chat.shape.as_str());
                    if mark.shape.is_none() || (full && reshaped) {
                        to_resync.push(chat);
                    }
                    if mark.marker.as_deref() != Some(chat.marker.as_str())
                        && mark.retry_at_ms <= now
                    {
                        to_fetch.push(chat);
                    }
                }
            }
        }

        let sent = if to_fetch.is_empty() {
            BTreeSet::new()
        } else {
            SentLog::load()?.client_ids()
        };
        for chat in to_fetch {
            let outcome = self.poll_chat(ctx, chat, &sent);
            let mark = index.entry(chat.thread_id.clone()).or_default();
            match outcome {
                Ok(()) => {
                    mark.marker = Some(chat.marker.clone());
                    mark.failures = 0;
                    mark.retry_at_ms = 0;
                }
                Err(error) => self.chat_failed(chat, mark, error)?,
            }
        }

        let resume_from =
            (login.synced_at_ms > 0).then(|| login.synced_at_ms.saturating_sub(RESUME_OVERLAP_MS));
        let mut all_known = true;
        for chat in to_resync {
            if let Err(error) = self.resync_chat(ctx, chat, index, resume_from) {
                match index.get_mut(&chat.thread_id) {
                    Some(mark) => self.chat_failed(chat, mark, error)?,
                    None => {
                        // Still unknown: tried again next time, from the
                        // same point.
                        all_known = false;
                        self.chat_failed(chat, &mut ChatMark::default(), error)?;
                    }
                }
            }
        }

        // The point a chat found later starts from moves only once every
        // chat seen is known.
        if all_known && now.saturating_sub(login.synced_at_ms) >= SYNCED_AT_STEP_MS {
            login.synced_at_ms = now;
        }

        // Read markers last, and only of chats whose messages are all in:
        // a receipt points at a message.
        for chat in chats {
            if let Some(mark) = index.get_mut(&chat.thread_id)
                && mark.is_up_to_date(chat)
                && let Some(receipt) = sync::own_read_receipt(chat, mark, &ctx.session.mri, now)
            {
                events::queue(receipt)?;
            }
        }
        self.sync_member_reads(ctx, chats, index, login)
    }

    /// The other members' read markers of one chat watched for reads
    /// (after the login sent in it), the one looked at longest ago: one
    /// call at most as often as discovery runs, for the whole login, so
    /// watching costs little of the fifteen calls a minute Teams allows.
    fn sync_member_reads(
        &mut self,
        ctx: &mut Ctx,
        chats: &[Chat],
        index: &mut BTreeMap<String, ChatMark>,
        login: &mut LoginState,
    ) -> Result<(), TeamsError> {
        let now = now_ms();
        let watched: BTreeSet<String> = index
            .iter_mut()
            .filter_map(|(id, mark)| mark.watching_reads(now).then(|| id.clone()))
            .collect();
        if watched.is_empty()
            || now.saturating_sub(login.reads_checked_ms) < ctx.settings.discovery_ms
        {
            return Ok(());
        }
        let next = chats
            .iter()
            .filter(|chat| watched.contains(&chat.thread_id))
            .filter_map(|chat| Some((chat, index.get(&chat.thread_id)?)))
            .filter(|(chat, mark)| mark.is_up_to_date(chat))
            .min_by_key(|(_, mark)| mark.reads_checked_ms)
            .map(|(chat, _)| chat);
        let Some(chat) = next else {
            return Ok(());
        };
        let Some(mark) = index.get_mut(&chat.thread_id) else {
            return Ok(());
        };
        login.reads_checked_ms = now;
        mark.reads_checked_ms = now;
        let url = api::consumption_horizons_url(ctx.base(), &chat.thread_id);
        match ctx.get_json::<HorizonPage>(&url) {
            Ok(page) => {
                let receipts = sync::member_read_receipts(
                    &chat.thread_id,
                    page.into_reads(),
                    mark,
                    &ctx.session.mri,
                    now,
                );
                for receipt in receipts {
                    events::queue(receipt)?;
                }
                Ok(())
            }
            // Out of this sync's time: the next one looks.
            Err(TeamsError::OutOfTime) => Ok(()),
            Err(error) if stops_sync(&error) => Err(error),
            Err(error) => {
                weft_sdk::debug!("read markers of {} not read: {error}", chat.thread_id);
                Ok(())
            }
        }
    }

    /// Updates chat `chat_id`'s mark in the chat index, if it has one.
    fn update_mark(chat_id: &str, change: impl FnOnce(&mut ChatMark)) -> Result<(), TeamsError> {
        let mut index: BTreeMap<String, ChatMark> = load(CHATS_KEY)?.unwrap_or_default();
        if let Some(mark) = index.get_mut(chat_id) {
            change(mark);
            kv::set(CHATS_KEY, &index)?;
        }
        Ok(())
    }

    /// Backs a failed chat off, or stops the sync for an error that is
    /// not the chat's own (a 429 pauses the whole login).
    fn chat_failed(
        &mut self,
        chat: &Chat,
        mark: &mut ChatMark,
        error: TeamsError,
    ) -> Result<(), TeamsError> {
        if stops_sync(&error) {
            return Err(error);
        }
        mark.failures = mark.failures.saturating_add(1);
        let wait = api::backoff(mark.failures, &error);
        mark.retry_at_ms =
            now_ms().saturating_add(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
        weft_sdk::warn!(
            "chat {} failed ({error}); trying it again in {}s",
            chat.thread_id,
            wait.as_secs()
        );
        Ok(())
    }

    /// Resyncs a chat (creating its portal) and, if it is new, starts its
    /// state.
    fn resync_chat(
        &mut self,
        ctx: &mut Ctx,
        chat: &Chat,
        index: &mut BTreeMap<String, ChatMark>,
        resume_from: Option<u64>,
    ) -> Result<(), TeamsError> {
        let members = if chat.thread_id.starts_with("19:") {
            let url = api::thread_url(ctx.base(), &chat.thread_id);
            match ctx.get_json::<ThreadInfo>(&url) {
                Ok(info) => info.into_members(),
                Err(
                    error @ TeamsError::Status {
                        status: 400..=499, ..
                    },
                ) => {
                    weft_sdk::debug!("no members for {}: {error}", chat.thread_id);
                    Vec::new()
                }
                Err(error) => return Err(error),
            }
        } else {
            Vec::new()
        };
        let resync = sync::chat_resync(chat, &members, &ctx.session.mri);
        let key = thread_key(&chat.thread_id);
        let existing: Option<ThreadState> = load(&key)?;
        events::queue(RemoteEvent::ChatResync(resync))?;
        let mark = index.entry(chat.thread_id.clone()).or_default();
        match existing {
            Some(mut state) => {
                let conversation_id =
                    (chat.conversation_id != chat.thread_id).then(|| chat.conversation_id.clone());
                if state.conversation_id != conversation_id {
                    state.conversation_id = conversation_id;
                    kv::set(&key, &state)?;
                }
            }
            None => {
                let state = ThreadState::new_for(chat, resume_from, now_ms());
                kv::set(&key, &state)?;
                // On the first sync the chat starts after its last message:
                // nothing to fetch until it changes. Later, it is fetched
                // from the last look.
                mark.marker = resume_from.is_none().then(|| chat.marker.clone());
                weft_sdk::debug!("new chat {}", chat.thread_id);
            }
        }
        mark.shape = Some(chat.shape.clone());
        Ok(())
    }

    /// Fetches a changed chat's new messages and queues their events; the
    /// chat's state moves only once they are all queued.
    fn poll_chat(
        &mut self,
        ctx: &mut Ctx,
        chat: &Chat,
        sent: &BTreeSet<String>,
    ) -> Result<(), TeamsError> {
        let key = thread_key(&chat.thread_id);
        let stored: Option<ThreadState> = load(&key)?;
        let mut state = stored.clone().unwrap_or_else(|| {
            // Indexed but without a state (lost): from a little while ago.
            ThreadState::new_for(
                chat,
                Some(now_ms().saturating_sub(RESUME_OVERLAP_MS)),
                now_ms(),
            )
        });
        state.conversation_id =
            (chat.conversation_id != chat.thread_id).then(|| chat.conversation_id.clone());
        let cursor = state.cursor.clone();
        let reached = |page: &[Msg]| page.iter().any(|m| !cursor.is_before(m));
        let since_url = api::messages_since_url(
            ctx.base(),
            &chat.conversation_id,
            cursor.last_message_ts.saturating_sub(LOOKBACK_MS),
            MESSAGE_PAGE,
        );
        // The last fetch's `syncState` gives new and changed messages; a
        // time gives only new ones.
        let stored_sync = state
            .sync_state
            .take()
            .and_then(|link| ids::follow_link(ctx.base(), &link));
        let (mut messages, sync_state, synced) = match stored_sync {
            Some(url) => match ctx.fetch_pages(url, MAX_MESSAGE_PAGES, reached) {
                Ok((messages, sync_state)) => (messages, sync_state, true),
                Err(TeamsError::Status {
                    status: 400..=499, ..
                }) => {
                    // Expired or refused: from the cursor's time instead.
                    let (messages, sync_state) =
                        ctx.fetch_pages(since_url, MAX_MESSAGE_PAGES, reached)?;
                    (messages, sync_state, false)
                }
                Err(error) => return Err(error),
            },
            None => {
                let (messages, sync_state) =
                    ctx.fetch_pages(since_url, MAX_MESSAGE_PAGES, reached)?;
                (messages, sync_state, false)
            }
        };
        if !synced && !messages.iter().any(|m| cursor.is_before(m)) {
            // Changed without a new message: an edit, a deletion or a
            // reaction on a recent one.
            let window = api::messages_since_url(
                ctx.base(),
                &chat.conversation_id,
                cursor.last_message_ts.saturating_sub(UPDATE_WINDOW_MS),
                MESSAGE_PAGE,
            );
            messages.extend(ctx.fetch_pages(window, 1, |_| true)?.0);
        }
        state.sync_state = sync_state;
        let media = ctx.media_auth();
        let planner = sync::Context {
            chat_id: &chat.thread_id,
            me: &ctx.session.mri,
            sent,
            media: &media,
            now_ms: now_ms(),
        };
        let (out, skipped) = planner.plan(&mut state, messages);
        self.log_skipped(skipped);
        remember_own_name(out.iter().filter_map(sender_of));
        for event in out {
            queue(event)?;
        }
        // The events are durable: the cursor may move.
        if stored.as_ref() != Some(&state) {
            kv::set(&key, &state)?;
        }
        Ok(())
    }

    /// Runs a sync and reports the login's bridge state when it changes.
    fn run_sync(&mut self, full: bool) -> Result<()> {
        let mut login: LoginState = load(LOGIN_KEY)?.unwrap_or_default();
        let before = login.clone();
        let result = match self.sync(full, &mut login) {
            // The rest waits for the next sync.
            Err(TeamsError::OutOfTime) => {
                weft_sdk::debug!("sync out of time; continuing at the next one");
                Ok(())
            }
            other => other,
        };
        if let Err(TeamsError::RateLimited(wait)) = &result {
            // Whatever call it was, the account waits.
            let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
            login.paused_until_ms = now_ms().saturating_add(wait_ms);
            weft_sdk::warn!(
                "rate-limited by Teams: pausing this login for {}s",
                wait.as_secs()
            );
        }
        let report = match &result {
            Ok(()) => Some((BridgeStateKind::Connected, "connected", None)),
            Err(TeamsError::Unauthorized | TeamsError::Relogin(_)) => Some((
                BridgeStateKind::BadCredentials,
                "teams-relogin-required",
                None,
            )),
            Err(TeamsError::RateLimited(_)) => Some((
                BridgeStateKind::TransientDisconnect,
                "teams-rate-limited",
                None,
            )),
            Err(TeamsError::OutOfTime) => None,
            Err(error) if error.is_transient() => Some((
                BridgeStateKind::TransientDisconnect,
                "teams-unreachable",
                Some(error.to_string()),
            )),
            Err(error) => Some((
                BridgeStateKind::UnknownError,
                "teams-sync-failed",
                Some(error.to_string()),
            )),
        };
        if let Some((state, code, detail)) = report
            && login.state.as_deref() != Some(code)
        {
            let message = match (&result, detail) {
                (Err(error), None) => Some(error.to_string()),
                (_, detail) => detail,
            };
            let code_sent = (state != BridgeStateKind::Connected).then_some(code);
            if events::set_bridge_state(state, code_sent, message.as_deref()).is_ok() {
                login.state = Some(code.to_owned());
            }
        }
        if login != before
            && let Err(error) = kv::set(LOGIN_KEY, &login)
        {
            weft_sdk::warn!("the login's state was not stored: {error}");
        }
        if let Err(error) = &result {
            match error {
                TeamsError::Unauthorized | TeamsError::Relogin(_) => {
                    weft_sdk::warn!("Teams needs a new login: {error}");
                }
                _ => weft_sdk::debug!("sync failed: {error}"),
            }
        }
        result.map_err(Error::from)
    }

    /// Sends a new message from Matrix; returns its Teams id.
    fn send_new(
        &mut self,
        ctx: &mut Ctx,
        chat_id: &str,
        event_id: &str,
        content: &str,
    ) -> Result<String, TeamsError> {
        let mut log = SentLog::load()?;
        let client_id = match log.find(event_id) {
            Some(SentEntry {
                remote_id: Some(remote_id),
                ..
            }) => return Ok(remote_id.clone()),
            Some(entry) => entry.client_id.clone(),
            None => {
                let client_id = log.issue(event_id);
                // Stored before the send: a retry, even after a crash,
                // reuses it, and the echo is known.
                log.save()?;
                client_id
            }
        };
        // The sender's name the chat shows: the account's own as Teams
        // shows it, once a message of its has been seen; until then the
        // login's name (its sign-in name).
        let display_name = match load::<OwnName>(OWN_NAME_KEY)? {
            Some(own) => Some(own.name),
            None => weft_sdk::session::current().map(|l| l.remote_name),
        };
        let body = api::send_body(&client_id, content, display_name.as_deref());
        let url = api::messages_url(ctx.base(), &conversation_of(chat_id)?);
        let response = ctx.call_retrying(Method::Post, &url, Some(&body))?;
        let remote_id = model::sent_message_id(response.bytes(), response.header("location"))
            .unwrap_or_else(|| client_id.clone());
        log.set_remote(event_id, &remote_id);
        log.save()?;
        Ok(remote_id)
    }

    /// Updates chat `chat_id`'s stored state, if it has one (a chat
    /// without one gets it, with its cursor, from discovery).
    fn update_thread(
        chat_id: &str,
        change: impl FnOnce(&mut ThreadState),
    ) -> Result<(), TeamsError> {
        let key = thread_key(chat_id);
        if let Some(mut state) = load::<ThreadState>(&key)? {
            change(&mut state);
            kv::set(&key, &state)?;
        }
        Ok(())
    }
}

impl Connector for Teams {
    fn start(&mut self) -> Result<()> {
        let session: Option<Session> = weft_sdk::session::metadata().ok().flatten();
        let Some(session) = session else {
            return Err(Error::bad_credentials(
                "this login has no Teams tokens: log in again",
            ));
        };
        let settings = Settings::load();
        let mut login: LoginState = load(LOGIN_KEY)?.unwrap_or_default();
        let stored = login.clone();
        let tokens = tokens_fingerprint(&session);
        if login.tokens != tokens {
            // New tokens: after a relogin the host shows the login as
            // connecting until it hears a state, and the last one reported
            // predates it, so the next sync reports afresh. (Tokens renewed
            // during a run make a restart report once more; harmless.)
            login.state = None;
            login.tokens = tokens;
        }
        let wanted = (settings.poll_ms, settings.discovery_ms);
        // Timers outlive instances; they are set again only when their
        // periods change, or when syncs have stopped (e.g. after a long
        // pause for a relogin), so a restart or a wake from hibernation
        // does not postpone them.
        let stalled_after = 2 * settings.poll_ms.max(settings.discovery_ms) + 2 * SYNCED_AT_STEP_MS;
        let stalled =
            login.synced_at_ms > 0 && now_ms().saturating_sub(login.synced_at_ms) > stalled_after;
        if login.timers != Some(wanted) || stalled {
            timers::set_interval(POLL_TIMER, Duration::from_millis(settings.poll_ms))?;
            timers::set_interval(DISCOVER_TIMER, Duration::from_millis(settings.discovery_ms))?;
            timers::set_timeout(CONNECT_TIMER, Duration::from_secs(1))?;
            login.timers = Some(wanted);
            weft_sdk::info!(
                "syncing every {}s, discovering chats every {}s",
                settings.poll_ms / 1000,
                settings.discovery_ms / 1000
            );
        }
        if login != stored {
            kv::set(LOGIN_KEY, &login)?;
        }
        Ok(())
    }

    fn on_timer(&mut self, name: &str) -> Result<()> {
        match name {
            POLL_TIMER => self.run_sync(false),
            DISCOVER_TIMER | CONNECT_TIMER => self.run_sync(true),
            other => {
                weft_sdk::warn!("unknown timer {other}");
                Ok(())
            }
        }
    }

    fn handle_matrix_message(&mut self, message: MatrixMessage) -> Result<String> {
        let mut ctx = Ctx::ready()?;
        let content = outgoing_html(
            &message.text,
            message.html.as_deref(),
            message.reply_to.as_deref(),
        );
        let sent = self.send_new(&mut ctx, &message.chat_id, &message.event_id, &content)?;
        // Best effort: the message is in Teams whatever happens here.
        if let Err(error) = Self::update_mark(&message.chat_id, |mark| {
            mark.watch_reads(&sent, now_ms(), READS_WINDOW_MS);
        }) {
            weft_sdk::debug!("not watching who reads {sent}: {error}");
        }
        Ok(sent)
    }

    fn handle_matrix_media(&mut self, media: MatrixMedia) -> Result<String> {
        let _ = media;
        Err(Error::Unsupported(
            "Teams has no documented file upload for personal accounts: the file's name is sent instead".into(),
        ))
    }

    fn handle_matrix_edit(&mut self, edit: MatrixEdit) -> Result<()> {
        let mut ctx = Ctx::ready()?;
        let content = outgoing_html(&edit.text, edit.html.as_deref(), None);
        // Remembered first, so the edit's echo is never bridged back.
        Self::update_thread(&edit.chat_id, |state| {
            state.remember_own_change(&edit.message_id)
        })?;
        let url = api::message_url(
            ctx.base(),
            &conversation_of(&edit.chat_id)?,
            &edit.message_id,
        );
        ctx.call_retrying(Method::Put, &url, Some(&api::edit_body(&content)))?;
        Ok(())
    }

    fn handle_matrix_redaction(&mut self, chat_id: &str, message_id: &str) -> Result<()> {
        let mut ctx = Ctx::ready()?;
        // Remembered first, so the deletion's echo is never bridged back.
        Self::update_thread(chat_id, |state| state.remember_own_change(message_id))?;
        let url = api::message_url(ctx.base(), &conversation_of(chat_id)?, message_id);
        match ctx.call_retrying(Method::Delete, &url, None) {
            // Gone already.
            Ok(_) | Err(TeamsError::Status { status: 404, .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    fn handle_matrix_reaction(&mut self, reaction: MatrixReaction) -> Result<String> {
        let mut ctx = Ctx::ready()?;
        let key = sync::key_of(&reaction.key);
        let me = ctx.session.mri.clone();
        Self::update_thread(&reaction.chat_id, |state| {
            state.record_own_reaction(&reaction.message_id, &key, &me, true);
        })?;
        let url = api::emotions_url(
            ctx.base(),
            &conversation_of(&reaction.chat_id)?,
            &reaction.message_id,
        );
        ctx.call_retrying(
            Method::Put,
            &url,
            Some(&api::add_reaction_body(&key, now_ms())),
        )?;
        // The Teams key: what a removal needs.
        Ok(key)
    }

    fn handle_matrix_reaction_removal(
        &mut self,
        chat_id: &str,
        message_id: &str,
        reaction_id: &str,
    ) -> Result<()> {
        let mut ctx = Ctx::ready()?;
        let me = ctx.session.mri.clone();
        Self::update_thread(chat_id, |state| {
            state.record_own_reaction(message_id, reaction_id, &me, false);
        })?;
        let url = api::emotions_url(ctx.base(), &conversation_of(chat_id)?, message_id);
        match ctx.call_retrying(
            Method::Delete,
            &url,
            Some(&api::remove_reaction_body(reaction_id)),
        ) {
            Ok(_) | Err(TeamsError::Status { status: 404, .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    fn handle_matrix_read_receipt(&mut self, chat_id: &str, up_to: &str) -> Result<()> {
        let mut ctx = Ctx::ready()?;
        let url = api::consumption_horizon_url(ctx.base(), &conversation_of(chat_id)?);
        if let Err(error) = ctx.call(
            Method::Put,
            &url,
            Some(&api::consumption_horizon_body(up_to, now_ms())),
        ) {
            // A read marker that does not arrive is not worth an error.
            weft_sdk::debug!("read marker not set: {error}");
            if matches!(error, TeamsError::Relogin(_)) {
                return Err(error.into());
            }
            return Ok(());
        }
        // The next listing shows it as the login's own marker: not news.
        if let Err(error) =
            Self::update_mark(chat_id, |mark| mark.own_read = Some(up_to.to_owned()))
        {
            weft_sdk::debug!("read marker {up_to} not recorded: {error}");
        }
        Ok(())
    }

    fn handle_matrix_typing(&mut self, chat_id: &str, typing: bool) -> Result<()> {
        let mut ctx = Ctx::ready()?;
        let url = api::messages_url(ctx.base(), &conversation_of(chat_id)?);
        if let Err(error) = ctx.call(Method::Post, &url, Some(&api::typing_body(typing))) {
            weft_sdk::debug!("typing not sent: {error}");
            if matches!(error, TeamsError::Relogin(_)) {
                return Err(error.into());
            }
        }
        Ok(())
    }

    fn fetch_history(&mut self, chat_id: &str, limit: u32) -> Result<Vec<HistoryItem>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut ctx = Ctx::ready()?;
        let conversation = conversation_of(chat_id)?;
        let limit = usize::try_from(limit.min(500)).unwrap_or(500);
        let page_size = u32::try_from(limit.clamp(10, 100)).unwrap_or(100);
        let mut count = 0;
        let url = api::messages_since_url(ctx.base(), &conversation, 0, page_size);
        let (messages, _) = ctx.fetch_pages(url, 5, |page| {
            count += page.len();
            count >= limit
        })?;
        let media = ctx.media_auth();
        let sent = BTreeSet::new();
        let planner = sync::Context {
            chat_id,
            me: &ctx.session.mri,
            sent: &sent,
            media: &media,
            now_ms: now_ms(),
        };
        let history = planner.history(messages, limit);
        remember_own_name(history.iter().map(|item| match item {
            HistoryItem::Message(message) => (&message.sender, message.timestamp_ms),
            HistoryItem::Media(media) => (&media.sender, media.timestamp_ms),
        }));
        Ok(history)
    }

    fn logout(&mut self) -> Result<()> {
        // Nothing to do at Teams: the tokens are dropped with the login.
        for timer in [POLL_TIMER, DISCOVER_TIMER, CONNECT_TIMER] {
            timers::cancel(timer);
        }
        let _ = kv::delete(LOGIN_KEY);
        Ok(())
    }
}

impl Login for Teams {
    fn finish_provider_login(
        &mut self,
        flow_id: &str,
        grant: ProviderGrant,
        relogin: Option<&str>,
    ) -> Result<Completion> {
        let settings = Settings::load();
        let budget = Budget::new(settings.budget_ms);
        let scopes = [SCOPE.to_owned()];
        let mut tokens =
            tokens::from_captured(&grant.material, &scopes).map_err(|error| match error {
                TokenError::InvalidGrant(m) => {
                    Error::bad_credentials(format!("Microsoft did not accept the sign-in: {m}"))
                }
                TokenError::InvalidInput(m) => {
                    Error::invalid_input(format!("the sign-in could not be read: {m}"))
                }
                TokenError::Transient(m) | TokenError::Unavailable(m) => Error::transient(m),
            })?;
        let mut tokens_at = now_secs();
        let authz = match acquire_skypetoken(&settings, &tokens.access_token, &budget) {
            Err(TeamsError::Unauthorized) if tokens.refresh_token.is_some() => {
                // The captured access token may be stale: refresh once.
                let refresh_token = tokens.refresh_token.clone().unwrap_or_default();
                let fresh = tokens::refresh(&refresh_token, &scopes).map_err(Error::from)?;
                let mut temporary = Session {
                    mri: String::new(),
                    tokens,
                    tokens_at,
                    skypetoken: None,
                    skypetoken_at: 0,
                    skypetoken_expires_at: 0,
                    chat_service: String::new(),
                    signin_name: None,
                };
                tokens_at = now_secs();
                session::apply_refresh(&mut temporary, fresh, tokens_at);
                tokens = temporary.tokens;
                acquire_skypetoken(&settings, &tokens.access_token, &budget)
            }
            other => other,
        }
        .map_err(|error| match error {
            TeamsError::Unauthorized => Error::bad_credentials(
                "Teams did not accept this Microsoft account (is it a personal account that uses Teams?)",
            ),
            other => Error::from(other),
        })?;
        let mri = authz
            .skypeid
            .as_deref()
            .and_then(ids::normalize_mri)
            .ok_or_else(|| Error::internal("Teams did not say which account signed in"))?;
        let chat_service =
            session::pick_chat_service(&authz, &settings.chat_service_url, &settings.origins());
        let mut session = Session {
            mri: mri.clone(),
            tokens,
            tokens_at,
            skypetoken: None,
            skypetoken_at: 0,
            skypetoken_expires_at: 0,
            chat_service: String::new(),
            signin_name: None,
        };
        session::apply_authz(&mut session, authz, chat_service, now_secs());
        let name = session::remote_name(&grant.account_name, session.signin_name.as_deref(), &mri);
        match relogin {
            Some(old) if old != mri => {
                weft_sdk::info!("flow {flow_id}: signed in as {mri}, replacing login {old}");
            }
            _ => weft_sdk::info!("flow {flow_id}: signed in to Teams as {mri}"),
        }
        Completion::new(mri, name, &session)
    }
}

weft_sdk::register_connector!(Teams);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outgoing_messages_are_html() {
        // Plain text is escaped, line breaks kept.
        assert_eq!(outgoing_html("a < b\nc", None, None), "a &lt; b<br>c");
        // Matrix HTML goes as it is, without its reply fallback.
        assert_eq!(
            outgoing_html("x", Some("<mx-reply>q</mx-reply><b>x</b>"), None),
            "<b>x</b>"
        );
        // A reply quotes its target.
        assert!(outgoing_html("x", None, Some("17")).starts_with("<blockquote"));
        assert!(outgoing_html("x", None, Some("17")).contains("itemid=\"17\""));
    }

    #[test]
    fn the_sent_log_issues_growing_ids_and_stays_bounded() {
        let mut log = SentLog::default();
        let mut last = 0u64;
        for n in 0..(SENT_LOG_LEN + 5) {
            let id: u64 = {
                let event = format!("$e{n}");
                let entry_id =
                    api::next_client_message_id(log.last_client_id, 1_715_842_512_004, 0);
                log.last_client_id = entry_id;
                log.entries.push(SentEntry {
                    event,
                    client_id: entry_id.to_string(),
                    remote_id: None,
                });
                let excess = log.entries.len().saturating_sub(SENT_LOG_LEN);
                log.entries.drain(..excess);
                entry_id
            };
            // Strictly increasing.
            assert!(id > last);
            last = id;
        }
        assert_eq!(log.entries.len(), SENT_LOG_LEN);
        log.set_remote("$e204", "1715842512004");
        assert_eq!(
            log.find("$e204").and_then(|e| e.remote_id.as_deref()),
            Some("1715842512004")
        );
        // The oldest were forgotten.
        assert!(log.find("$e0").is_none());
        assert!(log.client_ids().contains(&last.to_string()));
    }

    #[test]
    fn only_account_wide_errors_stop_a_sync() {
        assert!(stops_sync(&TeamsError::Unauthorized));
        assert!(stops_sync(&TeamsError::RateLimited(Duration::ZERO)));
        assert!(stops_sync(&TeamsError::OutOfTime));
        // One chat's 500 or 404 is that chat's problem.
        assert!(!stops_sync(&TeamsError::Status {
            status: 500,
            detail: String::new()
        }));
        assert!(!stops_sync(&TeamsError::Status {
            status: 404,
            detail: String::new()
        }));
        assert!(!stops_sync(&TeamsError::Network("timeout".into())));
    }
}
