//! A fake of consumer Microsoft Teams (teams.live.com) and the Microsoft
//! identity platform, on one loopback HTTP server, faithful to the wire
//! formats of the Teams reference (`teams-consumer-api.md`): the remote
//! network of the Teams connector's tests, of the demo and of the
//! benchmarks.
//!
//! One base URL, `http://127.0.0.1:PORT`, serves:
//!
//! - the identity platform at the root, as [`identity`] describes it
//!   (`/consumers/oauth2/v2.0/token`, `/9188040d-…/oauth2/v2.0/token`,
//!   `/common/oauth2/devicecode`, `/common/oauth2/token`), sharing its
//!   tokens with the Teams side;
//! - `POST /api/auth/v1.0/authz/consumer`, which trades an `MBI_SSL`
//!   access token for a skypetoken and service URLs that point back here;
//! - the chat service under both `/msgapi` and `/api/chatsvc/consumer`
//!   (the `chatService` and `chatServiceAfd` of the answer): conversations
//!   with `backwardLink` paging, threads and their members, messages
//!   newest first, sending with `clientmessageid` dedup, edits, deletions,
//!   reactions, typing and read markers;
//! - `/files/{id}` and `/asm/v1/objects/…`: shared files and pictures,
//!   behind the skypetoken;
//! - `/fake/…`: pages for a person running the demo (device-code
//!   approval, a web session's capture), which real Teams has elsewhere.
//!
//! ## Shape variations
//!
//! Where the reference documents more than one shape for a field, the fake
//! uses all of them, so that a connector written from the reference has
//! to accept them all. For messages the choice follows a message's
//! creation number `n` across the fake (so one message always looks the
//! same, and a chat of a few messages shows each shape); what a client
//! posted (type, content, `contenttype`) is kept as posted:
//!
//! | field | shapes |
//! |---|---|
//! | `id` | a string when `n` is even, a number when odd |
//! | `sequenceId` | a string when `n % 3 == 1`, else a number |
//! | `from` | an object `{"id","displayName"}` when `n % 4 == 3`, else a contacts URL |
//! | `originalarrivaltime`, `composetime` | 7 fractional digits when `n / 2` is odd, else 3 |
//! | `contenttype` | `text` when `n` is even, `Text` when odd |
//! | `messagetype` of typed text | `RichText/Html` (`<p>…</p>`), `Text`, `RichText` for `n % 3` = 0, 1, 2 |
//! | `content` | an HTML string with entities; `{"text":…}` for a `Text` message with `n % 4 == 1`; a number for all-digit text that isn't `RichText/Html` |
//! | `properties.emotions[].users[].time` | a number and a string, alternately |
//!
//! Per chat (by creation number `c`): a 1:1's `threadProperties` has
//! `productThreadType: OneToOneChat` when `c` is even and
//! `uniquerosterthread: "true"` when odd; a legacy 1:1 has no
//! `threadProperties` when `c` is even and `null` when odd; a thread's
//! members carry `friendlyName` unless `c % 3 == 2` ("ids only").
//!
//! Per account (by creation number `a`): the Skype id is `live:<name>`
//! when `a` is odd (and the name free), else `live:.cid.<16 hex>`; the
//! skypetoken exchange gives `expiresIn` as a string when `a % 3 == 1`,
//! else as a number.
//!
//! ## Driving it
//!
//! Tests drive the state through [`FakeTeams`]'s methods: accounts, chats,
//! messages from the other side, and failures (expired skypetokens, 429s,
//! a failing thread, and revoked or expired refresh tokens through
//! [`FakeTeams::identity`]).

pub mod identity;
pub mod msal_cache;

mod api;
mod pages;
mod state;
mod wire;

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::identity::{Account, IdentitySnapshot, MsIdentity};
use crate::state::{Attachment, Draft, StoredMessage, TeamsState};

pub use crate::state::{TeamsCall, Typing};

/// The largest file the media store takes.
pub const MAX_FILE_BYTES: usize = 16 << 20;

/// The demo's echo account's user name.
pub const ECHO_USERNAME: &str = "teams-echo";

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct App {
    state: Arc<Mutex<TeamsState>>,
    identity: MsIdentity,
    addr: SocketAddr,
}

