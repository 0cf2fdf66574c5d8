//! The bridge: remote events become Matrix rooms, ghosts and messages, and
//! Matrix messages go to the right login's connector.
//!
//! - [`remote`]: the outbox of each login, drained in order by one worker
//!   per login, into portals (rooms), ghosts and events; [`media`] and
//!   [`html`] shape files and formatted text, [`backfill`] gives new
//!   portals their history, [`double_puppet`] sends the user's own
//!   messages as their Matrix account.
//! - [`from_matrix`]: appservice transactions, stored in the [`inbound`]
//!   queue and handled in order per room, into connector calls and
//!   management-room commands.
//! - [`commands`]: the management room.
//! - [`workers`]: the serial workers behind both queues.
//! - [`store`]: what the bridge remembers.

pub mod accounts;
mod backfill;
pub mod commands;
mod double_puppet;
pub mod from_matrix;
pub mod html;
pub mod inbound;
mod media;
mod qr;
pub mod remote;
pub mod store;
mod workers;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use ruma::api::client::account::register::{self, LoginType, RegistrationKind};
use ruma::api::client::membership::{invite_user, join_room_by_id};
use ruma::api::client::message::send_message_event;
use ruma::api::client::profile::set_profile_field;
use ruma::events::room::message::RoomMessageEventContent;
use ruma::profile::ProfileFieldValue;
use ruma::{OwnedRoomId, OwnedTransactionId, OwnedUserId, RoomId, UserId};

use futures::future::BoxFuture;
use weft_runtime::Registry;
use weft_runtime::plugin::LoadedPlugin;
use weft_storage::StorageError;

use crate::config::Config;
use crate::login_process::LoginProcesses;
use crate::logins::{DeletionHook, LoginKey, LoginRecord, Logins, StateEvent};
use crate::matrix::{HomeserverClient, HsError, Namespaces};
use crate::outbox::{EventSink, Outbox};
use inbound::Inbound;
use store::{BridgeStore, GhostRecord};
use workers::{Attempt, Outage, Stalled, Workers};

/// Why a bridging step failed.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The homeserver refused or could not be reached.
    #[error(transparent)]
    Homeserver(#[from] HsError),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Something needed is not there right now.
    #[error("{0}")]
    Unavailable(String),
    /// The plugin an event belongs to is not loaded (yet).
    #[error("the {0} plugin is not loaded")]
    PluginNotLoaded(String),
    /// A queued event does not decode (stored by another version).
    #[error("{0}")]
    Undecodable(String),
}

impl BridgeError {
    /// Whether trying again later may succeed; if not, the event goes to
    /// the dead letters so it does not block the login's queue.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Homeserver(error) => error.retry() != crate::matrix::client::RetryKind::Permanent,
            Self::Storage(_) | Self::Unavailable(_) | Self::PluginNotLoaded(_) => true,
            Self::Undecodable(_) => false,
        }
    }

    /// Whether the homeserver is down or failing (unreachable, or a 5xx),
    /// rather than refusing or rate-limiting this one request.
    pub fn is_homeserver_outage(&self) -> bool {
        matches!(self, Self::Homeserver(error) if error.is_outage())
    }

    /// How long the homeserver asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Homeserver(error) => match error.retry() {
                crate::matrix::client::RetryKind::Transient { retry_after } => retry_after,
                _ => None,
            },
            _ => None,
        }
    }
}

/// What the bridge needs to know about a login to bridge its events.
#[derive(Clone)]
pub struct LoginContext {
    /// The login.
    pub record: LoginRecord,
    /// Its owner.
    pub owner: OwnedUserId,
    /// Its connector.
    pub plugin: Arc<LoadedPlugin>,
}

impl LoginContext {
    /// The login's key.
    pub fn key(&self) -> &LoginKey {
        &self.record.key
    }
}

