//! A host for a test: a temporary directory with its sled database and
//! plugins directory, the admin API on a free port, and a recording event
//! sink.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use weft_host::config::Config;
use weft_host::host::{Host, HostOptions};
use weft_host::logins::{BridgeState, LoginKey, LoginRecord, StateEvent, now_ms};
use weft_runtime::connector::MatrixMessage;
use weft_runtime::{LoginHandle, WorkError};

use crate::sink::{RecordingSink, SinkHandle};

/// The admin token of test hosts.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// What test hosts grant the probe unless a test says otherwise: loopback
/// servers, and responses up to 1 MiB.
pub const DEFAULT_PROBE_GRANT: &str =
    "http = [\"http://127.0.0.1:*\"]\nprivate-networks = true\nmax-response-bytes = 1048576";

/// The Matrix user that owns test logins.
pub const OWNER: &str = "@owner:test";

/// Builds a [`TestHost`].
pub struct TestHostBuilder {
    plugins: Vec<String>,
    runtime: String,
    grants: std::collections::BTreeMap<String, String>,
    extra_config: String,
    watch: bool,
    dir: Option<tempfile::TempDir>,
}

/// A running host for one test.
pub struct TestHost {
    /// The host.
    pub host: Host,
    /// What connectors queued.
    pub events: Arc<RecordingSink>,
    /// The test's directory (database, plugins).
    pub dir: tempfile::TempDir,
}

impl TestHost {
    /// A builder.
    pub fn builder() -> TestHostBuilder {
        crate::init_logging();
        let mut grants = std::collections::BTreeMap::new();
        grants.insert("probe".to_owned(), DEFAULT_PROBE_GRANT.to_owned());
        TestHostBuilder {
            plugins: Vec::new(),
            runtime: String::new(),
            grants,
            extra_config: String::new(),
            watch: false,
            dir: None,
        }
    }

    /// The plugins directory.
    pub fn plugins_dir(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    /// Creates login `plugin:id` for [`OWNER`] and returns its actor.
    pub async fn login(&self, plugin: &str, id: &str) -> LoginHandle {
        self.login_with(plugin, id, serde_json::json!({})).await
    }

    /// Creates a login with connector metadata.
    pub async fn login_with(
        &self,
        plugin: &str,
        id: &str,
        metadata: serde_json::Value,
    ) -> LoginHandle {
        let record = LoginRecord {
            key: LoginKey::new(plugin, id),
            owner: OWNER.into(),
            remote_name: id.into(),
            metadata: metadata.to_string(),
            state: BridgeState::now(StateEvent::Connecting, None, None),
            created_ms: now_ms(),
        };
        self.host
            .logins()
            .put(record)
            .await
            .expect("login stored")
            .expect("plugin loaded")
    }

    /// Stops the host and returns its directory, to start another host on
    /// the same database.
    pub async fn stop(self) -> tempfile::TempDir {
        self.host.shutdown().await;
        self.dir
    }
}

impl TestHostBuilder {
    /// Copies the component of `package` into the plugins directory.
    pub fn plugin(mut self, package: &str) -> Self {
        self.plugins.push(package.to_owned());
        self
    }

    /// Sets the operator's grants for `plugin`: the body of its
    /// `[plugin.<id>]` table (replacing the default probe grant).
    pub fn grant(mut self, plugin: &str, body: &str) -> Self {
        self.grants.insert(plugin.to_owned(), body.to_owned());
        self
    }

    /// Adds a line to the config's `[runtime]` table.
    pub fn runtime(mut self, line: &str) -> Self {
        self.runtime.push_str(line);
        self.runtime.push('\n');
        self
    }

    /// Appends TOML to the config (settings, limits, other sections).
    pub fn config(mut self, toml: &str) -> Self {
        self.extra_config.push_str(toml);
        self.extra_config.push('\n');
        self
    }

    /// Watches the plugins directory.
    pub fn watch(mut self) -> Self {
        self.watch = true;
        self
    }

    /// Reuses the directory of an earlier host (a restart).
    pub fn reuse(mut self, dir: tempfile::TempDir) -> Self {
        self.dir = Some(dir);
        self
    }

