//! The echo service: a tiny chat network for the echo connector to bridge.
//!
//! Users log in with a password (or approve a device code), list their
//! chats, follow an activity log (messages, files, edits, deletions,
//! reactions, typing, read markers) after a cursor, read a chat's recent
//! history, and act in chats. Every user gets a direct chat with the echo
//! bot, which reads each message and answers it with `echo: <text>` (a
//! file comes back as the same file). State is in memory, optionally kept
//! in a file.
//!
//! [`http`] is the API: `/api/…` is what the connector uses (bearer token
//! auth); `/_admin/…` seeds users and chats and injects messages from
//! other users, without auth, so bind the service to loopback. Tests drive
//! the same state through the methods of [`EchoService`].

mod http;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;
use serde::{Deserialize, Serialize};

/// The echo bot's user id.
pub const ECHO_BOT: &str = "echo";

/// The largest file the service takes.
pub const MAX_FILE_BYTES: usize = 16 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct User {
    id: String,
    display_name: String,
    // Never in API answers; the state file keeps it beside the user.
    #[serde(skip_serializing, default)]
    password: String,
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

/// A file attached to a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// Its id, for `GET /api/files/{id}`.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its MIME type.
    pub mime_type: String,
    /// Its size in bytes.
    pub size: u64,
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
    /// The text (after edits); a file's caption.
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
    /// Its file, if it has one.
    #[serde(default)]
    pub file: Option<FileRef>,
    /// Reactions: key → the users who reacted with it.
    #[serde(default)]
    pub reactions: BTreeMap<String, Vec<String>>,
}