/// The bridge.
pub struct Bridge {
    /// The homeserver.
    pub client: HomeserverClient,
    /// The bridge's namespaces.
    pub namespaces: Namespaces,
    /// The bridge's tables.
    pub store: BridgeStore,
    /// Plugins and login actors.
    pub registry: Arc<Registry>,
    /// Login records.
    pub logins: Arc<Logins>,
    /// Login processes.
    pub processes: Arc<LoginProcesses>,
    /// The config.
    pub config: Arc<Config>,
    /// With double puppeting on, the client that acts as local users.
    puppets: Option<HomeserverClient>,
    outbox: Arc<Outbox>,
    inbound: Inbound,
    this: Weak<Bridge>,
    /// One worker per login drains its outbox.
    outbox_workers: Workers<LoginKey>,
    /// One worker per room handles its inbound events.
    room_workers: Workers<String>,
    /// Asks the homeserver whether it is back while workers wait out an
    /// outage (see `workers`).
    outage_prober: tokio::task::JoinHandle<()>,
    /// Who types in which room now, as the homeserver last said.
    typing: Mutex<BTreeMap<String, Vec<OwnedUserId>>>,
    /// Inbound events whose room was told they are delayed.
    delayed: Mutex<BTreeSet<String>>,
    /// The state last announced per login, so notices go out on change.
    announced: Mutex<BTreeMap<LoginKey, StateEvent>>,
    /// Management-room conversations (a login in progress), by room.
    conversations: tokio::sync::Mutex<BTreeMap<String, commands::Conversation>>,
    /// Serializes resyncs of connectors whose group portals are shared
    /// between logins, so two logins' workers cannot create one portal
    /// twice. (Split portals belong to one login's worker, which is serial.)
    shared_portals: tokio::sync::Mutex<()>,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.outage_prober.abort();
    }
}

/// What the bridge is built from.
pub struct BridgeParts {
    /// The homeserver.
    pub client: HomeserverClient,
    /// The bridge's namespaces.
    pub namespaces: Namespaces,
    /// The bridge's tables.
    pub store: BridgeStore,
    /// Plugins and login actors.
    pub registry: Arc<Registry>,
    /// Login records.
    pub logins: Arc<Logins>,
    /// Login processes.
    pub processes: Arc<LoginProcesses>,
    /// The config.
    pub config: Arc<Config>,
    /// Remote events to bridge.
    pub outbox: Arc<Outbox>,
    /// With double puppeting on, the token of its registration.
    pub double_puppet_token: Option<String>,
}

impl Bridge {
    /// Builds the bridge.
    pub fn new(parts: BridgeParts) -> Result<Arc<Self>, StorageError> {
        let inbound = Inbound::open(parts.store.storage())?;
        let puppets = parts
            .double_puppet_token
            .as_deref()
            .map(|token| parts.client.with_token(token));
        let outage = Outage::new();
        let prober = {
            let client = parts.client.clone();
            outage.spawn_prober(Duration::from_secs(2), move || {
                let client = client.clone();
                Box::pin(async move { client.answers().await })
            })
        };
        Ok(Arc::new_cyclic(|this: &Weak<Bridge>| {
            let for_outbox = this.clone();
            let for_rooms = this.clone();
            Self {
                outage_prober: prober,
                client: parts.client,
                namespaces: parts.namespaces,
                store: parts.store,
                registry: parts.registry,
                logins: parts.logins,
                processes: parts.processes,
                config: parts.config,
                puppets,
                outbox: parts.outbox,
                inbound,
                this: this.clone(),
                outbox_workers: Workers::new(
                    "bridging",
                    Arc::new(move |login: LoginKey, _: Attempt| {
                        let bridge = for_outbox.clone();
                        Box::pin(async move {
                            match bridge.upgrade() {
                                Some(bridge) => bridge.drain(&login).await,
                                None => Ok(()),
                            }
                        })
                    }),
                    outage.clone(),
                ),
                room_workers: Workers::new(
                    "handling Matrix events",
                    Arc::new(move |room: String, attempt: Attempt| {
                        let bridge = for_rooms.clone();
                        Box::pin(async move {
                            match bridge.upgrade() {
                                Some(bridge) => bridge.drain_room(&room, attempt).await,
                                None => Ok(()),
                            }
                        })
                    }),
                    outage,
                ),
                typing: Mutex::new(BTreeMap::new()),
                delayed: Mutex::new(BTreeSet::new()),
                announced: Mutex::new(BTreeMap::new()),
                conversations: tokio::sync::Mutex::new(BTreeMap::new()),
                shared_portals: tokio::sync::Mutex::new(()),
            }
        }))
    }

