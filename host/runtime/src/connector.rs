//! What the host asks of a connector on the Matrix side: messages, edits,
//! reactions and deletions made in a login's portals. Plain types; the
//! runtime converts them to the WIT records at the call.

/// A Matrix message in one of the login's portals, sent by its owner.
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
    /// The remote id of the message it replies to.
    pub reply_to: Option<String>,
    /// When it was sent, in Unix milliseconds.
    pub timestamp_ms: u64,
}

/// An edit of a bridged message, made on Matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatrixEdit {
    /// The remote chat id of the portal.
    pub chat_id: String,
    /// The remote id of the edited message.
    pub message_id: String,
    /// The new plain-text body.
    pub text: String,
    /// The new HTML body.
    pub html: Option<String>,
}

/// A reaction to a bridged message, made on Matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatrixReaction {
    /// The remote chat id of the portal.
    pub chat_id: String,
    /// The remote id of the message reacted to.
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
    /// The file.
    pub data: Vec<u8>,
    /// A caption.
    pub caption: Option<String>,
    /// The remote id of the message it replies to.
    pub reply_to: Option<String>,
    /// When it was sent, in Unix milliseconds.
    pub timestamp_ms: u64,
}

impl std::fmt::Debug for MatrixMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MatrixMedia")
            .field("chat_id", &self.chat_id)
            .field("event_id", &self.event_id)
            .field("file_name", &self.file_name)
            .field("mime_type", &self.mime_type)
            .field("bytes", &self.data.len())
            .finish()
    }
}

/// A plugin's expected failure, as the WIT `plugin-error` reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    /// The input was refused; the message is for the user.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The remote service rejected the login's credentials.
    #[error("the remote service rejected the login: {0}")]
    BadCredentials(String),
    /// A temporary failure.
    #[error("temporary failure: {0}")]
    Transient(String),
    /// The plugin does not implement this.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// Any other failure.
    #[error("the plugin failed: {0}")]
    Internal(String),
}

impl PluginError {
    /// The plugin's own message, without the kind: what a user reads.
    pub fn message(&self) -> &str {
        match self {
            Self::InvalidInput(m)
            | Self::BadCredentials(m)
            | Self::Transient(m)
            | Self::Unsupported(m)
            | Self::Internal(m) => m,
        }
    }
}

/// A request to a credential provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRequest {
    /// Who asks, in the provider's terms (e.g. a certificate hash).
    pub subject: String,
    /// Further facts about the subject.
    pub claims: Vec<(String, String)>,
}

/// Credentials a credential provider issued.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The account's Matrix user id.
    pub user_id: String,
    /// The account's access token.
    pub access_token: String,
    /// The homeserver to use it with.
    pub homeserver_url: String,
    /// Anything else the client needs.
    pub extra: Vec<(String, String)>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("user_id", &self.user_id)
            .field("access_token", &"<redacted>")
            .field("homeserver_url", &self.homeserver_url)
            .finish()
    }
}
