//! Matrix events into connector calls: what arrives in appservice
//! transactions.
//!
//! A transaction is stored before it is answered: its timeline events go
//! to the [inbound queue](super::inbound) (once per event id), the storage
//! is flushed, and the homeserver gets its 200 at once. A worker per room
//! then handles the room's events in order, so a slow connector holds up
//! only its own rooms. An event that cannot be handled now (the
//! homeserver or storage failing, its plugin not loaded yet) stays at the
//! head of its room's queue and is retried; one that fails for good is
//! reported to the room as a notice and kept in the inbound dead letters.
//!
//! Each event is marked as dispatched, durably, before it goes to a
//! connector, so a crash mid-send never sends it twice: after a restart a
//! dispatched message whose remote id was recorded is done, and one
//! without is reported as possibly not delivered.
//!
//! Read receipts and typing arrive as ephemeral events; they are passed on
//! at once and not stored (a missed one is superseded by the next).

use std::collections::BTreeMap;
use std::time::Duration;

use ruma::events::reaction::ReactionEventContent;
use ruma::events::room::MediaSource;
use ruma::events::room::member::{MembershipState, RoomMemberEventContent};
use ruma::events::room::message::{MessageFormat, MessageType, Relation, RoomMessageEventContent};
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::Deserialize;

use super::store::{MessageKind, MessageRecord, PortalRecord};
use super::workers::{Attempt, Stalled};
use super::{Bridge, BridgeError, LoginContext, double_puppet};
use weft_runtime::connector::{self as net, PluginError};
use weft_runtime::{LoginHandle, WorkError};

/// How long a Matrix event waits for its connector before the user is told
/// it failed.
const WORK_TIMEOUT: Duration = Duration::from_secs(60);

/// How long an event may wait (its plugin not loaded, the homeserver
/// failing) before its room is told it is delayed.
const DELAY_NOTICE_AFTER: Duration = Duration::from_secs(30);

/// The parts of a timeline event the bridge reads; the content is parsed
/// with ruma's types once the event type is known.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct IncomingEvent {
    /// The event type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The event id.
    pub event_id: OwnedEventId,
    /// The room.
    pub room_id: OwnedRoomId,
    /// The sender.
    pub sender: OwnedUserId,
    /// The state key, for state events.
    #[serde(default)]
    pub state_key: Option<String>,
    /// The content.
    #[serde(default)]
    pub content: serde_json::Value,
    /// The redacted event, in rooms before version 11.
    #[serde(default)]
    pub redacts: Option<OwnedEventId>,
    /// When it was sent.
    #[serde(default)]
    pub origin_server_ts: u64,
}

/// An appservice transaction.
#[derive(Debug, Default, Deserialize)]
pub struct Transaction {
    /// Timeline and state events.
    #[serde(default)]
    pub events: Vec<serde_json::Value>,
    /// Receipts, typing and presence (with `receive_ephemeral`).
    #[serde(default)]
    pub ephemeral: Vec<serde_json::Value>,
    /// The same, under MSC2409's name (older homeservers).
    #[serde(default, rename = "de.sorunome.msc2409.ephemeral")]
    pub unstable_ephemeral: Vec<serde_json::Value>,
}

/// Why a Matrix event was not handled.
pub(super) enum Failure {
    /// Try again later: the homeserver or storage failed, or the plugin is
    /// not loaded yet.
    Retry(BridgeError),
    /// Give up: the room is told this, and the event is kept in the dead
    /// letters.
    Refused(String),
}

impl From<BridgeError> for Failure {
    fn from(error: BridgeError) -> Self {
        if error.is_transient() {
            Self::Retry(error)
        } else {
            Self::Refused(format!("The bridge could not handle this event: {error}."))
        }
    }
}

impl From<weft_storage::StorageError> for Failure {
    fn from(error: weft_storage::StorageError) -> Self {
        Self::Retry(error.into())
    }
}

type Handled = Result<(), Failure>;