    /// Starts the host.
    pub async fn start(self) -> TestHost {
        let dir = match self.dir {
            Some(dir) => dir,
            None => tempfile::tempdir().expect("temporary directory"),
        };
        let plugins = dir.path().join("plugins");
        std::fs::create_dir_all(&plugins).expect("plugins directory");
        for package in &self.plugins {
            copy_component(package, &plugins);
        }
        let cache = crate::workspace().join("target/test-compile-cache");
        let grants: String = self
            .grants
            .iter()
            .map(|(plugin, body)| format!("[plugin.{plugin}]\n{body}\n\n"))
            .collect();
        let text = format!(
            r#"
data-dir = "{data}"

[plugins]
dir = "{plugins}"
watch = {watch}

[runtime]
min-timer-ms = 10
restart-backoff-ms = 20
max-restart-backoff-ms = 200
max-restarts = 3
compile-cache-dir = "{cache}"
# The most any test uses is 400 instances (200 logins and their provider
# actors). The default pool (12,000 fiber stacks, each with a guard page)
# would cost 24,000 kernel mappings per host, and the tests run hosts side
# by side in one process, under Linux's default limit of 65,530.
max-instances = 1024
{runtime}


[admin]
listen = "127.0.0.1:0"
token = "{ADMIN_TOKEN}"

{grants}
{extra}
"#,
            data = dir.path().join("data").display(),
            plugins = plugins.display(),
            watch = self.watch,
            cache = cache.display(),
            grants = grants,
            runtime = self.runtime,
            extra = self.extra_config,
        );
        let config = Config::from_toml(&text, dir.path()).expect("test config is valid");
        let events = Arc::new(RecordingSink::default());
        let options = HostOptions {
            event_sink: Some(Arc::new(SinkHandle(events.clone()))),
            ..Default::default()
        };
        let host = Host::start_with(config, options)
            .await
            .expect("host starts");
        events.attach(host.outbox());
        // Events queued while the host started wait in the outbox.
        let sink = SinkHandle(events.clone());
        for login in host.outbox().pending_logins().expect("outbox readable") {
            weft_host::outbox::EventSink::events_queued(&sink, &login);
        }
        TestHost { host, events, dir }
    }
}

/// Copies the built component of `package` into `dir`.
pub fn copy_component(package: &str, dir: &Path) -> PathBuf {
    let target = dir.join(format!("{package}.wasm"));
    std::fs::copy(crate::component(package), &target).expect("copy component");
    target
}

/// Sends `text` as a Matrix message to the login and returns the answer.
pub async fn send(login: &LoginHandle, text: &str) -> Result<String, WorkError> {
    login
        .matrix_message(MatrixMessage {
            chat_id: "chat".into(),
            event_id: "$event".into(),
            sender: OWNER.into(),
            text: text.into(),
            html: None,
            reply_to: None,
            timestamp_ms: now_ms(),
        })
        .await
}

/// Sends `text` and expects an answer.
pub async fn ask(login: &LoginHandle, text: &str) -> String {
    send(login, text)
        .await
        .unwrap_or_else(|e| panic!("`{text}` failed: {e}"))
}

/// Writes `<name>.wasm` (the component of `package`) into `dir` with a
/// `<name>.toml` manifest beside it at version `version`: the same code
/// under a new version, as an operator would drop in for an upgrade.
pub fn relabelled(dir: &Path, package: &str, name: &str, version: &str) -> PathBuf {
    let bytes = std::fs::read(crate::component(package)).unwrap();
    let manifest = weft_runtime::plugin::embedded_manifest(&bytes).unwrap();
    let mut manifest: toml::Table = toml::from_str(&manifest).unwrap();
    manifest.insert("version".into(), version.into());
    let path = dir.join(format!("{name}.wasm"));
    std::fs::write(&path, &bytes).unwrap();
    std::fs::write(
        path.with_extension("toml"),
        toml::to_string(&manifest).unwrap(),
    )
    .unwrap();
    path
}