impl App {
    pub(crate) fn lock(&self) -> MutexGuard<'_, TeamsState> {
        // A panicking handler can't leave the state half-changed in a way
        // that matters to a fake; keep serving.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `127.0.0.1:PORT`: where links point when a request has no usable
    /// `Host`.
    pub(crate) fn host(&self) -> String {
        self.addr.to_string()
    }
}

/// A Teams user of the fake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamsAccount {
    /// The name it was added with (`alice`), which the demo pages take.
    pub username: String,
    /// Its identity-platform account: `username` is the sign-in name
    /// (`alice@outlook.com` when the name given had no `@`).
    pub account: Account,
    /// `live:.cid.<16 hex>` or `live:<name>` (every other account).
    pub skype_id: String,
    /// `8:` + `skype_id`.
    pub mri: String,
    /// The display name.
    pub display_name: String,
}

/// A file or picture attached to a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    /// Its id in the fake (`/files/{id}`, `/asm/v1/objects/{id}`).
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its MIME type.
    pub mime_type: String,
    /// Its size in bytes.
    pub size: usize,
}

/// A message as a test sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Its id (its arrival time in Unix milliseconds).
    pub id: String,
    /// Its position in the chat.
    pub sequence_id: u64,
    /// The sender's MRI (the thread's id for thread activity).
    pub sender: String,
    /// The sender's display name (`imdisplayname`).
    pub sender_name: String,
    /// `Text`, `RichText/Html`, `Control/Typing`, …
    pub messagetype: String,
    /// The content as stored (HTML for the rich types; empty once deleted
    /// and for a picture).
    pub content: String,
    /// The `clientmessageid`.
    pub clientmessageid: String,
    /// When it arrived, in Unix milliseconds.
    pub arrival_ms: u64,
    /// Whether it was edited.
    pub edited: bool,
    /// Whether it was deleted.
    pub deleted: bool,
    /// Reactions: key → the MRIs that reacted, in order.
    pub reactions: BTreeMap<String, Vec<String>>,
    /// Its file or picture.
    pub file: Option<FileRef>,
    /// Properties the sender posted (`mentions`, …).
    pub properties: Map<String, Value>,
}

impl Message {
    /// The content as text: tags dropped, entities decoded.
    pub fn text(&self) -> String {
        wire::plain_text(&self.content)
    }
}

/// The fake: cheap to clone, every clone the same server.
#[derive(Clone)]
pub struct FakeTeams {
    app: App,
}

/// What the state file holds.
#[derive(Serialize, Deserialize)]
struct StateFile<I, T> {
    identity: I,
    teams: T,
}

