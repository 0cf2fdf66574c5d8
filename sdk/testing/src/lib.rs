//! Tests for weft plugins that read like stories.
//!
//! The harness loads a built component in-process, in the same runtime the
//! host uses (the same grants, limits, deadlines and imports), with:
//!
//! - a fake HTTP layer ([`FakeHttp`]): canned responses by method and URL,
//!   and every request recorded;
//! - in-memory storage for the plugin's KV, which a test can read;
//! - a manual clock: timers fire only when the test says
//!   ([`TestLogin::fire`]);
//! - every event and bridge state the plugin queues, captured per login.
//!
//! ```no_run
//! use weft_testing::{Harness, Reply};
//!
//! # async fn story() -> anyhow::Result<()> {
//! let harness = Harness::builder(weft_testing::plugin!())
//!     .setting("base-url", "https://feed.test")
//!     .grant_http("https://feed.test")
//!     .start()
//!     .await?;
//! harness.http().on(
//!     "GET",
//!     "https://feed.test/items",
//!     Reply::json(200, serde_json::json!([{ "id": "1", "text": "hello" }])),
//! );
//! let login = harness.login("me", serde_json::json!({})).await?;
//! login.fire("poll").await?;
//! assert_eq!(login.messages()[0].text, "hello");
//! # Ok(())
//! # }
//! ```
//!
//! A plugin's tests live in its crate's `tests/` directory and name this
//! crate as a dev-dependency. [`plugin!`] builds the crate they belong to
//! into a component (once per test binary) with `cargo-weft`.

mod component;
mod http;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use weft_runtime::memory_host::MemoryHost;
use weft_runtime::plugin::PluginSource;
use weft_runtime::process::ProcessInstance;
use weft_runtime::{LoginHandle, Registry, RuntimeConfig, RuntimeOptions};
use weft_storage::{MemoryStorage, Storage};

pub use crate::component::build_plugin;
pub use crate::http::{FakeHttp, RecordedRequest, Reply};
pub use weft_runtime::connector::{MatrixEdit, MatrixMessage, MatrixReaction, PluginError};
pub use weft_runtime::events::{
    ChatKind, ChatMember, ChatResync, MediaMessage, MediaSource, Message, RemoteEvent, StateKind,
    StateReport,
};
pub use weft_runtime::login_flow::{LoginStep, StepInput, StepParams};
pub use weft_runtime::{ActorStatus, LoginKey, Phase, PluginGrants, WorkError};

/// The component built from the crate this is written in: expands to
/// [`build_plugin`] with the crate's directory and package name, and
/// panics with the build's error if it fails.
#[macro_export]
macro_rules! plugin {
    () => {
        $crate::build_plugin(env!("CARGO_MANIFEST_DIR"), env!("CARGO_PKG_NAME"))
            .unwrap_or_else(|error| panic!("{error:#}"))
    };
}

/// How long a harness waits for a login to start or an event to come.
const WAIT: Duration = Duration::from_secs(30);

/// Sets up a [`Harness`]: the plugin, its settings and the operator's
/// grants.
pub struct HarnessBuilder {
    component: PathBuf,
    grants: PluginGrants,
    config: RuntimeConfig,
}

impl HarnessBuilder {
    /// Sets one of the plugin's settings (as `[plugin.<id>.settings]` in
    /// the host's config would).
    pub fn setting(mut self, name: &str, value: impl Into<toml::Value>) -> Self {
        self.grants.settings.insert(name.to_owned(), value.into());
        self
    }

    /// Grants HTTP to the URL pattern `pattern` (`scheme://host[:port]`,
    /// with `*` wildcards), as the operator's `http` grant would. The
    /// manifest must ask for it too, as in a host.
    pub fn grant_http(mut self, pattern: &str) -> Self {
        self.grants.http.push(pattern.to_owned());
        self
    }

    /// Changes the operator's grants in any other way.
    pub fn grants(mut self, change: impl FnOnce(&mut PluginGrants)) -> Self {
        change(&mut self.grants);
        self
    }

    /// Changes the runtime's limits (call deadline, memory and the like).
    pub fn runtime(mut self, change: impl FnOnce(&mut RuntimeConfig)) -> Self {
        change(&mut self.config);
        self
    }

