//! Remote events: what a connector says happened on its network, as the
//! runtime hands them to the host.
//!
//! These are the runtime's own types, converted from the WIT records at
//! the `matrix.queue-event` import and checked there. The host stores them
//! (its outbox) and bridges them; being plain serde types with stable
//! field names, they are what is persisted, never the generated bindings.

use serde::{Deserialize, Serialize};

/// A remote user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteUser {
    /// The remote id, stable for this user on this network.
    pub id: String,
    /// The name to show, if known.
    #[serde(default)]
    pub display_name: Option<String>,
}

/// Who sent an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventSender {
    /// The remote user.
    pub user: RemoteUser,
    /// Whether the sender is the login's own remote account.
    pub is_from_me: bool,
}

/// Direct chat or group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChatKind {
    /// One other person.
    Direct,
    /// A group.
    Group,
}

/// A chat member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMember {
    /// The remote user.
    pub user: RemoteUser,
    /// Whether the member is the login's own remote account.
    pub is_me: bool,
}

/// The full state of a chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatResync {
    /// The remote chat id.
    pub chat_id: String,
    /// Its name.
    #[serde(default)]
    pub name: Option<String>,
    /// Its topic.
    #[serde(default)]
    pub topic: Option<String>,
    /// Direct or group.
    pub kind: ChatKind,
    /// The members the connector knows of.
    #[serde(default)]
    pub members: Vec<ChatMember>,
    /// Whether to create a room for it if it has none.
    pub create_portal: bool,
}

/// A new message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The remote chat id.
    pub chat_id: String,
    /// The remote message id, unique within the chat.
    pub message_id: String,
    /// The sender.
    pub sender: EventSender,
    /// When it was sent, in Unix milliseconds.
    pub timestamp_ms: u64,
    /// Orders the chat's messages, if the network has such a number.
    #[serde(default)]
    pub stream_order: Option<u64>,
    /// The plain-text body.
    pub text: String,
    /// An HTML body.
    #[serde(default)]
    pub html: Option<String>,
    /// The remote id of the message this one replies to.
    #[serde(default)]
    pub reply_to: Option<String>,
}

/// An edit of an earlier message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edit {
    /// The remote chat id.
    pub chat_id: String,
    /// The remote id of the edited message.
    pub message_id: String,
    /// Who edited it.
    pub sender: EventSender,
    /// When, in Unix milliseconds.
    pub timestamp_ms: u64,
    /// The new plain-text body.
    pub text: String,
    /// The new HTML body.
    #[serde(default)]
    pub html: Option<String>,
}

/// The deletion of a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delete {
    /// The remote chat id.
    pub chat_id: String,
    /// The remote id of the deleted message.
    pub message_id: String,
    /// Who deleted it.
    pub sender: EventSender,
    /// When, in Unix milliseconds.
    pub timestamp_ms: u64,
}

/// A reaction added or removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reaction {
    /// The remote chat id.
    pub chat_id: String,
    /// The remote id of the message reacted to.
    pub message_id: String,
    /// Who reacted.
    pub sender: EventSender,
    /// The reaction key, usually one emoji.
    pub key: String,
    /// When, in Unix milliseconds.
    pub timestamp_ms: u64,
    /// True when the reaction was taken back.
    pub removed: bool,
}

/// A remote user typing, or no longer typing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Typing {
    /// The remote chat id.
    pub chat_id: String,
    /// Who is typing.
    pub sender: EventSender,
    /// How long the indicator holds, in milliseconds; 0 clears it.
    pub timeout_ms: u32,
}

/// A remote user read a chat up to a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadReceipt {
    /// The remote chat id.
    pub chat_id: String,
    /// Who read.
    pub sender: EventSender,
    /// The remote id of the last message read.
    pub up_to: String,
    /// When, in Unix milliseconds.
    pub timestamp_ms: u64,
}

/// What kind of media a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MediaKind {
    /// A picture.
    Image,
    /// A video.
    Video,
    /// A sound recording.
    Audio,
    /// Any other file.
    File,
}

/// Where a file's bytes are.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MediaSource {
    /// The bytes (stored as base64).
    Bytes(#[serde(with = "base64_bytes")] Vec<u8>),
    /// A URL to fetch under the plugin's HTTP grant, with headers.
    Url {
        /// The URL.
        url: String,
        /// Request headers (may hold a credential: never logged).
        headers: Vec<(String, String)>,
    },
}