/// Something that happened in a chat, in the order the service saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    /// Its position in the service's log (shared with message numbers).
    pub seq: u64,
    /// The chat.
    pub chat_id: String,
    /// Who did it.
    pub actor: String,
    /// When, in Unix milliseconds.
    pub ts: u64,
    /// What happened.
    #[serde(flatten)]
    pub kind: ActivityKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ActivityKind {
    /// A message (with or without a file) was posted.
    Message {
        /// The message.
        message_id: String,
    },
    /// A message was edited.
    Edit {
        /// The message.
        message_id: String,
        /// Its new text.
        text: String,
    },
    /// A message was deleted.
    Delete {
        /// The message.
        message_id: String,
    },
    /// A reaction was added or taken back.
    Reaction {
        /// The message.
        message_id: String,
        /// The reaction, usually one emoji.
        key: String,
        /// Whether it was taken back.
        removed: bool,
    },
    /// Someone started or stopped typing.
    Typing {
        /// Whether they type now.
        typing: bool,
    },
    /// Someone read the chat up to a message.
    Read {
        /// The last message read.
        up_to: String,
    },
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

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredFile {
    name: String,
    mime_type: String,
    bytes: Vec<u8>,
}

#[derive(Default, Serialize, Deserialize)]
struct ServiceState {
    #[serde(with = "users_with_passwords")]
    users: BTreeMap<String, User>,
    tokens: BTreeMap<String, String>,
    chats: BTreeMap<String, Chat>,
    messages: Vec<StoredMessage>,
    #[serde(default)]
    activity: Vec<Activity>,
    #[serde(default)]
    files: BTreeMap<String, StoredFile>,
    next_seq: u64,
    next_chat: u64,
    #[serde(default)]
    next_file: u64,
    // Device codes live only as long as the process.
    #[serde(skip)]
    devices: BTreeMap<String, DeviceCode>,
    // How long the API takes to post a message for a user (tests of slow
    // networks).
    #[serde(skip)]
    send_delays: BTreeMap<String, std::time::Duration>,
}

/// The state file keeps passwords, which API answers never show.
mod users_with_passwords {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::User;

    pub(super) fn serialize<S: Serializer>(
        users: &BTreeMap<String, User>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let pairs: Vec<(&User, &str)> = users.values().map(|u| (u, u.password.as_str())).collect();
        pairs.serialize(serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<String, User>, D::Error> {
        let pairs: Vec<(User, String)> = Vec::deserialize(deserializer)?;
        Ok(pairs
            .into_iter()
            .map(|(mut user, password)| {
                user.password = password;
                (user.id.clone(), user)
            })
            .collect())
    }
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

/// A new message.
#[derive(Debug, Clone, Default)]
pub struct Post {
    /// The text, or a file's caption.
    pub text: String,
    /// An HTML body.
    pub html: Option<String>,
    /// The message it replies to.
    pub reply_to: Option<String>,
    /// An uploaded file's id.
    pub file_id: Option<String>,
}

impl Post {
    /// A plain text message.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            ..Self::default()
        }
    }
}

/// Why the service refused an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The chat, message or file does not exist for this user.
    NotFound(&'static str),
    /// The request is malformed.
    Invalid(&'static str),
}

impl EchoService {
    /// An empty service with only the echo bot.
    pub fn new() -> Self {
        let service = Self::default();
        service.lock().users.insert(
            ECHO_BOT.into(),
            User {
                id: ECHO_BOT.into(),
                display_name: "Echo bot".into(),
                password: random_token(32),
            },
        );
        service
    }

    fn lock(&self) -> MutexGuard<'_, ServiceState> {
        self.state.lock().expect("echo service state poisoned")
    }

    /// Adds a user (with a direct chat with the echo bot); returns the
    /// chat's id.
    pub fn add_user(&self, id: &str, password: &str, display_name: &str) -> String {
        let mut state = self.lock();
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
        let chat = state.create_chat(None, "direct", vec![id.into(), ECHO_BOT.into()]);
        state.post(&chat, ECHO_BOT, Post::text("Hi! I echo what you say."));
        chat
    }

    /// The id of the chat named `name`, if there is one.
    pub fn chat_named(&self, name: &str) -> Option<String> {
        self.lock()
            .chats
            .values()
            .find(|c| c.name.as_deref() == Some(name))
            .map(|c| c.id.clone())
    }

    /// Loads `path` if it exists, then saves the state there whenever it
    /// changes (checked every second), so a restart keeps users, chats,
    /// messages, files and tokens.
    pub fn persist_to(&self, path: std::path::PathBuf) -> std::io::Result<()> {
        if path.exists() {
            let loaded: ServiceState = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
            let mut state = self.lock();
            let devices = std::mem::take(&mut state.devices);
            *state = loaded;
            state.devices = devices;
        }
        let service = self.clone();
        tokio::spawn(async move {
            let mut last = String::new();
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                if let Ok(text) = service.save(&path, &last) {
                    last = text;
                }
            }
        });
        Ok(())
    }

    /// Writes the state to `path` (atomically) unless it is `last`;
    /// returns what was written. The demo calls it once more on its way
    /// out, so the last second's changes are kept.
    pub fn save(&self, path: &std::path::Path, last: &str) -> std::io::Result<String> {
        let text = serde_json::to_string(&*self.lock()).map_err(std::io::Error::other)?;
        if text != last {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, &text)?;
            std::fs::rename(&tmp, path)?;
        }
        Ok(text)
    }

    /// Creates a chat; returns its id.
    pub fn add_chat(&self, name: Option<&str>, kind: &str, members: &[&str]) -> String {
        self.lock().create_chat(
            name.map(str::to_owned),
            kind,
            members.iter().map(|m| (*m).to_owned()).collect(),
        )
    }

    /// Posts a message as `sender`; returns its id.
    pub fn say(&self, chat: &str, sender: &str, text: &str) -> String {
        self.lock().post(chat, sender, Post::text(text)).id
    }

    /// Posts a message with an HTML body as `sender`; returns its id.
    pub fn say_html(&self, chat: &str, sender: &str, text: &str, html: &str) -> String {
        let post = Post {
            html: Some(html.into()),
            ..Post::text(text)
        };
        self.lock().post(chat, sender, post).id
    }

    /// Posts a reply as `sender`; returns its id.
    pub fn reply(&self, chat: &str, sender: &str, text: &str, reply_to: &str) -> String {
        let post = Post {
            reply_to: Some(reply_to.into()),
            ..Post::text(text)
        };
        self.lock().post(chat, sender, post).id
    }

    /// Posts a file as `sender`, with a caption; returns the message id.
    pub fn say_file(
        &self,
        chat: &str,
        sender: &str,
        name: &str,
        mime_type: &str,
        bytes: Vec<u8>,
        caption: &str,
    ) -> String {
        let mut state = self.lock();
        let file_id = state.store_file(name, mime_type, bytes);
        let post = Post {
            file_id: Some(file_id),
            ..Post::text(caption)
        };
        state.post(chat, sender, post).id
    }

    /// Edits message `message` of `chat` as its sender.
    pub fn edit(&self, chat: &str, message: &str, text: &str) -> Result<(), Refusal> {
        let mut state = self.lock();
        let sender = state.sender_of(chat, message)?;
        state.edit(chat, message, &sender, text)
    }

    /// Deletes message `message` of `chat` as its sender.
    pub fn delete(&self, chat: &str, message: &str) -> Result<(), Refusal> {
        let mut state = self.lock();
        let sender = state.sender_of(chat, message)?;
        state.delete(chat, message, &sender)
    }

    /// Adds (or with `removed`, takes back) `user`'s reaction `key` to a
    /// message.
    pub fn react(
        &self,
        chat: &str,
        message: &str,
        user: &str,
        key: &str,
        removed: bool,
    ) -> Result<(), Refusal> {
        self.lock().react(chat, message, user, key, removed)
    }

    /// `user` starts or stops typing in `chat`.
    pub fn set_typing(&self, chat: &str, user: &str, typing: bool) -> Result<(), Refusal> {
        self.lock().log(chat, user, ActivityKind::Typing { typing })
    }

    /// `user` read `chat` up to message `up_to`.
    pub fn mark_read(&self, chat: &str, user: &str, up_to: &str) -> Result<(), Refusal> {
        let mut state = self.lock();
        state.sender_of(chat, up_to)?;
        state.log(
            chat,
            user,
            ActivityKind::Read {
                up_to: up_to.into(),
            },
        )
    }

    /// Every message of `chat`, including deleted ones.
    pub fn messages(&self, chat: &str) -> Vec<StoredMessage> {
        self.lock()
            .messages
            .iter()
            .filter(|m| m.chat_id == chat)
            .cloned()
            .collect()
    }

    /// Everything that happened in `chat`, oldest first.
    pub fn activity(&self, chat: &str) -> Vec<Activity> {
        self.lock()
            .activity
            .iter()
            .filter(|a| a.chat_id == chat)
            .cloned()
            .collect()
    }

    /// A stored file: its name, MIME type and bytes.
    pub fn file(&self, id: &str) -> Option<(String, String, Vec<u8>)> {
        self.lock()
            .files
            .get(id)
            .map(|f| (f.name.clone(), f.mime_type.clone(), f.bytes.clone()))
    }

    /// Makes posting a message through the API take `delay` for `user`,
    /// like a slow network.
    pub fn set_send_delay(&self, user: &str, delay: std::time::Duration) {
        self.lock().send_delays.insert(user.into(), delay);
    }

    /// Invalidates every token of `user`.
    pub fn revoke_tokens(&self, user: &str) {
        self.lock().tokens.retain(|_, owner| owner != user);
    }

    /// Approves a device code as `user` (what the user does on the
    /// service's side); returns whether the code existed.
    pub fn approve_code(&self, code: &str, user: &str) -> bool {
        let mut state = self.lock();
        match state.devices.values_mut().find(|d| d.code == code) {
            Some(device) => {
                device.status = DeviceStatus::Approved(user.into());
                true
            }
            None => false,
        }
    }

    /// The service's HTTP API.
    pub fn router(&self) -> axum::Router {
        http::router(self.clone())
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

impl ServiceState {
    fn create_chat(&mut self, name: Option<String>, kind: &str, members: Vec<String>) -> String {
        self.next_chat += 1;
        let id = format!("c{}", self.next_chat);
        self.chats.insert(
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

    fn is_member(&self, chat: &str, user: &str) -> bool {
        self.chats
            .get(chat)
            .is_some_and(|c| c.members.iter().any(|m| m == user))
    }

    fn store_file(&mut self, name: &str, mime_type: &str, bytes: Vec<u8>) -> String {
        self.next_file += 1;
        let id = format!("f{}", self.next_file);
        self.files.insert(
            id.clone(),
            StoredFile {
                name: name.into(),
                mime_type: mime_type.into(),
                bytes,
            },
        );
        id
    }

    fn log(&mut self, chat: &str, actor: &str, kind: ActivityKind) -> Result<(), Refusal> {
        if !self.is_member(chat, actor) {
            return Err(Refusal::NotFound("no such chat"));
        }
        self.next_seq += 1;
        self.activity.push(Activity {
            seq: self.next_seq,
            chat_id: chat.into(),
            actor: actor.into(),
            ts: now_ms(),
            kind,
        });
        Ok(())
    }

    fn post(&mut self, chat: &str, sender: &str, post: Post) -> StoredMessage {
        self.next_seq += 1;
        let file = post.file_id.as_ref().and_then(|id| {
            self.files.get(id).map(|f| FileRef {
                id: id.clone(),
                name: f.name.clone(),
                mime_type: f.mime_type.clone(),
                size: f.bytes.len() as u64,
            })
        });
        let message = StoredMessage {
            id: format!("m{}", self.next_seq),
            seq: self.next_seq,
            chat_id: chat.into(),
            sender: sender.into(),
            text: post.text.clone(),
            html: post.html,
            reply_to: post.reply_to,
            ts: now_ms(),
            edits: 0,
            deleted: false,
            file: file.clone(),
            reactions: BTreeMap::new(),
        };
        self.messages.push(message.clone());
        self.activity.push(Activity {
            seq: message.seq,
            chat_id: chat.into(),
            actor: sender.into(),
            ts: message.ts,
            kind: ActivityKind::Message {
                message_id: message.id.clone(),
            },
        });
        if self.is_member(chat, ECHO_BOT) && sender != ECHO_BOT {
            // The bot reads the message, then answers it (a file with the
            // same file).
            let _ = self.log(
                chat,
                ECHO_BOT,
                ActivityKind::Read {
                    up_to: message.id.clone(),
                },
            );
            let answer = match &file {
                Some(file) => Post {
                    text: format!("echo: {}", file.name),
                    file_id: Some(file.id.clone()),
                    reply_to: Some(message.id.clone()),
                    html: None,
                },
                None => Post {
                    reply_to: Some(message.id.clone()),
                    ..Post::text(format!("echo: {}", post.text))
                },
            };
            self.post(chat, ECHO_BOT, answer);
        }
        message
    }

    fn message_mut(&mut self, chat: &str, message: &str) -> Result<&mut StoredMessage, Refusal> {
        self.messages
            .iter_mut()
            .find(|m| m.id == message && m.chat_id == chat && !m.deleted)
            .ok_or(Refusal::NotFound("no such message"))
    }

    fn sender_of(&mut self, chat: &str, message: &str) -> Result<String, Refusal> {
        Ok(self.message_mut(chat, message)?.sender.clone())
    }

    fn own_message(
        &mut self,
        chat: &str,
        message: &str,
        user: &str,
    ) -> Result<&mut StoredMessage, Refusal> {
        let found = self.message_mut(chat, message)?;
        if found.sender != user {
            return Err(Refusal::NotFound("no such message of yours"));
        }
        Ok(found)
    }

    fn edit(&mut self, chat: &str, message: &str, user: &str, text: &str) -> Result<(), Refusal> {
        let found = self.own_message(chat, message, user)?;
        found.text = text.into();
        found.edits += 1;
        self.log(
            chat,
            user,
            ActivityKind::Edit {
                message_id: message.into(),
                text: text.into(),
            },
        )
    }

    fn delete(&mut self, chat: &str, message: &str, user: &str) -> Result<(), Refusal> {
        self.own_message(chat, message, user)?.deleted = true;
        self.log(
            chat,
            user,
            ActivityKind::Delete {
                message_id: message.into(),
            },
        )
    }

    fn react(
        &mut self,
        chat: &str,
        message: &str,
        user: &str,
        key: &str,
        removed: bool,
    ) -> Result<(), Refusal> {
        if key.is_empty() || key.len() > 64 {
            return Err(Refusal::Invalid("a reaction key has 1 to 64 bytes"));
        }
        if !self.is_member(chat, user) {
            return Err(Refusal::NotFound("no such chat"));
        }
        let found = self.message_mut(chat, message)?;
        let users = found.reactions.entry(key.into()).or_default();
        let had = users.iter().any(|u| u == user);
        if removed != had {
            // Nothing changes: adding twice, or removing what is not there.
            return Ok(());
        }
        if removed {
            users.retain(|u| u != user);
            if users.is_empty() {
                found.reactions.remove(key);
            }
        } else {
            users.push(user.into());
        }
        self.log(
            chat,
            user,
            ActivityKind::Reaction {
                message_id: message.into(),
                key: key.into(),
                removed,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bot_reads_and_answers_and_a_file_comes_back_as_the_same_file() {
        let service = EchoService::new();
        let chat = service.add_user("alice", "pw", "Alice");
        let id = service.say_file(&chat, "alice", "cat.png", "image/png", vec![1, 2], "look");
        let messages = service.messages(&chat);
        let answer = messages.last().unwrap();
        assert_eq!(answer.sender, ECHO_BOT);
        assert_eq!(answer.reply_to.as_deref(), Some(id.as_str()));
        assert_eq!(answer.file.as_ref().unwrap().name, "cat.png");
        let read = ActivityKind::Read { up_to: id.clone() };
        assert!(service.activity(&chat).iter().any(|a| a.kind == read));
    }

    #[test]
    fn only_the_sender_edits_and_a_reaction_counts_once_per_user() {
        let service = EchoService::new();
        let chat = service.add_user("alice", "pw", "Alice");
        let id = service.say(&chat, "alice", "hi");
        service.edit(&chat, &id, "hello").unwrap();
        let mut state = service.lock();
        assert!(state.edit(&chat, &id, ECHO_BOT, "mine").is_err());
        drop(state);
        service.react(&chat, &id, ECHO_BOT, "👍", false).unwrap();
        service.react(&chat, &id, ECHO_BOT, "👍", false).unwrap();
        let reactions = service
            .activity(&chat)
            .into_iter()
            .filter(|a| matches!(a.kind, ActivityKind::Reaction { .. }))
            .count();
        assert_eq!(reactions, 1);
        assert_eq!(service.messages(&chat)[1].text, "hello");
    }

    #[test]
    fn the_state_file_round_trips_with_passwords() {
        let service = EchoService::new();
        service.add_user("alice", "secret", "Alice");
        let text = serde_json::to_string(&*service.lock()).unwrap();
        let loaded: ServiceState = serde_json::from_str(&text).unwrap();
        assert_eq!(loaded.users["alice"].password, "secret");
        assert_eq!(loaded.messages.len(), 1);
    }
}