impl Bridge {
    /// Stores transaction `txn_id`'s events for handling, and passes its
    /// ephemeral events on. Returns once the events are durable: the
    /// homeserver may then forget the transaction.
    pub async fn accept_transaction(
        &self,
        txn_id: &str,
        transaction: Transaction,
    ) -> Result<(), BridgeError> {
        let rooms = self.inbound.accept(&transaction.events)?;
        if !rooms.is_empty() {
            weft_storage::flush_async(self.store.storage()).await?;
        }
        tracing::debug!(
            txn_id,
            events = transaction.events.len(),
            new_rooms = rooms.len(),
            "transaction stored"
        );
        for room in rooms {
            self.room_workers.wake(&room.to_string());
        }
        let ephemeral: Vec<serde_json::Value> = transaction
            .ephemeral
            .into_iter()
            .chain(transaction.unstable_ephemeral)
            .collect();
        if !ephemeral.is_empty()
            && let Some(bridge) = self.this.upgrade()
        {
            tokio::spawn(async move { bridge.handle_ephemeral(ephemeral).await });
        }
        Ok(())
    }

    /// Starts the workers of rooms with stored events (after a restart).
    pub fn resume_inbound(&self) -> Result<(), BridgeError> {
        for room in self.inbound.pending_rooms()? {
            self.room_workers.wake(&room);
        }
        Ok(())
    }

    /// Handles `room`'s stored events in order.
    pub(super) async fn drain_room(&self, room: &str, attempt: Attempt) -> Result<(), Stalled> {
        let mut progressed = false;
        let stalled = |error: BridgeError, progressed: bool| Stalled { error, progressed };
        loop {
            let batch = self
                .inbound
                .peek(room, 20)
                .map_err(|e| stalled(e.into(), progressed))?;
            if batch.is_empty() {
                return Ok(());
            }
            for queued in batch {
                let stored = match queued.event {
                    Err(reason) => self.inbound.bury(room, queued.seq, None, &reason),
                    Ok(event) => match self.handle_matrix_event(&event).await {
                        Ok(()) => {
                            self.delayed
                                .lock()
                                .expect("delay set poisoned")
                                .remove(event.event_id.as_str());
                            self.inbound.ack(room, queued.seq)
                        }
                        Err(Failure::Retry(error)) => {
                            self.notice_delay(&event, &error, attempt).await;
                            return Err(stalled(error, progressed));
                        }
                        Err(Failure::Refused(text)) => {
                            if let Err(error) =
                                self.notice(&event.room_id, &format!("⚠ {text}")).await
                            {
                                tracing::warn!(%error, room, "failed to tell the room an event failed");
                            }
                            self.delayed
                                .lock()
                                .expect("delay set poisoned")
                                .remove(event.event_id.as_str());
                            self.inbound.bury(room, queued.seq, Some(&event), &text)
                        }
                    },
                };
                stored.map_err(|e| stalled(e.into(), progressed))?;
                progressed = true;
            }
        }
    }

    /// Tells a room, once per event, that its event is waiting.
    async fn notice_delay(&self, event: &IncomingEvent, error: &BridgeError, attempt: Attempt) {
        let waited = attempt.failing_since.map(|since| since.elapsed());
        if waited.is_none_or(|waited| waited < DELAY_NOTICE_AFTER) {
            return;
        }
        if !self
            .delayed
            .lock()
            .expect("delay set poisoned")
            .insert(event.event_id.to_string())
        {
            return;
        }
        let text = format!("⏳ Delayed: {error}. It will be delivered once that is resolved.");
        if let Err(error) = self.notice(&event.room_id, &text).await {
            tracing::debug!(%error, "failed to tell the room an event is delayed");
        }
    }

