//! One instance of a plugin in its own `Store`, and calls into it under a
//! deadline.
//!
//! Every call holds a permit of the host-wide call semaphore, sets the
//! store's deadline (the epoch callback traps the guest once it passes, and
//! yields to other tasks every tick before that), and runs inside a tokio
//! timeout for the case epochs cannot catch: a guest blocked in a host
//! call. After a trap or timeout the store is unusable; the instance says
//! so and its owner discards it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Store, UpdateDeadline};

use super::bindings::imports::types::PluginError;
use super::bindings::{connector, credential_provider, login_provider};
use super::plugin::{LoadedPlugin, PluginPre};
use super::state::{InstanceContext, MemoryCapExceeded, PluginState};

/// How much longer than the deadline the tokio timeout waits: the epoch
/// trap, which leaves a clean error, should normally come first.
const TIMEOUT_GRACE: Duration = Duration::from_millis(500);

/// Why a call into a plugin did not return normally. Unlike a
/// [`PluginError`], each of these means the instance is gone.
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
    /// The instance was already unusable after an earlier failure.
    #[error("the instance is unusable after an earlier failure")]
    Poisoned,
    /// The plugin's role has no such export.
    #[error("a {world} plugin has no `{function}`")]
    WrongRole {
        /// The plugin's world.
        world: &'static str,
        /// The export that was called.
        function: &'static str,
    },
}

/// The epoch callback's error: the call's deadline passed.
#[derive(Debug, thiserror::Error)]
#[error("deadline exceeded")]
struct DeadlineExceeded;

/// A plugin's exports, by role.
enum Bindings {
    Connector(connector::Connector),
    LoginProvider(login_provider::LoginProvider),
    CredentialProvider(credential_provider::CredentialProvider),
}

/// A live instance.
pub struct Instance {
    store: Store<PluginState>,
    bindings: Bindings,
    plugin: Arc<LoadedPlugin>,
    poisoned: bool,
    /// A tighter deadline for the next calls than the plugin's own (for a
    /// provider called from inside another plugin's call).
    deadline_cap: Option<Instant>,
}

impl Instance {
    /// Instantiates `plugin` in a new store for `ctx`.
    pub async fn new(plugin: Arc<LoadedPlugin>, ctx: InstanceContext) -> Result<Self, CallError> {
        let runtime = ctx.services.runtime.clone();
        let mut store = Store::new(runtime.engine(), PluginState::new(ctx));
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
        let _permit = runtime.call_permits().clone().acquire_owned().await;
        let bindings = match &plugin.pre {
            PluginPre::Connector(pre) => {
                let outcome = tokio::time::timeout(
                    deadline + TIMEOUT_GRACE,
                    pre.instantiate_async(&mut store),
                )
                .await;
                finish(&store, deadline, outcome).map(Bindings::Connector)
            }
            PluginPre::LoginProvider(pre) => {
                let outcome = tokio::time::timeout(
                    deadline + TIMEOUT_GRACE,
                    pre.instantiate_async(&mut store),
                )
                .await;
                finish(&store, deadline, outcome).map(Bindings::LoginProvider)
            }
            PluginPre::CredentialProvider(pre) => {
                let outcome = tokio::time::timeout(
                    deadline + TIMEOUT_GRACE,
                    pre.instantiate_async(&mut store),
                )
                .await;
                finish(&store, deadline, outcome).map(Bindings::CredentialProvider)
            }
        }?;
        Ok(Self {
            store,
            bindings,
            plugin,
            poisoned: false,
            deadline_cap: None,
        })
    }

    /// The plugin version this instance runs.
    pub fn plugin(&self) -> &Arc<LoadedPlugin> {
        &self.plugin
    }

    /// Whether the instance can take calls.
    pub fn is_usable(&self) -> bool {
        !self.poisoned
    }

    /// The store's data, e.g. to read the signals the last call raised.
    pub fn state(&self) -> &PluginState {
        self.store.data()
    }

    /// The store's data, mutably.
    pub fn state_mut(&mut self) -> &mut PluginState {
        self.store.data_mut()
    }

    /// Bytes of linear memory the instance uses.
    pub fn memory_used(&self) -> u64 {
        self.store.data().limiter.used()
    }

    /// Caps the deadline of the following calls at `cap`.
    pub fn cap_deadline(&mut self, cap: Option<Instant>) {
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
        self.store.set_epoch_deadline(1);
        Ok(deadline)
    }

    fn end<T>(
        &mut self,
        deadline: Duration,
        outcome: Result<wasmtime::Result<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, CallError> {
        let result = finish(&self.store, deadline, outcome);
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }

    fn wrong_role(&self, function: &'static str) -> CallError {
        CallError::WrongRole {
            world: self.plugin.manifest.world.wit_name(),
            function,
        }
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
            } else if store.data().limiter.exceeded {
                Err(CallError::MemoryCap(format!(
                    "the plugin ran out of memory under its cap: {error:#}"
                )))
            } else if let Some(panic) = &store.data().ctx.last_panic {
                tracing::debug!(error = format!("{error:#}"), "guest panic");
                // The hook's message starts "panicked at <file:line>".
                Err(CallError::Trap(panic.clone()))
            } else {
                Err(CallError::Trap(format!("{error:#}")))
            }
        }
    }
}