    /// A plugin was loaded or upgraded: events waiting for it go on.
    pub fn plugin_loaded(&self) {
        self.room_workers.wake_all();
    }

    /// The inbound dead letters (Matrix events that could not be
    /// handled), oldest room first, at most `limit`.
    pub fn inbound_dead_letters(
        &self,
        limit: usize,
    ) -> Result<Vec<inbound::InboundDeadLetter>, StorageError> {
        self.inbound.dead_letters(limit)
    }

    /// How many Matrix events wait in each room's queue.
    pub fn inbound_pending(&self) -> Result<BTreeMap<String, usize>, StorageError> {
        self.inbound.pending_counts()
    }

    /// Forgets inbound event ids and dispatch marks older than
    /// `before_ms`: the homeserver does not send an event again after days.
    pub fn prune_seen(&self, before_ms: u64) -> Result<usize, StorageError> {
        Ok(self.inbound.prune_seen(before_ms)? + self.store.prune_dispatched(before_ms)?)
    }

    /// The bot's user id.
    pub fn bot(&self) -> OwnedUserId {
        self.namespaces.bot()
    }

    /// Whether `user` is the bot or one of the bridge's ghosts.
    pub fn is_ours(&self, user: &UserId) -> bool {
        let connectors = self.registry.connectors();
        self.namespaces.is_ours(
            user,
            connectors
                .iter()
                .filter_map(|p| p.capabilities.ghost_prefix.as_deref()),
        )
    }

    /// Whether `user` may use the bridge.
    pub fn permitted(&self, user: &UserId) -> bool {
        let permitted = &self.config.bridge.permitted;
        if permitted.is_empty() {
            return user.server_name().as_str() == self.namespaces.domain;
        }
        permitted
            .iter()
            .any(|p| p == "*" || p == user.as_str() || p == user.server_name().as_str())
    }

    /// The context of login `key`, if it exists and its plugin is loaded.
    pub fn login_context(&self, key: &LoginKey) -> Result<Option<LoginContext>, BridgeError> {
        let Some(record) = self.logins.store.get(key)? else {
            return Ok(None);
        };
        let plugin = self
            .registry
            .plugin(&key.plugin)
            .ok_or_else(|| BridgeError::PluginNotLoaded(key.plugin.clone()))?;
        let owner = UserId::parse(record.owner.as_str())
            .map_err(|e| BridgeError::Unavailable(format!("login {key} has a bad owner: {e}")))?;
        Ok(Some(LoginContext {
            record,
            owner,
            plugin,
        }))
    }

    /// Makes sure the bot is registered and named.
    pub async fn prepare_bot(&self) -> Result<(), BridgeError> {
        self.register(&self.bot()).await?;
        if let Some(name) = self
            .config
            .appservice
            .as_ref()
            .map(|a| a.bot_displayname.clone())
        {
            let request = set_profile_field::v3::Request::new(
                self.bot(),
                ProfileFieldValue::DisplayName(name),
            );
            self.client.send(request, Some(&self.bot())).await?;
        }
        Ok(())
    }

