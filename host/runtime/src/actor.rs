//! The actor that owns one login's instance.
//!
//! Each UserLogin has a slot in the registry. While the login is active, a
//! task (the actor) owns its `Store` and timer table and takes one thing at
//! a time from its mailboxes, so an instance never sees two calls at once
//! and no lock guards it:
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
//! spinning: a crash loop. A host with no room for the instance (a full
//! pool, the kernel's mapping limit) is not the plugin's fault: the login
//! waits and retries, and says why.
//!
//! **Hibernation.** An actor with nothing to do soon (an empty mailbox,
//! no timer due within `hibernate-after-ms`, idle that long) persists its
//! timers, stops its instance and ends; only the slot stays, with the next
//! timer's due time handed to the [scheduler](crate::scheduler). The next
//! timer, Matrix event or control message starts a new actor, which calls
//! `start` on a fresh instance before anything else, as after any other
//! instance replacement. The hand-over is exact: an actor hibernates only
//! while holding the slot's lock with no sender outside the slot and empty
//! mailboxes, and a new actor waits for the old one to end before it
//! touches the login's state.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

use crate::connector::{MatrixEdit, MatrixMedia, MatrixMessage, MatrixReaction, PluginError};
use crate::events::{RemoteEvent, StateKind, StateReport};
use crate::instance::{CallError, Instance, Permits, plugin_error};
use crate::login::{LoginKey, now_ms};
use crate::metrics::Metrics;
use crate::plugin::LoadedPlugin;
use crate::runtime::Runtime;
use crate::state::{InstanceContext, InstanceRole};
use crate::timers::{Timer, TimerTable};

/// Where a login is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Creating its instance.
    Starting,
    /// An instance is running.
    Running,
    /// The instance trapped; a new one starts after a backoff.
    Restarting,
    /// The host had no room for an instance; it retries after a backoff.
    Waiting,
    /// Too many traps in a row; stopped until an upgrade or a restart.
    Failed,
    /// No instance and no task: woken by its next timer or event.
    Hibernating,
    /// The login's actor has ended for good (deleted, unloaded).
    Stopped,
}

/// What a login's actor reports about itself.
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
    /// Times the login hibernated.
    pub hibernations: u64,
}

/// Why a piece of work was not done.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WorkError {
    /// The plugin reported a failure.
    #[error(transparent)]
    Plugin(PluginError),
    /// The instance trapped or ran out of time doing it.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The login is not running (crash loop, stopped).
    #[error("the login is not running: {0}")]
    Unavailable(String),
}

/// Runs right after a message was sent, with its remote id, before the
/// actor takes its next item: the host records the id there, so a poll
/// that sees the same message afterwards recognises it as an echo.
pub type SentHook = Box<dyn FnOnce(&str) + Send>;

type Reply<T> = oneshot::Sender<Result<T, WorkError>>;

/// Matrix-side work for the connector.
enum Work {
    Message(MatrixMessage, Option<SentHook>, Reply<String>),
    Media(MatrixMedia, Option<SentHook>, Reply<String>),
    ReadReceipt {
        chat: String,
        up_to: String,
        reply: Reply<()>,
    },
    Typing {
        chat: String,
        typing: bool,
        reply: Reply<()>,
    },
    History {
        chat: String,
        limit: u32,
        reply: Reply<Vec<RemoteEvent>>,
    },
    Edit(MatrixEdit, Reply<()>),
    Reaction(MatrixReaction, Reply<String>),
    ReactionRemoval {
        chat: String,
        message: String,
        reaction: String,
        reply: Reply<()>,
    },
    Redaction {
        chat: String,
        message: String,
        reply: Reply<()>,
    },
    /// Fire a timer now, whenever it is due (a harness's manual clock).
    FireTimer {
        name: Option<String>,
        reply: Reply<Option<String>>,
    },
}

impl Work {
    fn refuse(self, error: WorkError) {
        match self {
            Self::Message(_, _, reply) | Self::Media(_, _, reply) | Self::Reaction(_, reply) => {
                drop(reply.send(Err(error)))
            }
            Self::Edit(_, reply)
            | Self::ReactionRemoval { reply, .. }
            | Self::Redaction { reply, .. }
            | Self::ReadReceipt { reply, .. }
            | Self::Typing { reply, .. } => drop(reply.send(Err(error))),
            Self::History { reply, .. } => drop(reply.send(Err(error))),
            Self::FireTimer { reply, .. } => drop(reply.send(Err(error))),
        }
    }
}