/// Generates a call method: acquire a permit, begin, run the export under
/// the timeout, end.
macro_rules! guest_call {
    ($(#[$doc:meta])* $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty, $role:ident, $iface:ident, $call:ident) => {
        $(#[$doc])*
        pub async fn $name(&mut self, $($arg: $ty),*) -> Result<$ret, CallError> {
            let runtime = self.store.data().ctx().services.runtime.clone();
            let _permit = runtime.call_permits().clone().acquire_owned().await;
            let deadline = self.begin()?;
            let Bindings::$role(bindings) = &self.bindings else {
                return Err(self.wrong_role(stringify!($call)));
            };
            let call = bindings.$iface().$call(&mut self.store, $($arg),*);
            let outcome = tokio::time::timeout(deadline + TIMEOUT_GRACE, call).await;
            self.end(deadline, outcome)
        }
    };
}

use connector::exports::weft::plugin::login_flow as connector_login;
use connector::exports::weft::plugin::network_api as net;
use credential_provider::exports::weft::plugin::credentials as creds;
use login_provider::exports::weft::plugin::login_flow as provider_login;
use login_provider::exports::weft::plugin::tokens as provider_tokens;

impl Instance {
    guest_call!(
        /// `network-api.start`
        start() -> Result<(), PluginError>, Connector, weft_plugin_network_api, call_start);
    guest_call!(
        /// `network-api.stop`
        stop() -> (), Connector, weft_plugin_network_api, call_stop);
    guest_call!(
        /// `network-api.on-timer`
        on_timer(name: &str) -> Result<(), PluginError>, Connector, weft_plugin_network_api, call_on_timer);
    guest_call!(
        /// `network-api.handle-matrix-message`
        handle_matrix_message(message: &net::MatrixMessage) -> Result<String, PluginError>, Connector, weft_plugin_network_api, call_handle_matrix_message);
    guest_call!(
        /// `network-api.handle-matrix-edit`
        handle_matrix_edit(edit: &net::MatrixEdit) -> Result<(), PluginError>, Connector, weft_plugin_network_api, call_handle_matrix_edit);
    guest_call!(
        /// `network-api.handle-matrix-reaction`
        handle_matrix_reaction(reaction: &net::MatrixReaction) -> Result<String, PluginError>, Connector, weft_plugin_network_api, call_handle_matrix_reaction);
    guest_call!(
        /// `network-api.handle-matrix-reaction-removal`
        handle_matrix_reaction_removal(chat_id: &str, message_id: &str, reaction_id: &str) -> Result<(), PluginError>, Connector, weft_plugin_network_api, call_handle_matrix_reaction_removal);
    guest_call!(
        /// `network-api.handle-matrix-redaction`
        handle_matrix_redaction(chat_id: &str, message_id: &str) -> Result<(), PluginError>, Connector, weft_plugin_network_api, call_handle_matrix_redaction);
    guest_call!(
        /// `network-api.logout`
        logout() -> Result<(), PluginError>, Connector, weft_plugin_network_api, call_logout);
    guest_call!(
        /// `login-flow.start` of a connector
        connector_login_start(flow_id: &str, relogin: Option<&str>) -> Result<connector_login::LoginStep, PluginError>, Connector, weft_plugin_login_flow, call_start);
    guest_call!(
        /// `login-flow.submit` of a connector
        connector_login_submit(step_id: &str, input: &connector_login::StepInput) -> Result<connector_login::LoginStep, PluginError>, Connector, weft_plugin_login_flow, call_submit);
    guest_call!(
        /// `login-flow.cancel` of a connector
        connector_login_cancel() -> (), Connector, weft_plugin_login_flow, call_cancel);
    guest_call!(
        /// `login-flow.start` of a login provider
        provider_login_start(flow_id: &str, relogin: Option<&str>) -> Result<provider_login::LoginStep, PluginError>, LoginProvider, weft_plugin_login_flow, call_start);
    guest_call!(
        /// `login-flow.submit` of a login provider
        provider_login_submit(step_id: &str, input: &provider_login::StepInput) -> Result<provider_login::LoginStep, PluginError>, LoginProvider, weft_plugin_login_flow, call_submit);
    guest_call!(
        /// `login-flow.cancel` of a login provider
        provider_login_cancel() -> (), LoginProvider, weft_plugin_login_flow, call_cancel);
    guest_call!(
        /// `tokens.from-captured` of a login provider
        tokens_from_captured(material: &str, scopes: &[String]) -> Result<provider_tokens::TokenSet, provider_tokens::TokenError>, LoginProvider, weft_plugin_tokens, call_from_captured);
    guest_call!(
        /// `tokens.refresh` of a login provider
        tokens_refresh(refresh_token: &str, scopes: &[String]) -> Result<provider_tokens::TokenSet, provider_tokens::TokenError>, LoginProvider, weft_plugin_tokens, call_refresh);
    guest_call!(
        /// `credentials.issue` of a credential provider
        issue_credential(request: &creds::CredentialRequest) -> Result<creds::Credential, PluginError>, CredentialProvider, weft_plugin_credentials, call_issue);
}
