//! One instance of a plugin in its own `Store`, and calls into it under a
//! deadline.
//!
//! Every call holds a permit of the host-wide call semaphore (unless it
//! runs on behalf of a caller that holds one: a login provider serving a
//! connector's call), sets the store's deadline (the epoch callback traps
//! the guest once it passes, and yields to other tasks every tick before
//! that), and runs inside a tokio timeout for the case epochs cannot
//! catch: a guest blocked in a host call. After a trap or timeout the
//! store is unusable; the instance says so and its owner discards it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Store, UpdateDeadline};

use crate::bindings::{
    backfill, credentials, http_handler, imports::types, login_flow, media_handler, network_api,
    provider_login, receipt_handler, token_exports,
};
use crate::connector::PluginError;
use crate::plugin::LoadedPlugin;
use crate::state::{InstanceContext, MemoryCapExceeded, PluginState};

/// How much longer than the deadline the tokio timeout waits: the epoch
/// trap, which leaves a clean error, should normally come first.
const TIMEOUT_GRACE: Duration = Duration::from_millis(500);

/// Why a call into a plugin did not return normally. Unlike a
/// [`PluginError`], each of these means the instance is gone (or never
/// was).
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The guest trapped (a panic, an `unreachable`, a bad memory access).
    #[error("the plugin trapped: {0}")]
    Trap(String),
    /// The guest ran past its deadline and was interrupted.
    #[error("the plugin ran past its {}-millisecond deadline and was stopped", .0.as_millis())]
    Deadline(Duration),
    /// The guest tried to grow past its memory cap.
    #[error("{0}")]
    MemoryCap(String),
    /// The host had no room for the instance: the pool of instances is
    /// full, or the kernel refused memory or mappings. Not the plugin's
    /// fault; the message names the limit.
    #[error("no room for another instance: {0}")]
    Resources(String),
    /// The instance was already unusable after an earlier failure.
    #[error("the instance is unusable after an earlier failure")]
    Poisoned,
    /// The plugin has no such export.
    #[error("a {world} plugin has no `{function}`")]
    WrongRole {
        /// The plugin's world.
        world: &'static str,
        /// The export that was called.
        function: &'static str,
    },
}

impl CallError {
    /// Whether the failure is the host's (no room), not the plugin's.
    pub fn is_resources(&self) -> bool {
        matches!(self, Self::Resources(_))
    }
}

/// The epoch callback's error: the call's deadline passed.
#[derive(Debug, thiserror::Error)]
#[error("deadline exceeded")]
struct DeadlineExceeded;

/// Whether an instance's calls take a permit of the host-wide limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Permits {
    /// Each call takes one.
    Own,
    /// The calls run on behalf of a caller that holds one already (a
    /// login provider serving a connector's call); taking a second permit
    /// from the same semaphore could deadlock.
    Borrowed,
}

/// The exports of one instance that its plugin has.
#[derive(Default)]
struct Guests {
    network_api: Option<network_api::Guest>,
    login_flow: Option<login_flow::Guest>,
    tokens: Option<token_exports::Guest>,
    credentials: Option<credentials::Guest>,
    media_handler: Option<media_handler::Guest>,
    receipt_handler: Option<receipt_handler::Guest>,
    backfill: Option<backfill::Guest>,
    provider_login: Option<provider_login::Guest>,
    http_handler: Option<http_handler::Guest>,
}

/// A live instance.
pub(crate) struct Instance {
    store: Store<PluginState>,
    guests: Guests,
    plugin: Arc<LoadedPlugin>,
    permits: Permits,
    poisoned: bool,
    /// A tighter deadline for the next calls than the plugin's own (for a
    /// provider called on behalf of another plugin's call).
    deadline_cap: Option<Instant>,
}