/// Lifecycle commands.
enum Control {
    /// Move to another plugin version; the old one keeps running if the
    /// new one fails to start.
    Upgrade(Arc<LoadedPlugin>, oneshot::Sender<Result<(), String>>),
    /// The login was renewed (relogin) or an operator restarted it: start
    /// a fresh instance and resume timers.
    Resume,
    /// Retire the instance and end.
    Stop(oneshot::Sender<()>),
    /// Log out of the remote service, then end.
    Logout(oneshot::Sender<Result<(), WorkError>>),
}

/// A login's mailboxes. Items are boxed: a tokio channel allocates its
/// slots in blocks of 32 up front, and a live login's mailbox should cost
/// 32 pointers, not 32 messages.
#[derive(Clone)]
struct Mailboxes {
    control: mpsc::UnboundedSender<Box<Control>>,
    work: mpsc::Sender<Box<Work>>,
}

struct SlotState {
    plugin: Arc<LoadedPlugin>,
    /// The running actor's mailboxes; `None` while hibernating.
    live: Option<Mailboxes>,
    /// The login was deleted or its plugin unloaded: it is never woken.
    retired: bool,
}

/// A login's place in the registry: what survives hibernation.
pub(crate) struct LoginSlot {
    key: LoginKey,
    /// Weak: a handle a caller keeps must not keep the host's runtime
    /// (and its storage) alive after shutdown.
    runtime: Weak<Runtime>,
    state: Mutex<SlotState>,
    status: watch::Sender<ActorStatus>,
    /// Held by the running actor for its lifetime, so a woken actor never
    /// runs beside the one that was going to sleep.
    running: Arc<tokio::sync::Semaphore>,
    /// The due time the scheduler holds for this slot (0: none); an entry
    /// that no longer matches is stale and ignored.
    pub(crate) scheduled_due: AtomicU64,
}

