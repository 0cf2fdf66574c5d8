//! The connector role: one instance per login, driven by host timers and by
//! Matrix events.

use crate::login::Login;
use crate::{Error, Result};

/// A Matrix message in one of the login's portals, sent by the login's
/// owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatrixMessage {
    /// The remote chat id of the portal.
    pub chat_id: String,
    /// The Matrix event id.
    pub event_id: String,
    /// The Matrix user who sent it.
    pub sender: String,
    /// The plain-text body.
    pub text: String,
    /// The HTML body, if formatted.
    pub html: Option<String>,
    /// The remote id of the message it replies to, if any.
    pub reply_to: Option<String>,
    /// When it was sent, in Unix milliseconds.
    pub timestamp_ms: u64,
}

/// An edit made on Matrix to a bridged message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatrixEdit {
    /// The remote chat id.
    pub chat_id: String,
    /// The remote id of the edited message.
    pub message_id: String,
    /// The new plain-text body.
    pub text: String,
    /// The new HTML body.
    pub html: Option<String>,
}

/// A reaction made on Matrix to a bridged message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatrixReaction {
    /// The remote chat id.
    pub chat_id: String,
    /// The remote id of the message.
    pub message_id: String,
    /// The reaction key.
    pub key: String,
}

/// A file sent on Matrix in one of the login's portals.
#[derive(Clone, PartialEq, Eq)]
pub struct MatrixMedia {
    /// The remote chat id of the portal.
    pub chat_id: String,
    /// The Matrix event id.
    pub event_id: String,
    /// The Matrix user who sent it.
    pub sender: String,
    /// The file's name.
    pub file_name: String,
    /// Its MIME type.
    pub mime_type: String,
    /// The file, downloaded from the homeserver by the host.
    pub data: Vec<u8>,
    /// A caption.
    pub caption: Option<String>,
    /// The remote id of the message it replies to, if any.
    pub reply_to: Option<String>,
    /// When it was sent, in Unix milliseconds.
    pub timestamp_ms: u64,
}

impl std::fmt::Debug for MatrixMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MatrixMedia")
            .field("chat_id", &self.chat_id)
            .field("file_name", &self.file_name)
            .field("mime_type", &self.mime_type)
            .field("bytes", &self.data.len())
            .finish()
    }
}

/// One message of a chat's history, for [`Connector::fetch_history`].
pub use crate::events::HistoryItem;

/// A connector. Every method has a default, so a connector implements only
/// what its network supports.
///
/// The host may replace the instance at any time (after a trap, for an
/// upgrade) and then calls [`start`](Connector::start) on a fresh value:
/// keep durable state in [`kv`](crate::kv) or the login's
/// [`metadata`](crate::session::metadata), not only in `self`.
pub trait Connector: Login {
    /// Called on every new instance of a login. Set timers and report the
    /// bridge state here. Must be idempotent.
    fn start(&mut self) -> Result<()> {
        Ok(())
    }

    /// Called before the host retires the instance (upgrade, shutdown).
    fn stop(&mut self) {}

    /// A timer this plugin set is due.
    fn on_timer(&mut self, name: &str) -> Result<()> {
        let _ = name;
        Err(Error::unsupported("on-timer"))
    }

    /// Sends a Matrix message to the remote chat; returns its remote id.
    fn handle_matrix_message(&mut self, message: MatrixMessage) -> Result<String> {
        let _ = message;
        Err(Error::unsupported("handle-matrix-message"))
    }

    /// Sends an edit made on Matrix.
    fn handle_matrix_edit(&mut self, edit: MatrixEdit) -> Result<()> {
        let _ = edit;
        Err(Error::unsupported("handle-matrix-edit"))
    }

    /// Sends a reaction made on Matrix; returns a remote id for it.
    fn handle_matrix_reaction(&mut self, reaction: MatrixReaction) -> Result<String> {
        let _ = reaction;
        Err(Error::unsupported("handle-matrix-reaction"))
    }

    /// Removes a reaction made from Matrix.
    fn handle_matrix_reaction_removal(
        &mut self,
        chat_id: &str,
        message_id: &str,
        reaction_id: &str,
    ) -> Result<()> {
        let _ = (chat_id, message_id, reaction_id);
        Err(Error::unsupported("handle-matrix-reaction-removal"))
    }

    /// Deletes a bridged message redacted on Matrix.
    fn handle_matrix_redaction(&mut self, chat_id: &str, message_id: &str) -> Result<()> {
        let _ = (chat_id, message_id);
        Err(Error::unsupported("handle-matrix-redaction"))
    }

    /// Logs out of the remote service. The host deletes the login whatever
    /// this returns.
    fn logout(&mut self) -> Result<()> {
        Ok(())
    }

    /// Sends a file sent on Matrix; returns its remote id. Without this,
    /// the host sends the file's name as text through
    /// [`handle_matrix_message`](Connector::handle_matrix_message).
    fn handle_matrix_media(&mut self, media: MatrixMedia) -> Result<String> {
        let _ = media;
        Err(Error::unsupported("handle-matrix-media"))
    }

    /// The login's owner read the chat up to remote message `up_to` on
    /// Matrix, e.g. to mark the remote chat read. Ignored by default.
    fn handle_matrix_read_receipt(&mut self, chat_id: &str, up_to: &str) -> Result<()> {
        let _ = (chat_id, up_to);
        Ok(())
    }

    /// The login's owner started or stopped typing in the chat on Matrix.
    /// Ignored by default.
    fn handle_matrix_typing(&mut self, chat_id: &str, typing: bool) -> Result<()> {
        let _ = (chat_id, typing);
        Ok(())
    }

    /// The newest `limit` messages of a chat, oldest first, for a new
    /// portal's history. The host records their ids, so the next poll's
    /// copies are dropped.
    fn fetch_history(&mut self, chat_id: &str, limit: u32) -> Result<Vec<HistoryItem>> {
        let _ = (chat_id, limit);
        Err(Error::unsupported("fetch-history"))
    }
}