impl FakeTeams {
    /// Starts the fake on a free loopback port, empty.
    pub async fn start() -> Self {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), None)
            .await
            .expect("bind a loopback port")
    }

    /// Starts the fake on `addr`. With `state_file`, first loads it if it
    /// exists, then saves the state there whenever it changes (checked
    /// every second, written atomically), so a restart keeps accounts,
    /// chats, messages, files and every issued token.
    pub async fn start_on(addr: SocketAddr, state_file: Option<PathBuf>) -> io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let mut local = listener.local_addr()?;
        if local.ip().is_unspecified() {
            local.set_ip(Ipv4Addr::LOCALHOST.into());
        }
        let fake = Self {
            app: App {
                state: Arc::new(Mutex::new(TeamsState::new())),
                identity: MsIdentity::unserved(local),
                addr: local,
            },
        };
        if let Some(path) = state_file {
            fake.load(&path)?;
            fake.keep_saving(path);
        }
        let router = fake.router();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(%e, "the fake Teams stopped");
            }
        });
        Ok(fake)
    }

    /// The whole API, for a caller that serves it itself.
    pub fn router(&self) -> Router {
        api::routes(&self.app)
            .merge(pages::routes())
            .merge(self.app.identity.routes())
            .fallback(not_found)
            .with_state(self.app.clone())
    }

    fn lock(&self) -> MutexGuard<'_, TeamsState> {
        self.app.lock()
    }

    /// `http://127.0.0.1:PORT`: the identity platform's authority and the
    /// Teams host (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.app.addr)
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.app.addr
    }

    /// The skypetoken exchange's URL.
    pub fn authz_url(&self) -> String {
        format!("{}/api/auth/v1.0/authz/consumer", self.base_url())
    }

    /// The `chatService` base.
    pub fn chat_service_url(&self) -> String {
        format!("{}/msgapi", self.base_url())
    }

    /// The `chatServiceAfd` base.
    pub fn chat_service_afd_url(&self) -> String {
        format!("{}/api/chatsvc/consumer", self.base_url())
    }

    /// The identity platform, whose tokens `authz/consumer` checks: issue
    /// tokens for fixtures, approve device codes, revoke or expire refresh
    /// tokens, inspect refreshes.
    pub fn identity(&self) -> &MsIdentity {
        &self.app.identity
    }

    fn account_of(profile: &state::Profile) -> TeamsAccount {
        TeamsAccount {
            username: profile.handle.clone(),
            account: profile.account.clone(),
            skype_id: profile.skype_id.clone(),
            mri: profile.mri(),
            display_name: profile.account.name.clone(),
        }
    }

    /// Adds a Teams user. `username` without an `@` signs in as
    /// `<username>@outlook.com`.
    pub fn add_account(&self, username: &str, display_name: &str) -> TeamsAccount {
        let sign_in = if username.contains('@') {
            username.to_owned()
        } else {
            format!("{username}@outlook.com")
        };
        let account = Account::new(&sign_in, display_name);
        Self::account_of(&self.lock().add_profile(username, account))
    }

    /// The user added as `username` (or signing in as it).
    pub fn account(&self, username: &str) -> Option<TeamsAccount> {
        self.lock()
            .profile_by_handle(username)
            .map(Self::account_of)
    }

    /// Every user, oldest first.
    pub fn accounts(&self) -> Vec<TeamsAccount> {
        let state = self.lock();
        let mut profiles: Vec<_> = state.profiles.values().collect();
        profiles.sort_by_key(|p| p.index);
        profiles.into_iter().map(Self::account_of).collect()
    }

    /// A consumer 1:1 between `a` and `b` (`19:uni01_…@thread.v2`); the
    /// existing one if they have one.
    pub fn dm(&self, a: &TeamsAccount, b: &TeamsAccount) -> String {
        self.lock().dm(&a.mri, &b.mri)
    }

    /// A group chat (`19:…@thread.v2`) created by `members[0]`, whose
    /// history starts with the thread events of its creation.
    pub fn group(&self, topic: &str, members: &[&TeamsAccount]) -> String {
        let members: Vec<String> = members.iter().map(|m| m.mri.clone()).collect();
        self.lock().group(topic, &members)
    }

    /// A legacy 1:1, whose id is the peer's MRI and which has no
    /// `threadProperties`. Returns its id as `a` sees it (`b`'s MRI),
    /// which the test methods take; `b` sees it as `a`'s MRI.
    pub fn legacy_dm(&self, a: &TeamsAccount, b: &TeamsAccount) -> String {
        self.lock().legacy_dm(&a.mri, &b.mri)
    }

    /// Every chat's id (a legacy 1:1's as its first member sees it).
    pub fn chats(&self) -> Vec<String> {
        self.lock()
            .chats
            .values()
            .map(state::Chat::public_id)
            .collect()
    }

    /// Resolves a test's chat id, or panics: a test naming a chat that
    /// doesn't exist is a bug in the test.
    fn key(state: &TeamsState, chat: &str) -> String {
        state
            .resolve(chat)
            .unwrap_or_else(|| panic!("the fake Teams has no chat {chat}"))
    }

    fn member_key(state: &TeamsState, chat: &str, who: &TeamsAccount) -> String {
        let key = Self::key(state, chat);
        assert!(
            state.chats[&key].is_member(&who.mri),
            "{} is not in chat {chat}",
            who.username
        );
        key
    }

    fn message_id(message: &str) -> u64 {
        message
            .parse()
            .unwrap_or_else(|_| panic!("{message} is not a fake Teams message id"))
    }

    /// Posts `text` as `from` would from the Teams app (a type and shape
    /// varied as the crate docs' table describes); returns the message's
    /// id. Echo bots
    /// in the chat answer it.
    pub fn post(&self, chat: &str, from: &TeamsAccount, text: &str) -> String {
        let mut state = self.lock();
        let key = Self::member_key(&state, chat, from);
        let draft = state.typed(text);
        state.post(&key, &from.mri, draft).to_string()
    }

    /// Posts `html` as a `RichText/Html` message as `from`.
    pub fn post_html(&self, chat: &str, from: &TeamsAccount, html: &str) -> String {
        let mut state = self.lock();
        let key = Self::member_key(&state, chat, from);
        let draft = Draft::new("RichText/Html", html.to_owned());
        state.post(&key, &from.mri, draft).to_string()
    }

    /// Shares a file as `from`: a message with empty content whose
    /// `properties.files` (a JSON string) points at `/files/<id>`.
    pub fn post_file(&self, chat: &str, from: &TeamsAccount, name: &str, bytes: Vec<u8>) -> String {
        self.attach(chat, from, name, bytes, false)
    }

    /// Sends a picture as `from`: a `RichText/UriObject` message whose
    /// `URIObject` points at the fake's media store.
    pub fn post_image(
        &self,
        chat: &str,
        from: &TeamsAccount,
        name: &str,
        bytes: Vec<u8>,
    ) -> String {
        self.attach(chat, from, name, bytes, true)
    }

    fn attach(
        &self,
        chat: &str,
        from: &TeamsAccount,
        name: &str,
        bytes: Vec<u8>,
        picture: bool,
    ) -> String {
        let mut state = self.lock();
        let key = Self::member_key(&state, chat, from);
        let file = state.store_file(name, mime_type(name), bytes);
        let mut draft = if picture {
            Draft::new("RichText/UriObject", String::new())
        } else {
            Draft::new("RichText/Html", String::new())
        };
        draft.attachment = Some(if picture {
            Attachment::Image(file)
        } else {
            Attachment::File(file)
        });
        state.post(&key, &from.mri, draft).to_string()
    }

    /// Edits a message as its sender, to `text` (written as the message's
    /// type writes text).
    pub fn edit(&self, chat: &str, message: &str, text: &str) {
        let mut state = self.lock();
        let key = Self::key(&state, chat);
        let id = Self::message_id(message);
        let html = state.chats[&key]
            .message(id)
            .is_some_and(|m| m.messagetype == "RichText/Html");
        let content = if html {
            format!("<p>{}</p>", wire::escape(text))
        } else {
            wire::escape(text)
        };
        state
            .edit(&key, id, None, content, None)
            .unwrap_or_else(|e| panic!("cannot edit {message} in {chat}: {e:?}"));
    }

    /// Deletes a message as its sender.
    pub fn delete(&self, chat: &str, message: &str) {
        let mut state = self.lock();
        let key = Self::key(&state, chat);
        state
            .delete(&key, Self::message_id(message), None)
            .unwrap_or_else(|e| panic!("cannot delete {message} in {chat}: {e:?}"));
    }

    /// Adds `who`'s reaction `key` (`like`, `heart`, …) to a message.
    pub fn react(&self, chat: &str, message: &str, who: &TeamsAccount, key: &str) {
        let mut state = self.lock();
        let chat_key = Self::member_key(&state, chat, who);
        let value = Value::from(wire::now_ms().to_string());
        state
            .react(
                &chat_key,
                Self::message_id(message),
                &who.mri,
                key,
                Some(value),
            )
            .unwrap_or_else(|e| panic!("cannot react to {message} in {chat}: {e:?}"));
    }

    /// Takes back `who`'s reaction `key` to a message.
    pub fn unreact(&self, chat: &str, message: &str, who: &TeamsAccount, key: &str) {
        let mut state = self.lock();
        let chat_key = Self::member_key(&state, chat, who);
        state
            .react(&chat_key, Self::message_id(message), &who.mri, key, None)
            .unwrap_or_else(|e| panic!("cannot unreact to {message} in {chat}: {e:?}"));
    }

    /// `who` types in `chat`: a `Control/Typing` message in the history,
    /// which a connector must not show as a message.
    pub fn remote_typing(&self, chat: &str, who: &TeamsAccount) {
        let mut state = self.lock();
        let key = Self::member_key(&state, chat, who);
        let mut draft = Draft::new("Control/Typing", String::new());
        draft.contenttype = Some("Application/Message".to_owned());
        state.store(&key, &who.mri, draft);
    }

    /// `who` reads `chat` up to `message`: their consumption horizon.
    pub fn mark_read(&self, chat: &str, who: &TeamsAccount, message: &str) {
        let mut state = self.lock();
        let key = Self::member_key(&state, chat, who);
        let id = Self::message_id(message);
        let clientmessageid = state.chats[&key]
            .message(id)
            .map(|m| m.clientmessageid.clone())
            .unwrap_or_else(|| panic!("no message {message} in {chat}"));
        let horizon = format!("{id};{};{clientmessageid}", wire::now_ms());
        state.set_horizon(&key, &who.mri, horizon);
    }

    /// The chat's messages that people wrote (no control messages or
    /// thread events), oldest first, deleted ones included.
    pub fn messages(&self, chat: &str) -> Vec<Message> {
        self.history(chat)
            .into_iter()
            .filter(|m| {
                !(m.messagetype.starts_with("Control/")
                    || m.messagetype.starts_with("ThreadActivity/"))
            })
            .collect()
    }

    /// Everything in the chat's history, oldest first, control messages
    /// and thread events included.
    pub fn history(&self, chat: &str) -> Vec<Message> {
        let state = self.lock();
        let key = Self::key(&state, chat);
        state.chats[&key]
            .messages
            .iter()
            .map(|m| Self::message_of(&state, m))
            .collect()
    }

    fn message_of(state: &TeamsState, m: &StoredMessage) -> Message {
        let file = match &m.attachment {
            Some(Attachment::File(id) | Attachment::Image(id)) => {
                state.files.get(id).map(|f| FileRef {
                    id: id.clone(),
                    name: f.name.clone(),
                    mime_type: f.mime_type.clone(),
                    size: f.bytes.len(),
                })
            }
            None => None,
        };
        Message {
            id: m.id.to_string(),
            sequence_id: m.sequence_id,
            sender: m.from.clone(),
            sender_name: m.display_name.clone(),
            messagetype: m.messagetype.clone(),
            content: m.content.clone(),
            clientmessageid: m.clientmessageid.clone(),
            arrival_ms: m.id,
            edited: m.edit_ms.is_some(),
            deleted: m.delete_ms.is_some(),
            reactions: m
                .emotions
                .iter()
                .map(|e| {
                    (
                        e.key.clone(),
                        e.users.iter().map(|u| u.mri.clone()).collect(),
                    )
                })
                .collect(),
            file,
            properties: m.properties.clone(),
        }
    }

    /// How many message `POST`s (typing aside) reached the chat: ones
    /// answered with an existing message (a repeated `clientmessageid`)
    /// and ones refused by [`Self::fail_thread`] count; 401s and 429s,
    /// answered before, don't.
    pub fn sends(&self, chat: &str) -> usize {
        let state = self.lock();
        let key = Self::key(&state, chat);
        state.switches.sends.get(&key).copied().unwrap_or(0)
    }

    /// The typing notifications the API received for the chat, oldest
    /// first.
    pub fn typing(&self, chat: &str) -> Vec<Typing> {
        let state = self.lock();
        let key = Self::key(&state, chat);
        state.switches.typing.get(&key).cloned().unwrap_or_default()
    }

    /// The chat's read markers: MRI → `<msgId>;<tsMs>;<clientmessageid>`.
    pub fn horizons(&self, chat: &str) -> BTreeMap<String, String> {
        let state = self.lock();
        let key = Self::key(&state, chat);
        state.chats[&key]
            .horizons
            .iter()
            .map(|(mri, h)| (mri.clone(), h.value.clone()))
            .collect()
    }

    /// The Teams requests answered so far (the newest 10,000), in order.
    pub fn calls(&self) -> Vec<TeamsCall> {
        self.lock().switches.calls.iter().cloned().collect()
    }

    /// A file's name, MIME type and bytes.
    pub fn file(&self, id: &str) -> Option<(String, String, Vec<u8>)> {
        self.lock()
            .files
            .get(id)
            .map(|f| (f.name.clone(), f.mime_type.clone(), f.bytes.clone()))
    }

    /// Every skypetoken issued so far and not yet forgotten (for tests
    /// that check no token reaches a log).
    pub fn skypetokens(&self) -> Vec<String> {
        self.lock().skypetokens.keys().cloned().collect()
    }

    /// Expires every skypetoken issued so far: their next use gets 401
    /// (errorCode 911), and the client must exchange an access token again.
    pub fn expire_skypetokens(&self) {
        self.lock().expire_skypetokens();
    }

    /// How long skypetokens issued from now on live (default a day), and
    /// the `expiresIn` they are announced with.
    pub fn set_skypetoken_lifetime(&self, secs: u64) {
        self.lock().skypetoken_lifetime = secs;
    }

    /// Refuses the next `n` Teams requests with 429 and `Retry-After`
    /// (`retry_after`, rounded up to seconds), given in seconds and as an
    /// HTTP date, alternately. The identity platform is not affected.
    pub fn rate_limit_next(&self, n: usize, retry_after: Duration) {
        let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        self.lock().switches.throttle = (n > 0).then_some((n, secs));
    }

    /// Answers `status` (e.g. 500) to every request on the chat's messages
    /// until [`Self::heal_thread`]; other chats and the conversation list
    /// keep working.
    pub fn fail_thread(&self, chat: &str, status: u16) {
        let mut state = self.lock();
        let key = Self::key(&state, chat);
        state.switches.failing.insert(key, status);
    }

    /// Ends [`Self::fail_thread`].
    pub fn heal_thread(&self, chat: &str) {
        let mut state = self.lock();
        let key = Self::key(&state, chat);
        state.switches.failing.remove(&key);
    }

    /// Serves at most `n` items a page, whatever `pageSize` asks, so that
    /// a few chats or messages already span pages.
    pub fn force_page_size(&self, n: usize) {
        self.lock().switches.page_size = Some(n.max(1));
    }

    /// Makes `who` answer every message in every chat it is in with
    /// `echo: <text>` (a file with `echo: <name>`), after a typing
    /// indicator, as a remote user would.
    pub fn set_echo_bot(&self, who: &TeamsAccount) {
        self.lock().echo_bots.insert(who.mri.clone());
    }

    /// Seeds the demo unless it is there already: `alice` ("Alice
    /// Example"), `bob` ("Bob Example") and the echo bot `teams-echo`
    /// ("Teams Echo"); a 1:1 alice–bob, a group "Weft demo" of the three,
    /// and 1:1s of each with the bot. Returns whether it seeded.
    pub fn seed_demo(&self) -> bool {
        if self.account("alice").is_some() {
            return false;
        }
        let alice = self.add_account("alice", "Alice Example");
        let bob = self.add_account("bob", "Bob Example");
        let echo = self.add_account(ECHO_USERNAME, "Teams Echo");
        let pair = self.dm(&alice, &bob);
        self.post(&pair, &bob, "Hi Alice! This chat lives on the fake Teams.");
        let group = self.group("Weft demo", &[&alice, &bob, &echo]);
        self.post(&group, &echo, "Hi all! I echo whatever you say here.");
        for who in [&alice, &bob] {
            let chat = self.dm(who, &echo);
            self.post(&chat, &echo, "Hi! I echo what you say.");
        }
        self.set_echo_bot(&echo);
        true
    }

    fn load(&self, path: &Path) -> io::Result<()> {
        if !path.exists() {
            return Ok(());
        }
        let text = std::fs::read_to_string(path)?;
        let loaded: StateFile<IdentitySnapshot, TeamsState> =
            serde_json::from_str(&text).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is not a fake-teams state file: {e}", path.display()),
                )
            })?;
        self.app.identity.restore(loaded.identity);
        let mut state = self.lock();
        let switches = std::mem::take(&mut state.switches);
        *state = loaded.teams;
        state.switches = switches;
        for chat in state.chats.values_mut() {
            chat.index_sent();
        }
        Ok(())
    }

    fn snapshot(&self) -> String {
        let identity = self.app.identity.snapshot();
        let state = self.lock();
        serde_json::to_string(&StateFile {
            identity: &identity,
            teams: &*state,
        })
        .unwrap_or_default()
    }

    /// Writes the state to `path` now, atomically (a temporary file, then
    /// a rename).
    pub fn save(&self, path: &Path) -> io::Result<()> {
        write_atomically(path, &self.snapshot())
    }

    fn keep_saving(&self, path: PathBuf) {
        let fake = self.clone();
        tokio::spawn(async move {
            let mut last = String::new();
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let text = fake.snapshot();
                if text != last {
                    match write_atomically(&path, &text) {
                        Ok(()) => last = text,
                        Err(e) => {
                            tracing::warn!(%e, path = %path.display(), "cannot save the state")
                        }
                    }
                }
            }
        });
    }
}

fn write_atomically(path: &Path, text: &str) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// The MIME type a file's name suggests.
fn mime_type(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "txt" => "text/plain",
        "pdf" => "application/pdf",
        "mp4" => "video/mp4",
        _ => "application/octet-stream",
    }
}

async fn not_found() -> Response {
    api::chat_error(StatusCode::NOT_FOUND, 404, "Not found.")
}

#[cfg(test)]
mod tests;
