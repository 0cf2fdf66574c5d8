//! The actor that owns one login's instance.
//!
//! Each UserLogin has one task. It owns the login's `Store` and timer
//! table and takes one thing at a time from its mailboxes, so an instance
//! never sees two calls at once and no lock guards it:
//!
//! - **control** (upgrade, resume, stop, logout) is always served;
//! - **work** (Matrix events for the connector) is served only while an
//!   instance is running, so during a restart or an upgrade it waits in
//!   the mailbox instead of being lost;
//! - **timers** fire when due, unless the login awaits a relogin.
//!
//! A trap or a missed deadline discards the instance; a new one starts
//! from the persisted KV state after an exponential backoff. Too many
//! traps in a row stop the login with a clear error state instead of
//! spinning: a crash loop.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use super::bindings::connector::exports::weft::plugin::network_api as net;
use super::bindings::imports::matrix::{
    BridgeState as WitBridgeState, BridgeStateKind, RemoteEvent,
};
use super::bindings::imports::types::PluginError;
use super::instance::{CallError, Instance};
use super::plugin::LoadedPlugin;
use super::state::{InstanceContext, InstanceRole, Services};
use super::timers::{Timer, TimerTable};
use crate::logins::{LoginKey, StateEvent, now_ms};
use crate::storage::{Table, trees};

/// Where a login's actor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Creating its first instance.
    Starting,
    /// An instance is running.
    Running,
    /// The instance trapped; a new one starts after a backoff.
    Restarting,
    /// Too many traps in a row; stopped until an upgrade or a restart.
    Failed,
    /// The actor has ended.
    Stopped,
}

/// What the actor reports about itself.
#[derive(Debug, Clone, Serialize)]
pub struct ActorStatus {
    /// Where it is.
    pub phase: Phase,
    /// The plugin version it runs.
    pub plugin_version: String,
    /// Traps since the last healthy stretch.
    pub strikes: u32,
    /// Instances started so far (the first one included).
    pub instances_started: u64,
    /// The last trap or failure, if any.
    pub last_error: Option<String>,
    /// Whether timers are paused until the user logs in again.
    pub timers_paused: bool,
    /// Linear memory of the running instance, in bytes.
    pub memory_bytes: u64,
}

/// Why a piece of work was not done.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WorkError {
    /// The plugin reported a failure.
    #[error("{}", plugin_error_message(.0))]
    Plugin(PluginError),
    /// The instance trapped or ran out of time doing it.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The login is not running (crash loop, stopped).
    #[error("the login is not running: {0}")]
    Unavailable(String),
}

/// A plugin error as a sentence.
pub fn plugin_error_message(error: &PluginError) -> String {
    match error {
        PluginError::InvalidInput(m) => format!("invalid input: {m}"),
        PluginError::BadCredentials(m) => format!("the remote service rejected the login: {m}"),
        PluginError::Transient(m) => format!("temporary failure: {m}"),
        PluginError::Unsupported(m) => format!("not supported: {m}"),
        PluginError::Internal(m) => format!("the plugin failed: {m}"),
    }
}

/// Runs right after a message was sent, with its remote id, before the
/// actor takes its next item: the bridge records the id there, so a poll
/// that sees the same message afterwards recognises it as an echo.
pub type SentHook = Box<dyn FnOnce(&str) + Send>;

/// Matrix-side work for the connector.
pub enum Work {
    /// Send a message; replies with its remote id.
    Message(
        net::MatrixMessage,
        Option<SentHook>,
        oneshot::Sender<Result<String, WorkError>>,
    ),
    /// Send an edit.
    Edit(net::MatrixEdit, oneshot::Sender<Result<(), WorkError>>),
    /// Send a reaction; replies with its remote id.
    Reaction(
        net::MatrixReaction,
        oneshot::Sender<Result<String, WorkError>>,
    ),
    /// Remove a reaction: chat, message, reaction ids.
    ReactionRemoval(
        String,
        String,
        String,
        oneshot::Sender<Result<(), WorkError>>,
    ),
    /// Delete a message: chat and message ids.
    Redaction(String, String, oneshot::Sender<Result<(), WorkError>>),
}

/// Lifecycle commands.
pub enum Control {
    /// Move to another plugin version; the old one keeps running if the
    /// new one fails to start.
    Upgrade(Arc<LoadedPlugin>, oneshot::Sender<Result<(), String>>),
    /// The login was renewed (relogin): start a fresh instance and resume
    /// timers.
    Resume,
    /// Retire the instance and end.
    Stop(oneshot::Sender<()>),
    /// Log out of the remote service, then end.
    Logout(oneshot::Sender<Result<(), WorkError>>),
}

