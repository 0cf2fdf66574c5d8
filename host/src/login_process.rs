//! Login processes: the steps a user goes through to add a remote account.
//!
//! Each process runs in its own fresh instance of the plugin, with its own
//! KV namespace, so two concurrent attempts (by one user or several) never
//! see each other's state. The provisioning API and the management room
//! drive the same processes. Steps are shaped as bridgev2's, so existing
//! clients can show them. A `display_and_wait` step is a long poll driven
//! by the host: it asks the plugin again every `poll-after-ms` (the plugin
//! never blocks) and answers when the step changes or after 25 seconds.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use rand::distr::Alphanumeric;
use serde::Serialize;

use crate::config::Config;
use crate::logins::{BridgeState, LoginKey, LoginRecord, StateEvent, now_ms};
use crate::registry::{Registry, RegistryError};
use crate::runtime::actor::plugin_error_message;
use crate::runtime::bindings::{connector, login_provider};
use crate::runtime::instance::{CallError, Instance};
use crate::runtime::manifest::World;
use crate::runtime::plugin::LoadedPlugin;
use crate::runtime::state::{InstanceContext, InstanceRole, kv_namespace};

/// How long a `display_and_wait` long poll waits before answering with the
/// same step (clients then ask again).
const LONG_POLL: Duration = Duration::from_secs(25);
/// The fastest the host asks a plugin whether a wait is over.
const MIN_POLL: Duration = Duration::from_millis(250);

/// Why a login-process request failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// No such process (or not this user's).
    #[error("no login process `{0}`")]
    NotFound(String),
    /// It was cancelled.
    #[error("the login process was cancelled")]
    Cancelled,
    /// It ran out of time.
    #[error("the login process timed out")]
    TimedOut,
    /// It already completed.
    #[error("the login process already finished")]
    AlreadyFinished,
    /// The request names another step than the current one.
    #[error("the current step is `{expected}`, not `{got}`")]
    WrongStep {
        /// The current step.
        expected: String,
        /// What the request named.
        got: String,
    },
    /// No such flow.
    #[error("no login flow `{0}`; see login/flows")]
    UnknownFlow(String),
    /// The user has the maximum number of logins.
    #[error("you have reached the maximum of {0} logins")]
    TooManyLogins(usize),
    /// The remote account is logged in by another Matrix user.
    #[error(
        "this remote account is already logged in by another Matrix user; they must log out first"
    )]
    LoginConflict,
    /// The plugin refused the input or failed.
    #[error("{0}")]
    Plugin(String),
    /// The plugin's instance trapped or timed out; the process is over.
    #[error("the login process failed: {0}")]
    Crashed(#[from] CallError),
    /// Storing the login failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// A login flow as clients see it.
#[derive(Debug, Clone, Serialize)]
pub struct FlowView {
    /// `plugin:flow`.
    pub id: String,
    /// A short name.
    pub name: String,
    /// A sentence about it.
    pub description: String,
}

/// A user-input field, as bridgev2 shapes it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FieldView {
    /// `username`, `password`, `phone_number`, `email`, `2fa_code`,
    /// `token`, `url`, `domain`, `select` or `captcha_code`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The key the value is submitted under.
    pub id: String,
    /// A short label.
    pub name: String,
    /// A longer explanation.
    pub description: String,
    /// A value to prefill.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_value: Option<String>,
    /// A regular expression the value must match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Choices, for `select`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// A step, as bridgev2's `LoginStep` JSON.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StepView {
    /// `user_input`, `cookies`, `display_and_wait` or `complete`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The step id.
    pub step_id: String,
    /// What to do.
    pub instructions: String,
    /// The parameters, under the key named like the type.
    #[serde(flatten)]
    pub params: StepParamsView,
}

/// The step's parameters.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StepParamsView {
    /// Fields to fill in.
    UserInput {
        /// The fields.
        fields: Vec<FieldView>,
    },
    /// A page to open and values to extract from it.
    Cookies(serde_json::Value),
    /// Something to show while waiting.
    DisplayAndWait {
        /// `qr`, `emoji`, `code` or `nothing`.
        #[serde(rename = "type")]
        kind: String,
        /// What to show.
        data: String,
        /// An image of it.
        #[serde(skip_serializing_if = "Option::is_none")]
        image_url: Option<String>,
    },
    /// Done.
    Complete {
        /// The new login's id (`plugin:login-id`).
        user_login_id: String,
    },
}