    /// Loads the plugin. Fails as a host would: a manifest that asks for
    /// more than was granted, a missing setting, a wrong world.
    pub async fn start(self) -> Result<Harness> {
        let source = PluginSource::read(&self.component)
            .with_context(|| format!("reading {}", self.component.display()))?;
        let plugin = weft_runtime::manifest::Manifest::parse(&source.manifest)
            .context("the plugin's manifest")?
            .id;
        let host = Arc::new(MemoryHost::default());
        let http = FakeHttp::default();
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let compile_cache = self.component.parent().map(|dir| dir.join("compile-cache"));
        let registry = Registry::new(
            RuntimeOptions {
                runtime: self.config,
                http: Default::default(),
                grants: BTreeMap::from([(plugin.clone(), self.grants)]),
                compile_cache,
                transport: Some(Arc::new(http.clone())),
                manual_timers: true,
            },
            storage,
            host.clone(),
        )?;
        registry
            .load_source(source, None)
            .await
            .with_context(|| format!("loading plugin `{plugin}`"))?;
        Ok(Harness {
            registry,
            host,
            http,
            plugin,
        })
    }
}

/// One plugin, loaded in-process, with a fake network and a manual clock.
pub struct Harness {
    registry: Arc<Registry>,
    host: Arc<MemoryHost>,
    http: FakeHttp,
    plugin: String,
}

impl Harness {
    /// A harness for the component at `component` (usually
    /// [`plugin!()`](plugin)).
    pub fn builder(component: impl AsRef<Path>) -> HarnessBuilder {
        HarnessBuilder {
            component: component.as_ref().to_owned(),
            grants: PluginGrants::default(),
            config: RuntimeConfig {
                // A login should not hibernate and restart in the middle
                // of a story.
                hibernate: false,
                ..RuntimeConfig::default()
            },
        }
    }

    /// The fake network.
    pub fn http(&self) -> &FakeHttp {
        &self.http
    }

    /// The plugin's id.
    pub fn plugin_id(&self) -> &str {
        &self.plugin
    }

    /// The runtime, for anything the harness does not wrap.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Fetches a file a login queued, as the host does before uploading
    /// it to Matrix: a URL under the plugin's HTTP grant (through the fake
    /// network), with the headers the plugin gave. Errs with the host's
    /// reason, e.g. when the URL is not granted.
    pub async fn fetch(&self, media: &MediaMessage) -> Result<Vec<u8>, String> {
        match &media.attachment.source {
            MediaSource::Bytes(bytes) => Ok(bytes.clone()),
            MediaSource::Url { url, headers } => self
                .registry
                .fetch_media(&self.plugin, url, headers, WAIT)
                .await
                .map(|(_, bytes)| bytes),
        }
    }

    /// Starts login `id` of Matrix user `@user:test` with connector
    /// `metadata`, as if a login flow had just completed with them, and
    /// waits until its instance has started (its `start` ran).
    pub async fn login(&self, id: &str, metadata: serde_json::Value) -> Result<TestLogin> {
        let key = LoginKey::new(&self.plugin, id);
        self.host.add_login(
            key.clone(),
            weft_runtime::LoginInfo {
                id: id.to_owned(),
                owner: "@user:test".to_owned(),
                remote_name: id.to_owned(),
                awaiting_relogin: false,
            },
            metadata.to_string(),
        );
        let handle = self
            .registry
            .start_login(&key)
            .await?
            .context("the plugin is not loaded")?;
        let status = handle
            .wait_for(WAIT, |s| {
                matches!(s.phase, Phase::Running | Phase::Failed | Phase::Restarting)
            })
            .await
            .context("the login did not start in time")?;
        if status.phase != Phase::Running {
            bail!(
                "the login did not start: {}",
                status.last_error.as_deref().unwrap_or("no error recorded")
            );
        }
        Ok(TestLogin {
            handle,
            host: self.host.clone(),
            registry: self.registry.clone(),
        })
    }

    /// Starts login flow `flow` in a fresh login-process instance, as a
    /// user choosing it would; answers its first step.
    pub async fn login_flow(&self, flow: &str) -> Result<(TestFlow, LoginStep)> {
        let plugin = self
            .registry
            .plugin(&self.plugin)
            .context("the plugin is not loaded")?;
        let mut instance = self.registry.process(&plugin, "test-process").await?;
        let step = instance.start(flow, None).await??;
        Ok((TestFlow { instance }, step))
    }

    /// Finishes a login flow that reached `step` (a complete step): starts
    /// the login it made.
    pub async fn complete(&self, step: &LoginStep) -> Result<TestLogin> {
        let StepParams::Complete(complete) = &step.params else {
            bail!("step `{}` does not complete the login", step.step_id);
        };
        let metadata: serde_json::Value =
            serde_json::from_str(&complete.metadata).context("the login's metadata is not JSON")?;
        self.login(&complete.login_id, metadata).await
    }
}

/// A login process in progress.
pub struct TestFlow {
    instance: ProcessInstance,
}

impl TestFlow {
    /// Submits values for a user-input step.
    pub async fn submit(&mut self, step: &LoginStep, values: &[(&str, &str)]) -> Result<LoginStep> {
        let values = values
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Ok(self
            .instance
            .submit(&step.step_id, StepInput::UserInput(values))
            .await??)
    }