/// A handle to a login's actor.
#[derive(Clone)]
pub struct LoginHandle {
    /// The login.
    pub key: LoginKey,
    control: mpsc::UnboundedSender<Control>,
    work: mpsc::Sender<Work>,
    status: watch::Receiver<ActorStatus>,
}

impl LoginHandle {
    /// The actor's current status.
    pub fn status(&self) -> ActorStatus {
        self.status.borrow().clone()
    }

    /// Waits until the status satisfies `done`, or `timeout` passes.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&ActorStatus) -> bool,
    ) -> Option<ActorStatus> {
        let mut status = self.status.clone();
        tokio::time::timeout(timeout, async {
            loop {
                if done(&status.borrow_and_update()) {
                    return status.borrow().clone();
                }
                if status.changed().await.is_err() {
                    return status.borrow().clone();
                }
            }
        })
        .await
        .ok()
    }

    /// Queues Matrix work; waits while the mailbox is full.
    pub async fn send_work(&self, work: Work) -> Result<(), WorkError> {
        self.work
            .send(work)
            .await
            .map_err(|_| WorkError::Unavailable("the login's actor has ended".into()))
    }

    /// Sends a message and waits for its remote id.
    pub async fn matrix_message(&self, message: net::MatrixMessage) -> Result<String, WorkError> {
        self.matrix_message_then(message, None).await
    }

    /// Sends a message, runs `hook` with its remote id before the actor
    /// does anything else, and waits for the id.
    pub async fn matrix_message_then(
        &self,
        message: net::MatrixMessage,
        hook: Option<SentHook>,
    ) -> Result<String, WorkError> {
        let (reply, answer) = oneshot::channel();
        self.send_work(Work::Message(message, hook, reply)).await?;
        answer
            .await
            .map_err(|_| WorkError::Unavailable("the login's actor has ended".into()))?
    }

    /// Moves the login to `plugin`.
    pub async fn upgrade(&self, plugin: Arc<LoadedPlugin>) -> Result<(), String> {
        let (reply, answer) = oneshot::channel();
        self.control
            .send(Control::Upgrade(plugin, reply))
            .map_err(|_| "the login's actor has ended".to_owned())?;
        answer
            .await
            .map_err(|_| "the login's actor has ended".to_owned())?
    }

    /// Starts a fresh instance with the renewed login and resumes timers.
    pub fn resume(&self) {
        let _ = self.control.send(Control::Resume);
    }

    /// Retires the instance and waits for the actor to end.
    pub async fn stop(&self) {
        let (reply, answer) = oneshot::channel();
        if self.control.send(Control::Stop(reply)).is_ok() {
            let _ = answer.await;
        }
    }

    /// Logs out of the remote service and ends the actor.
    pub async fn logout(&self) -> Result<(), WorkError> {
        let (reply, answer) = oneshot::channel();
        self.control
            .send(Control::Logout(reply))
            .map_err(|_| WorkError::Unavailable("ended".into()))?;
        answer
            .await
            .map_err(|_| WorkError::Unavailable("the login's actor has ended".into()))?
    }
}

/// Persisted timers of every login.
pub(crate) fn timer_table(
    services: &Services,
) -> crate::storage::Result<Table<BTreeMap<String, Timer>>> {
    Table::open(services.storage.as_ref(), trees::TIMERS)
}

/// Starts the actor of login `key` on `plugin`.
pub fn spawn(
    key: LoginKey,
    plugin: Arc<LoadedPlugin>,
    services: Arc<Services>,
) -> crate::storage::Result<LoginHandle> {
    let config = services.runtime.config().clone();
    let table = timer_table(&services)?;
    let persisted = table.get(&key.storage_prefix())?.unwrap_or_default();
    let timers = Arc::new(Mutex::new(TimerTable::new(
        persisted,
        plugin.capabilities.timers,
        config.min_timer_ms,
    )));
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let (work_tx, work_rx) = mpsc::channel(config.mailbox);
    let (status_tx, status_rx) = watch::channel(ActorStatus {
        phase: Phase::Starting,
        plugin_version: plugin.version().to_string(),
        strikes: 0,
        instances_started: 0,
        last_error: None,
        timers_paused: false,
        memory_bytes: 0,
    });
    let paused = services
        .logins
        .get(&key)?
        .is_some_and(|r| r.state.state_event.needs_relogin());
    let actor = Actor {
        key: key.clone(),
        plugin,
        services,
        timers,
        timer_table: table,
        instance: None,
        strikes: 0,
        last_trap: None,
        restart_at: None,
        failed: None,
        paused,
        instances_started: 0,
        last_error: None,
        control: control_rx,
        work: work_rx,
        status: status_tx,
    };
    tokio::spawn(actor.run());
    Ok(LoginHandle {
        key,
        control: control_tx,
        work: work_tx,
        status: status_rx,
    })
}