impl Instance {
    /// Instantiates `plugin` in a new store for `ctx`.
    pub(crate) async fn new(
        plugin: Arc<LoadedPlugin>,
        ctx: InstanceContext,
        permits: Permits,
    ) -> Result<Self, CallError> {
        let runtime = ctx.runtime.clone();
        let mut store = Store::new(runtime.engine.engine(), PluginState::new(ctx));
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_callback(|store| {
            if Instant::now() >= store.data().deadline {
                Err(DeadlineExceeded.into())
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        let deadline = plugin.capabilities.call_deadline;
        store.data_mut().deadline = Instant::now() + deadline;
        store.set_epoch_deadline(1);
        let _permit = match permits {
            Permits::Own => Some(runtime.engine.call_permits().clone().acquire_owned().await),
            Permits::Borrowed => None,
        };
        let linked = &plugin.linked;
        let outcome = tokio::time::timeout(
            deadline + TIMEOUT_GRACE,
            linked.pre.instantiate_async(&mut store),
        )
        .await;
        let instance = finish(&store, deadline, outcome)?;
        let guests = linked
            .load_guests(&mut store, &instance)
            .map_err(|e| CallError::Trap(format!("the plugin's exports do not load: {e:#}")))?;
        store.data().ctx.counters.instance_created();
        Ok(Self {
            store,
            guests,
            plugin,
            permits,
            poisoned: false,
            deadline_cap: None,
        })
    }

    /// The plugin version this instance runs.
    pub(crate) fn plugin(&self) -> &Arc<LoadedPlugin> {
        &self.plugin
    }

    /// Whether the instance can take calls.
    pub(crate) fn is_usable(&self) -> bool {
        !self.poisoned
    }

    /// The store's data, mutably, e.g. to take the signals the last call
    /// raised.
    pub(crate) fn state_mut(&mut self) -> &mut PluginState {
        self.store.data_mut()
    }

    /// Bytes of linear memory the instance uses.
    pub(crate) fn memory_used(&self) -> u64 {
        self.store.data().limiter.used()
    }

    /// Caps the deadline of the following calls at `cap`.
    pub(crate) fn cap_deadline(&mut self, cap: Option<Instant>) {
        self.deadline_cap = cap;
    }

    /// Prepares a call: checks the instance, sets the deadline.
    fn begin(&mut self) -> Result<Duration, CallError> {
        if self.poisoned {
            return Err(CallError::Poisoned);
        }
        let mut deadline = self.plugin.capabilities.call_deadline;
        if let Some(cap) = self.deadline_cap {
            deadline = deadline.min(cap.saturating_duration_since(Instant::now()));
        }
        self.store.data_mut().deadline = Instant::now() + deadline;
        self.store.data_mut().budget = crate::state::CallBudget::default();
        self.store.set_epoch_deadline(1);
        Ok(deadline)
    }

    fn end<T>(
        &mut self,
        deadline: Duration,
        started: Instant,
        outcome: Result<wasmtime::Result<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, CallError> {
        let result = finish(&self.store, deadline, outcome);
        if result.is_err() {
            self.poisoned = true;
        }
        self.store
            .data()
            .ctx
            .counters
            .call(started.elapsed(), result.is_err());
        result
    }

    fn wrong_role(&self, function: &'static str) -> CallError {
        CallError::WrongRole {
            world: self.plugin.manifest.world.wit_name(),
            function,
        }
    }

    /// The semaphore the next call takes a permit of, if it takes one.
    /// (Returned rather than awaited here: `&self` must not be held
    /// across an await, as the store is not `Sync`.)
    fn permits(&self) -> Option<Arc<tokio::sync::Semaphore>> {
        match self.permits {
            Permits::Own => Some(self.store.data().ctx.runtime.engine.call_permits().clone()),
            Permits::Borrowed => None,
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.store.data().ctx.counters.instance_dropped();
    }
}

/// Sorts the outcome of a guest call.
fn finish<T>(
    store: &Store<PluginState>,
    deadline: Duration,
    outcome: Result<wasmtime::Result<T>, tokio::time::error::Elapsed>,
) -> Result<T, CallError> {
    match outcome {
        Ok(Ok(value)) => Ok(value),
        Err(_) => Err(CallError::Deadline(deadline)),
        Ok(Err(error)) => {
            if error.downcast_ref::<DeadlineExceeded>().is_some() {
                Err(CallError::Deadline(deadline))
            } else if let Some(cap) = error.downcast_ref::<MemoryCapExceeded>() {
                Err(CallError::MemoryCap(cap.to_string()))
            } else if let Some(limit) = error.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
            {
                Err(CallError::Resources(format!(
                    "{limit}; raise [runtime] max-instances, or let idle logins hibernate"
                )))
            } else if let Some(io) = out_of_memory(&error) {
                Err(CallError::Resources(io))
            } else if store.data().limiter.exceeded {
                Err(CallError::MemoryCap(format!(
                    "the plugin ran out of memory under its cap: {error:#}"
                )))
            } else if let Some(panic) = &store.data().ctx.last_panic {
                tracing::debug!(error = format!("{error:#}"), "guest panic");
                Err(CallError::Trap(panic.clone()))
            } else {
                Err(CallError::Trap(format!("{error:#}")))
            }
        }
    }
}

/// Names the limit when the kernel refused memory or a mapping.
fn out_of_memory(error: &wasmtime::Error) -> Option<String> {
    let io = error
        .chain()
        .find_map(|cause| cause.downcast_ref::<std::io::Error>())?;
    if io.kind() != std::io::ErrorKind::OutOfMemory && io.raw_os_error() != Some(12) {
        return None;
    }
    let max_maps = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .map(|s| s.trim().to_owned());
    let maps = std::fs::read_to_string("/proc/self/maps")
        .map(|s| s.lines().count())
        .ok();
    Some(match (maps, max_maps) {
        (Some(maps), Some(max)) => format!(
            "the kernel refused memory for it ({io}); the process has {maps} memory mappings of vm.max_map_count = {max}"
        ),
        _ => format!("the kernel refused memory for it ({io})"),
    })
}

/// Generates a call method: a permit, the deadline, the export under the
/// timeout, and the sorting of its outcome.
macro_rules! guest_call {
    ($(#[$doc:meta])* $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty, $guest:ident, $call:ident) => {
        $(#[$doc])*
        pub(crate) async fn $name(&mut self, $($arg: $ty),*) -> Result<$ret, CallError> {
            let _permit = match self.permits() {
                Some(permits) => permits.acquire_owned().await.ok(),
                None => None,
            };
            let deadline = self.begin()?;
            let Some(guest) = self.guests.$guest.as_ref() else {
                return Err(self.wrong_role(stringify!($call)));
            };
            let started = Instant::now();
            let call = guest.$call(&mut self.store, $($arg),*);
            let outcome = tokio::time::timeout(deadline + TIMEOUT_GRACE, call).await;
            self.end(deadline, started, outcome)
        }
    };
}

impl Instance {
    guest_call!(
        /// `network-api.start`
        start() -> Result<(), types::PluginError>, network_api, call_start);
    guest_call!(
        /// `network-api.stop`
        stop() -> (), network_api, call_stop);
    guest_call!(
        /// `network-api.on-timer`
        on_timer(name: &str) -> Result<(), types::PluginError>, network_api, call_on_timer);
    guest_call!(
        /// `network-api.handle-matrix-message`
        handle_matrix_message(message: &network_api::MatrixMessage) -> Result<String, types::PluginError>, network_api, call_handle_matrix_message);
    guest_call!(
        /// `network-api.handle-matrix-edit`
        handle_matrix_edit(edit: &network_api::MatrixEdit) -> Result<(), types::PluginError>, network_api, call_handle_matrix_edit);
    guest_call!(
        /// `network-api.handle-matrix-reaction`
        handle_matrix_reaction(reaction: &network_api::MatrixReaction) -> Result<String, types::PluginError>, network_api, call_handle_matrix_reaction);
    guest_call!(
        /// `network-api.handle-matrix-reaction-removal`
        handle_matrix_reaction_removal(chat_id: &str, message_id: &str, reaction_id: &str) -> Result<(), types::PluginError>, network_api, call_handle_matrix_reaction_removal);
    guest_call!(
        /// `network-api.handle-matrix-redaction`
        handle_matrix_redaction(chat_id: &str, message_id: &str) -> Result<(), types::PluginError>, network_api, call_handle_matrix_redaction);
    guest_call!(
        /// `network-api.logout`
        logout() -> Result<(), types::PluginError>, network_api, call_logout);
    guest_call!(
        /// `media-handler.handle-matrix-media` (0.1.1)
        handle_matrix_media(media: &media_handler::MatrixMedia) -> Result<String, types::PluginError>, media_handler, call_handle_matrix_media);
    guest_call!(
        /// `receipt-handler.handle-matrix-read-receipt` (0.1.1)
        handle_matrix_read_receipt(chat_id: &str, up_to: &str) -> Result<(), types::PluginError>, receipt_handler, call_handle_matrix_read_receipt);
    guest_call!(
        /// `receipt-handler.handle-matrix-typing` (0.1.1)
        handle_matrix_typing(chat_id: &str, typing: bool) -> Result<(), types::PluginError>, receipt_handler, call_handle_matrix_typing);
    guest_call!(
        /// `backfill.fetch-history` (0.1.1)
        fetch_history(chat_id: &str, limit: u32) -> Result<Vec<backfill::HistoryItem>, types::PluginError>, backfill, call_fetch_history);
    guest_call!(
        /// `provider-login.finish` (0.1.2)
        provider_login_finish(flow_id: &str, grant: &provider_login::ProviderGrant, relogin: Option<&str>) -> Result<provider_login::Completion, types::PluginError>, provider_login, call_finish);
    guest_call!(
        /// `login-flow.start`, of a connector or a login provider
        login_start(flow_id: &str, relogin: Option<&str>) -> Result<login_flow::LoginStep, types::PluginError>, login_flow, call_start);
    guest_call!(
        /// `login-flow.submit`
        login_submit(step_id: &str, input: &login_flow::StepInput) -> Result<login_flow::LoginStep, types::PluginError>, login_flow, call_submit);
    guest_call!(
        /// `login-flow.cancel`
        login_cancel() -> (), login_flow, call_cancel);
    guest_call!(
        /// `tokens.from-captured` of a login provider
        tokens_from_captured(material: &str, scopes: &[String]) -> Result<token_exports::TokenSet, token_exports::TokenError>, tokens, call_from_captured);
    guest_call!(
        /// `tokens.refresh` of a login provider
        tokens_refresh(refresh_token: &str, scopes: &[String]) -> Result<token_exports::TokenSet, token_exports::TokenError>, tokens, call_refresh);
    guest_call!(
        /// `credentials.issue` of a credential provider
        issue_credential(request: &credentials::CredentialRequest) -> Result<credentials::Credential, types::PluginError>, credentials, call_issue);
    guest_call!(
        /// `http-handler.handle` (0.1.3)
        handle_http(request: &http_handler::IncomingRequest) -> Result<http_handler::OutgoingResponse, types::PluginError>, http_handler, call_handle);
}

/// Converts a WIT plugin error to the runtime's.
pub(crate) fn plugin_error(error: types::PluginError) -> PluginError {
    match error {
        types::PluginError::InvalidInput(m) => PluginError::InvalidInput(m),
        types::PluginError::BadCredentials(m) => PluginError::BadCredentials(m),
        types::PluginError::Transient(m) => PluginError::Transient(m),
        types::PluginError::Unsupported(m) => PluginError::Unsupported(m),
        types::PluginError::Internal(m) => PluginError::Internal(m),
    }
}

/// The pre-linked component and where its exports are.
pub(crate) struct Linked {
    pub(crate) pre: wasmtime::component::InstancePre<PluginState>,
    network_api: Option<network_api::GuestIndices>,
    login_flow: Option<login_flow::GuestIndices>,
    tokens: Option<token_exports::GuestIndices>,
    credentials: Option<credentials::GuestIndices>,
    media_handler: Option<media_handler::GuestIndices>,
    receipt_handler: Option<receipt_handler::GuestIndices>,
    backfill: Option<backfill::GuestIndices>,
    provider_login: Option<provider_login::GuestIndices>,
    http_handler: Option<http_handler::GuestIndices>,
}

impl Linked {
    /// Finds the exports of `pre` once, so each instance loads them by
    /// index. An export the component lacks stays `None`.
    pub(crate) fn new(pre: wasmtime::component::InstancePre<PluginState>) -> Self {
        Self {
            network_api: network_api::GuestIndices::new(&pre).ok(),
            login_flow: login_flow::GuestIndices::new(&pre).ok(),
            tokens: token_exports::GuestIndices::new(&pre).ok(),
            credentials: credentials::GuestIndices::new(&pre).ok(),
            media_handler: media_handler::GuestIndices::new(&pre).ok(),
            receipt_handler: receipt_handler::GuestIndices::new(&pre).ok(),
            backfill: backfill::GuestIndices::new(&pre).ok(),
            provider_login: provider_login::GuestIndices::new(&pre).ok(),
            http_handler: http_handler::GuestIndices::new(&pre).ok(),
            pre,
        }
    }

    /// Whether the component exports interface `name` with every
    /// function this host knows.
    pub(crate) fn exports(&self, name: &str) -> bool {
        match name {
            "network-api" => self.network_api.is_some(),
            "login-flow" => self.login_flow.is_some(),
            "tokens" => self.tokens.is_some(),
            "credentials" => self.credentials.is_some(),
            "media-handler" => self.media_handler.is_some(),
            "receipt-handler" => self.receipt_handler.is_some(),
            "backfill" => self.backfill.is_some(),
            "provider-login" => self.provider_login.is_some(),
            "http-handler" => self.http_handler.is_some(),
            _ => false,
        }
    }

    fn load_guests(
        &self,
        store: &mut Store<PluginState>,
        instance: &wasmtime::component::Instance,
    ) -> wasmtime::Result<Guests> {
        Ok(Guests {
            network_api: self
                .network_api
                .as_ref()
                .map(|i| i.load(&mut *store, instance))
                .transpose()?,
            login_flow: self
                .login_flow
                .as_ref()
                .map(|i| i.load(&mut *store, instance))
                .transpose()?,
            tokens: self
                .tokens
                .as_ref()
                .map(|i| i.load(&mut *store, instance))
                .transpose()?,
            credentials: self
                .credentials
                .as_ref()
                .map(|i| i.load(&mut *store, instance))
                .transpose()?,
            media_handler: self
                .media_handler
                .as_ref()
                .map(|i| i.load(&mut *store, instance))
                .transpose()?,
            receipt_handler: self
                .receipt_handler
                .as_ref()
                .map(|i| i.load(&mut *store, instance))
                .transpose()?,
            backfill: self
                .backfill
                .as_ref()
                .map(|i| i.load(&mut *store, instance))
                .transpose()?,
            provider_login: self
                .provider_login
                .as_ref()
                .map(|i| i.load(&mut *store, instance))
                .transpose()?,
            http_handler: self
                .http_handler
                .as_ref()
                .map(|i| i.load(&mut *store, instance))
                .transpose()?,
        })
    }
}
