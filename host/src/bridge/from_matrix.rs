//! Matrix events into connector calls: what arrives in appservice
//! transactions.
//!
//! A transaction is handled once: its id is recorded (durably) after its
//! events are handled, and a replay is answered without doing anything.
//! Each Matrix event is marked as dispatched before it goes to a
//! connector, so even a crash mid-transaction followed by the homeserver's
//! retry sends it to the remote side at most once. Events in different
//! rooms are handled concurrently, events in one room in order.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;
use ruma::events::reaction::ReactionEventContent;
use ruma::events::room::member::{MembershipState, RoomMemberEventContent};
use ruma::events::room::message::{MessageFormat, MessageType, Relation, RoomMessageEventContent};
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId};
use serde::Deserialize;

use super::store::{MessageKind, MessageRecord, PortalRecord};
use super::{Bridge, BridgeError, LoginContext};
use crate::logins::{LoginKey, now_ms};
use weft_runtime::LoginHandle;
use weft_runtime::WorkError;
use weft_runtime::connector::{self as net, PluginError};

/// How long a Matrix event waits for its connector before the user is told
/// it failed.
const WORK_TIMEOUT: Duration = Duration::from_secs(60);

/// The parts of a timeline event the bridge reads; the content is parsed
/// with ruma's types once the event type is known.
#[derive(Debug, Clone, Deserialize)]
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

impl Bridge {
    /// Handles appservice transaction `txn_id`, once.
    pub async fn handle_transaction(
        &self,
        txn_id: &str,
        events: Vec<serde_json::Value>,
    ) -> Result<(), BridgeError> {
        if self.store.transaction_done(txn_id)? {
            tracing::debug!(txn_id, "transaction already handled");
            return Ok(());
        }
        let mut by_room: BTreeMap<OwnedRoomId, Vec<IncomingEvent>> = BTreeMap::new();
        for raw in events {
            match serde_json::from_value::<IncomingEvent>(raw) {
                Ok(event) => by_room
                    .entry(event.room_id.clone())
                    .or_default()
                    .push(event),
                Err(error) => tracing::debug!(%error, "skipping an event the bridge cannot read"),
            }
        }
        join_all(by_room.into_values().map(|events| async move {
            for event in events {
                let event_id = event.event_id.clone();
                if let Err(error) = self.handle_matrix_event(event).await {
                    tracing::warn!(%error, %event_id, "failed to handle a Matrix event");
                }
            }
        }))
        .await;
        self.store.mark_transaction(txn_id, now_ms())?;
        weft_storage::flush_async(self.store.storage()).await?;
        Ok(())
    }