struct Actor {
    key: LoginKey,
    plugin: Arc<LoadedPlugin>,
    services: Arc<Services>,
    timers: Arc<Mutex<TimerTable>>,
    timer_table: Table<BTreeMap<String, Timer>>,
    instance: Option<Instance>,
    strikes: u32,
    last_trap: Option<Instant>,
    restart_at: Option<tokio::time::Instant>,
    failed: Option<String>,
    paused: bool,
    instances_started: u64,
    last_error: Option<String>,
    control: mpsc::UnboundedReceiver<Control>,
    work: mpsc::Receiver<Work>,
    status: watch::Sender<ActorStatus>,
}

impl Actor {
    async fn run(mut self) {
        tracing::info!(login = %self.key, version = %self.plugin.version(), "login starting");
        self.start_instance().await;
        loop {
            self.publish();
            let next_timer = self.next_timer();
            let restart_at = self.restart_at;
            let running = self.instance.is_some();
            let failed = self.failed.is_some();
            tokio::select! {
                biased;
                control = self.control.recv() => {
                    let Some(control) = control else {
                        self.retire().await;
                        break;
                    };
                    if self.control(control).await {
                        break;
                    }
                }
                Some(work) = self.work.recv(), if running || failed => self.work(work).await,
                _ = sleep_until(next_timer), if next_timer.is_some() => self.fire_timer().await,
                _ = sleep_until(restart_at), if restart_at.is_some() => {
                    self.restart_at = None;
                    self.start_instance().await;
                }
            }
        }
        self.publish_phase(Phase::Stopped);
        tracing::info!(login = %self.key, "login stopped");
    }

    fn phase(&self) -> Phase {
        if self.failed.is_some() {
            Phase::Failed
        } else if self.instance.is_some() {
            Phase::Running
        } else if self.restart_at.is_some() {
            Phase::Restarting
        } else {
            Phase::Starting
        }
    }

    fn publish(&self) {
        self.publish_phase(self.phase());
    }

    fn publish_phase(&self, phase: Phase) {
        let status = ActorStatus {
            phase,
            plugin_version: self.plugin.version().to_string(),
            strikes: self.strikes,
            instances_started: self.instances_started,
            last_error: self.last_error.clone(),
            timers_paused: self.paused,
            memory_bytes: self.instance.as_ref().map_or(0, Instance::memory_used),
        };
        self.status.send_replace(status);
    }

    /// When the next timer is due, if timers may fire now.
    fn next_timer(&self) -> Option<tokio::time::Instant> {
        if self.instance.is_none() || self.paused {
            return None;
        }
        let due_ms = self
            .timers
            .lock()
            .expect("timer table poisoned")
            .next_due_ms()?;
        let wait = Duration::from_millis(due_ms.saturating_sub(now_ms()));
        Some(tokio::time::Instant::now() + wait)
    }

    async fn fire_timer(&mut self) {
        let due = self
            .timers
            .lock()
            .expect("timer table poisoned")
            .take_due(now_ms());
        let Some(name) = due else { return };
        let Some(instance) = self.instance.as_mut() else {
            return;
        };
        let outcome = instance.on_timer(&name).await;
        self.after_call(outcome.map(|r| r.map(|_| ()))).await;
    }

    /// Creates and starts an instance of the current plugin version.
    async fn start_instance(&mut self) {
        match self.new_instance(self.plugin.clone()).await {
            Ok(mut instance) => {
                self.instances_started += 1;
                let outcome = instance.start().await;
                self.instance = Some(instance);
                self.after_call(outcome).await;
                if self.instance.is_some() {
                    tracing::debug!(login = %self.key, "instance started");
                }
            }
            Err(error) => self.crashed(error.to_string()).await,
        }
    }

    /// A new instance of `plugin` for this login. (Takes clones, not
    /// `&self`: the actor is not `Sync`, so a borrow of it cannot be held
    /// across an await in a spawned task.)
    fn new_instance(
        &self,
        plugin: Arc<LoadedPlugin>,
    ) -> impl Future<Output = Result<Instance, CallError>> + Send + use<> {
        let role = InstanceRole::Login(self.key.clone());
        let services = self.services.clone();
        let timers = self.timers.clone();
        async move {
            let ctx = InstanceContext::new(plugin.clone(), role, services, Some(timers))
                .map_err(|e| CallError::Trap(format!("the host's storage failed: {e}")))?;
            Instance::new(plugin, ctx).await
        }
    }