    /// Asks again on a display-and-wait step.
    pub async fn poll(&mut self, step: &LoginStep) -> Result<LoginStep> {
        Ok(self
            .instance
            .submit(&step.step_id, StepInput::Wait)
            .await??)
    }

    /// Cancels the process.
    pub async fn cancel(mut self) {
        self.instance.cancel().await;
    }
}

/// A new Matrix event id. Two sends in one millisecond must not share one:
/// a connector takes a repeated event id for a retry of the same send.
fn next_event_id() -> String {
    static SENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("$test-{}-{n}", weft_runtime::now_ms())
}

/// A running login of the plugin under test.
pub struct TestLogin {
    handle: LoginHandle,
    host: Arc<MemoryHost>,
    registry: Arc<Registry>,
}

impl TestLogin {
    /// Fires timer `name` now, whenever it is due, and waits until the
    /// plugin has handled it. An error if the login has no such timer, or
    /// if the plugin's handler failed.
    pub async fn fire(&self, name: &str) -> Result<(), WorkError> {
        match self.handle.fire_timer(Some(name)).await? {
            Some(_) => Ok(()),
            None => Err(WorkError::Unavailable(format!(
                "the login has no timer named `{name}`"
            ))),
        }
    }

    /// Fires whichever timer is due first; answers its name, or `None` if
    /// the login has no timers.
    pub async fn fire_next(&self) -> Result<Option<String>, WorkError> {
        self.handle.fire_timer(None).await
    }

    /// Everything the login queued so far, in order.
    pub fn events(&self) -> Vec<RemoteEvent> {
        self.host.events_of(self.handle.key())
    }

    /// The messages it queued so far, in order.
    pub fn messages(&self) -> Vec<Message> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                RemoteEvent::Message(message) => Some(message),
                _ => None,
            })
            .collect()
    }

    /// The files (pictures, videos, documents) it queued so far, in
    /// order; [`Harness::fetch`] gets one as the host would.
    pub fn media(&self) -> Vec<MediaMessage> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                RemoteEvent::Media(media) => Some(media),
                _ => None,
            })
            .collect()
    }

    /// The chats it announced or resynced so far, in order.
    pub fn chats(&self) -> Vec<ChatResync> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                RemoteEvent::ChatResync(chat) => Some(chat),
                _ => None,
            })
            .collect()
    }

    /// The bridge states it reported so far (and those the runtime
    /// reported for it), in order.
    pub fn states(&self) -> Vec<StateReport> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                RemoteEvent::BridgeState(state) => Some(state),
                _ => None,
            })
            .collect()
    }

    /// Waits until the login has queued an event `matches` accepts (one
    /// queued before counts too), for work the plugin does on its own
    /// rather than in a call the test made.
    pub async fn wait_for_event(
        &self,
        matches: impl Fn(&RemoteEvent) -> bool,
    ) -> Result<RemoteEvent> {
        let mut queued = self.host.subscribe();
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(event) = self.events().into_iter().find(|e| matches(e)) {
                    return Ok(event);
                }
                queued.changed().await?;
            }
        })
        .await
        .context("no such event came in time")?
    }

    /// The login's KV, every key with its value.
    pub fn kv(&self) -> BTreeMap<String, Vec<u8>> {
        let key = self.handle.key();
        self.registry
            .login_kv(key, &key.plugin)
            .map(|entries| entries.into_iter().collect())
            .unwrap_or_default()
    }

    /// The login's current metadata, as the plugin last saved it.
    pub fn metadata(&self) -> serde_json::Value {
        use weft_runtime::HostServices as _;
        self.host
            .metadata(self.handle.key())
            .ok()
            .flatten()
            .and_then(|m| serde_json::from_str(&m).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    /// The login's status in the runtime.
    pub fn status(&self) -> ActorStatus {
        self.handle.status()
    }

    /// Sends a text message from Matrix to chat `chat`, as the login's
    /// owner; answers the remote message id.
    pub async fn send_text(&self, chat: &str, text: &str) -> Result<String, WorkError> {
        self.handle
            .matrix_message(MatrixMessage {
                chat_id: chat.to_owned(),
                event_id: next_event_id(),
                sender: "@user:test".to_owned(),
                text: text.to_owned(),
                html: None,
                reply_to: None,
                timestamp_ms: weft_runtime::now_ms(),
            })
            .await
    }

    /// The runtime's handle of the login, for everything else Matrix can
    /// ask of it (edits, reactions, history, typing).
    pub fn handle(&self) -> &LoginHandle {
        &self.handle
    }
}
