//! The bridge: remote events become Matrix rooms, ghosts and messages, and
//! Matrix messages go to the right login's connector.
//!
//! - [`remote`]: the outbox of each login, drained in order by one worker
//!   per login, into portals (rooms), ghosts and events.
//! - [`from_matrix`]: appservice transactions, into connector calls and
//!   management-room commands.
//! - [`commands`]: the management room.
//! - [`store`]: what the bridge remembers.

pub mod commands;
pub mod from_matrix;
pub mod remote;
pub mod store;

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
use tokio::sync::mpsc;

use futures::future::BoxFuture;
use weft_runtime::Registry;
use weft_runtime::plugin::LoadedPlugin;
use weft_storage::StorageError;

use crate::config::Config;
use crate::login_process::LoginProcesses;
use crate::logins::{DeletionHook, LoginKey, LoginRecord, Logins, StateEvent};
use crate::matrix::{HomeserverClient, HsError, Namespaces};
use crate::outbox::{EventSink, Outbox};
use store::{BridgeStore, GhostRecord};

/// Why a bridging step failed.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The homeserver refused or could not be reached.
    #[error(transparent)]
    Homeserver(#[from] HsError),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Something needed is not there right now (the plugin is not loaded).
    #[error("{0}")]
    Unavailable(String),
}

impl BridgeError {
    /// Whether trying again later may succeed; if not, the event goes to
    /// the dead letters so it does not block the login's queue.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Homeserver(error) => error.retry() != crate::matrix::client::RetryKind::Permanent,
            Self::Storage(_) | Self::Unavailable(_) => true,
        }
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
    outbox: Arc<Outbox>,
    this: Weak<Bridge>,
    workers: Mutex<BTreeMap<LoginKey, mpsc::UnboundedSender<()>>>,
    /// The state last announced per login, so notices go out on change.
    announced: Mutex<BTreeMap<LoginKey, StateEvent>>,
    /// Management-room conversations (a login in progress), by room.
    conversations: tokio::sync::Mutex<BTreeMap<String, commands::Conversation>>,
    /// Serializes resyncs of connectors whose group portals are shared
    /// between logins, so two logins' workers cannot create one portal
    /// twice. (Split portals belong to one login's worker, which is serial.)
    shared_portals: tokio::sync::Mutex<()>,
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
}

impl Bridge {
    /// Builds the bridge.
    pub fn new(parts: BridgeParts) -> Arc<Self> {
        Arc::new_cyclic(|this| Self {
            client: parts.client,
            namespaces: parts.namespaces,
            store: parts.store,
            registry: parts.registry,
            logins: parts.logins,
            processes: parts.processes,
            config: parts.config,
            outbox: parts.outbox,
            this: this.clone(),
            workers: Mutex::new(BTreeMap::new()),
            announced: Mutex::new(BTreeMap::new()),
            conversations: tokio::sync::Mutex::new(BTreeMap::new()),
            shared_portals: tokio::sync::Mutex::new(()),
        })
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
        let plugin = self.registry.plugin(&key.plugin).ok_or_else(|| {
            BridgeError::Unavailable(format!("plugin {} is not loaded", key.plugin))
        })?;
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
        match self.client.send(request, None).await {
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
            let mut announced = self.announced.lock().expect("announced map poisoned");
            let previous = announced.insert(ctx.key().clone(), state);
            if previous == Some(state) || state == StateEvent::Connecting {
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
        self.workers
            .lock()
            .expect("worker map poisoned")
            .remove(key);
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
        self.workers.lock().expect("worker map poisoned").clear();
        self.processes.shutdown().await;
    }

    /// Starts (or wakes) the worker that drains `login`'s outbox.
    fn wake(&self, login: &LoginKey) {
        let mut workers = self.workers.lock().expect("worker map poisoned");
        if let Some(worker) = workers.get(login)
            && worker.send(()).is_ok()
        {
            return;
        }
        let Some(bridge) = self.this.upgrade() else {
            return;
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(());
        workers.insert(login.clone(), tx);
        tokio::spawn(bridge.run_worker(login.clone(), rx));
    }

    async fn run_worker(self: Arc<Self>, login: LoginKey, mut wake: mpsc::UnboundedReceiver<()>) {
        while wake.recv().await.is_some() {
            while wake.try_recv().is_ok() {}
            let mut backoff = crate::matrix::client::retry_backoff();
            loop {
                match self.drain(&login).await {
                    Ok(()) => break,
                    Err(error) => {
                        // The homeserver's own Retry-After wins over ours.
                        let delay = error
                            .retry_after()
                            .or_else(|| backoff.next())
                            .unwrap_or(Duration::from_secs(60));
                        tracing::warn!(%login, %error, retry_in_ms = delay.as_millis() as u64, "bridging paused; will retry");
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        }
    }

    /// Bridges `login`'s queued events in order. A transient failure stops
    /// here (the event stays queued, order is kept); an event that cannot
    /// be decoded, or that the homeserver refuses for good, moves to the
    /// dead letters and the rest flows.
    async fn drain(&self, login: &LoginKey) -> Result<(), BridgeError> {
        loop {
            let batch = self.outbox.peek(login, 50)?;
            if batch.is_empty() {
                return Ok(());
            }
            let Some(ctx) = self.login_context(login)? else {
                // The login was deleted; its events go with it.
                self.outbox.clear(login)?;
                return Ok(());
            };
            for queued in batch {
                let event = match &queued.event {
                    Ok(event) => event,
                    Err(reason) => {
                        self.outbox.bury(login, queued.seq, reason)?;
                        continue;
                    }
                };
                match self.handle_remote(&ctx, event).await {
                    Ok(()) => self.outbox.ack(login, queued.seq)?,
                    Err(error) if error.is_transient() => return Err(error),
                    Err(error) => {
                        let reason = format!("the bridge refused it: {error}");
                        self.outbox.bury(login, queued.seq, &reason)?;
                    }
                }
            }
        }
    }
}

impl EventSink for Bridge {
    fn events_queued(&self, login: &LoginKey) {
        self.wake(login);
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
