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

use crate::config::Config;
use crate::login_process::LoginProcesses;
use crate::logins::{LoginKey, LoginRecord, StateEvent};
use crate::matrix::{HomeserverClient, HsError, Namespaces};
use crate::outbox::{EventSink, Outbox};
use crate::registry::Registry;
use crate::runtime::plugin::LoadedPlugin;
use crate::storage::StorageError;
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
    /// Whether trying again later may succeed; if not, the event is
    /// dropped (and logged) so it does not block the login's queue.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Homeserver(error) => error.retry() != crate::matrix::client::RetryKind::Permanent,
            Self::Storage(_) | Self::Unavailable(_) => true,
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
    /// Plugins and logins.
    pub registry: Arc<Registry>,
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

impl Bridge {
    /// Builds the bridge.
    pub fn new(
        client: HomeserverClient,
        namespaces: Namespaces,
        store: BridgeStore,
        registry: Arc<Registry>,
        processes: Arc<LoginProcesses>,
        config: Arc<Config>,
        outbox: Arc<Outbox>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|this| Self {
            client,
            namespaces,
            store,
            registry,
            processes,
            config,
            outbox,
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
        let prefixes: Vec<String> = self
            .registry
            .connectors()
            .iter()
            .map(|p| p.manifest.ghost_prefix())
            .collect();
        self.namespaces
            .is_ours(user, prefixes.iter().map(String::as_str))
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
        let Some(record) = self.registry.services().logins.get(key)? else {
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
        let user_id = self
            .namespaces
            .ghost(&plugin.manifest.ghost_prefix(), remote_id);
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
        let invite = invite_user::v3::Request::new(
            room.to_owned(),
            invite_user::v3::InvitationRecipient::UserId(invite_user::v3::InviteUserId::new(
                ghost.to_owned(),
            )),
        );
        match self.client.send(invite, None).await {
            Ok(_) => {}
            // Already invited or joined.
            Err(error) if error.errcode() == Some("M_FORBIDDEN") => {}
            Err(error) => return Err(error.into()),
        }
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

    /// Deletes login `key` as the user asked (logout) or because another
    /// login replaced it: the connector logs out remotely if asked, its
    /// state goes, and its portals are unbridged.
    pub async fn delete_login(
        &self,
        key: &LoginKey,
        logout: bool,
        reason: &str,
    ) -> Result<(), BridgeError> {
        let portals = self.store.portals_of_login(key)?;
        match self.registry.delete_login(key, logout).await {
            Ok(_) => {}
            Err(crate::registry::RegistryError::UnknownLogin(_)) => {}
            Err(crate::registry::RegistryError::Storage(e)) => return Err(e.into()),
            Err(other) => return Err(BridgeError::Unavailable(other.to_string())),
        }
        self.workers
            .lock()
            .expect("worker map poisoned")
            .remove(key);
        self.announced
            .lock()
            .expect("announced map poisoned")
            .remove(key);
        for portal in portals {
            if let Ok(room) = RoomId::parse(&portal.room_id) {
                let text = format!("This chat is no longer bridged: {reason}.");
                if let Err(error) = self.notice(&room, &text).await {
                    tracing::warn!(%error, room = %room, "failed to post the unbridge notice");
                }
            }
            self.store.remove_portal(&portal)?;
        }
        crate::storage::flush_async(self.store.storage()).await?;
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
        let mut backoff = Duration::from_millis(500);
        while wake.recv().await.is_some() {
            while wake.try_recv().is_ok() {}
            loop {
                match self.drain(&login).await {
                    Ok(()) => {
                        backoff = Duration::from_millis(500);
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(%login, %error, retry_in_ms = backoff.as_millis() as u64, "bridging paused; will retry");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(60));
                    }
                }
            }
        }
    }

    /// Bridges `login`'s queued events in order. A transient failure stops
    /// here (the event stays queued, order is kept); a permanent one drops
    /// that event with an error in the log.
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
                match self.handle_remote(&ctx, &queued.event).await {
                    Ok(()) => {}
                    Err(error) if error.is_transient() => return Err(error),
                    Err(error) => {
                        tracing::error!(%login, %error, event = ?queued.event, "dropping a remote event the homeserver refused");
                    }
                }
                self.outbox.ack(login, queued.seq)?;
            }
        }
    }
}

impl EventSink for Bridge {
    fn events_queued(&self, login: &LoginKey) {
        self.wake(login);
    }
}

/// A fresh transaction id for a request.
pub fn txn_id() -> String {
    use rand::Rng;
    let n: u128 = rand::rng().random();
    format!("weft-{n:032x}")
}