impl LoginSlot {
    /// A slot for login `key` on `plugin`; no actor runs yet.
    pub(crate) fn new(
        key: LoginKey,
        plugin: Arc<LoadedPlugin>,
        runtime: Arc<Runtime>,
    ) -> Arc<Self> {
        let status = ActorStatus {
            phase: Phase::Hibernating,
            plugin_version: plugin.version().to_string(),
            strikes: 0,
            instances_started: 0,
            last_error: None,
            timers_paused: false,
            memory_bytes: 0,
            hibernations: 0,
        };
        Arc::new(Self {
            key,
            runtime: Arc::downgrade(&runtime),
            state: Mutex::new(SlotState {
                plugin,
                live: None,
                retired: false,
            }),
            status: watch::channel(status).0,
            running: Arc::new(tokio::sync::Semaphore::new(1)),
            scheduled_due: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().expect("login slot poisoned")
    }

    /// Sets the version a hibernating login wakes on.
    pub(crate) fn set_plugin(&self, plugin: Arc<LoadedPlugin>) {
        self.lock().plugin = plugin;
    }

    /// Whether an actor runs now.
    pub(crate) fn is_live(&self) -> bool {
        self.lock().live.is_some()
    }

    /// The running actor's mailboxes, starting an actor if none runs.
    /// `None` once the login is retired.
    fn mailboxes(self: &Arc<Self>) -> Option<Mailboxes> {
        let mut state = self.lock();
        if state.retired {
            return None;
        }
        if let Some(live) = &state.live {
            return Some(live.clone());
        }
        let runtime = self.runtime.upgrade()?;
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (work_tx, work_rx) = mpsc::channel(runtime.config.mailbox);
        let mailboxes = Mailboxes {
            control: control_tx,
            work: work_tx,
        };
        state.live = Some(mailboxes.clone());
        let plugin = state.plugin.clone();
        drop(state);
        self.status.send_modify(|s| s.phase = Phase::Starting);
        // Everything the actor logs, and everything logged during its
        // calls (imports, the host's services), carries the login.
        let span = tracing::info_span!("login", plugin = %self.key.plugin, login = %self.key.id);
        tokio::spawn(
            Actor::run(self.clone(), runtime, plugin, control_rx, work_rx).instrument(span),
        );
        Some(mailboxes)
    }

    /// Starts the actor if the login hibernates (its timer is due).
    pub(crate) fn wake(self: &Arc<Self>) {
        drop(self.mailboxes());
    }

    /// Marks the login retired: nothing wakes it again.
    pub(crate) fn retire(&self) {
        self.lock().retired = true;
    }

    /// Retires the login and lets go of its actor's mailboxes, without
    /// waiting: the actor sees them closed, retires its instance and
    /// ends, as after a stop. For a registry dropped without `shutdown`.
    pub(crate) fn close(&self) {
        // Called from a `Drop`: a poisoned lock must not panic there.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.retired = true;
        state.live = None;
    }
}

/// A handle to a login's actor. Cheap to clone; calls wake a hibernating
/// login.
#[derive(Clone)]
pub struct LoginHandle {
    slot: Arc<LoginSlot>,
}

impl LoginHandle {
    pub(crate) fn new(slot: Arc<LoginSlot>) -> Self {
        Self { slot }
    }

    /// The login.
    pub fn key(&self) -> &LoginKey {
        &self.slot.key
    }

    /// The actor's current status.
    pub fn status(&self) -> ActorStatus {
        self.slot.status.borrow().clone()
    }

    /// Waits until the status satisfies `done`, or `timeout` passes.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&ActorStatus) -> bool,
    ) -> Option<ActorStatus> {
        let mut status = self.slot.status.subscribe();
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

    fn ended() -> WorkError {
        WorkError::Unavailable("the login has been removed".into())
    }

    /// Queues work, waking the login if it hibernates; waits while the
    /// mailbox is full.
    async fn send_work(&self, work: Work) -> Result<(), WorkError> {
        let mut work = Box::new(work);
        // An actor may end between taking its mailbox and our send (it
        // hibernated); then the work comes back and goes to a new actor.
        for _ in 0..3 {
            let Some(mailboxes) = self.slot.mailboxes() else {
                work.refuse(Self::ended());
                return Ok(());
            };
            match mailboxes.work.send(work).await {
                Ok(()) => return Ok(()),
                Err(mpsc::error::SendError(returned)) => work = returned,
            }
        }
        work.refuse(WorkError::Unavailable(
            "the login's actor keeps ending".into(),
        ));
        Ok(())
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Work) -> Result<T, WorkError> {
        let (reply, answer) = oneshot::channel();
        self.send_work(make(reply)).await?;
        answer.await.map_err(|_| Self::ended())?
    }

    /// Sends a message and waits for its remote id.
    pub async fn matrix_message(&self, message: MatrixMessage) -> Result<String, WorkError> {
        self.matrix_message_then(message, None).await
    }

    /// Sends a message, runs `hook` with its remote id before the actor
    /// does anything else, and waits for the id.
    pub async fn matrix_message_then(
        &self,
        message: MatrixMessage,
        hook: Option<SentHook>,
    ) -> Result<String, WorkError> {
        self.ask(|reply| Work::Message(message, hook, reply)).await
    }

    /// Sends a file, runs `hook` with its remote id before the actor does
    /// anything else, and waits for the id. A connector without the
    /// `media-handler` export answers `unsupported`.
    pub async fn matrix_media_then(
        &self,
        media: MatrixMedia,
        hook: Option<SentHook>,
    ) -> Result<String, WorkError> {
        self.ask(|reply| Work::Media(media, hook, reply)).await
    }

    /// Tells the connector its owner read the chat up to `up_to`.
    pub async fn matrix_read_receipt(&self, chat: String, up_to: String) -> Result<(), WorkError> {
        self.ask(|reply| Work::ReadReceipt { chat, up_to, reply })
            .await
    }

    /// Tells the connector its owner started or stopped typing.
    pub async fn matrix_typing(&self, chat: String, typing: bool) -> Result<(), WorkError> {
        self.ask(|reply| Work::Typing {
            chat,
            typing,
            reply,
        })
        .await
    }

    /// Asks the connector for the newest `limit` messages of a chat,
    /// oldest first (only messages and media).
    pub async fn fetch_history(
        &self,
        chat: String,
        limit: u32,
    ) -> Result<Vec<RemoteEvent>, WorkError> {
        self.ask(|reply| Work::History { chat, limit, reply }).await
    }

    /// Sends an edit.
    pub async fn matrix_edit(&self, edit: MatrixEdit) -> Result<(), WorkError> {
        self.ask(|reply| Work::Edit(edit, reply)).await
    }

    /// Sends a reaction and waits for its remote id.
    pub async fn matrix_reaction(&self, reaction: MatrixReaction) -> Result<String, WorkError> {
        self.ask(|reply| Work::Reaction(reaction, reply)).await
    }

    /// Removes a reaction made from Matrix.
    pub async fn matrix_reaction_removal(
        &self,
        chat: String,
        message: String,
        reaction: String,
    ) -> Result<(), WorkError> {
        self.ask(|reply| Work::ReactionRemoval {
            chat,
            message,
            reaction,
            reply,
        })
        .await
    }

    /// Deletes a bridged message.
    pub async fn matrix_redaction(&self, chat: String, message: String) -> Result<(), WorkError> {
        self.ask(|reply| Work::Redaction {
            chat,
            message,
            reply,
        })
        .await
    }

    /// Fires timer `name` (or, with `None`, the one due first) now,
    /// whenever it is due, and waits until the plugin handled it; an
    /// interval then counts its next period from now. Answers which timer
    /// fired, or `None` if the login has no such timer. Refused while the
    /// login's timers are paused for a relogin.
    ///
    /// With [`RuntimeOptions::manual_timers`](crate::RuntimeOptions) this
    /// is the only way timers fire: a test harness's manual clock.
    pub async fn fire_timer(&self, name: Option<&str>) -> Result<Option<String>, WorkError> {
        let name = name.map(str::to_owned);
        self.ask(|reply| Work::FireTimer { name, reply }).await
    }

    fn control(&self, control: Control) -> bool {
        match self.slot.mailboxes() {
            Some(mailboxes) => mailboxes.control.send(Box::new(control)).is_ok(),
            None => false,
        }
    }

    /// Moves the login to `plugin`. A hibernating login only changes the
    /// version it will wake on.
    pub(crate) async fn upgrade(&self, plugin: Arc<LoadedPlugin>) -> Result<(), String> {
        {
            let mut state = self.slot.lock();
            if state.live.is_none() {
                state.plugin = plugin.clone();
                drop(state);
                self.slot
                    .status
                    .send_modify(|s| s.plugin_version = plugin.version().to_string());
                return Ok(());
            }
        }
        let (reply, answer) = oneshot::channel();
        if !self.control(Control::Upgrade(plugin, reply)) {
            return Err("the login's actor has ended".into());
        }
        answer
            .await
            .map_err(|_| "the login's actor has ended".to_owned())?
    }

    /// Starts a fresh instance with the renewed login and resumes timers.
    pub fn resume(&self) {
        self.control(Control::Resume);
    }

    /// Retires the instance and waits for the actor to end. The login
    /// does not wake again.
    pub(crate) async fn stop(&self) {
        let live = {
            let mut state = self.slot.lock();
            state.retired = true;
            state.live.clone()
        };
        if let Some(mailboxes) = live {
            let (reply, answer) = oneshot::channel();
            if mailboxes
                .control
                .send(Box::new(Control::Stop(reply)))
                .is_ok()
            {
                let _ = answer.await;
            }
        }
        // Wait for the actor (if one was ending anyway) to let go.
        let _ = self.slot.running.acquire().await;
        self.slot.status.send_modify(|s| s.phase = Phase::Stopped);
    }

    /// Logs out of the remote service and ends the actor for good.
    pub(crate) async fn logout(&self) -> Result<(), WorkError> {
        let (reply, answer) = oneshot::channel();
        let sent = self.control(Control::Logout(reply));
        self.slot.retire();
        if !sent {
            return Err(Self::ended());
        }
        let result = answer.await.map_err(|_| Self::ended())?;
        let _ = self.slot.running.acquire().await;
        self.slot.status.send_modify(|s| s.phase = Phase::Stopped);
        result
    }
}

/// Persisted timers of login `key`.
fn load_timers(runtime: &Runtime, key: &LoginKey) -> BTreeMap<String, Timer> {
    match runtime.timers.get(&key.storage_prefix()) {
        Ok(timers) => timers.unwrap_or_default(),
        Err(error) => {
            tracing::error!(login = %key, %error, "failed to read the login's timers; starting with none");
            BTreeMap::new()
        }
    }
}

struct Actor {
    slot: Arc<LoginSlot>,
    key: LoginKey,
    plugin: Arc<LoadedPlugin>,
    runtime: Arc<Runtime>,
    timers: Arc<Mutex<TimerTable>>,
    instance: Option<Instance>,
    strikes: u32,
    last_trap: Option<Instant>,
    /// Plugin errors are logged at warn level at most once a minute per
    /// login; this counts those not logged since.
    error_log: ErrorLog,
    backoff: Option<backon::ExponentialBackoff>,
    restart_at: Option<tokio::time::Instant>,
    waiting: bool,
    failed: Option<String>,
    paused: bool,
    instances_started: u64,
    hibernations: u64,
    last_error: Option<String>,
    last_activity: tokio::time::Instant,
    control: mpsc::UnboundedReceiver<Box<Control>>,
    work: mpsc::Receiver<Box<Work>>,
}

impl Actor {
    async fn run(
        slot: Arc<LoginSlot>,
        runtime: Arc<Runtime>,
        plugin: Arc<LoadedPlugin>,
        control: mpsc::UnboundedReceiver<Box<Control>>,
        work: mpsc::Receiver<Box<Work>>,
    ) {
        // The previous actor of this login (if it was going to sleep) must
        // be gone before this one reads the login's state.
        let Ok(_running) = slot.running.clone().acquire_owned().await else {
            return;
        };
        let key = slot.key.clone();
        let timers = TimerTable::new(
            load_timers(&runtime, &key),
            plugin.capabilities.timers,
            runtime.config.min_timer_ms,
        );
        let paused = match runtime.host.login(&key) {
            Ok(login) => login.is_some_and(|l| l.awaiting_relogin),
            Err(error) => {
                tracing::error!(login = %key, %error, "failed to read the login");
                false
            }
        };
        let previous = slot.status.borrow().clone();
        if previous.instances_started > 0 {
            Metrics::bump(&runtime.metrics.wakes);
        }
        let mut actor = Actor {
            slot,
            key,
            plugin,
            runtime,
            timers: Arc::new(Mutex::new(timers)),
            instance: None,
            strikes: 0,
            last_trap: None,
            error_log: ErrorLog::default(),
            backoff: None,
            restart_at: None,
            waiting: false,
            failed: None,
            paused,
            instances_started: previous.instances_started,
            hibernations: previous.hibernations,
            last_error: previous.last_error,
            last_activity: tokio::time::Instant::now(),
            control,
            work,
        };
        tracing::debug!(login = %actor.key, version = %actor.plugin.version(), "login actor starting");
        Box::pin(actor.start_instance()).await;
        actor.run_loop().await;
    }

    /// Waits for the next thing to do and does it. The handlers' futures
    /// (a guest call and all it awaits) are boxed, so the task of an idle
    /// login holds only the wait: a few hundred bytes instead of the
    /// largest handler's several KiB, for each of thousands of logins.
    async fn run_loop(mut self) {
        loop {
            self.publish();
            let next_timer = self.next_timer();
            let restart_at = self.restart_at;
            let hibernate_at = self.hibernate_at();
            let running = self.instance.is_some();
            let failed = self.failed.is_some();
            tokio::select! {
                biased;
                control = self.control.recv() => {
                    let Some(control) = control else {
                        Box::pin(self.retire()).await;
                        break;
                    };
                    if Box::pin(self.control(*control)).await {
                        break;
                    }
                    self.touch();
                }
                Some(work) = self.work.recv(), if running || failed => {
                    Box::pin(self.work(*work)).await;
                    self.touch();
                }
                _ = sleep_until(next_timer), if next_timer.is_some() => {
                    Box::pin(self.fire_timer()).await;
                    self.touch();
                }
                _ = sleep_until(restart_at), if restart_at.is_some() => {
                    self.restart_at = None;
                    Box::pin(self.start_instance()).await;
                }
                _ = sleep_until(hibernate_at), if hibernate_at.is_some() => {
                    if self.try_hibernate() {
                        Box::pin(self.hibernate()).await;
                        return;
                    }
                    self.touch();
                }
            }
        }
        self.slot.lock().live = None;
        self.publish_phase(Phase::Stopped);
        tracing::debug!(login = %self.key, "login actor stopped");
    }

    fn touch(&mut self) {
        self.last_activity = tokio::time::Instant::now();
    }

    fn phase(&self) -> Phase {
        if self.failed.is_some() {
            Phase::Failed
        } else if self.instance.is_some() {
            Phase::Running
        } else if self.waiting {
            Phase::Waiting
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
            hibernations: self.hibernations,
        };
        self.slot.status.send_replace(status);
    }

    fn next_due_ms(&self) -> Option<u64> {
        if self.paused || self.runtime.manual_timers {
            return None;
        }
        self.timers
            .lock()
            .expect("timer table poisoned")
            .next_due_ms()
    }

    /// When the next timer is due, if timers may fire now.
    fn next_timer(&self) -> Option<tokio::time::Instant> {
        self.instance.as_ref()?;
        let due_ms = self.next_due_ms()?;
        let wait = Duration::from_millis(due_ms.saturating_sub(now_ms()));
        Some(tokio::time::Instant::now() + wait)
    }

    /// When the actor would hibernate if nothing happens before.
    fn hibernate_at(&self) -> Option<tokio::time::Instant> {
        let config = &self.runtime.config;
        if !config.hibernate
            || self.instance.is_none()
            || self.failed.is_some()
            || self.restart_at.is_some()
        {
            return None;
        }
        Some(self.last_activity + Duration::from_millis(config.hibernate_after_ms))
    }

    /// Gives up the slot if nothing is due soon and nobody is about to
    /// send anything: under the slot's lock, no sender exists outside the
    /// slot and both mailboxes are empty.
    fn try_hibernate(&mut self) -> bool {
        let after = self.runtime.config.hibernate_after_ms;
        if self
            .next_due_ms()
            .is_some_and(|due| due.saturating_sub(now_ms()) < after)
        {
            return false;
        }
        let mut state = self.slot.lock();
        let Some(live) = &state.live else {
            return true;
        };
        if live.work.strong_count() > 1
            || live.control.strong_count() > 1
            || !self.work.is_empty()
            || !self.control.is_empty()
        {
            return false;
        }
        state.live = None;
        true
    }

    /// Stops the instance, persists the timers and hands the next due
    /// time to the scheduler.
    async fn hibernate(mut self) {
        if let Some(mut instance) = self.instance.take()
            && instance.is_usable()
        {
            let _ = instance.stop().await;
        }
        self.persist_timers();
        self.hibernations += 1;
        Metrics::bump(&self.runtime.metrics.hibernations);
        let due = self.next_due_ms();
        self.publish_phase(Phase::Hibernating);
        if let Some(due) = due {
            self.runtime.scheduler.schedule(&self.slot, due);
        }
        tracing::debug!(login = %self.key, ?due, "login hibernating");
    }

    async fn fire_timer(&mut self) {
        let due = self
            .timers
            .lock()
            .expect("timer table poisoned")
            .take_due(now_ms());
        let Some((name, due_ms)) = due else { return };
        self.runtime
            .metrics
            .timer_fired(now_ms().saturating_sub(due_ms));
        let Some(instance) = self.instance.as_mut() else {
            return;
        };
        let outcome = instance.on_timer(&name).await;
        self.after_call(outcome.map(|r| r.map_err(plugin_error)))
            .await;
    }

    /// Fires timer `name` (or the one due first) now: see
    /// [`LoginHandle::fire_timer`].
    async fn fire_timer_now(&mut self, name: Option<String>) -> Result<Option<String>, WorkError> {
        if self.paused {
            return Err(WorkError::Unavailable(
                "the login's timers are paused until its user logs in again".into(),
            ));
        }
        let taken = {
            let mut timers = self.timers.lock().expect("timer table poisoned");
            match name {
                Some(name) => timers.take_named(&name, now_ms()).map(|()| name),
                None => timers.take_first(now_ms()),
            }
        };
        let Some(name) = taken else { return Ok(None) };
        let Some(instance) = self.instance.as_mut() else {
            return Err(WorkError::Unavailable("no instance is running".into()));
        };
        let outcome = instance.on_timer(&name).await;
        let (status, result) = split(outcome);
        self.after_call(status).await;
        result.map(|()| Some(name))
    }

    /// Creates and starts an instance of the current plugin version.
    async fn start_instance(&mut self) {
        match self.new_instance(self.plugin.clone()).await {
            Ok(mut instance) => {
                self.instances_started += 1;
                self.waiting = false;
                let outcome = instance.start().await;
                self.instance = Some(instance);
                self.after_call(outcome.map(|r| r.map_err(plugin_error)))
                    .await;
            }
            Err(error) => self.crashed(error).await,
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
        let runtime = self.runtime.clone();
        let timers = self.timers.clone();
        async move {
            let ctx = InstanceContext::new(plugin.clone(), role, runtime.clone(), Some(timers))
                .map_err(|e| CallError::Resources(format!("the host's storage failed: {e}")))?;
            Metrics::bump(&runtime.metrics.instances_created);
            Instance::new(plugin, ctx, Permits::Own).await
        }
    }

    /// Persists what the call changed and handles how it ended.
    async fn after_call(&mut self, outcome: Result<Result<(), PluginError>, CallError>) {
        Metrics::bump(&self.runtime.metrics.calls);
        self.persist_timers();
        if let Some(instance) = self.instance.as_mut() {
            let signals = std::mem::take(&mut instance.state_mut().ctx.signals);
            // Events queued during the call become durable before anyone
            // acts on the call's result (see `matrix.queue-event`).
            if signals.queued_events
                && let Err(error) = self.runtime.flush().await
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
                    self.report_state(StateKind::BadCredentials, "bad-credentials", &message);
                }
            }
            // A plugin without an optional export (history, reactions...)
            // is not failing: the host asked, the plugin said it cannot.
            Ok(Err(error @ PluginError::Unsupported(_))) => {
                self.healthy();
                tracing::debug!(login = %self.key, %error, "the plugin does not support this");
            }
            Ok(Err(error)) => {
                self.healthy();
                if let Some(suppressed) = self.error_log.admit(Instant::now()) {
                    tracing::warn!(login = %self.key, %error, suppressed, "plugin reported an error");
                } else {
                    tracing::debug!(login = %self.key, %error, "plugin reported an error");
                }
            }
            Err(error) => self.crashed(error).await,
        }
        // Callers waiting on the reply see the status it left.
        self.publish();
    }

    fn healthy(&mut self) {
        let healthy_after = Duration::from_millis(self.runtime.config.healthy_after_ms);
        if self.strikes > 0 && self.last_trap.is_some_and(|t| t.elapsed() >= healthy_after) {
            self.strikes = 0;
            self.backoff = None;
        }
    }

    fn next_backoff(&mut self) -> Duration {
        let config = &self.runtime.config;
        let backoff = self.backoff.get_or_insert_with(|| {
            backon::ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(config.restart_backoff_ms))
                .with_max_delay(Duration::from_millis(config.max_restart_backoff_ms))
                .with_factor(2.0)
                .without_max_times()
                .build()
        });
        backoff
            .next()
            .unwrap_or(Duration::from_millis(config.max_restart_backoff_ms))
    }

