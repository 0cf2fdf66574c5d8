//! A whole bridge for a test: a real Synapse with the generated
//! registration, the echo service, and a host running the echo connector
//! with its Matrix side.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use weft_host::config::Config;
use weft_host::host::Host;
use weft_host::logins::LoginKey;

use crate::echo::Echo;
use crate::matrix::MatrixUser;
use crate::synapse::{DOMAIN, Synapse, free_port};

/// The provisioning shared secret of test bridges.
pub const PROVISIONING_SECRET: &str = "test-provisioning-secret-0123456789";

/// The provisioning path that answers `step` (a bridgev2 step response)
/// with a step of type `kind`.
pub fn step_path(step: &Value, kind: &str) -> String {
    let process = step["login_id"]
        .as_str()
        .expect("a step response has login_id");
    let step_id = step["step_id"]
        .as_str()
        .expect("a step response has step_id");
    format!("/login/step/{process}/{step_id}/{kind}")
}

/// A running bridge.
pub struct BridgeEnv {
    /// The homeserver.
    pub synapse: Synapse,
    /// The remote network.
    pub echo: Echo,
    /// The host (None while stopped for a restart).
    pub host: Option<Host>,
    config_text: String,
    dir: tempfile::TempDir,
    appservice_port: u16,
}

/// How a test bridge differs from the default.
#[derive(Default)]
pub struct BridgeOptions {
    /// Replaces `key = value` lines of the echo connector's manifest
    /// (written beside the component), e.g. to share group portals.
    pub manifest_edits: Vec<(String, String)>,
}

impl BridgeEnv {
    /// Starts everything.
    pub async fn start() -> Self {
        Self::start_with(BridgeOptions::default()).await
    }

    /// Starts everything, as `options` say.
    pub async fn start_with(options: BridgeOptions) -> Self {
        crate::init_logging();
        let echo = Echo::start().await;
        let dir = tempfile::tempdir().unwrap();
        let plugins = dir.path().join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        let component = crate::host::copy_component("echo", &plugins);
        if !options.manifest_edits.is_empty() {
            let bytes = std::fs::read(&component).unwrap();
            let mut manifest = weft_runtime::plugin::embedded_manifest(&bytes).unwrap();
            for (from, to) in &options.manifest_edits {
                assert!(
                    manifest.contains(from.as_str()),
                    "the manifest has no `{from}`"
                );
                manifest = manifest.replace(from.as_str(), to);
            }
            std::fs::write(component.with_extension("toml"), manifest).unwrap();
        }
        let appservice_port = free_port();
        let homeserver_port = free_port();
        let admin_port = free_port();
        let config_text = format!(
            r#"
data-dir = "{data}"

[plugins]
dir = "{plugins}"
watch = false

[runtime]
min-timer-ms = 10
compile-cache-dir = "{cache}"

[homeserver]
url = "http://127.0.0.1:{homeserver_port}"
domain = "{DOMAIN}"

[appservice]
listen = "127.0.0.1:{appservice_port}"
address = "http://127.0.0.1:{appservice_port}"
registration = "{registration}"

[provisioning]
shared-secret = "{PROVISIONING_SECRET}"

[admin]
listen = "127.0.0.1:{admin_port}"
token = "{admin_token}"

[plugin.echo]
http = ["http://127.0.0.1:*"]
private-networks = true

[plugin.echo.settings]
base-url = "{echo_url}"
poll-interval-ms = 100
"#,
            data = dir.path().join("data").display(),
            plugins = plugins.display(),
            cache = crate::workspace()
                .join("target/test-compile-cache")
                .display(),
            registration = dir.path().join("registration.yaml").display(),
            echo_url = echo.url(),
            admin_token = crate::host::ADMIN_TOKEN,
        );
        let config = Config::from_toml(&config_text, dir.path()).unwrap();
        weft_host::matrix::registration::generate(&config).unwrap();
        let synapse = Synapse::start(homeserver_port, &dir.path().join("registration.yaml")).await;
        let host = Host::start(config).await.expect("the host starts");
        Self {
            synapse,
            echo,
            host: Some(host),
            config_text,
            dir,
            appservice_port,
        }
    }

    /// The running host.
    pub fn host(&self) -> &Host {
        self.host.as_ref().expect("the host is running")
    }

    /// The bridge bot's user id.
    pub fn bot(&self) -> String {
        format!("@weftbot:{DOMAIN}")
    }

    /// The registration file.
    pub fn registration(&self) -> PathBuf {
        self.dir.path().join("registration.yaml")
    }

    /// The appservice base URL.
    pub fn appservice_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.appservice_port)
    }

    /// Stops the host (the homeserver and the echo service keep running).
    pub async fn stop_host(&mut self) {
        if let Some(host) = self.host.take() {
            host.shutdown().await;
        }
    }

    /// Starts the host again on the same database.
    pub async fn start_host(&mut self) {
        let config = Config::from_toml(&self.config_text, self.dir.path()).unwrap();
        self.host = Some(Host::start(config).await.expect("the host starts again"));
    }

    /// Registers a Matrix user.
    pub async fn user(&self, name: &str) -> MatrixUser {
        MatrixUser::register(&self.synapse.url, name).await
    }

    /// Calls the provisioning API as `user` with their own access token.
    pub async fn provision(
        &self,
        user: &MatrixUser,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let url = format!("{}/_matrix/provision/v3{path}", self.appservice_url());
        let mut request = reqwest::Client::new()
            .request(method, url)
            .bearer_auth(&user.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Logs `user` in to the echo service as `remote` with the password
    /// flow, through the provisioning API; returns the login key.
    pub async fn login(&self, user: &MatrixUser, remote: &str) -> LoginKey {
        let (status, step) = self
            .provision(
                user,
                reqwest::Method::POST,
                "/login/start/echo:password",
                None,
            )
            .await;
        assert_eq!(status, 200, "{step}");
        let path = step_path(&step, "user_input");
        let (status, done) = self
            .provision(
                user,
                reqwest::Method::POST,
                &path,
                Some(json!({ "username": remote, "password": "pw" })),
            )
            .await;
        assert_eq!(status, 200, "{done}");
        assert_eq!(done["type"], "complete", "{done}");
        LoginKey::parse(done["complete"]["user_login_id"].as_str().unwrap()).unwrap()
    }

    /// Calls the admin API.
    pub async fn admin(&self, method: reqwest::Method, path: &str) -> (u16, Value) {
        let addr = self.host().admin_addr().expect("the admin API listens");
        let response = reqwest::Client::new()
            .request(method, format!("http://{addr}/_weft/admin/v1{path}"))
            .bearer_auth(crate::host::ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The portal room of `chat` for `login`, once it exists.
    pub async fn portal_room(&self, login: &LoginKey, chat: &str) -> String {
        self.portal_room_of(&login.plugin, chat, &login.id).await
    }

    /// The portal room of `chat` shared by every login (connectors that do
    /// not split portals), once it exists.
    pub async fn shared_portal_room(&self, chat: &str) -> String {
        self.portal_room_of("echo", chat, "").await
    }

    async fn portal_room_of(&self, plugin: &str, chat: &str, receiver: &str) -> String {
        let bridge = self.host().bridge().expect("the Matrix side runs").clone();
        let key = weft_host::bridge::store::PortalKey {
            plugin: plugin.to_owned(),
            chat_id: chat.to_owned(),
            receiver: receiver.to_owned(),
        };
        crate::eventually(Duration::from_secs(20), "the portal room", || {
            bridge.store.portal(&key).ok().flatten().map(|p| p.room_id)
        })
        .await
    }
}