    /// Registers `user` in the appservice's namespace; "already
    /// registered" counts as done.
    pub async fn register(&self, user: &UserId) -> Result<(), BridgeError> {
        let mut request = register::v3::Request::new();
        request.username = Some(user.localpart().to_owned());
        request.login_type = Some(LoginType::ApplicationService);
        request.inhibit_login = true;
        request.kind = RegistrationKind::User;
        match self.client.send_as_appservice(request).await {
            Ok(_) => Ok(()),
            Err(error) if error.errcode() == Some("M_USER_IN_USE") => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// Makes sure the ghost of `remote_id` exists with `display_name`;
    /// returns its user id.
    pub async fn ensure_ghost(
        &self,
        plugin: &LoadedPlugin,
        remote_id: &str,
        display_name: Option<&str>,
    ) -> Result<OwnedUserId, BridgeError> {
        let prefix = plugin.capabilities.ghost_prefix.as_deref().ok_or_else(|| {
            BridgeError::Unavailable(format!("plugin {} is not a connector", plugin.id()))
        })?;
        let user_id = self
            .namespaces
            .ghost(prefix, remote_id)
            .map_err(|e| BridgeError::Unavailable(e.to_string()))?;
        let known = self.store.ghost(user_id.as_str())?;
        if known.is_none() {
            self.register(&user_id).await?;
        }
        let current = known.as_ref().and_then(|g| g.display_name.as_deref());
        let wanted = display_name.filter(|n| !n.is_empty());
        if let Some(name) = wanted
            && wanted != current
        {
            let request = set_profile_field::v3::Request::new(
                user_id.clone(),
                ProfileFieldValue::DisplayName(name.to_owned()),
            );
            self.client.send(request, Some(&user_id)).await?;
        }
        if known.is_none() || (wanted.is_some() && wanted != current) {
            self.store.put_ghost(&GhostRecord {
                user_id: user_id.to_string(),
                display_name: wanted
                    .map(str::to_owned)
                    .or_else(|| current.map(str::to_owned)),
            })?;
        }
        Ok(user_id)
    }

    /// Invites `user` to `room` as the bot; one already invited or joined
    /// counts as done.
    pub async fn invite(&self, room: &RoomId, user: &UserId) -> Result<(), BridgeError> {
        let invite = invite_user::v3::Request::new(
            room.to_owned(),
            invite_user::v3::InvitationRecipient::UserId(invite_user::v3::InviteUserId::new(
                user.to_owned(),
            )),
        );
        match self.client.send(invite, None).await {
            Ok(_) => Ok(()),
            Err(error) if error.errcode() == Some("M_FORBIDDEN") => {
                // Synapse answers an invite of a member with 403.
                tracing::debug!(%room, %user, %error, "invite refused; already in the room?");
                Ok(())
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Makes sure `ghost` has joined `room` (the bot invites it first).
    pub async fn ensure_joined(
        &self,
        room: &RoomId,
        ghost: &UserId,
        joined: &mut BTreeSet<String>,
    ) -> Result<bool, BridgeError> {
        if joined.contains(ghost.as_str()) {
            return Ok(false);
        }
        self.invite(room, ghost).await?;
        self.client
            .send(
                join_room_by_id::v3::Request::new(room.to_owned()),
                Some(ghost),
            )
            .await?;
        joined.insert(ghost.to_string());
        Ok(true)
    }

    /// Sends a notice from the bot to `room`.
    pub async fn notice(&self, room: &RoomId, text: &str) -> Result<(), BridgeError> {
        let content = RoomMessageEventContent::notice_plain(text);
        let request = send_message_event::v3::Request::new(
            room.to_owned(),
            OwnedTransactionId::from(txn_id()),
            &content,
        )
        .map_err(|e| HsError::Protocol(e.to_string()))?;
        self.client.send(request, None).await?;
        Ok(())
    }

    /// The management room of `user`, if they have one.
    pub fn management_room(&self, user: &str) -> Result<Option<OwnedRoomId>, BridgeError> {
        Ok(self
            .store
            .user(user)?
            .management_room
            .and_then(|r| RoomId::parse(r).ok()))
    }

    /// Announces a login's new state in its owner's management room, once
    /// per change (connecting is not announced).
    pub async fn announce_state(
        &self,
        ctx: &LoginContext,
        state: StateEvent,
        message: Option<&str>,
    ) -> Result<(), BridgeError> {
        {
            // Connecting is a step, not a state worth remembering: a
            // restart's "connecting, connected" must not read as a
            // recovery, while "error, connecting, connected" still does.
            if state == StateEvent::Connecting {
                return Ok(());
            }
            let mut announced = self.announced.lock().expect("announced map poisoned");
            let previous = announced.insert(ctx.key().clone(), state);
            if previous == Some(state) {
                return Ok(());
            }
            // A first "connected" is not news; recovering from an error is.
            if state == StateEvent::Connected && previous.is_none() {
                return Ok(());
            }
        }
        let Some(room) = self.management_room(ctx.owner.as_str())? else {
            return Ok(());
        };
        let name = ctx.plugin.manifest.network_name();
        let state_name = serde_json::to_value(state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let text = match message {
            Some(message) => format!(
                "{name} login {} ({}): {state_name}: {message}",
                ctx.key().id,
                ctx.record.remote_name
            ),
            None => format!(
                "{name} login {} ({}): {state_name}",
                ctx.key().id,
                ctx.record.remote_name
            ),
        };
        let text = if state.needs_relogin() {
            format!(
                "{text}\nLog in again with `login {}` to resume.",
                ctx.key().plugin
            )
        } else {
            text
        };
        self.notice(&room, &text).await
    }

    /// Deletes login `key` (see [`Logins::delete`]): the connector logs
    /// out remotely if asked, its state goes, and its portals are
    /// unbridged.
    pub async fn delete_login(
        &self,
        key: &LoginKey,
        logout: bool,
        reason: &str,
    ) -> Result<(), BridgeError> {
        match self.logins.delete(key, logout, reason).await {
            Ok(_) | Err(crate::logins::LoginError::Unknown(_)) => Ok(()),
            Err(crate::logins::LoginError::Storage(e)) => Err(e.into()),
            Err(other) => Err(BridgeError::Unavailable(other.to_string())),
        }
    }

    /// Unbridges the portals of a deleted login: each gets a notice and
    /// is forgotten (the rooms stay).
    async fn unbridge(&self, key: &LoginKey, reason: &str) -> Result<(), BridgeError> {
        self.outbox_workers.forget(key);
        self.announced
            .lock()
            .expect("announced map poisoned")
            .remove(key);
        for portal in self.store.portals_of_login(key)? {
            if let Ok(room) = RoomId::parse(&portal.room_id) {
                let text = format!("This chat is no longer bridged: {reason}.");
                if let Err(error) = self.notice(&room, &text).await {
                    tracing::warn!(%error, room = %room, "failed to post the unbridge notice");
                }
            }
            self.store.remove_portal(&portal)?;
        }
        weft_storage::flush_async(self.store.storage()).await?;
        tracing::info!(login = %key, reason, "login removed from the bridge");
        Ok(())
    }

    /// Stops the outbox workers and login processes (at shutdown).
    pub async fn shutdown(&self) {
        self.outage_prober.abort();
        self.outbox_workers.clear();
        self.room_workers.clear();
        self.processes.shutdown().await;
    }

    /// Bridges `login`'s queued events in order. A transient failure stops
    /// here (the event stays queued, order is kept); an event that cannot
    /// be decoded, or that the homeserver refuses for good, moves to the
    /// dead letters and the rest flows.
    async fn drain(&self, login: &LoginKey) -> Result<(), Stalled> {
        let mut progressed = false;
        let stalled = |error: BridgeError, progressed: bool| Stalled { error, progressed };
        loop {
            let batch = self
                .outbox
                .peek(login, 50)
                .map_err(|e| stalled(e.into(), progressed))?;
            if batch.is_empty() {
                return Ok(());
            }
            let Some(ctx) = self
                .login_context(login)
                .map_err(|e| stalled(e, progressed))?
            else {
                // The login was deleted; its events go with it.
                self.outbox
                    .clear(login)
                    .map_err(|e| stalled(e.into(), progressed))?;
                return Ok(());
            };
            for queued in batch {
                let result = match &queued.event {
                    Ok(event) => self.handle_remote(&ctx, event).await,
                    Err(reason) => Err(BridgeError::Undecodable(reason.clone())),
                };
                let stored = match result {
                    Ok(()) => self.outbox.ack(login, queued.seq),
                    Err(error) if error.is_transient() => return Err(stalled(error, progressed)),
                    Err(BridgeError::Undecodable(reason)) => {
                        self.outbox.bury(login, queued.seq, &reason)
                    }
                    Err(error) => {
                        let reason = format!("the bridge refused it: {error}");
                        self.outbox.bury(login, queued.seq, &reason)
                    }
                };
                stored.map_err(|e| stalled(e.into(), progressed))?;
                progressed = true;
            }
        }
    }
}

impl EventSink for Bridge {
    fn events_queued(&self, login: &LoginKey) {
        self.outbox_workers.wake(login);
    }
}

impl DeletionHook for Bridge {
    fn login_deleted<'a>(&'a self, key: &'a LoginKey, reason: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Err(error) = self.unbridge(key, reason).await {
                tracing::error!(login = %key, %error, "failed to unbridge a deleted login's portals");
            }
        })
    }
}

/// A fresh transaction id for a request.
pub fn txn_id() -> String {
    use rand::Rng;
    let n: u128 = rand::rng().random();
    format!("weft-{n:032x}")
}
