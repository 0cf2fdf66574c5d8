//! A Matrix user driving the homeserver through the client-server API, as
//! a client would. The access token always travels in the header.

use std::time::Duration;

use serde_json::{Value, json};

/// A registered Matrix user.
#[derive(Clone)]
pub struct MatrixUser {
    /// `@name:localhost`.
    pub user_id: String,
    /// Their access token.
    pub token: String,
    homeserver: String,
    http: reqwest::Client,
}

fn txn() -> String {
    format!("t{}", rand::random::<u64>())
}

/// Percent-encodes a path segment (room and event ids contain `!` and `$`).
pub fn segment(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

impl MatrixUser {
    /// Registers `name` with a password (open registration on test
    /// homeservers).
    pub async fn register(homeserver: &str, name: &str) -> Self {
        let http = reqwest::Client::new();
        let url = format!("{homeserver}/_matrix/client/v3/register");
        let mut body = json!({ "username": name, "password": "correct horse battery staple", "inhibit_login": false });
        let first = http.post(&url).json(&body).send().await.unwrap();
        let mut response: Value = first.json().await.unwrap();
        if response.get("access_token").is_none() {
            // The user-interactive dance: one dummy stage.
            body["auth"] = json!({ "type": "m.login.dummy", "session": response["session"] });
            response = http
                .post(&url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        }
        let token = response["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("registration failed: {response}"))
            .to_owned();
        Self {
            user_id: response["user_id"].as_str().unwrap().to_owned(),
            token,
            homeserver: homeserver.to_owned(),
            http,
        }
    }

    /// A user whose token was issued elsewhere (e.g. by a credential
    /// provider).
    pub fn from_token(homeserver: &str, user_id: &str, token: &str) -> Self {
        Self {
            user_id: user_id.to_owned(),
            token: token.to_owned(),
            homeserver: homeserver.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// `GET /account/whoami`: the user id, or the HTTP status the
    /// homeserver refused the token with.
    pub async fn whoami(&self) -> Result<String, u16> {
        let response = self
            .http
            .get(format!(
                "{}/_matrix/client/v3/account/whoami",
                self.homeserver
            ))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let status = response.status();
        if !status.is_success() {
            return Err(status.as_u16());
        }
        let body: Value = response.json().await.unwrap();
        Ok(body["user_id"].as_str().unwrap().to_owned())
    }

    /// Logs this token out.
    pub async fn logout(&self) {
        self.call(
            reqwest::Method::POST,
            "/_matrix/client/v3/logout",
            Some(json!({})),
        )
        .await;
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.homeserver))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path} failed with {status}: {value}");
        value
    }

    /// Creates a direct chat with `other` (e.g. the bridge bot).
    pub async fn create_dm(&self, other: &str) -> String {
        self.create_dm_with_preset(other, "trusted_private_chat")
            .await
    }

    /// Creates a direct chat with `other` with room preset `preset`
    /// (`private_chat`, as some clients do, leaves `other` without power).
    pub async fn create_dm_with_preset(&self, other: &str, preset: &str) -> String {
        let body = json!({ "is_direct": true, "invite": [other], "preset": preset });
        let response = self
            .call(
                reqwest::Method::POST,
                "/_matrix/client/v3/createRoom",
                Some(body),
            )
            .await;
        response["room_id"].as_str().unwrap().to_owned()
    }

    /// Joins `room`.
    pub async fn join(&self, room: &str) {
        self.call(
            reqwest::Method::POST,
            &format!("/_matrix/client/v3/join/{}", segment(room)),
            Some(json!({})),
        )
        .await;
    }

    /// Sends a text message; returns its event id.
    pub async fn send_text(&self, room: &str, text: &str) -> String {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
            segment(room),
            txn()
        );
        let response = self
            .call(
                reqwest::Method::PUT,
                &path,
                Some(json!({ "msgtype": "m.text", "body": text })),
            )
            .await;
        response["event_id"].as_str().unwrap().to_owned()
    }

    /// Sends an event of `event_type`; returns its event id.
    pub async fn send_event(&self, room: &str, event_type: &str, content: Value) -> String {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/{event_type}/{}",
            segment(room),
            txn()
        );
        let response = self.call(reqwest::Method::PUT, &path, Some(content)).await;
        response["event_id"].as_str().unwrap().to_owned()
    }

    /// Replies to `event` with `text`; returns the reply's event id.
    pub async fn reply(&self, room: &str, event: &str, text: &str) -> String {
        let content = json!({
            "msgtype": "m.text", "body": text,
            "m.relates_to": { "m.in_reply_to": { "event_id": event } },
        });
        self.send_event(room, "m.room.message", content).await
    }

    /// Edits `event` to say `text`; returns the edit's event id.
    pub async fn edit(&self, room: &str, event: &str, text: &str) -> String {
        let content = json!({
            "msgtype": "m.text", "body": format!("* {text}"),
            "m.new_content": { "msgtype": "m.text", "body": text },
            "m.relates_to": { "rel_type": "m.replace", "event_id": event },
        });
        self.send_event(room, "m.room.message", content).await
    }

    /// Reacts to `event` with `key`; returns the reaction's event id.
    pub async fn react(&self, room: &str, event: &str, key: &str) -> String {
        let content = json!({
            "m.relates_to": { "rel_type": "m.annotation", "event_id": event, "key": key },
        });
        self.send_event(room, "m.reaction", content).await
    }

    /// Redacts `event`.
    pub async fn redact(&self, room: &str, event: &str) {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/redact/{}/{}",
            segment(room),
            segment(event),
            txn()
        );
        self.call(reqwest::Method::PUT, &path, Some(json!({})))
            .await;
    }

    /// Uploads a file to the media repository; returns its `mxc://` URI.
    pub async fn upload(&self, bytes: Vec<u8>, content_type: &str, name: &str) -> String {
        let url = format!(
            "{}/_matrix/media/v3/upload?filename={}",
            self.homeserver,
            segment(name)
        );
        let response: Value = self
            .http
            .post(url)
            .bearer_auth(&self.token)
            .header("content-type", content_type)
            .body(bytes)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        response["content_uri"]
            .as_str()
            .unwrap_or_else(|| panic!("upload failed: {response}"))
            .to_owned()
    }

    /// Uploads and sends a file as `msgtype` (`m.image`, `m.file`, …),
    /// with a caption if given; returns the event id.
    pub async fn send_file(
        &self,
        room: &str,
        msgtype: &str,
        name: &str,
        content_type: &str,
        bytes: Vec<u8>,
        caption: Option<&str>,
    ) -> String {
        let size = bytes.len();
        let url = self.upload(bytes, content_type, name).await;
        let content = json!({
            "msgtype": msgtype, "body": caption.unwrap_or(name), "filename": name, "url": url,
            "info": { "mimetype": content_type, "size": size },
        });
        self.send_event(room, "m.room.message", content).await
    }

    /// Downloads `mxc` with authenticated media.
    pub async fn download(&self, mxc: &str) -> Vec<u8> {
        let rest = mxc.strip_prefix("mxc://").expect("an mxc URI");
        let url = format!(
            "{}/_matrix/client/v1/media/download/{rest}",
            self.homeserver
        );
        let response = self
            .http
            .get(url)
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "download of {mxc}: {}",
            response.status()
        );
        response.bytes().await.unwrap().to_vec()
    }

    /// Every event of the room's timeline, oldest first.
    pub async fn events(&self, room: &str) -> Vec<Value> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=500",
            segment(room)
        );
        let response = self.call(reqwest::Method::GET, &path, None).await;
        let mut events: Vec<Value> = response["chunk"].as_array().unwrap().clone();
        events.reverse();
        events
    }

    /// Sends a read receipt for `event`.
    pub async fn read_up_to(&self, room: &str, event: &str) {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
            segment(room),
            segment(event)
        );
        self.call(reqwest::Method::POST, &path, Some(json!({})))
            .await;
    }

    /// Starts or stops typing in `room`.
    pub async fn set_typing(&self, room: &str, typing: bool) {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/typing/{}",
            segment(room),
            segment(&self.user_id)
        );
        let body = match typing {
            true => json!({ "typing": true, "timeout": 30000 }),
            false => json!({ "typing": false }),
        };
        self.call(reqwest::Method::PUT, &path, Some(body)).await;
    }

    /// The room as a full `/sync` shows it to this user (`rooms.join` or
    /// `rooms.invite`): its timeline, ephemeral events and unread counts.
    pub async fn synced_room(&self, room: &str) -> Value {
        let sync = self
            .call(
                reqwest::Method::GET,
                "/_matrix/client/v3/sync?timeout=0",
                None,
            )
            .await;
        for section in ["join", "invite"] {
            if let Some(value) = sync["rooms"][section].get(room) {
                return value.clone();
            }
        }
        Value::Null
    }

    /// The rooms the user is invited to.
    pub async fn invites(&self) -> Vec<String> {
        let sync = self
            .call(
                reqwest::Method::GET,
                "/_matrix/client/v3/sync?timeout=0",
                None,
            )
            .await;
        sync["rooms"]["invite"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The rooms the user has joined.
    pub async fn joined_rooms(&self) -> Vec<String> {
        let response = self
            .call(
                reqwest::Method::GET,
                "/_matrix/client/v3/joined_rooms",
                None,
            )
            .await;
        response["joined_rooms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_owned())
            .collect()
    }

    /// Joins every room the user is invited to; returns how many.
    pub async fn accept_invites(&self) -> usize {
        let invites = self.invites().await;
        for room in &invites {
            self.join(room).await;
        }
        invites.len()
    }

    /// Accepts invites until the user is in at least `count` rooms besides
    /// `except`; returns those rooms.
    pub async fn wait_for_rooms(&self, count: usize, except: &[String]) -> Vec<String> {
        for _ in 0..400 {
            self.accept_invites().await;
            let rooms: Vec<String> = self
                .joined_rooms()
                .await
                .into_iter()
                .filter(|r| !except.contains(r))
                .collect();
            if rooms.len() >= count {
                return rooms;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{} never got {count} rooms", self.user_id);
    }

    /// The room's message events (`m.room.message`), oldest first.
    pub async fn messages(&self, room: &str) -> Vec<Value> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=200",
            segment(room)
        );
        let response = self.call(reqwest::Method::GET, &path, None).await;
        let mut events: Vec<Value> = response["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "m.room.message")
            .cloned()
            .collect();
        events.reverse();
        events
    }

    /// The bodies of every message of the room, oldest first, however
    /// many there are (page by page).
    pub async fn all_bodies(&self, room: &str) -> Vec<String> {
        let mut bodies = Vec::new();
        let mut from: Option<String> = None;
        loop {
            let mut path = format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=500",
                segment(room)
            );
            if let Some(token) = &from {
                path.push_str(&format!("&from={}", segment(token)));
            }
            let response = self.call(reqwest::Method::GET, &path, None).await;
            let chunk = response["chunk"].as_array().cloned().unwrap_or_default();
            bodies.extend(
                chunk
                    .iter()
                    .filter(|e| e["type"] == "m.room.message")
                    .map(|e| e["content"]["body"].as_str().unwrap_or_default().to_owned()),
            );
            match response["end"].as_str() {
                Some(end) if !chunk.is_empty() => from = Some(end.to_owned()),
                _ => break,
            }
        }
        bodies.reverse();
        bodies
    }

    /// The bodies of the room's messages, oldest first.
    pub async fn bodies(&self, room: &str) -> Vec<String> {
        self.messages(room)
            .await
            .iter()
            .map(|e| e["content"]["body"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Waits until a message with body `body` is in `room`; returns it.
    pub async fn wait_for_body(&self, room: &str, body: &str) -> Value {
        for _ in 0..400 {
            if let Some(event) = self
                .messages(room)
                .await
                .into_iter()
                .find(|e| e["content"]["body"] == body)
            {
                return event;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "`{body}` never appeared in {room}; it has: {:?}",
            self.bodies(room).await
        );
    }

    /// How many of the room's messages contain `part`.
    pub async fn count_containing(&self, room: &str, part: &str) -> usize {
        self.bodies(room)
            .await
            .iter()
            .filter(|b| b.contains(part))
            .count()
    }

    /// Waits until `count` of the room's messages contain `part`.
    pub async fn wait_for_count(&self, room: &str, part: &str, count: usize) {
        for _ in 0..400 {
            if self.count_containing(room, part).await == count {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "never {count} messages with `{part}` in {room}; it has: {:?}",
            self.bodies(room).await
        );
    }

    /// Waits until a message whose body contains `part` is in `room`.
    pub async fn wait_for_text(&self, room: &str, part: &str) -> String {
        for _ in 0..400 {
            if let Some(body) = self
                .bodies(room)
                .await
                .into_iter()
                .find(|b| b.contains(part))
            {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "nothing with `{part}` appeared in {room}; it has: {:?}",
            self.bodies(room).await
        );
    }

    /// The room's name, if set.
    pub async fn room_name(&self, room: &str) -> Option<String> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.name/",
            segment(room)
        );
        let response = self
            .http
            .get(format!("{}{path}", self.homeserver))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        if !response.status().is_success() {
            return None;
        }
        let value: Value = response.json().await.unwrap();
        value["name"].as_str().map(str::to_owned)
    }
}
