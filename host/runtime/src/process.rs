//! A login process's instance: a fresh instance of the plugin, in its own
//! KV namespace, that runs one login flow for one user. The host drives it
//! step by step; the instance lives until the process ends.

use std::sync::Arc;

use crate::bindings::provider_login;
use crate::connector::PluginError;
use crate::instance::{CallError, Instance, plugin_error};
use crate::login_flow::{CompleteStep, LoginStep, StepInput};
use crate::metrics::Metrics;
use crate::plugin::LoadedPlugin;
use crate::runtime::Runtime;

/// A plugin's answer to a login-flow call.
pub type FlowResult = Result<Result<LoginStep, PluginError>, CallError>;

/// What a login provider's flow produced, for the connector to finish
/// (`provider-login.finish`). Its `Debug` leaves the material (tokens) out.
#[derive(Clone, PartialEq, Eq)]
pub struct ProviderGrant {
    /// The provider plugin's id.
    pub provider: String,
    /// The account, in the provider's terms.
    pub account_id: String,
    /// The account's display name.
    pub account_name: String,
    /// The captured material.
    pub material: String,
}

impl std::fmt::Debug for ProviderGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderGrant")
            .field("provider", &self.provider)
            .field("account_id", &self.account_id)
            .field("material", &format_args!("<{} bytes>", self.material.len()))
            .finish_non_exhaustive()
    }
}

/// The instance of one login process.
pub struct ProcessInstance {
    instance: Instance,
    runtime: Arc<Runtime>,
    process: String,
}

impl ProcessInstance {
    pub(crate) fn new(instance: Instance, runtime: Arc<Runtime>, process: &str) -> Self {
        Self {
            instance,
            runtime,
            process: process.to_owned(),
        }
    }

    /// The plugin version it runs.
    pub fn plugin(&self) -> &Arc<LoadedPlugin> {
        self.instance.plugin()
    }

    /// The process id.
    pub fn process(&self) -> &str {
        &self.process
    }

    /// Whether it can take calls (it has not trapped).
    pub fn is_usable(&self) -> bool {
        self.instance.is_usable()
    }

    fn counted<T>(&self, result: Result<T, CallError>) -> Result<T, CallError> {
        Metrics::bump(&self.runtime.metrics.calls);
        if result.is_err() {
            Metrics::bump(&self.runtime.metrics.traps);
        }
        result
    }

    /// `login-flow.start`.
    pub async fn start(&mut self, flow: &str, relogin: Option<&str>) -> FlowResult {
        let result = self.instance.login_start(flow, relogin).await;
        Ok(self.counted(result)?.map(Into::into).map_err(plugin_error))
    }

    /// `login-flow.submit`.
    pub async fn submit(&mut self, step_id: &str, input: StepInput) -> FlowResult {
        let result = self.instance.login_submit(step_id, &input.into()).await;
        Ok(self.counted(result)?.map(Into::into).map_err(plugin_error))
    }

    /// `provider-login.finish`: the connector makes a login of what its
    /// provider's flow produced.
    pub async fn finish_provider_login(
        &mut self,
        flow: &str,
        grant: ProviderGrant,
        relogin: Option<&str>,
    ) -> Result<Result<CompleteStep, PluginError>, CallError> {
        let grant = provider_login::ProviderGrant {
            provider: grant.provider,
            account_id: grant.account_id,
            account_name: grant.account_name,
            material: grant.material,
        };
        let result = self
            .instance
            .provider_login_finish(flow, &grant, relogin)
            .await;
        Ok(self
            .counted(result)?
            .map_err(plugin_error)
            .map(|c| CompleteStep {
                login_id: c.login_id,
                remote_name: c.remote_name,
                metadata: c.metadata,
            }))
    }

    /// `login-flow.cancel`, if the instance is still usable.
    pub async fn cancel(&mut self) {
        if self.instance.is_usable() {
            let result = self.instance.login_cancel().await;
            drop(self.counted(result));
        }
    }
}
