//! Remote events: what a connector tells the host happened on the remote
//! network. The host turns them into Matrix rooms, ghosts and messages.
//!
//! ```no_run
//! # fn demo() -> weft_sdk::Result<()> {
//! use weft_sdk::events::{self, Message, RemoteEvent};
//!
//! events::queue(RemoteEvent::Message(Message {
//!     chat_id: "chat-1".into(),
//!     message_id: "m-42".into(),
//!     sender: events::sender(events::remote_user("bob", Some("Bob".into())), false),
//!     timestamp_ms: weft_sdk::time::now_ms(),
//!     stream_order: Some(42),
//!     text: "hello".into(),
//!     html: None,
//!     reply_to: None,
//! }))?;
//! # Ok(()) }
//! ```
//!
//! Events name chats and users by remote ids only. The host scopes every
//! event to the login this instance serves, so one login's events can never
//! reach another login's rooms. When [`queue`] returns `Ok`, the event is
//! stored durably: it is safe to advance a cursor afterwards.

use std::fmt;

use crate::Error;
use crate::wit::imports::weft::plugin::matrix as wit;

pub use wit::{
    Attachment, BridgeState, BridgeStateKind, ChatKind, ChatMember, ChatResync, Delete, Edit,
    EventSender, MediaKind, MediaMessage, MediaSource, MediaUrl, Message, Reaction, ReadReceipt,
    RemoteEvent, RemoteUser, Typing,
};

/// One message of a chat's history: text or a file.
pub use crate::wit::backfill_export::HistoryItem;

/// Why an event was not queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventError {
    /// The event is malformed; the message says what.
    Invalid(String),
    /// This instance serves no login (it runs a login process).
    NoLogin,
    /// The host's storage failed; the event was not queued.
    Storage(String),
}

impl fmt::Display for EventError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid(m) => write!(f, "invalid event: {m}"),
            Self::NoLogin => f.write_str("this instance serves no login"),
            Self::Storage(m) => write!(f, "event not stored: {m}"),
        }
    }
}

impl std::error::Error for EventError {}

impl From<wit::EventError> for EventError {
    fn from(error: wit::EventError) -> Self {
        match error {
            wit::EventError::Invalid(m) => Self::Invalid(m),
            wit::EventError::NoLogin => Self::NoLogin,
            wit::EventError::Storage(m) => Self::Storage(m),
        }
    }
}

impl From<EventError> for Error {
    fn from(error: EventError) -> Self {
        match error {
            EventError::Invalid(m) => Error::Internal(format!("invalid event: {m}")),
            other => Error::Transient(other.to_string()),
        }
    }
}

/// Queues an event for bridging; durable when this returns `Ok`.
pub fn queue(event: RemoteEvent) -> Result<(), EventError> {
    Ok(wit::queue_event(&event)?)
}

/// Queues a message with a file; durable when this returns `Ok`. The host
/// uploads the file when it bridges the message (fetching it first, under
/// this plugin's HTTP grant, if its source is a URL).
pub fn queue_media(message: MediaMessage) -> Result<(), EventError> {
    Ok(wit::queue_media(&message)?)
}

/// Reports the login's bridge state, e.g. `Connected` after a good poll or
/// `BadCredentials` when the remote service rejects the token.
pub fn set_bridge_state(
    state: BridgeStateKind,
    error_code: Option<&str>,
    message: Option<&str>,
) -> Result<(), EventError> {
    queue(RemoteEvent::BridgeState(BridgeState {
        state,
        error_code: error_code.map(str::to_owned),
        message: message.map(str::to_owned),
    }))
}

/// A remote user with an id and, if known, a display name.
pub fn remote_user(id: impl Into<String>, display_name: Option<String>) -> RemoteUser {
    RemoteUser {
        id: id.into(),
        display_name,
    }
}

/// A sender; `is_from_me` says whether it is the login's own account.
pub fn sender(user: RemoteUser, is_from_me: bool) -> EventSender {
    EventSender { user, is_from_me }
}