    async fn handle_matrix_event(&self, event: IncomingEvent) -> Result<(), BridgeError> {
        // The bridge's own events come back to it: skip them.
        if self.is_ours(&event.sender)
            || self
                .store
                .message_by_event(event.event_id.as_str())?
                .is_some()
        {
            return Ok(());
        }
        match event.kind.as_str() {
            "m.room.member" if event.state_key.as_deref() == Some(self.bot().as_str()) => {
                self.on_bot_membership(&event).await
            }
            "m.room.message" => {
                if let Some(portal) = self.store.portal_of_room(event.room_id.as_str())? {
                    self.portal_message(portal, &event).await
                } else if self
                    .store
                    .management_room_owner(event.room_id.as_str())?
                    .as_deref()
                    == Some(event.sender.as_str())
                {
                    let content: RoomMessageEventContent =
                        match serde_json::from_value(event.content.clone()) {
                            Ok(content) => content,
                            Err(_) => return Ok(()),
                        };
                    self.handle_command(
                        &event.room_id,
                        &event.sender,
                        &event.event_id,
                        content.body(),
                    )
                    .await
                } else {
                    Ok(())
                }
            }
            "m.reaction" => match self.store.portal_of_room(event.room_id.as_str())? {
                Some(portal) => self.portal_reaction(portal, &event).await,
                None => Ok(()),
            },
            "m.room.redaction" => match self.store.portal_of_room(event.room_id.as_str())? {
                Some(portal) => self.portal_redaction(portal, &event).await,
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
        sender: &OwnedUserId,
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

    async fn running(
        &self,
        key: &LoginKey,
        room: &OwnedRoomId,
    ) -> Result<Option<LoginHandle>, BridgeError> {
        let handle = self.registry.login(key);
        if handle.is_none() {
            self.notice(
                room,
                "⚠ Not delivered: this login is not running (its plugin is not loaded).",
            )
            .await?;
        }
        Ok(handle)
    }

    async fn report_failure(
        &self,
        room: &OwnedRoomId,
        what: &str,
        error: &WorkError,
    ) -> Result<(), BridgeError> {
        if matches!(error, WorkError::Plugin(PluginError::Unsupported(_))) && what != "message" {
            tracing::debug!(%error, "the connector does not support this {what}");
            return Ok(());
        }
        self.notice(room, &format!("⚠ Your {what} was not delivered: {error}"))
            .await
    }

    async fn portal_message(
        &self,
        portal: PortalRecord,
        event: &IncomingEvent,
    ) -> Result<(), BridgeError> {
        let Some(ctx) = self.acting_login(&portal, &event.sender)? else {
            tracing::debug!(sender = %event.sender, room = %event.room_id, "a message from someone who is not this portal's login");
            return Ok(());
        };
        let Ok(content) = serde_json::from_value::<RoomMessageEventContent>(event.content.clone())
        else {
            return Ok(());
        };
        let Some(handle) = self.running(ctx.key(), &event.room_id).await? else {
            return Ok(());
        };
        if !self.store.claim_matrix_event(event.event_id.as_str())? {
            return Ok(());
        }
        let (text, html) = text_of(&content.msgtype);
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
                let result = self.work(handle.matrix_edit(edit)).await;
                if let Err(error) = result {
                    self.report_failure(&event.room_id, "edit", &error).await?;
                }
                Ok(())
            }
            relation => {
                let reply_to = match relation {
                    Some(Relation::Reply(reply)) => self
                        .store
                        .message_by_event(reply.in_reply_to.event_id.as_str())?
                        .map(|r| r.remote_id),
                    _ => None,
                };
                let message = net::MatrixMessage {
                    chat_id: portal.key.chat_id.clone(),
                    event_id: event.event_id.to_string(),
                    sender: event.sender.to_string(),
                    text,
                    html,
                    reply_to,
                    timestamp_ms: event.origin_server_ts,
                };
                // Record the mapping before the connector's next poll can
                // see the message, so its echo is dropped.
                let store = self.store.clone();
                let portal_key = portal.key.clone();
                let event_id = event.event_id.to_string();
                let room_id = portal.room_id.clone();
                let hook: weft_runtime::SentHook = Box::new(move |remote_id: &str| {
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
                });
                match self
                    .work(handle.matrix_message_then(message, Some(hook)))
                    .await
                {
                    Ok(remote_id) => {
                        tracing::debug!(login = %ctx.key(), %remote_id, "Matrix message sent");
                        Ok(())
                    }
                    Err(error) => self.report_failure(&event.room_id, "message", &error).await,
                }
            }
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

    async fn portal_reaction(
        &self,
        portal: PortalRecord,
        event: &IncomingEvent,
    ) -> Result<(), BridgeError> {
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
        let Some(handle) = self.running(ctx.key(), &event.room_id).await? else {
            return Ok(());
        };
        if !self.store.claim_matrix_event(event.event_id.as_str())? {
            return Ok(());
        }
        let reaction = net::MatrixReaction {
            chat_id: portal.key.chat_id.clone(),
            message_id: target.remote_id.clone(),
            key: content.relates_to.key.clone(),
        };
        match self.work(handle.matrix_reaction(reaction)).await {
            Ok(reaction_id) => self.store.put_message(&MessageRecord {
                portal: portal.key.clone(),
                remote_id: format!("matrix\u{1}{}\u{1}{reaction_id}", target.remote_id),
                event_id: event.event_id.to_string(),
                room_id: portal.room_id.clone(),
                kind: MessageKind::Reaction,
            })?,
            Err(error) => {
                self.report_failure(&event.room_id, "reaction", &error)
                    .await?
            }
        }
        Ok(())
    }

    async fn portal_redaction(
        &self,
        portal: PortalRecord,
        event: &IncomingEvent,
    ) -> Result<(), BridgeError> {
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
        let Some(handle) = self.running(ctx.key(), &event.room_id).await? else {
            return Ok(());
        };
        if !self.store.claim_matrix_event(event.event_id.as_str())? {
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
            Ok(()) => self.store.remove_message(&target)?,
            Err(error) => {
                self.report_failure(&event.room_id, "deletion", &error)
                    .await?
            }
        }
        Ok(())
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
}