impl std::fmt::Debug for MediaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bytes(bytes) => write!(f, "Bytes(<{} bytes>)", bytes.len()),
            Self::Url { .. } => f.write_str("Url(<redacted>)"),
        }
    }
}

/// A file attached to a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The file's name.
    pub file_name: String,
    /// Its MIME type.
    pub mime_type: String,
    /// What kind of media it is.
    pub kind: MediaKind,
    /// Its size in bytes, if known.
    #[serde(default)]
    pub size: Option<u64>,
    /// Width in pixels.
    #[serde(default)]
    pub width: Option<u32>,
    /// Height in pixels.
    #[serde(default)]
    pub height: Option<u32>,
    /// Length in milliseconds.
    #[serde(default)]
    pub duration_ms: Option<u32>,
    /// Where the bytes are.
    pub source: MediaSource,
}

/// A message with a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaMessage {
    /// The remote chat id.
    pub chat_id: String,
    /// The remote message id.
    pub message_id: String,
    /// The sender.
    pub sender: EventSender,
    /// When it was sent, in Unix milliseconds.
    pub timestamp_ms: u64,
    /// Orders the chat's messages.
    #[serde(default)]
    pub stream_order: Option<u64>,
    /// A caption.
    #[serde(default)]
    pub caption: Option<String>,
    /// The remote id of the message this one replies to.
    #[serde(default)]
    pub reply_to: Option<String>,
    /// The file.
    pub attachment: Attachment,
}

/// Stores bytes as base64 text, not as a JSON array of numbers.
mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

/// The state of a login's connection, as a plugin reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StateKind {
    /// Connecting or reconnecting.
    Connecting,
    /// Connected and syncing.
    Connected,
    /// Lost the connection; retrying by itself.
    TransientDisconnect,
    /// The credentials were rejected: the user must log in again.
    BadCredentials,
    /// Failed for another reason.
    UnknownError,
    /// The remote session ended.
    LoggedOut,
}

impl StateKind {
    /// Whether the login waits for its user to log in again (its timers
    /// stop meanwhile).
    pub fn needs_relogin(self) -> bool {
        matches!(self, Self::BadCredentials | Self::LoggedOut)
    }
}

/// A change of a login's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateReport {
    /// The new state.
    pub state: StateKind,
    /// A stable, machine-readable code.
    #[serde(default)]
    pub error_code: Option<String>,
    /// A human-readable explanation.
    #[serde(default)]
    pub message: Option<String>,
}

/// One thing that happened on the remote network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum RemoteEvent {
    /// A chat was discovered or changed.
    ChatResync(ChatResync),
    /// A new message.
    Message(Message),
    /// A new message with a file.
    Media(MediaMessage),
    /// A message was edited.
    Edit(Edit),
    /// A message was deleted.
    Delete(Delete),
    /// A reaction was added or removed.
    Reaction(Reaction),
    /// Someone is typing.
    Typing(Typing),
    /// Someone read up to a message.
    ReadReceipt(ReadReceipt),
    /// The login's state changed.
    BridgeState(StateReport),
}

impl RemoteEvent {
    /// The remote chat the event belongs to, if any.
    pub fn chat_id(&self) -> Option<&str> {
        match self {
            Self::ChatResync(e) => Some(&e.chat_id),
            Self::Message(e) => Some(&e.chat_id),
            Self::Media(e) => Some(&e.chat_id),
            Self::Edit(e) => Some(&e.chat_id),
            Self::Delete(e) => Some(&e.chat_id),
            Self::Reaction(e) => Some(&e.chat_id),
            Self::Typing(e) => Some(&e.chat_id),
            Self::ReadReceipt(e) => Some(&e.chat_id),
            Self::BridgeState(_) => None,
        }
    }

    /// A short name of the event's kind, for logs (never its content).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ChatResync(_) => "chat-resync",
            Self::Message(_) => "message",
            Self::Media(_) => "media",
            Self::Edit(_) => "edit",
            Self::Delete(_) => "delete",
            Self::Reaction(_) => "reaction",
            Self::Typing(_) => "typing",
            Self::ReadReceipt(_) => "read-receipt",
            Self::BridgeState(_) => "bridge-state",
        }
    }
}
