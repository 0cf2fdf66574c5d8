//! `weft:plugin/timers`: named timers in the login's table; the actor
//! fires them.

use crate::bindings::imports::timers::{Host, TimerError};
use crate::login::now_ms;
use crate::state::PluginState;
use crate::timers;

fn to_wit(error: timers::TimerError) -> TimerError {
    match error {
        timers::TimerError::InvalidName(m) => TimerError::InvalidName(m),
        timers::TimerError::TooMany(n) => TimerError::TooMany(n),
        timers::TimerError::TooShort(n) => TimerError::TooShort(n),
    }
}

impl PluginState {
    fn with_timers<T>(&self, f: impl FnOnce(&mut timers::TimerTable) -> T) -> Option<T> {
        let table = self.ctx.timers.as_ref()?;
        let mut table = table.lock().expect("timer table poisoned");
        Some(f(&mut table))
    }
}

impl Host for PluginState {
    async fn set_interval(
        &mut self,
        name: String,
        period_ms: u32,
    ) -> wasmtime::Result<Result<(), TimerError>> {
        // Instances without a login (login processes) may hold no timers.
        Ok(self
            .with_timers(|t| t.set_interval(&name, period_ms, now_ms()).map_err(to_wit))
            .unwrap_or(Err(TimerError::TooMany(0))))
    }

    async fn set_timeout(
        &mut self,
        name: String,
        delay_ms: u32,
    ) -> wasmtime::Result<Result<(), TimerError>> {
        Ok(self
            .with_timers(|t| t.set_timeout(&name, delay_ms, now_ms()).map_err(to_wit))
            .unwrap_or(Err(TimerError::TooMany(0))))
    }

    async fn cancel(&mut self, name: String) -> wasmtime::Result<bool> {
        Ok(self.with_timers(|t| t.cancel(&name)).unwrap_or(false))
    }
}