impl StepView {
    /// How long to wait before asking again, for a display step.
    fn poll_after(&self, plugin_hint: u32) -> Duration {
        Duration::from_millis(plugin_hint.into()).max(MIN_POLL)
    }
}

/// A step as the plugin returned it, before the host handles completion.
enum PluginStep {
    Step {
        view: StepView,
        poll_after_ms: u32,
    },
    Complete {
        login_id: String,
        remote_name: String,
        metadata: String,
        step_id: String,
    },
}

/// The result of finishing a process.
#[derive(Debug, Clone)]
pub struct Completed {
    /// The login created or renewed.
    pub key: LoginKey,
    /// A different login the user asked to replace, now to be deleted.
    pub replaced: Option<LoginKey>,
    /// The final step to show.
    pub step: StepView,
}

/// What a submit or wait returned.
#[derive(Debug, Clone)]
pub enum Progress {
    /// Another step.
    Step(StepView),
    /// The login exists.
    Completed(Completed),
}

impl Progress {
    /// The step to show.
    pub fn step(&self) -> &StepView {
        match self {
            Self::Step(step) => step,
            Self::Completed(done) => &done.step,
        }
    }
}

enum Finish {
    Completed,
    Cancelled,
}

struct Process {
    user: String,
    plugin: Arc<LoadedPlugin>,
    relogin: Option<LoginKey>,
    instance: Option<Instance>,
    step: StepView,
    poll_after_ms: u32,
    finished: Option<Finish>,
}

struct Entry {
    process: tokio::sync::Mutex<Process>,
    cancelled: AtomicBool,
    started: Instant,
    user: String,
}

/// Every login process in progress.
pub struct LoginProcesses {
    registry: Arc<Registry>,
    config: Arc<Config>,
    processes: Mutex<BTreeMap<String, Arc<Entry>>>,
}

macro_rules! convert_step {
    ($module:path, $step:expr) => {{
        use $module as w;
        let step: w::LoginStep = $step;
        let kind_name = |k: w::FieldKind| match k {
            w::FieldKind::Username => "username",
            w::FieldKind::Password => "password",
            w::FieldKind::PhoneNumber => "phone_number",
            w::FieldKind::Email => "email",
            w::FieldKind::TwoFactorCode => "2fa_code",
            w::FieldKind::Token => "token",
            w::FieldKind::Url => "url",
            w::FieldKind::Domain => "domain",
            w::FieldKind::Select => "select",
            w::FieldKind::CaptchaCode => "captcha_code",
        };
        let view = |kind: &str, params: StepParamsView| StepView {
            kind: kind.to_owned(),
            step_id: step.step_id.clone(),
            instructions: step.instructions.clone(),
            params,
        };
        match step.params {
            w::StepParams::UserInput(fields) => PluginStep::Step {
                view: view(
                    "user_input",
                    StepParamsView::UserInput {
                        fields: fields
                            .into_iter()
                            .map(|f| FieldView {
                                kind: kind_name(f.kind).to_owned(),
                                id: f.id,
                                name: f.name,
                                description: f.description,
                                default_value: f.default_value,
                                pattern: f.pattern,
                                options: f.options,
                            })
                            .collect(),
                    },
                ),
                poll_after_ms: 0,
            },
            w::StepParams::Cookies(c) => {
                let source_kind = |k: w::CookieSourceKind| match k {
                    w::CookieSourceKind::Cookie => "cookie",
                    w::CookieSourceKind::LocalStorage => "local_storage",
                    w::CookieSourceKind::RequestHeader => "request_header",
                    w::CookieSourceKind::RequestBody => "request_body",
                    w::CookieSourceKind::Special => "special",
                };
                let fields: Vec<serde_json::Value> = c
                    .fields
                    .into_iter()
                    .map(|f| {
                        let sources: Vec<serde_json::Value> = f
                            .sources
                            .into_iter()
                            .map(|s| serde_json::json!({
                                "type": source_kind(s.kind), "name": s.name,
                                "request_url_regex": s.request_url_regex, "cookie_domain": s.cookie_domain,
                            }))
                            .collect();
                        serde_json::json!({ "id": f.id, "required": f.required, "sources": sources, "pattern": f.pattern })
                    })
                    .collect();
                PluginStep::Step {
                    view: view(
                        "cookies",
                        StepParamsView::Cookies(serde_json::json!({
                            "url": c.url, "user_agent": c.user_agent, "fields": fields,
                            "extract_js": c.extract_js, "wait_for_url_pattern": c.wait_for_url_pattern,
                        })),
                    ),
                    poll_after_ms: 0,
                }
            }
            w::StepParams::DisplayAndWait(d) => PluginStep::Step {
                view: view(
                    "display_and_wait",
                    StepParamsView::DisplayAndWait {
                        kind: match d.kind {
                            w::DisplayKind::Qr => "qr",
                            w::DisplayKind::Emoji => "emoji",
                            w::DisplayKind::Code => "code",
                            w::DisplayKind::Nothing => "nothing",
                        }
                        .to_owned(),
                        data: d.data,
                        image_url: d.image_url,
                    },
                ),
                poll_after_ms: d.poll_after_ms,
            },
            w::StepParams::Complete(c) => PluginStep::Complete {
                login_id: c.login_id,
                remote_name: c.remote_name,
                metadata: c.metadata,
                step_id: step.step_id.clone(),
            },
        }
    }};
}

