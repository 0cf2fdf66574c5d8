//! A whole bridge for a test: a real Synapse with the generated
//! registration, the echo service, and a host running the echo connector
//! with its Matrix side.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use weft_host::config::Config;
use weft_host::host::Host;
use weft_host::logins::LoginKey;

use crate::echo::Echo;
use crate::fault_proxy::FaultProxy;
use crate::mas::{DelegatedHomeserver, Mas};
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
    /// The OAuth server in front of it, when its auth is delegated
    /// ([`BridgeOptions::delegated_auth`]).
    pub mas: Option<Mas>,
    /// The remote network.
    pub echo: Echo,
    /// The host (None while stopped for a restart, or when it runs as a
    /// process).
    pub host: Option<Host>,
    /// The host as a separate process, if the test asked for one.
    process: Option<std::process::Child>,
    /// Whether the host runs as a process (also while it is down).
    as_process: bool,
    /// The host process's `RUST_LOG`, if the test set one.
    log_filter: Option<String>,
    /// The disk-full switch, if the test asked for one.
    disk: Option<crate::failing_storage::DiskFull>,
    /// The proxy between the host and Synapse, if the test asked for one.
    pub fault_proxy: Option<FaultProxy>,
    config_text: String,
    dir: tempfile::TempDir,
    appservice_port: u16,
    admin_port: u16,
}

