//! `weft:plugin/log`: plugin records in the host's `tracing` output.

use std::fmt::Write;

use crate::bindings::imports::log::{Host, Level};
use crate::state::PluginState;

/// Longest message kept; a plugin cannot fill the log with one record.
const MAX_MESSAGE: usize = 4096;

impl Host for PluginState {
    async fn log(
        &mut self,
        level: Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        if fields.iter().any(|(k, v)| k == "panic" && v == "true") {
            // The SDK's panic hook: the trap that follows will carry this.
            let mut panic = message.clone();
            truncate(&mut panic, MAX_MESSAGE);
            self.ctx.last_panic = Some(panic);
        }
        let budget = &mut self.ctx.log_budget;
        if !budget.take() {
            return Ok(());
        }
        let dropped = std::mem::take(&mut budget.dropped);
        let mut message = message;
        truncate(&mut message, MAX_MESSAGE);
        let mut extra = String::new();
        for (key, value) in fields.iter().take(32) {
            let _ = write!(extra, " {key}={value:?}");
        }
        let plugin = self.ctx.plugin.id();
        let version = self.ctx.plugin.version().to_string();
        let login = self.login().map(ToString::to_string).unwrap_or_default();
        macro_rules! emit {
            ($level:expr) => {
                tracing::event!(target: "weft::plugin", $level, plugin, %version, login, dropped, "{message}{extra}")
            };
        }
        match level {
            Level::Trace => emit!(tracing::Level::TRACE),
            Level::Debug => emit!(tracing::Level::DEBUG),
            Level::Info => emit!(tracing::Level::INFO),
            Level::Warn => emit!(tracing::Level::WARN),
            Level::Error => emit!(tracing::Level::ERROR),
        }
        Ok(())
    }
}

fn truncate(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
}