    /// Persists what the call changed and handles how it ended.
    async fn after_call(&mut self, outcome: Result<Result<(), PluginError>, CallError>) {
        self.persist_timers();
        if let Some(instance) = self.instance.as_mut() {
            let signals = std::mem::take(&mut instance.state_mut().ctx.signals);
            if signals.queued_events
                && let Err(error) = crate::storage::flush_async(&self.services.storage).await
            {
                tracing::error!(login = %self.key, %error, "failed to flush queued events");
            }
            if signals.pause_timers && !self.paused {
                tracing::info!(login = %self.key, "the login needs a relogin; its timers are paused");
                self.paused = true;
            }
        }
        match outcome {
            Ok(Ok(())) => self.healthy(),
            Ok(Err(PluginError::BadCredentials(message))) => {
                self.healthy();
                if !self.paused {
                    self.paused = true;
                    let state = self
                        .services
                        .logins
                        .get(&self.key)
                        .ok()
                        .flatten()
                        .map(|r| r.state.state_event);
                    if state != Some(StateEvent::BadCredentials) {
                        self.report_state(
                            BridgeStateKind::BadCredentials,
                            "bad-credentials",
                            &message,
                        );
                    }
                }
            }
            Ok(Err(error)) => {
                self.healthy();
                tracing::debug!(login = %self.key, error = %plugin_error_message(&error), "plugin reported an error");
            }
            Err(error) => self.crashed(error.to_string()).await,
        }
        // Callers waiting on the reply see the status it left.
        self.publish();
    }

    fn healthy(&mut self) {
        let healthy_after = Duration::from_millis(self.services.runtime.config().healthy_after_ms);
        if self.strikes > 0 && self.last_trap.is_some_and(|t| t.elapsed() >= healthy_after) {
            self.strikes = 0;
        }
    }

    /// The instance is gone: restart it after a backoff, or stop for good
    /// if it keeps crashing.
    async fn crashed(&mut self, error: String) {
        self.instance = None;
        self.strikes += 1;
        self.last_trap = Some(Instant::now());
        self.last_error = Some(error.clone());
        let config = self.services.runtime.config();
        if self.strikes > config.max_restarts {
            let message = format!(
                "stopped after {} failures in a row; the last: {error}. Upgrade the plugin, or restart the login (`weft login restart`) once the cause is fixed.",
                self.strikes
            );
            tracing::error!(login = %self.key, %message, "login in a crash loop");
            self.report_state(BridgeStateKind::UnknownError, "plugin-crash-loop", &message);
            self.failed = Some(message);
            self.restart_at = None;
            return;
        }
        let backoff = Duration::from_millis(
            config
                .restart_backoff_ms
                .saturating_mul(1 << (self.strikes - 1).min(20))
                .min(config.max_restart_backoff_ms),
        );
        tracing::warn!(login = %self.key, %error, strikes = self.strikes, backoff_ms = backoff.as_millis() as u64, "instance failed; restarting");
        self.restart_at = Some(tokio::time::Instant::now() + backoff);
    }

    /// Records a state the host decided on (not the plugin) and queues the
    /// notice.
    fn report_state(&self, kind: BridgeStateKind, code: &str, message: &str) {
        let event = RemoteEvent::BridgeState(WitBridgeState {
            state: kind,
            error_code: Some(code.to_owned()),
            message: Some(message.to_owned()),
        });
        if let Err(error) = self.services.queue_event(&self.key, &event) {
            tracing::error!(login = %self.key, %error, "failed to record the bridge state");
        }
    }

    fn persist_timers(&self) {
        let mut table = self.timers.lock().expect("timer table poisoned");
        if table.dirty {
            if let Err(error) = self
                .timer_table
                .put(&self.key.storage_prefix(), table.timers())
            {
                tracing::error!(login = %self.key, %error, "failed to persist timers");
                return;
            }
            table.dirty = false;
        }
    }

