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
use weft_runtime::connector::PluginError;
use weft_runtime::login_flow::{self as flow, CompleteStep, LoginStep, StepParams};
use weft_runtime::plugin::LoadedPlugin;
use weft_runtime::process::{FlowResult, ProcessInstance, ProviderGrant};
use weft_runtime::{CallError, Registry, RegistryError};

pub use weft_runtime::login_flow::StepInput;

use crate::capture::CaptureSessions;
use crate::config::Config;
use crate::logins::{BridgeState, LoginError, LoginKey, LoginRecord, Logins, StateEvent, now_ms};

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
    /// The user has the maximum number of login processes in progress.
    #[error(
        "you already have {0} logins in progress; finish or cancel one (or wait for it to time out) before starting another"
    )]
    TooManyProcesses(usize),
    /// The host has the maximum number of login processes in progress.
    #[error("the bridge is busy with other logins; try again in a minute")]
    Busy,
    /// The remote account is logged in by another Matrix user.
    #[error(
        "this remote account is already logged in by another Matrix user; they must log out first"
    )]
    LoginConflict,
    /// The plugin refused the input, or failed for now: the step stands,
    /// and the user may try again.
    #[error("{0}")]
    Plugin(String),
    /// The provider finished, but the connector could not make the login
    /// of it for now: submitting the step again retries with what the
    /// provider produced, and any new input is not looked at.
    #[error("{0}")]
    Retry(String),
    /// The plugin ended the login (e.g. the user declined it elsewhere, or
    /// it gave up): the process is over.
    #[error("{0}")]
    Failed(String),
    /// The plugin's instance trapped or timed out; the process is over.
    #[error("the login process failed: {0}")]
    Crashed(#[from] CallError),
    /// Storing the login failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Storing the login failed.
    #[error(transparent)]
    Login(#[from] LoginError),
}

impl From<weft_storage::StorageError> for ProcessError {
    fn from(error: weft_storage::StorageError) -> Self {
        Self::Login(error.into())
    }
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
    /// The connector the login is for.
    plugin: Arc<LoadedPlugin>,
    /// The login provider running the flow, for a connector's flow
    /// `from-provider`, until it completes (then `instance` is the
    /// connector's, finishing the login).
    provider: Option<ProviderFlow>,
    relogin: Option<LoginKey>,
    instance: Option<ProcessInstance>,
    /// What the provider's flow produced, kept while the connector's
    /// `finish` failed for now: the next wait or submit tries it again
    /// (the user's approval is not thrown away for a 503).
    pending_grant: Option<ProviderGrant>,
    step: StepView,
    poll_after_ms: u32,
    finished: Option<Finish>,
}

struct ProviderFlow {
    plugin: Arc<LoadedPlugin>,
    flow: String,
}

struct Entry {
    process: tokio::sync::Mutex<Process>,
    cancelled: AtomicBool,
    started: Instant,
    /// When a client last touched it.
    touched: Mutex<Instant>,
    user: String,
}

impl Entry {
    fn touch(&self) {
        *self.touched.lock().expect("process lock poisoned") = Instant::now();
    }

    fn idle(&self) -> Duration {
        self.touched
            .lock()
            .expect("process lock poisoned")
            .elapsed()
    }
}

/// Every login process in progress.
pub struct LoginProcesses {
    registry: Arc<Registry>,
    logins: Arc<Logins>,
    config: Arc<Config>,
    captures: Arc<CaptureSessions>,
    processes: Mutex<BTreeMap<String, Arc<Entry>>>,
}

/// The bridgev2 name of a field kind.
fn field_kind(kind: flow::FieldKind) -> &'static str {
    match kind {
        flow::FieldKind::Username => "username",
        flow::FieldKind::Password => "password",
        flow::FieldKind::PhoneNumber => "phone_number",
        flow::FieldKind::Email => "email",
        flow::FieldKind::TwoFactorCode => "2fa_code",
        flow::FieldKind::Token => "token",
        flow::FieldKind::Url => "url",
        flow::FieldKind::Domain => "domain",
        flow::FieldKind::Select => "select",
        flow::FieldKind::CaptchaCode => "captcha_code",
    }
}

