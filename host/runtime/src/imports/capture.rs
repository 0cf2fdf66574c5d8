//! `weft:plugin/capture`: capture pages for login processes. The host
//! embedding the runtime serves the pages and keeps the sessions; this
//! import only checks that the caller runs a login process and scopes
//! every session to that process.

use crate::bindings::imports::capture::{CapturePage, CaptureSession, Host};
use crate::bindings::imports::types::PluginError;
use crate::services;
use crate::state::{InstanceRole, PluginState};

/// Bounds on what a plugin may put on a page (it is text, not a document).
const MAX_PAGE_TEXT: usize = 16 << 10;

impl PluginState {
    fn process(&self) -> Result<&str, PluginError> {
        match &self.ctx.role {
            InstanceRole::LoginProcess { process } => Ok(process),
            _ => Err(PluginError::InvalidInput(
                "capture pages are only for login processes".into(),
            )),
        }
    }
}

impl Host for PluginState {
    async fn open(
        &mut self,
        page: CapturePage,
    ) -> wasmtime::Result<Result<CaptureSession, PluginError>> {
        let process = match self.process() {
            Ok(process) => process.to_owned(),
            Err(error) => return Ok(Err(error)),
        };
        let text = page.title.len()
            + page.field_label.len()
            + page.snippet.as_ref().map_or(0, String::len)
            + page.steps.iter().map(String::len).sum::<usize>();
        if text > MAX_PAGE_TEXT {
            return Ok(Err(PluginError::InvalidInput(format!(
                "a capture page holds at most {MAX_PAGE_TEXT} bytes of text"
            ))));
        }
        let page = services::CapturePage {
            title: page.title,
            steps: page.steps,
            snippet: page.snippet,
            field_label: page.field_label,
        };
        Ok(self
            .ctx
            .runtime
            .host
            .open_capture(self.ctx.plugin.id(), &process, page)
            .map(|s| CaptureSession {
                id: s.id,
                url: s.url,
            })
            .map_err(PluginError::Unsupported))
    }

    async fn take(&mut self, id: String) -> wasmtime::Result<Result<Option<String>, PluginError>> {
        let process = match self.process() {
            Ok(process) => process.to_owned(),
            Err(error) => return Ok(Err(error)),
        };
        Ok(self
            .ctx
            .runtime
            .host
            .take_capture(self.ctx.plugin.id(), &process, &id)
            .map_err(PluginError::InvalidInput))
    }

    async fn close(&mut self, id: String) -> wasmtime::Result<()> {
        if let Ok(process) = self.process() {
            let process = process.to_owned();
            let plugin = self.ctx.plugin.id().to_owned();
            self.ctx.runtime.host.close_capture(&plugin, &process, &id);
        }
        Ok(())
    }
}