use connector::exports::weft::plugin::login_flow as connector_flow;
use login_provider::exports::weft::plugin::login_flow as provider_flow;

/// The input for a step, independent of the plugin's role.
#[derive(Debug, Clone)]
pub enum StepInput {
    /// Values of a user-input step.
    UserInput(Vec<(String, String)>),
    /// Values of a cookies step.
    Cookies(Vec<(String, String)>),
    /// A display-and-wait poll.
    Wait,
}

async fn plugin_start(
    instance: &mut Instance,
    world: World,
    flow: &str,
    relogin: Option<&str>,
) -> Result<PluginStep, ProcessError> {
    match world {
        World::Connector => match instance.connector_login_start(flow, relogin).await? {
            Ok(step) => Ok(convert_step!(connector_flow, step)),
            Err(e) => Err(ProcessError::Plugin(plugin_error_message(&e))),
        },
        World::LoginProvider => match instance.provider_login_start(flow, relogin).await? {
            Ok(step) => Ok(convert_step!(provider_flow, step)),
            Err(e) => Err(ProcessError::Plugin(plugin_error_message(&e))),
        },
        World::CredentialProvider => Err(ProcessError::UnknownFlow(flow.to_owned())),
    }
}

async fn plugin_submit(
    instance: &mut Instance,
    world: World,
    step_id: &str,
    input: StepInput,
) -> Result<PluginStep, ProcessError> {
    match world {
        World::Connector => {
            let input = match input {
                StepInput::UserInput(v) => connector_flow::StepInput::UserInput(v),
                StepInput::Cookies(v) => connector_flow::StepInput::Cookies(v),
                StepInput::Wait => connector_flow::StepInput::Wait,
            };
            match instance.connector_login_submit(step_id, &input).await? {
                Ok(step) => Ok(convert_step!(connector_flow, step)),
                Err(e) => Err(ProcessError::Plugin(plugin_error_message(&e))),
            }
        }
        World::LoginProvider => {
            let input = match input {
                StepInput::UserInput(v) => provider_flow::StepInput::UserInput(v),
                StepInput::Cookies(v) => provider_flow::StepInput::Cookies(v),
                StepInput::Wait => provider_flow::StepInput::Wait,
            };
            match instance.provider_login_submit(step_id, &input).await? {
                Ok(step) => Ok(convert_step!(provider_flow, step)),
                Err(e) => Err(ProcessError::Plugin(plugin_error_message(&e))),
            }
        }
        World::CredentialProvider => Err(ProcessError::AlreadyFinished),
    }
}

fn new_process_id() -> String {
    let suffix: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(24)
        .map(char::from)
        .collect();
    format!("lp_{suffix}")
}

impl LoginProcesses {
    /// The process table.
    pub fn new(registry: Arc<Registry>, config: Arc<Config>) -> Arc<Self> {
        Arc::new(Self {
            registry,
            config,
            processes: Mutex::new(BTreeMap::new()),
        })
    }