    async fn work(&mut self, work: Work) {
        if let Some(reason) = &self.failed {
            let error = WorkError::Unavailable(reason.clone());
            match work {
                Work::Message(_, _, reply) | Work::Reaction(_, reply) => {
                    drop(reply.send(Err(error)))
                }
                Work::Edit(_, reply)
                | Work::ReactionRemoval(_, _, _, reply)
                | Work::Redaction(_, _, reply) => drop(reply.send(Err(error))),
            }
            return;
        }
        let Some(instance) = self.instance.as_mut() else {
            return;
        };
        macro_rules! answer {
            ($call:expr, $reply:expr) => {{
                let outcome = $call.await;
                let (status, result) = split(outcome);
                self.after_call(status).await;
                let _ = $reply.send(result);
            }};
        }
        match work {
            Work::Message(message, hook, reply) => {
                let outcome = instance.handle_matrix_message(&message).await;
                if let (Ok(Ok(remote_id)), Some(hook)) = (&outcome, hook) {
                    hook(remote_id);
                }
                let (status, result) = split(outcome);
                self.after_call(status).await;
                let _ = reply.send(result);
            }
            Work::Edit(edit, reply) => answer!(instance.handle_matrix_edit(&edit), reply),
            Work::Reaction(reaction, reply) => {
                answer!(instance.handle_matrix_reaction(&reaction), reply)
            }
            Work::ReactionRemoval(chat, message, reaction, reply) => {
                answer!(
                    instance.handle_matrix_reaction_removal(&chat, &message, &reaction),
                    reply
                )
            }
            Work::Redaction(chat, message, reply) => {
                answer!(instance.handle_matrix_redaction(&chat, &message), reply)
            }
        }
    }

    /// Handles a control message; returns whether the actor should end.
    async fn control(&mut self, control: Control) -> bool {
        match control {
            Control::Upgrade(plugin, reply) => {
                let result = self.upgrade(plugin).await;
                let _ = reply.send(result);
                false
            }
            Control::Resume => {
                tracing::info!(login = %self.key, "login renewed; starting a fresh instance");
                self.paused = false;
                self.failed = None;
                self.strikes = 0;
                self.restart_at = None;
                if let Some(mut old) = self.instance.take()
                    && old.is_usable()
                {
                    let _ = old.stop().await;
                }
                self.start_instance().await;
                false
            }
            Control::Stop(reply) => {
                self.retire().await;
                let _ = reply.send(());
                true
            }
            Control::Logout(reply) => {
                let result = match self.instance.as_mut() {
                    Some(instance) => match instance.logout().await {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(error)) => Err(WorkError::Plugin(error)),
                        Err(error) => Err(WorkError::Call(error)),
                    },
                    None => Err(WorkError::Unavailable("no instance is running".into())),
                };
                self.persist_timers();
                self.instance = None;
                let _ = reply.send(result);
                true
            }
        }
    }

    /// Moves the login to `plugin`: instantiate it first (if that fails,
    /// nothing changed), retire the old instance, start the new one. If the
    /// new one traps on start, the old version comes back. Work and due
    /// timers wait in the mailbox and the table meanwhile.
    async fn upgrade(&mut self, plugin: Arc<LoadedPlugin>) -> Result<(), String> {
        let from = self.plugin.version().to_string();
        let to = plugin.version().to_string();
        let mut fresh = self
            .new_instance(plugin.clone())
            .await
            .map_err(|e| format!("version {to} failed to instantiate: {e}"))?;
        if let Some(mut old) = self.instance.take()
            && old.is_usable()
        {
            let _ = old.stop().await;
        }
        match fresh.start().await {
            Err(error) => {
                tracing::warn!(login = %self.key, %from, %to, %error, "new version failed to start; staying on the old one");
                self.start_instance().await;
                Err(format!("version {to} failed to start: {error}"))
            }
            Ok(outcome) => {
                self.plugin = plugin;
                self.instance = Some(fresh);
                self.instances_started += 1;
                self.failed = None;
                self.strikes = 0;
                self.restart_at = None;
                self.after_call(Ok(outcome)).await;
                tracing::info!(login = %self.key, %from, %to, "login upgraded");
                Ok(())
            }
        }
    }

    /// Retires the instance gracefully and persists the timers.
    async fn retire(&mut self) {
        if let Some(mut instance) = self.instance.take()
            && instance.is_usable()
        {
            let _ = instance.stop().await;
        }
        self.persist_timers();
    }
}

/// Splits a work outcome into what the actor needs (did it crash, did the
/// plugin report bad credentials) and what the caller gets.
fn split<T>(
    outcome: Result<Result<T, PluginError>, CallError>,
) -> (
    Result<Result<(), PluginError>, CallError>,
    Result<T, WorkError>,
) {
    match outcome {
        Ok(Ok(value)) => (Ok(Ok(())), Ok(value)),
        Ok(Err(error)) => (Ok(Err(error.clone())), Err(WorkError::Plugin(error))),
        Err(error) => (Err(error.clone()), Err(WorkError::Call(error))),
    }
}

async fn sleep_until(when: Option<tokio::time::Instant>) {
    match when {
        Some(when) => tokio::time::sleep_until(when).await,
        None => std::future::pending().await,
    }
}