    /// The instance is gone (or could not be made): restart it after a
    /// backoff, or stop for good if it keeps crashing.
    async fn crashed(&mut self, error: CallError) {
        self.instance = None;
        if error.is_resources() {
            // Not the plugin's fault: no strike, no crash loop; wait for
            // room and say why once.
            let delay = self.next_backoff();
            if !self.waiting {
                tracing::warn!(login = %self.key, %error, "no room for the login's instance; waiting");
                self.report_state(StateKind::UnknownError, "host-no-room", &error.to_string());
            }
            self.waiting = true;
            self.last_error = Some(error.to_string());
            self.restart_at = Some(tokio::time::Instant::now() + delay);
            return;
        }
        Metrics::bump(&self.runtime.metrics.traps);
        let error = error.to_string();
        self.strikes += 1;
        self.last_trap = Some(Instant::now());
        self.last_error = Some(error.clone());
        if self.strikes > self.runtime.config.max_restarts {
            let message = format!(
                "stopped after {} failures in a row; the last: {error}. Upgrade the plugin, or restart the login (`weft login restart`) once the cause is fixed.",
                self.strikes
            );
            tracing::error!(login = %self.key, %message, "login in a crash loop");
            self.report_state(StateKind::UnknownError, "plugin-crash-loop", &message);
            self.failed = Some(message);
            self.restart_at = None;
            return;
        }
        let backoff = self.next_backoff();
        self.runtime.metrics.plugin(&self.key.plugin).restart();
        tracing::warn!(login = %self.key, %error, strikes = self.strikes, backoff_ms = backoff.as_millis() as u64, "instance failed; restarting");
        self.restart_at = Some(tokio::time::Instant::now() + backoff);
    }