    /// Every flow of every loaded connector.
    pub fn flows(&self) -> Vec<FlowView> {
        let mut flows = Vec::new();
        for plugin in self.registry.connectors() {
            let network = plugin.manifest.network_name();
            for flow in &plugin.manifest.login_flows {
                flows.push(FlowView {
                    id: format!("{}:{}", plugin.id(), flow.id),
                    name: format!("{network}: {}", flow.name),
                    description: flow.description.clone(),
                });
            }
        }
        flows
    }

    /// Finds a flow by `plugin:flow`, or by a bare flow id if only one
    /// connector has it.
    fn resolve_flow(&self, reference: &str) -> Result<(Arc<LoadedPlugin>, String), ProcessError> {
        let matches: Vec<FlowView> = self
            .flows()
            .into_iter()
            .filter(|f| {
                f.id == reference
                    || f.id
                        .split_once(':')
                        .is_some_and(|(_, flow)| flow == reference)
            })
            .collect();
        let [flow] = matches.as_slice() else {
            return Err(ProcessError::UnknownFlow(reference.to_owned()));
        };
        let (plugin, flow) = flow.id.split_once(':').expect("flow ids are plugin:flow");
        let plugin = self
            .registry
            .plugin(plugin)
            .ok_or_else(|| ProcessError::UnknownFlow(reference.to_owned()))?;
        Ok((plugin, flow.to_owned()))
    }

    /// Starts a login with `flow` for `user`; `relogin` names a login of
    /// the user's to replace.
    pub async fn start(
        &self,
        user: &str,
        flow: &str,
        relogin: Option<LoginKey>,
    ) -> Result<(String, StepView), ProcessError> {
        self.reap().await;
        let (plugin, flow_id) = self.resolve_flow(flow)?;
        let services = self.registry.services().clone();
        if let Some(old) = &relogin {
            let owned = services
                .logins
                .get(old)
                .map_err(RegistryError::from)?
                .is_some_and(|r| r.owner == user);
            if !owned {
                return Err(ProcessError::NotFound(old.to_string()));
            }
        }
        let max = self.config.bridge.max_logins_per_user;
        if max > 0 && relogin.is_none() {
            let count = services
                .logins
                .of_owner(user)
                .map_err(RegistryError::from)?
                .len();
            if count >= max {
                return Err(ProcessError::TooManyLogins(max));
            }
        }
        let id = new_process_id();
        let ctx = InstanceContext::new(
            plugin.clone(),
            InstanceRole::LoginProcess {
                process: id.clone(),
            },
            services,
            None,
        )
        .map_err(RegistryError::from)?;
        let mut instance = Instance::new(plugin.clone(), ctx).await?;
        let relogin_id = relogin.as_ref().map(|k| k.id.clone());
        let first = plugin_start(
            &mut instance,
            plugin.manifest.world,
            &flow_id,
            relogin_id.as_deref(),
        )
        .await?;
        let PluginStep::Step {
            view,
            poll_after_ms,
        } = first
        else {
            return Err(ProcessError::Plugin(
                "the plugin completed a login without any step".into(),
            ));
        };
        let process = Process {
            user: user.to_owned(),
            plugin,
            relogin,
            instance: Some(instance),
            step: view.clone(),
            poll_after_ms,
            finished: None,
        };
        let entry = Arc::new(Entry {
            process: tokio::sync::Mutex::new(process),
            cancelled: AtomicBool::new(false),
            started: Instant::now(),
            user: user.to_owned(),
        });
        self.processes
            .lock()
            .expect("process table poisoned")
            .insert(id.clone(), entry);
        tracing::info!(process = %id, %user, flow, "login process started");
        Ok((id, view))
    }

    fn entry(&self, id: &str, user: &str) -> Result<Arc<Entry>, ProcessError> {
        let entry = self
            .processes
            .lock()
            .expect("process table poisoned")
            .get(id)
            .cloned();
        match entry {
            Some(entry) if entry.user == user => {
                if entry.cancelled.load(Ordering::Relaxed) {
                    return Err(ProcessError::Cancelled);
                }
                if entry.started.elapsed() > self.timeout() {
                    return Err(ProcessError::TimedOut);
                }
                Ok(entry)
            }
            _ => Err(ProcessError::NotFound(id.to_owned())),
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.config.bridge.login_timeout_secs)
    }

    /// The current step of process `id`.
    pub async fn current(&self, id: &str, user: &str) -> Result<StepView, ProcessError> {
        let entry = self.entry(id, user)?;
        let process = entry.process.lock().await;
        Ok(process.step.clone())
    }

