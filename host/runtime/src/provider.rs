//! Login-provider actors: one per (login, provider) pair, in the registry's
//! table; and, outside it, one per `tokens` call a connector makes in a
//! login process (in the process's namespace, ending with the call).
//!
//! A connector's `tokens` import is a message to the actor of its login
//! provider for the same login. The actor owns the provider's instance
//! (created on the first call, in the login's KV namespace under the
//! provider's id) and serves calls one at a time, so two refreshes of one
//! account never race and a rotated refresh token is never lost.
//!
//! A provider call runs on behalf of the connector's call, which holds a
//! permit of the host-wide call limit: it takes no second permit (with
//! every permit held by connectors waiting on their providers, a second
//! permit would never come), and it ends within what is left of the
//! connector's deadline.
//!
//! The registry owns the actors: it lists them with their login, stops
//! them with it, and upgrades them with their plugin. An actor idle for
//! `hibernate-after-ms` drops its instance and ends; the next call starts
//! a new one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::bindings::imports::tokens::{TokenError, TokenSet};
use crate::bindings::token_exports;
use crate::instance::{Instance, Permits};
use crate::login::LoginKey;
use crate::metrics::Metrics;
use crate::plugin::LoadedPlugin;
use crate::runtime::Runtime;
use crate::state::{InstanceContext, InstanceRole};

/// A `tokens` call.
pub(crate) enum TokenCall {
    FromCaptured {
        material: String,
        scopes: Vec<String>,
    },
    Refresh {
        refresh_token: String,
        scopes: Vec<String>,
    },
}

enum Message {
    Call(
        TokenCall,
        Instant,
        oneshot::Sender<Result<TokenSet, TokenError>>,
    ),
    Upgrade(Arc<LoadedPlugin>, oneshot::Sender<Result<(), String>>),
    Stop(oneshot::Sender<()>),
}

/// Which provider serves which login.
pub(crate) type ProviderKey = (LoginKey, String);

/// A provider actor, as the registry lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderStatus {
    /// The provider plugin.
    pub plugin: String,
    /// Its version.
    pub version: String,
}

/// A handle to a provider actor.
#[derive(Clone)]
pub(crate) struct ProviderHandle {
    mailbox: mpsc::UnboundedSender<Message>,
    plugin: Arc<std::sync::Mutex<Arc<LoadedPlugin>>>,
}

impl ProviderHandle {
    /// Starts the actor of `key` on `plugin`, its instance serving the
    /// login of the key.
    pub(crate) fn spawn(
        key: ProviderKey,
        plugin: Arc<LoadedPlugin>,
        runtime: Arc<Runtime>,
    ) -> Self {
        let role = InstanceRole::Login(key.0.clone());
        Self::spawn_as(key, role, plugin, runtime)
    }

    /// Starts an actor of `plugin` whose instance serves `role`, e.g. a
    /// login process (the caller keeps the only handle; the actor ends
    /// when it is dropped).
    pub(crate) fn spawn_as(
        key: ProviderKey,
        role: InstanceRole,
        plugin: Arc<LoadedPlugin>,
        runtime: Arc<Runtime>,
    ) -> Self {
        let (mailbox, inbox) = mpsc::unbounded_channel();
        let shared = Arc::new(std::sync::Mutex::new(plugin.clone()));
        let handle = Self {
            mailbox,
            plugin: shared.clone(),
        };
        let actor = ProviderActor {
            key,
            role,
            plugin,
            shared,
            runtime,
            instance: None,
            inbox,
        };
        let span = tracing::info_span!("provider", plugin = %actor.plugin.id());
        tokio::spawn(actor.run().instrument(span));
        handle
    }

    /// The actor's status.
    pub(crate) fn status(&self) -> ProviderStatus {
        let plugin = self.plugin.lock().expect("provider lock poisoned");
        ProviderStatus {
            plugin: plugin.id().to_owned(),
            version: plugin.version().to_string(),
        }
    }

    /// Whether the registry's handle is the only one, so the actor may end.
    pub(crate) fn is_unshared(&self) -> bool {
        self.mailbox.strong_count() == 1
    }

    /// Makes `call` before `deadline`.
    pub(crate) async fn call(
        &self,
        call: TokenCall,
        deadline: Instant,
    ) -> Result<TokenSet, TokenError> {
        let (reply, answer) = oneshot::channel();
        if self
            .mailbox
            .send(Message::Call(call, deadline, reply))
            .is_err()
        {
            return Err(TokenError::Unavailable(
                "the token provider has stopped".into(),
            ));
        }
        answer.await.unwrap_or_else(|_| {
            Err(TokenError::Unavailable(
                "the token provider has stopped".into(),
            ))
        })
    }

    /// Moves the actor to `plugin`; fails (changing nothing) if the new
    /// version does not instantiate.
    pub(crate) async fn upgrade(&self, plugin: Arc<LoadedPlugin>) -> Result<(), String> {
        let (reply, answer) = oneshot::channel();
        if self.mailbox.send(Message::Upgrade(plugin, reply)).is_err() {
            return Ok(());
        }
        answer.await.unwrap_or(Ok(()))
    }