    /// Records a state the runtime decided on (not the plugin).
    fn report_state(&self, state: StateKind, code: &str, message: &str) {
        let report = StateReport {
            state,
            error_code: Some(code.to_owned()),
            message: Some(message.to_owned()),
        };
        if let Err(error) = self.runtime.host.report_state(&self.key, report) {
            tracing::error!(login = %self.key, %error, "failed to record the login's state");
        }
    }

    fn persist_timers(&self) {
        let mut table = self.timers.lock().expect("timer table poisoned");
        if table.dirty {
            if let Err(error) = self
                .runtime
                .timers
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
            work.refuse(WorkError::Unavailable(reason.clone()));
            return;
        }
        if let Work::FireTimer { name, reply } = work {
            let result = self.fire_timer_now(name).await;
            let _ = reply.send(result);
            return;
        }
        let Some(instance) = self.instance.as_mut() else {
            work.refuse(WorkError::Unavailable("no instance is running".into()));
            return;
        };
        instance.state_mut().ctx.counters.event_in();
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
                let outcome = instance.handle_matrix_message(&message.into()).await;
                if let (Ok(Ok(remote_id)), Some(hook)) = (&outcome, hook) {
                    hook(remote_id);
                }
                let (status, result) = split(outcome);
                self.after_call(status).await;
                let _ = reply.send(result);
            }
            Work::Media(media, hook, reply) => {
                let outcome = instance.handle_matrix_media(&media.into()).await;
                if let (Ok(Ok(remote_id)), Some(hook)) = (&outcome, hook) {
                    hook(remote_id);
                }
                let (status, result) = split(unsupported_if_missing(outcome));
                self.after_call(status).await;
                let _ = reply.send(result);
            }
            Work::ReadReceipt { chat, up_to, reply } => {
                let outcome = instance.handle_matrix_read_receipt(&chat, &up_to).await;
                let (status, result) = split(unsupported_if_missing(outcome));
                self.after_call(status).await;
                let _ = reply.send(result);
            }
            Work::Typing {
                chat,
                typing,
                reply,
            } => {
                let outcome = instance.handle_matrix_typing(&chat, typing).await;
                let (status, result) = split(unsupported_if_missing(outcome));
                self.after_call(status).await;
                let _ = reply.send(result);
            }
            Work::History { chat, limit, reply } => {
                let outcome = instance
                    .fetch_history(&chat, limit)
                    .await
                    .map(|r| r.map(|items| items.into_iter().map(Into::into).collect()));
                let (status, result) = split(unsupported_if_missing(outcome));
                self.after_call(status).await;
                let _ = reply.send(result);
            }
            Work::Edit(edit, reply) => answer!(instance.handle_matrix_edit(&edit.into()), reply),
            Work::Reaction(reaction, reply) => {
                answer!(instance.handle_matrix_reaction(&reaction.into()), reply)
            }
            Work::ReactionRemoval {
                chat,
                message,
                reaction,
                reply,
            } => answer!(
                instance.handle_matrix_reaction_removal(&chat, &message, &reaction),
                reply
            ),
            Work::Redaction {
                chat,
                message,
                reply,
            } => answer!(instance.handle_matrix_redaction(&chat, &message), reply),
            Work::FireTimer { .. } => unreachable!("answered above"),
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
                self.backoff = None;
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
                        Ok(Err(error)) => Err(WorkError::Plugin(plugin_error(error))),
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
                self.plugin = plugin.clone();
                self.slot.set_plugin(plugin);
                self.instance = Some(fresh);
                self.instances_started += 1;
                self.failed = None;
                self.strikes = 0;
                self.backoff = None;
                self.restart_at = None;
                self.after_call(Ok(outcome.map_err(plugin_error))).await;
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

/// A connector built against 0.1.0 lacks the exports 0.1.1 added: that is
/// an ordinary "unsupported", not a failure of the instance.
fn unsupported_if_missing<T>(
    outcome: Result<Result<T, crate::bindings::imports::types::PluginError>, CallError>,
) -> Result<Result<T, crate::bindings::imports::types::PluginError>, CallError> {
    match outcome {
        Err(CallError::WrongRole { function, .. }) => Ok(Err(
            crate::bindings::imports::types::PluginError::Unsupported(format!(
                "this connector has no `{function}` (built against an older weft:plugin)"
            )),
        )),
        other => other,
    }
}

/// Splits a work outcome into what the actor needs (did it crash, did the
/// plugin report bad credentials) and what the caller gets.
fn split<T>(
    outcome: Result<Result<T, crate::bindings::imports::types::PluginError>, CallError>,
) -> (
    Result<Result<(), PluginError>, CallError>,
    Result<T, WorkError>,
) {
    match outcome {
        Ok(Ok(value)) => (Ok(Ok(())), Ok(value)),
        Ok(Err(error)) => {
            let error = plugin_error(error);
            (Ok(Err(error.clone())), Err(WorkError::Plugin(error)))
        }
        Err(error) => (Err(error.clone()), Err(WorkError::Call(error))),
    }
}

pub(crate) async fn sleep_until(when: Option<tokio::time::Instant>) {
    match when {
        Some(when) => tokio::time::sleep_until(when).await,
        None => std::future::pending().await,
    }
}

/// Rate-limits the warnings about one login's plugin errors: a plugin that
/// fails on every poll is visible in the log without flooding it.
#[derive(Default)]
struct ErrorLog {
    last: Option<Instant>,
    suppressed: u32,
}

impl ErrorLog {
    const EVERY: Duration = Duration::from_secs(60);

    /// Whether to log an error now; if so, how many were left out since
    /// the last one logged.
    fn admit(&mut self, now: Instant) -> Option<u32> {
        match self.last {
            Some(last) if now.duration_since(last) < Self::EVERY => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod error_log_tests {
    use super::*;

    #[test]
    fn plugin_errors_are_logged_once_a_minute_with_a_count_of_the_rest() {
        let mut log = ErrorLog::default();
        let start = Instant::now();
        assert_eq!(log.admit(start), Some(0));
        assert_eq!(log.admit(start + Duration::from_secs(1)), None);
        assert_eq!(log.admit(start + Duration::from_secs(30)), None);
        assert_eq!(log.admit(start + Duration::from_secs(61)), Some(2));
        assert_eq!(log.admit(start + Duration::from_secs(62)), None);
    }
}