    /// Submits input for step `step_id`.
    pub async fn submit(
        &self,
        id: &str,
        user: &str,
        step_id: &str,
        input: StepInput,
    ) -> Result<Progress, ProcessError> {
        let entry = self.entry(id, user)?;
        let mut process = entry.process.lock().await;
        check_open(&process)?;
        if process.step.step_id != step_id {
            return Err(ProcessError::WrongStep {
                expected: process.step.step_id.clone(),
                got: step_id.to_owned(),
            });
        }
        self.advance(id, &mut process, step_id, input).await
    }

    /// Long-polls a `display_and_wait` step until it changes, or 25 s.
    pub async fn wait(
        &self,
        id: &str,
        user: &str,
        step_id: &str,
    ) -> Result<Progress, ProcessError> {
        let entry = self.entry(id, user)?;
        let until = Instant::now() + LONG_POLL;
        loop {
            let pause = {
                let mut process = entry.process.lock().await;
                check_open(&process)?;
                if process.step.step_id != step_id {
                    return Ok(Progress::Step(process.step.clone()));
                }
                if process.step.kind != "display_and_wait" {
                    return Err(ProcessError::WrongStep {
                        expected: process.step.kind.clone(),
                        got: "display_and_wait".into(),
                    });
                }
                let progress = self
                    .advance(id, &mut process, step_id, StepInput::Wait)
                    .await?;
                if progress.step().step_id != step_id || matches!(progress, Progress::Completed(_))
                {
                    return Ok(progress);
                }
                process.step.poll_after(process.poll_after_ms)
            };
            if Instant::now() + pause >= until {
                return Ok(Progress::Step(entry.process.lock().await.step.clone()));
            }
            tokio::time::sleep(pause).await;
            if entry.cancelled.load(Ordering::Relaxed) {
                return Err(ProcessError::Cancelled);
            }
        }
    }

    /// Calls the plugin with the input and applies its answer.
    async fn advance(
        &self,
        id: &str,
        process: &mut Process,
        step_id: &str,
        input: StepInput,
    ) -> Result<Progress, ProcessError> {
        let world = process.plugin.manifest.world;
        let instance = process
            .instance
            .as_mut()
            .ok_or(ProcessError::AlreadyFinished)?;
        let step = plugin_submit(instance, world, step_id, input).await;
        self.settle(id, process, step).await
    }

    /// Applies the plugin's answer: a new step, or a completed login.
    async fn settle(
        &self,
        id: &str,
        process: &mut Process,
        step: Result<PluginStep, ProcessError>,
    ) -> Result<Progress, ProcessError> {
        let step = match step {
            Ok(step) => step,
            Err(ProcessError::Crashed(error)) => {
                // The instance is gone: the process cannot go on.
                self.end(id, process, Finish::Cancelled).await;
                return Err(ProcessError::Crashed(error));
            }
            Err(other) => return Err(other),
        };
        match step {
            PluginStep::Step {
                view,
                poll_after_ms,
            } => {
                process.step = view.clone();
                process.poll_after_ms = poll_after_ms;
                Ok(Progress::Step(view))
            }
            PluginStep::Complete {
                login_id,
                remote_name,
                metadata,
                step_id,
            } => {
                let owner = (
                    process.user.clone(),
                    process.plugin.clone(),
                    process.relogin.clone(),
                );
                let completed = self
                    .complete(owner, login_id, remote_name, metadata, step_id)
                    .await?;
                process.step = completed.step.clone();
                self.end(id, process, Finish::Completed).await;
                Ok(Progress::Completed(completed))
            }
        }
    }

