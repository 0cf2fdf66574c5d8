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
        let body =
            json!({ "is_direct": true, "invite": [other], "preset": "trusted_private_chat" });
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
