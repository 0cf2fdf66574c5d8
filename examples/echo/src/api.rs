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
pub(crate) struct Message {
    pub(crate) id: String,
    pub(crate) seq: u64,
    pub(crate) chat_id: String,
    pub(crate) sender: User,
    pub(crate) text: String,
    pub(crate) html: Option<String>,
    pub(crate) reply_to: Option<String>,
    pub(crate) ts: u64,
}

#[derive(Debug, Deserialize)]
pub(crate) struct MessagePage {
    pub(crate) messages: Vec<Message>,
    pub(crate) has_more: bool,
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

    pub(crate) fn messages_after(&self, seq: u64) -> Result<MessagePage> {
        self.authed(Request::get(
            self.url(&format!("/api/messages?after={seq}&limit=100")),
        ))
        .send()?
        .error_for_status()?
        .json()
    }

    pub(crate) fn send(
        &self,
        chat_id: &str,
        text: &str,
        html: Option<&str>,
        reply_to: Option<&str>,
    ) -> Result<String> {
        let body = serde_json::json!({ "text": text, "html": html, "reply_to": reply_to });
        let request =
            Request::post(self.url(&format!("/api/chats/{chat_id}/messages"))).json(&body);
        let sent: Sent = self.authed(request).send()?.error_for_status()?.json()?;
        Ok(sent.id)
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

/// Whether an HTTP failure means the token is no longer accepted.
pub(crate) fn is_unauthorized(error: &Error) -> bool {
    matches!(error, Error::BadCredentials(_))
}

/// Whether an error is worth a `transient-disconnect` rather than a hard
/// failure.
pub(crate) fn is_transient(error: &Error) -> bool {
    matches!(error, Error::Transient(_))
}