    /// Stores the login a process produced. (Takes the process's user,
    /// plugin and relogin by value: a `&Process` cannot be held across an
    /// await, as its instance is not `Sync`.)
    async fn complete(
        &self,
        (user, plugin, relogin): (String, Arc<LoadedPlugin>, Option<LoginKey>),
        login_id: String,
        remote_name: String,
        metadata: String,
        step_id: String,
    ) -> Result<Completed, ProcessError> {
        if login_id.is_empty() || login_id.len() > 255 {
            return Err(ProcessError::Plugin(
                "the plugin returned an invalid login id".into(),
            ));
        }
        if serde_json::from_str::<serde_json::Value>(&metadata).is_err() {
            return Err(ProcessError::Plugin(
                "the plugin returned metadata that is not JSON".into(),
            ));
        }
        let key = LoginKey::new(plugin.id(), login_id);
        let logins = &self.registry.services().logins;
        let existing = logins.get(&key).map_err(RegistryError::from)?;
        if let Some(existing) = &existing
            && existing.owner != user
        {
            return Err(ProcessError::LoginConflict);
        }
        let record = LoginRecord {
            key: key.clone(),
            owner: user.clone(),
            remote_name,
            metadata,
            state: BridgeState::now(StateEvent::Connecting, None, None),
            created_ms: existing.as_ref().map_or_else(now_ms, |r| r.created_ms),
        };
        self.registry.put_login(record).await?;
        tracing::info!(login = %key, %user, renewed = existing.is_some(), "login completed");
        let replaced = relogin.filter(|old| *old != key);
        Ok(Completed {
            step: StepView {
                kind: "complete".into(),
                step_id,
                instructions: format!("Logged in as {}", key.id),
                params: StepParamsView::Complete {
                    user_login_id: key.to_string(),
                },
            },
            key,
            replaced,
        })
    }

    /// Cancels process `id`.
    pub async fn cancel(&self, id: &str, user: &str) -> Result<(), ProcessError> {
        let entry = self.entry(id, user)?;
        entry.cancelled.store(true, Ordering::Relaxed);
        let mut process = entry.process.lock().await;
        self.end(id, &mut process, Finish::Cancelled).await;
        Ok(())
    }

    /// The processes of `user` in progress, newest last.
    pub fn of_user(&self, user: &str) -> Vec<String> {
        self.processes
            .lock()
            .expect("process table poisoned")
            .iter()
            .filter(|(_, e)| e.user == user && !e.cancelled.load(Ordering::Relaxed))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Ends a process: cancels the plugin's flow if it did not complete,
    /// drops the instance and its KV namespace, and forgets the process.
    async fn end(&self, id: &str, process: &mut Process, finish: Finish) {
        if let Some(mut instance) = process.instance.take()
            && matches!(finish, Finish::Cancelled)
            && instance.is_usable()
        {
            let call = match process.plugin.manifest.world {
                World::LoginProvider => instance.provider_login_cancel().await,
                _ => instance.connector_login_cancel().await,
            };
            drop(call);
        }
        process.finished = Some(finish);
        let namespace = kv_namespace(
            &InstanceRole::LoginProcess {
                process: id.to_owned(),
            },
            process.plugin.id(),
        );
        if let Err(error) = self
            .registry
            .services()
            .kv
            .remove_prefix(namespace.as_bytes())
        {
            tracing::warn!(%error, process = id, "failed to clear a login process's state");
        }
        self.processes
            .lock()
            .expect("process table poisoned")
            .remove(id);
    }

    /// Ends every process (at shutdown).
    pub async fn shutdown(&self) {
        let all: Vec<(String, Arc<Entry>)> =
            std::mem::take(&mut *self.processes.lock().expect("process table poisoned"))
                .into_iter()
                .collect();
        for (id, entry) in all {
            entry.cancelled.store(true, Ordering::Relaxed);
            let mut process = entry.process.lock().await;
            self.end(&id, &mut process, Finish::Cancelled).await;
        }
    }

    /// Ends processes older than the login timeout.
    pub async fn reap(&self) {
        let timeout = self.timeout();
        let expired: Vec<(String, Arc<Entry>)> = self
            .processes
            .lock()
            .expect("process table poisoned")
            .iter()
            .filter(|(_, e)| e.started.elapsed() > timeout)
            .map(|(id, e)| (id.clone(), e.clone()))
            .collect();
        for (id, entry) in expired {
            entry.cancelled.store(true, Ordering::Relaxed);
            let mut process = entry.process.lock().await;
            self.end(&id, &mut process, Finish::Cancelled).await;
            tracing::info!(process = %id, "login process timed out");
        }
    }
}

fn check_open(process: &Process) -> Result<(), ProcessError> {
    match process.finished {
        Some(Finish::Completed) => Err(ProcessError::AlreadyFinished),
        Some(Finish::Cancelled) => Err(ProcessError::Cancelled),
        None => Ok(()),
    }
}
