//! A login process's instance: a fresh instance of the plugin, in its own
//! KV namespace, that runs one login flow for one user. The host drives it
//! step by step; the instance lives until the process ends.

use std::sync::Arc;

use crate::connector::PluginError;
use crate::instance::{CallError, Instance, plugin_error};
use crate::login_flow::{LoginStep, StepInput};
use crate::metrics::Metrics;
use crate::plugin::LoadedPlugin;
use crate::runtime::Runtime;

/// A plugin's answer to a login-flow call.
pub type FlowResult = Result<Result<LoginStep, PluginError>, CallError>;

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

    /// `login-flow.cancel`, if the instance is still usable.
    pub async fn cancel(&mut self) {
        if self.instance.is_usable() {
            let result = self.instance.login_cancel().await;
            drop(self.counted(result));
        }
    }
}
