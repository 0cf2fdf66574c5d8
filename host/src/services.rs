//! The host's side of the runtime: what a plugin's imports and a login's
//! actor ask of the host, answered from the login records and the outbox.

use std::sync::Arc;

use weft_runtime::events::RemoteEvent;
use weft_runtime::plugin::LoadedPlugin;
use weft_runtime::{CapturePage, CaptureSession, HostServices, LoginInfo, LoginKey};
use weft_storage as storage;

use crate::capture::CaptureSessions;
use crate::logins::{BridgeState, LoginStore};
use crate::matrix::ids;
use crate::outbox::Outbox;

/// The host's [`HostServices`].
pub struct RuntimeServices {
    logins: LoginStore,
    outbox: Arc<Outbox>,
    /// The bridge bot's localpart, if the host has a Matrix side: no
    /// connector's ghosts may include it.
    bot_localpart: Option<String>,
    /// Counts plugin loads and upgrades, for whoever waits for a plugin.
    plugin_loads: tokio::sync::watch::Sender<u64>,
    /// The capture pages of login processes.
    captures: Arc<CaptureSessions>,
    /// The `appservice` import, once the bridge exists.
    accounts: std::sync::OnceLock<Arc<crate::bridge::accounts::PluginAccounts>>,
}

impl RuntimeServices {
    /// The services over the login records and the outbox.
    pub fn new(
        logins: LoginStore,
        outbox: Arc<Outbox>,
        bot_localpart: Option<String>,
        captures: Arc<CaptureSessions>,
    ) -> Self {
        Self {
            logins,
            outbox,
            bot_localpart,
            plugin_loads: tokio::sync::watch::Sender::new(0),
            captures,
            accounts: std::sync::OnceLock::new(),
        }
    }

    /// Serves the `appservice` import through `accounts` from now on.
    pub fn set_accounts(&self, accounts: Arc<crate::bridge::accounts::PluginAccounts>) {
        let _ = self.accounts.set(accounts);
    }

    /// Changes whenever a plugin is loaded or upgraded.
    pub fn plugin_loads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.plugin_loads.subscribe()
    }
}

impl HostServices for RuntimeServices {
    fn queue_event(&self, login: &LoginKey, event: RemoteEvent) -> storage::Result<()> {
        // A state is recorded on the login at once (so `whoami` shows it);
        // the queued copy drives the management-room notice.
        if let RemoteEvent::BridgeState(state) = &event {
            let record = BridgeState::now(
                state.state.into(),
                state.error_code.clone(),
                state.message.clone(),
            );
            self.logins.set_state(login, record)?;
        }
        self.outbox.append(login, event).map(drop)
    }

    fn login(&self, login: &LoginKey) -> storage::Result<Option<LoginInfo>> {
        Ok(self.logins.get(login)?.map(|r| LoginInfo {
            id: r.key.id,
            owner: r.owner,
            remote_name: r.remote_name,
            awaiting_relogin: r.state.state_event.needs_relogin(),
        }))
    }

    fn metadata(&self, login: &LoginKey) -> storage::Result<Option<String>> {
        Ok(self.logins.get(login)?.map(|r| r.metadata))
    }

    fn set_metadata(&self, login: &LoginKey, metadata: String) -> storage::Result<bool> {
        self.logins.set_metadata(login, metadata)
    }

    fn open_capture(
        &self,
        plugin: &str,
        process: &str,
        page: CapturePage,
    ) -> Result<CaptureSession, String> {
        self.captures.open(plugin, process, page)
    }

    fn take_capture(
        &self,
        plugin: &str,
        process: &str,
        id: &str,
    ) -> Result<Option<String>, String> {
        self.captures.take(plugin, process, id)
    }

    fn close_capture(&self, plugin: &str, process: &str, id: &str) {
        self.captures.close(plugin, process, id);
    }

    fn logins_of(&self, plugin: &str) -> storage::Result<Vec<LoginKey>> {
        Ok(self
            .logins
            .of_plugin(plugin)?
            .into_iter()
            .map(|r| r.key)
            .collect())
    }

    fn admit(&self, plugin: &LoadedPlugin, others: &[Arc<LoadedPlugin>]) -> Result<(), String> {
        let claimed: Vec<(&str, &str)> = others
            .iter()
            .filter_map(|p| Some((p.id(), p.capabilities.ghost_prefix.as_deref()?)))
            .collect();
        let bot = self.bot_localpart.as_deref();
        let refused = |conflict: String| format!("plugin {}: {conflict}", plugin.id());
        if let Some(pattern) = &plugin.capabilities.appservice_users {
            ids::account_pattern(pattern, bot, &claimed).map_err(refused)?;
        }
        let Some(prefix) = &plugin.capabilities.ghost_prefix else {
            return Ok(());
        };
        ids::check_namespace(prefix, bot, &claimed).map_err(refused)?;
        // A new connector's ghosts must not fall in another plugin's
        // accounts either.
        for other in others {
            if let Some(pattern) = &other.capabilities.appservice_users {
                ids::account_pattern(pattern, bot, &[(plugin.id(), prefix)]).map_err(
                    |conflict| {
                        format!(
                            "plugin {}: its ghosts collide with plugin {}: {conflict}",
                            plugin.id(),
                            other.id()
                        )
                    },
                )?;
            }
        }
        Ok(())
    }

    fn plugin_current(&self, plugin: &LoadedPlugin) {
        if let Some(accounts) = self.accounts.get() {
            accounts.plugin_current(plugin);
        }
        self.plugin_loads.send_modify(|loads| *loads += 1);
    }

    fn appservice(&self) -> Option<Arc<dyn weft_runtime::PluginAppservice>> {
        self.accounts
            .get()
            .map(|a| a.clone() as Arc<dyn weft_runtime::PluginAppservice>)
    }
}
