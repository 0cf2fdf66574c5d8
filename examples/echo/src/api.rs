//! The echo service's HTTP API, as the connector uses it.

use serde::{Deserialize, Serialize};
use weft_sdk::http::Request;
use weft_sdk::{Error, Result};

/// What the connector keeps for a login: the service's token and who it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Session {
    pub(crate) token: String,
    pub(crate) user_id: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct LoginResponse {
    pub(crate) token: String,
    pub(crate) user_id: String,
    pub(crate) display_name: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct DeviceCode {
    pub(crate) code: String,
    pub(crate) device_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub(crate) enum DeviceCodeStatus {
    Pending,
    Approved(LoginResponse),
    Expired,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct User {
    pub(crate) id: String,
    pub(crate) display_name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Chat {
    pub(crate) id: String,
    pub(crate) name: Option<String>,
    pub(crate) kind: String,
    pub(crate) members: Vec<User>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct FileRef {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) mime_type: String,
    pub(crate) size: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Message {
    pub(crate) id: String,
    pub(crate) seq: u64,
    pub(crate) chat_id: String,
    pub(crate) sender: User,
    pub(crate) text: String,
    pub(crate) html: Option<String>,
    pub(crate) reply_to: Option<String>,
    pub(crate) ts: u64,
    #[serde(default)]
    pub(crate) file: Option<FileRef>,
}

/// Something that happened in one of the user's chats.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Event {
    pub(crate) seq: u64,
    pub(crate) chat_id: String,
    pub(crate) actor: User,
    pub(crate) ts: u64,
    #[serde(flatten)]
    pub(crate) kind: EventKind,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum EventKind {
    /// `None` if the message was deleted since.
    Message {
        message: Option<Box<Message>>,
    },
    Edit {
        message_id: String,
        text: String,
    },
    Delete {
        message_id: String,
    },
    Reaction {
        message_id: String,
        key: String,
        removed: bool,
    },
    Typing {
        typing: bool,
    },
    Read {
        up_to: String,
    },
}

#[derive(Debug, Deserialize)]
pub(crate) struct EventPage {
    pub(crate) events: Vec<Event>,
    pub(crate) has_more: bool,
    /// The newest position in the service's log.
    pub(crate) latest: u64,
}

#[derive(Debug, Deserialize)]
struct History {
    messages: Vec<Message>,
}

#[derive(Debug, Deserialize)]
struct Sent {
    id: String,
}

/// A client for one base URL and, once logged in, one token.
pub(crate) struct Client {
    base_url: String,
    token: Option<String>,
}

impl Client {
    pub(crate) fn new(base_url: &str, token: Option<&str>) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            token: token.map(str::to_owned),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    fn authed(&self, request: Request) -> Request {
        match &self.token {
            Some(token) => request.bearer(token),
            None => request,
        }
    }

    pub(crate) fn login(&self, username: &str, password: &str) -> Result<LoginResponse> {
        let response = Request::post(self.url("/api/login"))
            .json(&serde_json::json!({ "username": username, "password": password }))
            .send()?;
        if response.status() == 401 {
            return Err(Error::invalid_input("Wrong user name or password."));
        }
        response.error_for_status()?.json()
    }

    pub(crate) fn start_device_code(&self) -> Result<DeviceCode> {
        Request::post(self.url("/api/device-code"))
            .send()?
            .error_for_status()?
            .json()
    }

    pub(crate) fn poll_device_code(&self, device_id: &str) -> Result<DeviceCodeStatus> {
        Request::get(self.url(&format!("/api/device-code/{device_id}")))
            .send()?
            .error_for_status()?
            .json()
    }

    pub(crate) fn chats(&self) -> Result<Vec<Chat>> {
        self.authed(Request::get(self.url("/api/chats")))
            .send()?
            .error_for_status()?
            .json()
    }

    /// What happened after position `seq`; `limit` 1 just to learn the
    /// newest position.
    pub(crate) fn events_after(&self, seq: u64, limit: usize) -> Result<EventPage> {
        self.authed(Request::get(
            self.url(&format!("/api/events?after={seq}&limit={limit}")),
        ))
        .send()?
        .error_for_status()?
        .json()
    }

    /// The newest `limit` messages of a chat, oldest first.
    pub(crate) fn history(&self, chat_id: &str, limit: u32) -> Result<Vec<Message>> {
        let history: History = self
            .authed(Request::get(
                self.url(&format!("/api/chats/{chat_id}/history?limit={limit}")),
            ))
            .send()?
            .error_for_status()?
            .json()?;
        Ok(history.messages)
    }

    /// Where the host can fetch a file, with the header that authorizes
    /// it (the host fetches it under this plugin's HTTP grant).
    pub(crate) fn file_source(&self, file_id: &str) -> (String, Vec<(String, String)>) {
        let headers = self
            .token
            .iter()
            .map(|t| ("authorization".to_owned(), format!("Bearer {t}")))
            .collect();
        (self.url(&format!("/api/files/{file_id}")), headers)
    }

    pub(crate) fn send(&self, chat_id: &str, message: &NewMessage<'_>) -> Result<String> {
        let request =
            Request::post(self.url(&format!("/api/chats/{chat_id}/messages"))).json(message);
        let sent: Sent = self.authed(request).send()?.error_for_status()?.json()?;
        Ok(sent.id)
    }

    pub(crate) fn upload(&self, name: &str, mime_type: &str, data: Vec<u8>) -> Result<String> {
        let request = Request::post(self.url("/api/files"))
            .header("content-type", mime_type)
            .header("x-file-name", name)
            .body(data);
        let sent: Sent = self.authed(request).send()?.error_for_status()?.json()?;
        Ok(sent.id)
    }

    pub(crate) fn react(&self, chat_id: &str, message_id: &str, key: &str) -> Result<String> {
        let request = Request::post(self.url(&format!(
            "/api/chats/{chat_id}/messages/{message_id}/reactions"
        )))
        .json(&serde_json::json!({ "key": key }));
        let sent: Sent = self.authed(request).send()?.error_for_status()?.json()?;
        Ok(sent.id)
    }

    pub(crate) fn unreact(&self, chat_id: &str, message_id: &str, key: &str) -> Result<()> {
        let key = percent_encode(key);
        let request = Request::delete(self.url(&format!(
            "/api/chats/{chat_id}/messages/{message_id}/reactions/{key}"
        )));
        self.authed(request).send()?.error_for_status()?;
        Ok(())
    }

    pub(crate) fn typing(&self, chat_id: &str, typing: bool) -> Result<()> {
        let request = Request::post(self.url(&format!("/api/chats/{chat_id}/typing")))
            .json(&serde_json::json!({ "typing": typing }));
        self.authed(request).send()?.error_for_status()?;
        Ok(())
    }

    pub(crate) fn read(&self, chat_id: &str, up_to: &str) -> Result<()> {
        let request = Request::post(self.url(&format!("/api/chats/{chat_id}/read")))
            .json(&serde_json::json!({ "up_to": up_to }));
        self.authed(request).send()?.error_for_status()?;
        Ok(())
    }

    pub(crate) fn edit(&self, chat_id: &str, message_id: &str, text: &str) -> Result<()> {
        let request =
            Request::put(self.url(&format!("/api/chats/{chat_id}/messages/{message_id}")))
                .json(&serde_json::json!({ "text": text }));
        self.authed(request).send()?.error_for_status()?;
        Ok(())
    }

    pub(crate) fn delete(&self, chat_id: &str, message_id: &str) -> Result<()> {
        let request =
            Request::delete(self.url(&format!("/api/chats/{chat_id}/messages/{message_id}")));
        self.authed(request).send()?.error_for_status()?;
        Ok(())
    }

    pub(crate) fn logout(&self) -> Result<()> {
        self.authed(Request::post(self.url("/api/logout")))
            .send()?
            .error_for_status()?;
        Ok(())
    }
}

/// A message to post.
#[derive(Debug, Default, Serialize)]
pub(crate) struct NewMessage<'a> {
    pub(crate) text: &'a str,
    pub(crate) html: Option<&'a str>,
    pub(crate) reply_to: Option<&'a str>,
    pub(crate) file_id: Option<&'a str>,
}

/// Percent-encodes a path segment (a reaction key is usually an emoji).
fn percent_encode(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Whether an HTTP failure means the token is no longer accepted.
pub(crate) fn is_unauthorized(error: &Error) -> bool {
    matches!(error, Error::BadCredentials(_))
}

/// Whether an error is worth a `transient-disconnect` rather than a hard
/// failure.
pub(crate) fn is_transient(error: &Error) -> bool {
    matches!(error, Error::Transient(_))
}