/// How a test bridge differs from the default.
#[derive(Default)]
pub struct BridgeOptions {
    /// Replaces `key = value` lines of the echo connector's manifest
    /// (written beside the component), e.g. to share group portals.
    pub manifest_edits: Vec<(String, String)>,
    /// Lines for the config's `[bridge]` section, e.g.
    /// `backfill-messages = 5`.
    pub bridge_settings: Vec<String>,
    /// Lines for the echo connector's grants (`[plugin.echo]`), e.g.
    /// `max-media-bytes = 1024`.
    pub echo_grants: Vec<String>,
    /// Lines for the echo connector's settings (`[plugin.echo.settings]`).
    pub echo_settings: Vec<String>,
    /// Sends the host's homeserver traffic through a [`FaultProxy`]
    /// (which passes everything through until armed).
    pub fault_proxy: bool,
    /// Runs the host as a separate process (`weft run`), so the test can
    /// kill it.
    pub process: bool,
    /// More plugins to load beside echo, by package name (e.g. `probe`,
    /// `msal`).
    pub plugins: Vec<&'static str>,
    /// Config text appended as it is, e.g. their grants and settings;
    /// `${HOMESERVER_URL}` stands for the homeserver's URL.
    pub config: Vec<String>,
    /// Runs the bridge against a homeserver whose auth is delegated to an
    /// OAuth server (MSC3861, "MAS mode": [`DelegatedHomeserver`]): users
    /// come from MAS, with MAS tokens.
    pub delegated_auth: bool,
    /// The host process's `RUST_LOG` (default `info,weft_host=debug`).
    pub log_filter: Option<String>,
    /// Runs the in-process host on the sled database wrapped so that its
    /// writes fail while this switch says the disk is full.
    pub disk: Option<crate::failing_storage::DiskFull>,
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
        for plugin in &options.plugins {
            crate::host::copy_component(plugin, &plugins);
        }
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
        let synapse_url = format!("http://127.0.0.1:{homeserver_port}");
        // The proxy needs Synapse's address only when it forwards.
        let fault_proxy = match options.fault_proxy {
            true => Some(FaultProxy::start(&synapse_url).await),
            false => None,
        };
        let homeserver_url = fault_proxy.as_ref().map_or(synapse_url, FaultProxy::url);
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
url = "{homeserver_url}"
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

[bridge]
{bridge_settings}

[plugin.echo]
http = ["http://127.0.0.1:*"]
private-networks = true
{echo_grants}

[plugin.echo.settings]
base-url = "{echo_url}"
poll-interval-ms = 100
{echo_settings}

{extra_config}
"#,
            data = dir.path().join("data").display(),
            plugins = plugins.display(),
            cache = crate::workspace()
                .join("target/test-compile-cache")
                .display(),
            registration = dir.path().join("registration.yaml").display(),
            echo_url = echo.url(),
            admin_token = crate::host::ADMIN_TOKEN,
            bridge_settings = options.bridge_settings.join("\n"),
            echo_grants = options.echo_grants.join("\n"),
            echo_settings = options.echo_settings.join("\n"),
            extra_config = options
                .config
                .join("\n")
                .replace("${HOMESERVER_URL}", &homeserver_url),
        );
        let config = Config::from_toml(&config_text, dir.path()).unwrap();
        let generated = weft_host::matrix::registration::generate(&config).unwrap();
        let mut registrations = vec![dir.path().join("registration.yaml")];
        registrations.extend(generated.double_puppet);
        let registrations: Vec<&std::path::Path> =
            registrations.iter().map(PathBuf::as_path).collect();
        let (synapse, mas) = match options.delegated_auth {
            true => {
                let homeserver =
                    DelegatedHomeserver::start_on(homeserver_port, &registrations).await;
                (homeserver.synapse, Some(homeserver.mas))
            }
            false => (
                Synapse::start_with(homeserver_port, &registrations).await,
                None,
            ),
        };
        let mut env = Self {
            synapse,
            mas,
            echo,
            host: None,
            process: None,
            as_process: options.process,
            log_filter: options.log_filter.clone(),
            disk: options.disk.clone(),
            fault_proxy,
            config_text,
            dir,
            appservice_port,
            admin_port,
        };
        if options.process {
            env.spawn_host().await;
        } else {
            env.host = Some(env.start_in_process(config).await);
        }
        env
    }

    /// The running host.
    pub fn host(&self) -> &Host {
        self.host
            .as_ref()
            .expect("the host is running in this process")
    }

    /// The bridge bot's user id.
    pub fn bot(&self) -> String {
        format!("@weftbot:{DOMAIN}")
    }

    /// A new management room of `user`: a direct chat with the bot, once
    /// the bot has welcomed them in it.
    pub async fn management_room(&self, user: &MatrixUser) -> String {
        let room = user.create_dm(&self.bot()).await;
        user.wait_for_text(&room, "management room").await;
        room
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
        if self.as_process {
            self.spawn_host().await;
            return;
        }
        let config = Config::from_toml(&self.config_text, self.dir.path()).unwrap();
        self.host = Some(self.start_in_process(config).await);
    }

    /// Starts the host in this process, on a failing disk if the test
    /// asked for one.
    async fn start_in_process(&self, config: Config) -> Host {
        let mut options = weft_host::host::HostOptions::default();
        if let Some(disk) = &self.disk {
            let path = config.data_dir.join("weft.sled");
            std::fs::create_dir_all(&config.data_dir).unwrap();
            let sled: Arc<dyn weft_storage::Storage> =
                Arc::new(weft_storage::SledStorage::open(&path).unwrap());
            options.storage = Some(Arc::new(crate::failing_storage::FailingStorage::new(
                sled,
                disk.clone(),
            )));
        }
        Host::start_with(config, options)
            .await
            .expect("the host starts")
    }

    /// Restarts the host with `extra` appended to its config, e.g. a
    /// section that names a server started after the bridge.
    pub async fn reconfigure(&mut self, extra: &str) {
        self.stop_host().await;
        self.config_text.push('\n');
        self.config_text.push_str(extra);
        self.start_host().await;
    }

    /// The host's config text.
    pub fn config_text(&self) -> &str {
        &self.config_text
    }

    /// Starts the host as a process (`weft run`) and waits until its
    /// connector is loaded.
    async fn spawn_host(&mut self) {
        let config = self.dir.path().join("weft.toml");
        std::fs::write(&config, &self.config_text).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("host.log"))
            .unwrap();
        let child = std::process::Command::new(crate::host_binary())
            .arg("--config")
            .arg(&config)
            .arg("run")
            .env(
                "RUST_LOG",
                self.log_filter.as_deref().unwrap_or("info,weft_host=debug"),
            )
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("the host binary starts");
        self.process = Some(child);
        crate::until(
            Duration::from_secs(60),
            "the host process to load echo",
            || async {
                let (status, plugins) = self.admin(reqwest::Method::GET, "/plugins").await;
                (status == 200 && plugins.to_string().contains("\"echo\"")).then_some(())
            },
        )
        .await;
    }

    /// Kills the host process with SIGKILL: no shutdown, no flush.
    pub fn kill_host(&mut self) {
        let mut child = self.process.take().expect("the host runs as a process");
        child.kill().expect("the host process can be killed");
        child.wait().expect("the host process ends");
    }

    /// The host process's log so far.
    pub fn host_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("host.log")).unwrap_or_default()
    }

    /// Registers a Matrix user (with delegated auth: provisions them
    /// through MAS, with a MAS token).
    pub async fn user(&self, name: &str) -> MatrixUser {
        let Some(mas) = &self.mas else {
            return MatrixUser::register(&self.synapse.url, name).await;
        };
        mas.provision_user(name).await;
        let token = mas.token_for(name).await;
        MatrixUser::from_token(&self.synapse.url, &format!("@{name}:{DOMAIN}"), &token)
    }

    /// The OAuth server of a bridge with delegated auth.
    pub fn mas(&self) -> &Mas {
        self.mas
            .as_ref()
            .expect("the bridge runs with BridgeOptions::delegated_auth")
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

    /// Where plugin file `name` is in the host's plugins directory.
    pub fn plugin_file(&self, name: &str) -> PathBuf {
        self.dir.path().join("plugins").join(format!("{name}.wasm"))
    }

    /// Calls the admin API with a JSON body.
    pub async fn admin_with(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> (u16, Value) {
        let url = format!("http://127.0.0.1:{}/_weft/admin/v1{path}", self.admin_port);
        let response = reqwest::Client::new()
            .request(method, url)
            .bearer_auth(crate::host::ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Calls the admin API.
    pub async fn admin(&self, method: reqwest::Method, path: &str) -> (u16, Value) {
        let url = format!("http://127.0.0.1:{}/_weft/admin/v1{path}", self.admin_port);
        let response = reqwest::Client::new()
            .request(method, url)
            .bearer_auth(crate::host::ADMIN_TOKEN)
            .send()
            .await;
        match response {
            Ok(response) => {
                let status = response.status().as_u16();
                (status, response.json().await.unwrap_or(Value::Null))
            }
            // Not listening (yet): as good as unavailable.
            Err(_) => (503, Value::Null),
        }
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

impl Drop for BridgeEnv {
    fn drop(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