    async fn handle_matrix_event(&self, event: &IncomingEvent) -> Handled {
        // The bridge's own events come back to it: skip them.
        if self.is_ours(&event.sender)
            || double_puppet::is_marked(&event.content, self.puppet_source())
            || self
                .store
                .message_by_event(event.event_id.as_str())?
                .is_some()
        {
            return Ok(());
        }
        match event.kind.as_str() {
            "m.room.member" if event.state_key.as_deref() == Some(self.bot().as_str()) => {
                Ok(self.on_bot_membership(event).await?)
            }
            "m.room.message" => {
                if let Some(portal) = self.store.portal_of_room(event.room_id.as_str())? {
                    self.portal_message(portal, event).await
                } else if self
                    .store
                    .management_room_owner(event.room_id.as_str())?
                    .as_deref()
                    == Some(event.sender.as_str())
                {
                    let Ok(content) =
                        serde_json::from_value::<RoomMessageEventContent>(event.content.clone())
                    else {
                        return Ok(());
                    };
                    Ok(self
                        .handle_command(
                            &event.room_id,
                            &event.sender,
                            &event.event_id,
                            content.body(),
                        )
                        .await?)
                } else {
                    Ok(())
                }
            }
            "m.reaction" => match self.store.portal_of_room(event.room_id.as_str())? {
                Some(portal) => self.portal_reaction(portal, event).await,
                None => Ok(()),
            },
            "m.room.redaction" => match self.store.portal_of_room(event.room_id.as_str())? {
                Some(portal) => self.portal_redaction(portal, event).await,
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// The bot was invited (or its membership changed): join, and adopt a
    /// direct chat as the user's management room.
    async fn on_bot_membership(&self, event: &IncomingEvent) -> Result<(), BridgeError> {
        let Ok(content) = serde_json::from_value::<RoomMemberEventContent>(event.content.clone())
        else {
            return Ok(());
        };
        if content.membership != MembershipState::Invite {
            return Ok(());
        }
        let room = event.room_id.clone();
        if !self.permitted(&event.sender) {
            tracing::info!(user = %event.sender, "refusing an invite from a user not permitted to use the bridge");
            let leave = ruma::api::client::membership::leave_room::v3::Request::new(room);
            self.client.send(leave, None).await?;
            return Ok(());
        }
        self.client
            .send(
                ruma::api::client::membership::join_room_by_id::v3::Request::new(room.clone()),
                None,
            )
            .await?;
        let mut user = self.store.user(event.sender.as_str())?;
        let direct = content.is_direct.unwrap_or(false);
        if user.management_room.is_none() || direct {
            user.management_room = Some(room.to_string());
            self.store.put_user(event.sender.as_str(), &user)?;
            weft_storage::flush_async(self.store.storage()).await?;
            self.notice(
                &room,
                &format!(
                    "Hello! This is your management room for the bridge.\n{}",
                    super::commands::HELP
                ),
            )
            .await?;
        }
        Ok(())
    }

    /// The login a Matrix user acts through in `portal`, if they may.
    fn acting_login(
        &self,
        portal: &PortalRecord,
        sender: &UserId,
    ) -> Result<Option<LoginContext>, BridgeError> {
        let key = match portal.key.login() {
            Some(key) => key,
            // A shared portal: the sender's first login of the connector.
            None => match self
                .logins
                .store
                .of_owner(sender.as_str())?
                .into_iter()
                .find(|r| r.key.plugin == portal.key.plugin)
            {
                Some(record) => record.key,
                None => return Ok(None),
            },
        };
        let Some(ctx) = self.login_context(&key)? else {
            return Ok(None);
        };
        Ok((ctx.owner == *sender).then_some(ctx))
    }

    /// The running login of `ctx`. A login whose plugin is loaded but
    /// that is not running (it needs a new login, it crashed) cannot take
    /// the event.
    fn running(&self, ctx: &LoginContext) -> Result<LoginHandle, Failure> {
        self.registry.login(ctx.key()).ok_or_else(|| {
            Failure::Refused(format!(
                "Not delivered: your {} login {} is not running.",
                ctx.plugin.manifest.network_name(),
                ctx.key().id
            ))
        })
    }

    /// Marks `event` as dispatched. `false` means it was dispatched before
    /// a restart and not acknowledged; `delivered` says whether its remote
    /// id was recorded, i.e. whether it reached the remote side.
    async fn claim(&self, event: &IncomingEvent) -> Result<bool, Failure> {
        if self.store.claim_matrix_event(event.event_id.as_str())? {
            // Durable before the connector sees it, or a crash right after
            // the send would send it again.
            weft_storage::flush_async(self.store.storage())
                .await
                .map_err(|e| Failure::Retry(e.into()))?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn portal_message(&self, portal: PortalRecord, event: &IncomingEvent) -> Handled {
        let Some(ctx) = self.acting_login(&portal, &event.sender)? else {
            tracing::debug!(sender = %event.sender, room = %event.room_id, "a message from someone who is not this portal's login");
            return Ok(());
        };
        let Ok(content) = serde_json::from_value::<RoomMessageEventContent>(event.content.clone())
        else {
            return Ok(());
        };
        let handle = self.running(&ctx)?;
        if !self.claim(event).await? {
            return Err(Failure::Refused(
                "This message may not have been delivered: the bridge restarted while sending it."
                    .into(),
            ));
        }
        match &content.relates_to {
            Some(Relation::Replacement(replacement)) => {
                let Some(target) = self.store.message_by_event(replacement.event_id.as_str())?
                else {
                    return Ok(());
                };
                let (new_text, new_html) = text_of(&replacement.new_content.msgtype);
                let edit = net::MatrixEdit {
                    chat_id: portal.key.chat_id.clone(),
                    message_id: target.remote_id,
                    text: new_text,
                    html: new_html,
                };
                outcome("edit", self.work(handle.matrix_edit(edit)).await)
            }
            relation => {
                let reply_to = match relation {
                    Some(Relation::Reply(reply)) => self
                        .store
                        .message_by_event(reply.in_reply_to.event_id.as_str())?
                        .map(|r| r.remote_id),
                    _ => None,
                };
                let hook = self.sent_hook(&portal, event);
                if let Some(file) = super::media::file_of(&content.msgtype) {
                    return self
                        .portal_file(&ctx, &handle, &portal, event, file, reply_to, hook)
                        .await;
                }
                let (text, html) = text_of(&content.msgtype);
                let message = net::MatrixMessage {
                    chat_id: portal.key.chat_id.clone(),
                    event_id: event.event_id.to_string(),
                    sender: event.sender.to_string(),
                    text,
                    html,
                    reply_to,
                    timestamp_ms: event.origin_server_ts,
                };
                let sent = self
                    .work(handle.matrix_message_then(message, Some(hook)))
                    .await;
                outcome("message", sent.map(drop))
            }
        }
    }

    /// Records the mapping of a sent message before the connector's next
    /// poll can see it, so its echo is dropped.
    fn sent_hook(&self, portal: &PortalRecord, event: &IncomingEvent) -> weft_runtime::SentHook {
        let store = self.store.clone();
        let portal_key = portal.key.clone();
        let event_id = event.event_id.to_string();
        let room_id = portal.room_id.clone();
        Box::new(move |remote_id: &str| {
            let record = MessageRecord {
                portal: portal_key,
                remote_id: remote_id.to_owned(),
                event_id,
                room_id,
                kind: MessageKind::Message,
            };
            if let Err(error) = store.put_message(&record) {
                tracing::error!(%error, "failed to record a sent message");
            }
        })
    }

    /// A file sent on Matrix: downloaded (within the plugin's media limit)
    /// and handed to the connector; a connector that takes no files gets
    /// its name as text.
    #[allow(clippy::too_many_arguments)]
    async fn portal_file(
        &self,
        ctx: &LoginContext,
        handle: &LoginHandle,
        portal: &PortalRecord,
        event: &IncomingEvent,
        file: super::media::MatrixFile,
        reply_to: Option<String>,
        hook: weft_runtime::SentHook,
    ) -> Handled {
        let limit = ctx.plugin.capabilities.max_media_bytes;
        if file.size.is_some_and(|size| size > limit) {
            return Err(Failure::Refused(format!(
                "Your file was not delivered: it is larger than the limit of {} for this network.",
                super::media::human_size(limit)
            )));
        }
        let MediaSource::Plain(mxc) = &file.source else {
            return Err(Failure::Refused(
                "Your file was not delivered: encrypted files are not supported.".into(),
            ));
        };
        let (content_type, data) = match self.client.download(mxc, limit).await {
            Ok(download) => download,
            Err(error @ crate::matrix::HsError::TooLarge { .. }) => {
                return Err(Failure::Refused(format!(
                    "Your file was not delivered: {error}."
                )));
            }
            Err(error) => return Err(BridgeError::from(error).into()),
        };
        let mime_type = file
            .mime_type
            .clone()
            .or(content_type)
            .unwrap_or_else(|| "application/octet-stream".into());
        let media = net::MatrixMedia {
            chat_id: portal.key.chat_id.clone(),
            event_id: event.event_id.to_string(),
            sender: event.sender.to_string(),
            file_name: file.name.clone(),
            mime_type,
            data,
            caption: file.caption.clone(),
            reply_to: reply_to.clone(),
            timestamp_ms: event.origin_server_ts,
        };
        match self.work(handle.matrix_media_then(media, Some(hook))).await {
            Err(WorkError::Plugin(PluginError::Unsupported(_))) => {
                // The connector sends no files: say what was sent, as text.
                let text = match &file.caption {
                    Some(caption) => format!("{caption}\n📎 {}", file.name),
                    None => format!("📎 {}", file.name),
                };
                let message = net::MatrixMessage {
                    chat_id: portal.key.chat_id.clone(),
                    event_id: event.event_id.to_string(),
                    sender: event.sender.to_string(),
                    text,
                    html: None,
                    reply_to,
                    timestamp_ms: event.origin_server_ts,
                };
                let hook = self.sent_hook(portal, event);
                let sent = self
                    .work(handle.matrix_message_then(message, Some(hook)))
                    .await;
                outcome("file", sent.map(drop))
            }
            other => outcome("file", other.map(drop)),
        }
    }

    /// Waits for a piece of the connector's work, at most [`WORK_TIMEOUT`].
    async fn work<T>(
        &self,
        work: impl Future<Output = Result<T, WorkError>>,
    ) -> Result<T, WorkError> {
        match tokio::time::timeout(WORK_TIMEOUT, work).await {
            Ok(result) => result,
            Err(_) => Err(WorkError::Unavailable(
                "the connector did not answer in time".into(),
            )),
        }
    }

    async fn portal_reaction(&self, portal: PortalRecord, event: &IncomingEvent) -> Handled {
        let Some(ctx) = self.acting_login(&portal, &event.sender)? else {
            return Ok(());
        };
        let Ok(content) = serde_json::from_value::<ReactionEventContent>(event.content.clone())
        else {
            return Ok(());
        };
        let Some(target) = self
            .store
            .message_by_event(content.relates_to.event_id.as_str())?
        else {
            return Ok(());
        };
        if target.kind != MessageKind::Message {
            return Ok(());
        }
        let handle = self.running(&ctx)?;
        if !self.claim(event).await? {
            return Ok(());
        }
        let reaction = net::MatrixReaction {
            chat_id: portal.key.chat_id.clone(),
            message_id: target.remote_id.clone(),
            key: content.relates_to.key.clone(),
        };
        match self.work(handle.matrix_reaction(reaction)).await {
            Ok(reaction_id) => {
                self.store.put_message(&MessageRecord {
                    portal: portal.key.clone(),
                    remote_id: format!("matrix\u{1}{}\u{1}{reaction_id}", target.remote_id),
                    event_id: event.event_id.to_string(),
                    room_id: portal.room_id.clone(),
                    kind: MessageKind::Reaction,
                })?;
                Ok(())
            }
            Err(error) => outcome("reaction", Err(error)),
        }
    }

    async fn portal_redaction(&self, portal: PortalRecord, event: &IncomingEvent) -> Handled {
        let Some(ctx) = self.acting_login(&portal, &event.sender)? else {
            return Ok(());
        };
        let redacts = event
            .content
            .get("redacts")
            .and_then(|v| v.as_str())
            .and_then(|s| ruma::EventId::parse(s).ok())
            .or_else(|| event.redacts.clone());
        let Some(redacts) = redacts else {
            return Ok(());
        };
        let Some(target) = self.store.message_by_event(redacts.as_str())? else {
            return Ok(());
        };
        let handle = self.running(&ctx)?;
        if !self.claim(event).await? {
            return Ok(());
        }
        let chat = portal.key.chat_id.clone();
        let result = match target.kind {
            MessageKind::Message => {
                self.work(handle.matrix_redaction(chat, target.remote_id.clone()))
                    .await
            }
            MessageKind::Reaction => {
                let parts: Vec<&str> = target.remote_id.split('\u{1}').collect();
                let ["matrix", message_id, reaction_id] = parts.as_slice() else {
                    // A reaction bridged from the remote side: not ours to
                    // remove there.
                    return Ok(());
                };
                self.work(handle.matrix_reaction_removal(
                    chat,
                    (*message_id).to_owned(),
                    (*reaction_id).to_owned(),
                ))
                .await
            }
        };
        match result {
            Ok(()) => {
                self.store.remove_message(&target)?;
                Ok(())
            }
            Err(error) => outcome("deletion", Err(error)),
        }
    }

    /// Passes the owners' read receipts and typing in their portals on to
    /// their connectors.
    async fn handle_ephemeral(&self, events: Vec<serde_json::Value>) {
        for event in events {
            let kind = event.get("type").and_then(|t| t.as_str()).unwrap_or("");
            let Some(room) = event
                .get("room_id")
                .and_then(|r| r.as_str())
                .and_then(|r| RoomId::parse(r).ok())
            else {
                continue;
            };
            let result = match kind {
                "m.typing" => self.matrix_typing(&room, &event["content"]).await,
                "m.receipt" => self.matrix_receipts(&room, &event["content"]).await,
                _ => Ok(()),
            };
            if let Err(error) = result {
                tracing::debug!(%error, %room, kind, "an ephemeral event was not passed on");
            }
        }
    }

    /// `m.typing` lists who types now; the connector hears of changes.
    async fn matrix_typing(
        &self,
        room: &RoomId,
        content: &serde_json::Value,
    ) -> Result<(), BridgeError> {
        let Some(portal) = self.store.portal_of_room(room.as_str())? else {
            return Ok(());
        };
        let typing_now: Vec<OwnedUserId> = content
            .get("user_ids")
            .and_then(|ids| serde_json::from_value(ids.clone()).ok())
            .unwrap_or_default();
        let changes: Vec<(OwnedUserId, bool)> = {
            let mut typing = self.typing.lock().expect("typing map poisoned");
            let before = typing.remove(room.as_str()).unwrap_or_default();
            let started = typing_now
                .iter()
                .filter(|u| !before.contains(*u))
                .map(|u| (u.clone(), true));
            let stopped = before
                .iter()
                .filter(|u| !typing_now.contains(u))
                .map(|u| (u.clone(), false));
            let changes = started.chain(stopped).collect();
            let owners: Vec<OwnedUserId> = typing_now
                .into_iter()
                .filter(|u| !self.is_ours(u))
                .collect();
            if !owners.is_empty() {
                typing.insert(room.to_string(), owners);
            }
            changes
        };
        for (user, is_typing) in changes {
            if self.is_ours(&user) {
                continue;
            }
            let Some(ctx) = self.acting_login(&portal, &user)? else {
                continue;
            };
            if let Some(handle) = self.registry.login(ctx.key()) {
                let sent = self
                    .work(handle.matrix_typing(portal.key.chat_id.clone(), is_typing))
                    .await;
                if let Err(error) = sent {
                    tracing::debug!(%error, login = %ctx.key(), "typing not passed on");
                }
            }
        }
        Ok(())
    }

    /// `m.receipt`: event id → receipt type → user → receipt. An owner's
    /// read receipt on a bridged message reaches their connector.
    async fn matrix_receipts(
        &self,
        room: &RoomId,
        content: &serde_json::Value,
    ) -> Result<(), BridgeError> {
        let Some(portal) = self.store.portal_of_room(room.as_str())? else {
            return Ok(());
        };
        let Some(events) = content.as_object() else {
            return Ok(());
        };
        // The newest receipt per user, if several come at once.
        let mut latest: BTreeMap<OwnedUserId, (u64, String)> = BTreeMap::new();
        for (event_id, types) in events {
            let Some(readers) = types.get("m.read").and_then(|r| r.as_object()) else {
                continue;
            };
            for (user, receipt) in readers {
                let Ok(user) = UserId::parse(user.as_str()) else {
                    continue;
                };
                let ts = receipt.get("ts").and_then(|t| t.as_u64()).unwrap_or(0);
                if latest.get(&user).is_none_or(|(seen, _)| *seen <= ts) {
                    latest.insert(user, (ts, event_id.clone()));
                }
            }
        }
        for (user, (_, event_id)) in latest {
            if self.is_ours(&user) {
                continue;
            }
            let Some(target) = self.store.message_by_event(&event_id)? else {
                continue;
            };
            if target.kind != MessageKind::Message {
                continue;
            }
            let Some(ctx) = self.acting_login(&portal, &user)? else {
                continue;
            };
            if let Some(handle) = self.registry.login(ctx.key()) {
                let sent = self
                    .work(handle.matrix_read_receipt(portal.key.chat_id.clone(), target.remote_id))
                    .await;
                if let Err(error) = sent {
                    tracing::debug!(%error, login = %ctx.key(), "read receipt not passed on");
                }
            }
        }
        Ok(())
    }
}

/// What the connector's answer means for a Matrix event: a failure is
/// reported to the room, except that a connector without reactions or
/// deletions just does not get them.
fn outcome(what: &str, result: Result<(), WorkError>) -> Handled {
    match result {
        Ok(()) => Ok(()),
        Err(WorkError::Plugin(PluginError::Unsupported(_))) if what != "message" => {
            tracing::debug!("the connector does not support this {what}");
            Ok(())
        }
        Err(error) => Err(Failure::Refused(format!(
            "Your {what} was not delivered: {error}"
        ))),
    }
}

/// The plain and HTML bodies of a message.
fn text_of(msgtype: &MessageType) -> (String, Option<String>) {
    let formatted = match msgtype {
        MessageType::Text(text) => text.formatted.as_ref(),
        MessageType::Notice(notice) => notice.formatted.as_ref(),
        MessageType::Emote(emote) => emote.formatted.as_ref(),
        _ => None,
    };
    let html = formatted
        .filter(|f| f.format == MessageFormat::Html)
        .map(|f| f.body.clone());
    let body = match msgtype {
        MessageType::Emote(emote) => format!("* {}", emote.body),
        other => other.body().to_owned(),
    };
    (body, html)
}

#[cfg(test)]
mod tests {
    use ruma::events::room::message::{EmoteMessageEventContent, TextMessageEventContent};

    use super::*;

    #[test]
    fn a_formatted_message_gives_both_bodies_and_an_emote_reads_as_an_action() {
        let html = MessageType::Text(TextMessageEventContent::html("hi *you*", "hi <em>you</em>"));
        assert_eq!(
            text_of(&html),
            ("hi *you*".to_owned(), Some("hi <em>you</em>".to_owned()))
        );
        let plain = MessageType::Text(TextMessageEventContent::plain("plain"));
        assert_eq!(text_of(&plain), ("plain".to_owned(), None));
        // `/me waves` reaches the remote side as "* waves".
        let emote = MessageType::Emote(EmoteMessageEventContent::plain("waves"));
        assert_eq!(text_of(&emote).0, "* waves");
    }

    #[test]
    fn a_transaction_reads_ephemeral_events_under_either_name() {
        let stable: Transaction =
            serde_json::from_str(r#"{"events":[],"ephemeral":[{"type":"m.typing"}]}"#).unwrap();
        assert_eq!(stable.ephemeral.len(), 1);
        let unstable: Transaction = serde_json::from_str(
            r#"{"events":[],"de.sorunome.msc2409.ephemeral":[{"type":"m.receipt"}]}"#,
        )
        .unwrap();
        assert_eq!(unstable.unstable_ephemeral.len(), 1);
    }
}

/// Fuzz target (`WEFT_FUZZ_CASES`, see `weft-fuzz`): the appservice
/// transaction decoder, from the body's bytes to the queued events and
/// their typed contents, on what any homeserver (or anyone holding the
/// hs_token) could send.
#[cfg(test)]
mod fuzz {
    use std::sync::Arc;

    use proptest::prelude::*;
    use weft_storage::{MemoryStorage, Storage};

    use super::*;
    use crate::bridge::inbound::Inbound;

    const KEYS: &[&str] = &[
        "events",
        "ephemeral",
        "de.sorunome.msc2409.ephemeral",
        "type",
        "event_id",
        "room_id",
        "sender",
        "state_key",
        "content",
        "redacts",
        "origin_server_ts",
        "msgtype",
        "body",
        "format",
        "formatted_body",
        "m.relates_to",
        "rel_type",
        "event_id",
        "key",
        "m.new_content",
        "url",
        "info",
        "membership",
        "m.in_reply_to",
    ];
    const STRINGS: &[&str] = &[
        "m.room.message",
        "m.reaction",
        "m.room.redaction",
        "m.room.member",
        "m.text",
        "m.emote",
        "m.image",
        "m.file",
        "m.replace",
        "m.annotation",
        "org.matrix.custom.html",
        "join",
        "invite",
        "$event:localhost",
        "$",
        "!room:localhost",
        "!",
        "@user:localhost",
        "@",
        "mxc://localhost/abc",
        "mxc://",
        "<b>hi</b>",
        "👍",
        "",
    ];

    fn inbound() -> Inbound {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        Inbound::open(&storage).unwrap()
    }

    /// What the bridge reads of one queued event.
    fn read(event: &IncomingEvent) {
        if let Ok(content) =
            serde_json::from_value::<RoomMessageEventContent>(event.content.clone())
        {
            let _ = text_of(&content.msgtype);
        }
        let _ = serde_json::from_value::<ReactionEventContent>(event.content.clone());
        let _ = serde_json::from_value::<RoomMemberEventContent>(event.content.clone());
    }

    fn decode(body: &[u8]) {
        let Ok(transaction) = serde_json::from_slice::<Transaction>(body) else {
            return;
        };
        let inbound = inbound();
        let rooms = inbound.accept(&transaction.events).unwrap();
        for room in rooms {
            for queued in inbound.peek(room.as_str(), 1000).unwrap() {
                if let Ok(event) = &queued.event {
                    read(event);
                }
            }
        }
    }

    proptest! {
        #![proptest_config(weft_fuzz::config())]

        #[test]
        fn any_transaction_body_is_stored_or_refused_never_a_panic(
            events in proptest::collection::vec(weft_fuzz::json(KEYS, STRINGS), 0..6)
        ) {
            let body = serde_json::to_vec(&serde_json::json!({ "events": events })).unwrap();
            decode(&body);
        }

        #[test]
        fn any_bytes_as_a_transaction_are_refused_or_stored_never_a_panic(
            body in proptest::collection::vec(any::<u8>(), 0..512)
        ) {
            decode(&body);
        }
    }
}