    /// Ends the actor.
    pub(crate) async fn stop(&self) {
        let (reply, answer) = oneshot::channel();
        if self.mailbox.send(Message::Stop(reply)).is_ok() {
            let _ = answer.await;
        }
    }
}

struct ProviderActor {
    key: ProviderKey,
    role: InstanceRole,
    plugin: Arc<LoadedPlugin>,
    shared: Arc<std::sync::Mutex<Arc<LoadedPlugin>>>,
    runtime: Arc<Runtime>,
    instance: Option<Instance>,
    inbox: mpsc::UnboundedReceiver<Message>,
}

impl ProviderActor {
    async fn run(mut self) {
        let idle = Duration::from_millis(self.runtime.config.hibernate_after_ms);
        loop {
            let message = tokio::select! {
                message = self.inbox.recv() => message,
                _ = tokio::time::sleep(idle) => {
                    if self.release() {
                        break;
                    }
                    continue;
                }
            };
            match message {
                None => break,
                Some(Message::Call(call, deadline, reply)) => {
                    let result = self.call(call, deadline).await;
                    let _ = reply.send(result);
                }
                Some(Message::Upgrade(plugin, reply)) => {
                    let _ = reply.send(self.upgrade(plugin).await);
                }
                Some(Message::Stop(reply)) => {
                    let _ = reply.send(());
                    break;
                }
            }
        }
        tracing::debug!(login = %self.key.0, provider = %self.key.1, "provider actor ended");
    }

    /// Leaves the registry if nobody holds a handle and nothing waits.
    fn release(&self) -> bool {
        match self.runtime.registry.upgrade() {
            Some(registry) => registry.release_provider(&self.key, self.inbox.is_empty()),
            None => true,
        }
    }

    async fn instance(&mut self, plugin: Arc<LoadedPlugin>) -> Result<Instance, String> {
        let ctx = InstanceContext::new(
            plugin.clone(),
            self.role.clone(),
            self.runtime.clone(),
            None,
        )
        .map_err(|e| format!("the host's storage failed: {e}"))?;
        Metrics::bump(&self.runtime.metrics.instances_created);
        // Instantiation, like the calls, runs for a connector that holds a
        // permit already.
        Instance::new(plugin, ctx, Permits::Borrowed)
            .await
            .map_err(|e| e.to_string())
    }

    async fn call(&mut self, call: TokenCall, deadline: Instant) -> Result<TokenSet, TokenError> {
        let provider = self.key.1.clone();
        if self.instance.as_ref().is_none_or(|i| !i.is_usable()) {
            let instance = self.instance(self.plugin.clone()).await.map_err(|e| {
                TokenError::Unavailable(format!(
                    "the token provider `{provider}` failed to start: {e}"
                ))
            })?;
            self.instance = Some(instance);
        }
        let instance = self.instance.as_mut().expect("just created");
        instance.cap_deadline(Some(deadline));
        Metrics::bump(&self.runtime.metrics.calls);
        let result = match call {
            TokenCall::FromCaptured { material, scopes } => {
                instance.tokens_from_captured(&material, &scopes).await
            }
            TokenCall::Refresh {
                refresh_token,
                scopes,
            } => instance.tokens_refresh(&refresh_token, &scopes).await,
        };
        match result {
            Ok(Ok(set)) => Ok(TokenSet {
                access_token: set.access_token,
                expires_at: set.expires_at,
                refresh_token: set.refresh_token,
                scopes: set.scopes,
                account_id: set.account_id,
            }),
            Ok(Err(error)) => Err(match error {
                token_exports::TokenError::InvalidGrant(m) => TokenError::InvalidGrant(m),
                token_exports::TokenError::Transient(m) => TokenError::Transient(m),
                token_exports::TokenError::InvalidInput(m) => TokenError::InvalidInput(m),
                token_exports::TokenError::Unavailable(m) => TokenError::Unavailable(m),
            }),
            Err(error) => {
                Metrics::bump(&self.runtime.metrics.traps);
                self.instance = None;
                tracing::warn!(login = %self.key.0, %provider, %error, "token provider failed");
                Err(TokenError::Unavailable(format!(
                    "the token provider failed: {error}"
                )))
            }
        }
    }

    async fn upgrade(&mut self, plugin: Arc<LoadedPlugin>) -> Result<(), String> {
        if self.instance.is_some() {
            let fresh = self.instance(plugin.clone()).await.map_err(|e| {
                format!(
                    "version {} failed to instantiate for login {}: {e}",
                    plugin.version(),
                    self.key.0
                )
            })?;
            self.instance = Some(fresh);
        }
        *self.shared.lock().expect("provider lock poisoned") = plugin.clone();
        self.plugin = plugin;
        Ok(())
    }
}
