//! The echo service on loopback, and logins to it.

use std::net::SocketAddr;

use echo_service::EchoService;

/// A running echo service.
pub struct Echo {
    /// The service (for seeding and inspecting).
    pub service: EchoService,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Echo {
    /// Starts a service with users `alice` and `bob` (password `pw`).
    pub async fn start() -> Self {
        crate::init_logging();
        let service = EchoService::new();
        service.add_user("alice", "pw", "Alice");
        service.add_user("bob", "pw", "Bob");
        let addr = service
            .serve("127.0.0.1:0".parse().unwrap())
            .await
            .expect("echo service starts");
        Self { service, addr }
    }

    /// The base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The operator config that grants the echo connector this service.
    /// New logins read the whole log (there is no Matrix side to give
    /// them history).
    pub fn grant(&self, poll_ms: u64) -> String {
        format!(
            "http = [\"http://127.0.0.1:*\"]\nprivate-networks = true\n[plugin.echo.settings]\nbase-url = \"{}\"\npoll-interval-ms = {poll_ms}\nstart-from = \"beginning\"\n",
            self.url()
        )
    }

    /// Logs `user` in through the service's API, as a login process
    /// would; returns the connector metadata.
    pub async fn session(&self, user: &str) -> serde_json::Value {
        let response: serde_json::Value = reqwest::Client::new()
            .post(format!("{}/api/login", self.url()))
            .json(&serde_json::json!({ "username": user, "password": "pw" }))
            .send()
            .await
            .expect("echo login")
            .json()
            .await
            .expect("echo login answer");
        serde_json::json!({ "token": response["token"], "user_id": response["user_id"] })
    }

    /// The id of `user`'s direct chat with the echo bot.
    pub fn echo_chat(&self, user: &str) -> String {
        // Users are created in order with a chat each: alice c1, bob c2.
        match user {
            "alice" => "c1".into(),
            "bob" => "c2".into(),
            other => panic!("no echo chat for {other}"),
        }
    }
}