/// A plugin's step in bridgev2's shape, or its completion.
fn plugin_step(step: LoginStep) -> PluginStep {
    let view = |kind: &str, params: StepParamsView| StepView {
        kind: kind.to_owned(),
        step_id: step.step_id.clone(),
        instructions: step.instructions.clone(),
        params,
    };
    match step.params {
        StepParams::UserInput(fields) => PluginStep::Step {
            view: view(
                "user_input",
                StepParamsView::UserInput {
                    fields: fields
                        .into_iter()
                        .map(|f| FieldView {
                            kind: field_kind(f.kind).to_owned(),
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
        StepParams::Cookies(c) => {
            let source_kind = |k: flow::CookieSourceKind| match k {
                flow::CookieSourceKind::Cookie => "cookie",
                flow::CookieSourceKind::LocalStorage => "local_storage",
                flow::CookieSourceKind::RequestHeader => "request_header",
                flow::CookieSourceKind::RequestBody => "request_body",
                flow::CookieSourceKind::Special => "special",
            };
            let fields: Vec<serde_json::Value> = c
                .fields
                .into_iter()
                .map(|f| {
                    let sources: Vec<serde_json::Value> = f
                        .sources
                        .into_iter()
                        .map(|s| {
                            serde_json::json!({
                                "type": source_kind(s.kind), "name": s.name,
                                "request_url_regex": s.request_url_regex, "cookie_domain": s.cookie_domain,
                            })
                        })
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
        StepParams::DisplayAndWait(d) => PluginStep::Step {
            view: view(
                "display_and_wait",
                StepParamsView::DisplayAndWait {
                    kind: match d.kind {
                        flow::DisplayKind::Qr => "qr",
                        flow::DisplayKind::Emoji => "emoji",
                        flow::DisplayKind::Code => "code",
                        flow::DisplayKind::Nothing => "nothing",
                    }
                    .to_owned(),
                    data: d.data,
                    image_url: d.image_url,
                },
            ),
            poll_after_ms: d.poll_after_ms,
        },
        StepParams::Complete(c) => PluginStep::Complete {
            login_id: c.login_id,
            remote_name: c.remote_name,
            metadata: c.metadata,
            step_id: step.step_id,
        },
    }
}

/// Sorts a plugin's answer: a step, a refusal or temporary failure that
/// leaves the step standing (shown to the user as the plugin wrote it), a
/// failure that ends the process, or a crash.
fn answer(result: FlowResult) -> Result<PluginStep, ProcessError> {
    result?.map(plugin_step).map_err(plugin_failure)
}

/// Whether a plugin's error leaves the step standing (`invalid-input`,
/// `transient`) or ends the process (anything else), as `login-flow.wit`
/// documents.
fn plugin_failure(error: PluginError) -> ProcessError {
    match error {
        PluginError::InvalidInput(message) => ProcessError::Plugin(message),
        PluginError::Transient(message) => ProcessError::Plugin(format!(
            "{message} (a temporary failure: try again in a moment)"
        )),
        PluginError::BadCredentials(message) => ProcessError::Failed(message),
        other => ProcessError::Failed(other.to_string()),
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
    pub fn new(
        registry: Arc<Registry>,
        logins: Arc<Logins>,
        config: Arc<Config>,
        captures: Arc<CaptureSessions>,
    ) -> Arc<Self> {
        Arc::new(Self {
            registry,
            logins,
            config,
            captures,
            processes: Mutex::new(BTreeMap::new()),
        })
    }

    /// Every flow of every loaded connector. A flow from a provider that
    /// is not loaded, or lacks the flow, is left out.
    pub fn flows(&self) -> Vec<FlowView> {
        let mut flows = Vec::new();
        for plugin in self.registry.connectors() {
            let network = plugin.manifest.network_name();
            for flow in &plugin.manifest.login_flows {
                let (name, description) = if flow.from_provider {
                    let Ok(provider) = self.provider_flow(&plugin, &flow.id) else {
                        continue;
                    };
                    let theirs = provider
                        .plugin
                        .manifest
                        .login_flows
                        .iter()
                        .find(|f| f.id == flow.id);
                    let pick = |ours: &String, theirs: Option<&String>| {
                        if ours.is_empty() {
                            theirs.cloned().unwrap_or_default()
                        } else {
                            ours.clone()
                        }
                    };
                    (
                        pick(&flow.name, theirs.map(|f| &f.name)),
                        pick(&flow.description, theirs.map(|f| &f.description)),
                    )
                } else {
                    (flow.name.clone(), flow.description.clone())
                };
                flows.push(FlowView {
                    id: format!("{}:{}", plugin.id(), flow.id),
                    name: format!("{network}: {name}"),
                    description,
                });
            }
        }
        flows
    }

    /// The login provider that runs flow `flow` of `connector`, if the
    /// flow comes from one.
    fn provider_flow(
        &self,
        connector: &LoadedPlugin,
        flow: &str,
    ) -> Result<ProviderFlow, ProcessError> {
        let unknown = || ProcessError::UnknownFlow(format!("{}:{flow}", connector.id()));
        let name = connector
            .capabilities
            .uses
            .get("tokens")
            .ok_or_else(unknown)?;
        let plugin = self.registry.login_provider(name).map_err(|_| unknown())?;
        if !plugin.manifest.login_flows.iter().any(|f| f.id == flow) {
            return Err(unknown());
        }
        Ok(ProviderFlow {
            plugin,
            flow: flow.to_owned(),
        })
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
        let Some((plugin, flow)) = flow.id.split_once(':') else {
            return Err(ProcessError::UnknownFlow(reference.to_owned()));
        };
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
        let from_provider = plugin
            .manifest
            .login_flows
            .iter()
            .any(|f| f.id == flow_id && f.from_provider);
        let provider = if from_provider {
            Some(self.provider_flow(&plugin, &flow_id)?)
        } else {
            None
        };
        if let Some(old) = &relogin {
            let owned = self.logins.store.get(old)?.is_some_and(|r| r.owner == user);
            if !owned {
                return Err(ProcessError::NotFound(old.to_string()));
            }
        }
        let bridge = &self.config.bridge;
        let max = bridge.max_logins_per_user;
        if max > 0 && relogin.is_none() {
            let count = self.logins.store.of_owner(user)?.len();
            if count >= max {
                return Err(ProcessError::TooManyLogins(max));
            }
        }
        let id = new_process_id();
        // Each process holds a live instance until it ends: one user may
        // not hold more than a few, and the host not more than its cap.
        // The slot is taken before the instance is made, so concurrent
        // starts cannot all pass the check.
        let placeholder = {
            let mut processes = self.processes.lock().expect("process table poisoned");
            let mine = processes
                .values()
                .filter(|e| e.user == user && !e.cancelled.load(Ordering::Relaxed))
                .count();
            if mine >= bridge.max_login_processes_per_user {
                return Err(ProcessError::TooManyProcesses(mine));
            }
            if processes.len() >= bridge.max_login_processes {
                return Err(ProcessError::Busy);
            }
            let entry = Arc::new(Entry {
                process: tokio::sync::Mutex::new(Process {
                    user: user.to_owned(),
                    plugin: plugin.clone(),
                    provider: None,
                    relogin: relogin.clone(),
                    instance: None,
                    pending_grant: None,
                    step: StepView {
                        kind: "starting".into(),
                        step_id: String::new(),
                        instructions: String::new(),
                        params: StepParamsView::UserInput { fields: Vec::new() },
                    },
                    poll_after_ms: 0,
                    finished: None,
                }),
                cancelled: AtomicBool::new(false),
                started: Instant::now(),
                touched: Mutex::new(Instant::now()),
                user: user.to_owned(),
            });
            processes.insert(id.clone(), entry.clone());
            self.captures.register(&id, user);
            entry
        };
        let mut process = placeholder.process.lock().await;
        let runs = provider.as_ref().map_or(&plugin, |p| &p.plugin).clone();
        process.provider = provider;
        let first = async {
            let mut instance = self.registry.process(&runs, &id).await?;
            let relogin_id = relogin.as_ref().map(|k| k.id.clone());
            let first = answer(instance.start(&flow_id, relogin_id.as_deref()).await);
            process.instance = Some(instance);
            first
        }
        .await;
        let (view, poll_after_ms) = match first {
            Ok(PluginStep::Step {
                view,
                poll_after_ms,
            }) => (view, poll_after_ms),
            Ok(PluginStep::Complete { .. }) => {
                self.end(&id, &mut process, Finish::Cancelled).await;
                return Err(ProcessError::Plugin(
                    "the plugin completed a login without any step".into(),
                ));
            }
            Err(error) => {
                self.end(&id, &mut process, Finish::Cancelled).await;
                return Err(error);
            }
        };
        process.step = view.clone();
        process.poll_after_ms = poll_after_ms;
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
                if entry.started.elapsed() > self.timeout() || entry.idle() > self.idle_timeout() {
                    return Err(ProcessError::TimedOut);
                }
                entry.touch();
                Ok(entry)
            }
            _ => Err(ProcessError::NotFound(id.to_owned())),
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.config.bridge.login_timeout_secs)
    }

    fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.config.bridge.login_idle_timeout_secs)
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
        if let Some(grant) = process.pending_grant.take() {
            // The provider is done; only the connector's finish is left.
            let again = PluginStep::Complete {
                login_id: grant.account_id,
                remote_name: grant.account_name,
                metadata: grant.material,
                step_id: process.step.step_id.clone(),
            };
            return self.settle(id, process, Ok(again)).await;
        }
        let instance = process
            .instance
            .as_mut()
            .ok_or(ProcessError::AlreadyFinished)?;
        let step = answer(instance.submit(step_id, input).await);
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
            Err(error @ (ProcessError::Crashed(_) | ProcessError::Failed(_))) => {
                // The instance is gone, or the plugin ended the login.
                self.end(id, process, Finish::Cancelled).await;
                return Err(error);
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
                let (login_id, remote_name, metadata) = match &process.provider {
                    // The provider's part is done: the connector makes the
                    // login of what it produced.
                    Some(provider) => {
                        let grant = ProviderGrant {
                            provider: provider.plugin.id().to_owned(),
                            account_id: login_id,
                            account_name: remote_name,
                            material: metadata,
                        };
                        let flow = provider.flow.clone();
                        let connector = process.plugin.clone();
                        let relogin = process.relogin.as_ref().map(|k| k.id.clone());
                        let finished = self
                            .finish_with_connector(id, connector, &flow, grant.clone(), relogin)
                            .await;
                        match finished {
                            Ok(done) => (done.login_id, done.remote_name, done.metadata),
                            Err(ProcessError::Plugin(message)) => {
                                process.pending_grant = Some(grant);
                                return Err(ProcessError::Retry(message));
                            }
                            Err(error) => {
                                self.end(id, process, Finish::Cancelled).await;
                                return Err(error);
                            }
                        }
                    }
                    None => (login_id, remote_name, metadata),
                };
                let owner = (
                    process.user.clone(),
                    process.plugin.clone(),
                    process.relogin.clone(),
                );
                let completed = match self
                    .complete(owner, login_id, remote_name, metadata, step_id)
                    .await
                {
                    Ok(completed) => completed,
                    Err(error @ ProcessError::Failed(_)) => {
                        self.end(id, process, Finish::Cancelled).await;
                        return Err(error);
                    }
                    Err(error) => return Err(error),
                };
                process.step = completed.step.clone();
                self.end(id, process, Finish::Completed).await;
                Ok(Progress::Completed(completed))
            }
        }
    }

    /// Runs the connector's `provider-login.finish` on what its provider's
    /// flow produced, in a fresh connector instance of the same process.
    /// (Takes what it needs of the process by value: a `&Process` cannot
    /// be held across an await.)
    async fn finish_with_connector(
        &self,
        id: &str,
        connector: Arc<LoadedPlugin>,
        flow: &str,
        grant: ProviderGrant,
        relogin: Option<String>,
    ) -> Result<CompleteStep, ProcessError> {
        let mut connector = self.registry.process(&connector, id).await?;
        connector
            .finish_provider_login(flow, grant, relogin.as_deref())
            .await?
            .map_err(|error| match error {
                // Only a temporary failure may be tried again; a refusal of
                // what the provider produced would be refused again.
                PluginError::InvalidInput(message) => ProcessError::Failed(message),
                other => plugin_failure(other),
            })
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
        // A plugin's bug, not the user's input: the same answer would come
        // again, so these end the process.
        if login_id.is_empty() || login_id.len() > 255 {
            return Err(ProcessError::Failed(
                "the plugin returned an invalid login id".into(),
            ));
        }
        if serde_json::from_str::<serde_json::Value>(&metadata).is_err() {
            return Err(ProcessError::Failed(
                "the plugin returned metadata that is not JSON".into(),
            ));
        }
        let key = LoginKey::new(plugin.id(), login_id);
        let existing = self.logins.store.get(&key)?;
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
        self.logins.put(record).await?;
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
        {
            instance.cancel().await;
        }
        process.finished = Some(finish);
        self.captures.close_all(id);
        // The connector's own state, and its token provider's (which ran
        // the flow, or served `tokens` calls in it).
        let provider = process.plugin.capabilities.uses.get("tokens");
        for plugin in std::iter::once(process.plugin.id()).chain(provider.map(String::as_str)) {
            if let Err(error) = self.registry.clear_process_state(plugin, id) {
                tracing::warn!(%error, process = id, "failed to clear a login process's state");
            }
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

    /// Ends processes older than the login timeout, or idle longer than
    /// the idle timeout.
    pub async fn reap(&self) {
        let timeout = self.timeout();
        let idle_timeout = self.idle_timeout();
        let expired: Vec<(String, Arc<Entry>)> = self
            .processes
            .lock()
            .expect("process table poisoned")
            .iter()
            .filter(|(_, e)| e.started.elapsed() > timeout || e.idle() > idle_timeout)
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

#[cfg(test)]
mod tests {
    use weft_runtime::login_flow::{
        CompleteStep, CookieField, CookieSource, CookieSourceKind, CookiesStep, DisplayKind,
        DisplayStep, FieldKind, InputField,
    };

    use super::*;

    fn step(params: StepParams) -> LoginStep {
        LoginStep {
            step_id: "x.step".into(),
            instructions: "Do it.".into(),
            params,
        }
    }

    fn view(step: LoginStep) -> serde_json::Value {
        match plugin_step(step) {
            PluginStep::Step { view, .. } => serde_json::to_value(view).unwrap(),
            PluginStep::Complete { .. } => panic!("not a step"),
        }
    }

    #[test]
    fn user_input_steps_use_bridgev2_field_names() {
        let json = view(step(StepParams::UserInput(vec![InputField {
            kind: FieldKind::TwoFactorCode,
            id: "code".into(),
            name: "Code".into(),
            description: String::new(),
            default_value: None,
            pattern: Some("^[0-9]{6}$".into()),
            options: Vec::new(),
        }])));
        assert_eq!(json["type"], "user_input");
        assert_eq!(json["step_id"], "x.step");
        assert_eq!(json["user_input"]["fields"][0]["type"], "2fa_code");
        assert_eq!(json["user_input"]["fields"][0]["pattern"], "^[0-9]{6}$");
        // Empty options are left out, as bridgev2 does.
        assert!(json["user_input"]["fields"][0].get("options").is_none());
    }

    #[test]
    fn cookies_and_display_steps_are_shaped_like_bridgev2() {
        let json = view(step(StepParams::Cookies(CookiesStep {
            url: "https://example.com/login".into(),
            user_agent: None,
            fields: vec![CookieField {
                id: "token".into(),
                required: true,
                sources: vec![CookieSource {
                    kind: CookieSourceKind::LocalStorage,
                    name: "auth".into(),
                    request_url_regex: None,
                    cookie_domain: None,
                }],
                pattern: None,
            }],
            extract_js: Some("x()".into()),
            wait_for_url_pattern: None,
        })));
        assert_eq!(json["type"], "cookies");
        assert_eq!(
            json["cookies"]["fields"][0]["sources"][0]["type"],
            "local_storage"
        );
        assert_eq!(json["cookies"]["extract_js"], "x()");

        let json = view(step(StepParams::DisplayAndWait(DisplayStep {
            kind: DisplayKind::Qr,
            data: "qr-data".into(),
            image_url: None,
            poll_after_ms: 1000,
        })));
        assert_eq!(json["display_and_wait"]["type"], "qr");
        assert_eq!(json["display_and_wait"]["data"], "qr-data");
    }

    #[test]
    fn a_plugins_refusal_reads_as_the_plugin_wrote_it() {
        let refused: FlowResult = Ok(Err(PluginError::InvalidInput(
            "Wrong user name or password.".into(),
        )));
        let error = answer(refused).err().unwrap();
        // No "invalid input:" prefix and no doubled period for the user.
        assert_eq!(error.to_string(), "Wrong user name or password.");
        let done: FlowResult = Ok(Ok(step(StepParams::Complete(CompleteStep {
            login_id: "alice".into(),
            remote_name: "Alice".into(),
            metadata: "{}".into(),
        }))));
        assert!(
            matches!(answer(done), Ok(PluginStep::Complete { login_id, .. }) if login_id == "alice")
        );
    }
}
