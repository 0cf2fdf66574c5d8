//! What the runtime asks of the host that embeds it, in one trait.
//!
//! The runtime owns plugins, instances, timers and plugin KV; everything a
//! login *means* (its owner, its metadata, where its events go, whether a
//! plugin's namespace fits the bridge) is the host's. The imports and the
//! actors reach the host only through [`HostServices`], so they can be
//! tested with a fake of it and the runtime never names a Matrix type.

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::events::{RemoteEvent, StateReport};
use crate::login::LoginKey;
use crate::plugin::LoadedPlugin;

/// A login as an instance sees it (`session.current`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginInfo {
    /// The login id the connector chose.
    pub id: String,
    /// The Matrix user who owns it.
    pub owner: String,
    /// The remote account's display name.
    pub remote_name: String,
    /// Whether the login waits for its user to log in again (its timers
    /// stay paused until then).
    pub awaiting_relogin: bool,
}

/// The host's side of the runtime.
pub trait HostServices: Send + Sync + 'static {
    /// Stores a remote event of `login` for bridging, in order after the
    /// login's earlier events. The write must be durable once the runtime
    /// flushes its storage, which it does before it acts on the call that
    /// queued the event (see `matrix.queue-event` in the WIT). A
    /// bridge-state event also becomes the login's current state.
    fn queue_event(&self, login: &LoginKey, event: RemoteEvent) -> weft_storage::Result<()>;

    /// Records a state the runtime decided on (a crash loop, no room for
    /// an instance), the same way as a plugin's own bridge-state event.
    fn report_state(&self, login: &LoginKey, report: StateReport) -> weft_storage::Result<()> {
        self.queue_event(login, RemoteEvent::BridgeState(report))
    }

    /// The login `login`, if it exists.
    fn login(&self, login: &LoginKey) -> weft_storage::Result<Option<LoginInfo>>;

    /// The connector's metadata of `login` (JSON text).
    fn metadata(&self, login: &LoginKey) -> weft_storage::Result<Option<String>>;

    /// Replaces the connector's metadata of `login`; returns whether the
    /// login exists. Durable when this returns: tokens just refreshed may
    /// have revoked the old ones.
    fn set_metadata(&self, login: &LoginKey, metadata: String) -> weft_storage::Result<bool>;

    /// Every login of connector `plugin`, to start when it loads.
    fn logins_of(&self, plugin: &str) -> weft_storage::Result<Vec<LoginKey>>;

    /// Whether `plugin` may become current beside `others` (the other
    /// loaded plugins). An `Err` refuses the load with that message, e.g.
    /// a ghost namespace that overlaps another connector's.
    fn admit(&self, plugin: &LoadedPlugin, others: &[Arc<LoadedPlugin>]) -> Result<(), String> {
        let _ = (plugin, others);
        Ok(())
    }

    /// `plugin` became current (loaded or upgraded).
    fn plugin_current(&self, plugin: &LoadedPlugin) {
        let _ = plugin;
    }

    /// Opens a capture page for `plugin` in login process `process`
    /// (`capture.open`). A host that serves no pages refuses.
    fn open_capture(
        &self,
        plugin: &str,
        process: &str,
        page: CapturePage,
    ) -> Result<CaptureSession, String> {
        let _ = (plugin, process, page);
        Err("this host serves no capture pages".into())
    }

    /// What was captured in session `id` of `plugin` in `process`, once
    /// (`capture.take`). `Err` if there is no such session.
    fn take_capture(
        &self,
        plugin: &str,
        process: &str,
        id: &str,
    ) -> Result<Option<String>, String> {
        let _ = (plugin, process, id);
        Err("this host serves no capture pages".into())
    }

    /// Closes session `id` of `plugin` in `process` (`capture.close`).
    fn close_capture(&self, plugin: &str, process: &str, id: &str) {
        let _ = (plugin, process, id);
    }

    /// The host's application service as plugins use it (the `appservice`
    /// import), if the host has one. The host checks each call against the
    /// plugin's grant.
    fn appservice(&self) -> Option<Arc<dyn PluginAppservice>> {
        None
    }
}

/// Matrix accounts and rooms in a plugin's own namespace (the `appservice`
/// import). Every method takes the calling plugin's id: the host decides
/// what that plugin was granted.
pub trait PluginAppservice: Send + Sync + 'static {
    /// The homeserver's server name.
    fn server_name(&self) -> String;

    /// Registers user `localpart`: its access token, or `None` if it
    /// already existed.
    fn register_user(
        &self,
        plugin: String,
        localpart: String,
    ) -> BoxFuture<'static, Result<Option<String>, AppserviceError>>;

    /// A new access token for existing user `localpart`.
    fn login_user(
        &self,
        plugin: String,
        localpart: String,
    ) -> BoxFuture<'static, Result<String, AppserviceError>>;

    /// The user `access_token` belongs to, or `None` if the homeserver does
    /// not know it.
    fn whoami(
        &self,
        plugin: String,
        access_token: String,
    ) -> BoxFuture<'static, Result<Option<String>, AppserviceError>>;

    /// Creates a room as the bot for `plugin`; returns its id.
    fn create_room(
        &self,
        plugin: String,
        name: String,
        topic: Option<String>,
    ) -> BoxFuture<'static, Result<String, AppserviceError>>;

    /// Makes user `localpart` a member of `room_id`, a room `plugin`
    /// created.
    fn join_room(
        &self,
        plugin: String,
        room_id: String,
        localpart: String,
    ) -> BoxFuture<'static, Result<(), AppserviceError>>;
}

/// Why an appservice call failed (the WIT `appservice-error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppserviceError {
    /// Not granted, or outside the grant.
    #[error("denied: {0}")]
    Denied(String),
    /// The homeserver cannot do this as it is set up.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The homeserver refused.
    #[error("the homeserver refused ({status} {errcode}): {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The Matrix error code.
        errcode: String,
        /// The homeserver's message.
        message: String,
    },
    /// The homeserver could not be reached or failed.
    #[error("the homeserver is unavailable: {0}")]
    Unavailable(String),
}

/// A capture page as a plugin describes it (plain text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturePage {
    /// The heading.
    pub title: String,
    /// What to do, one step each.
    pub steps: Vec<String>,
    /// Text the user copies.
    pub snippet: Option<String>,
    /// The paste box's label.
    pub field_label: String,
}

/// An open capture session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureSession {
    /// Its id.
    pub id: String,
    /// Its page's URL.
    pub url: String,
}
