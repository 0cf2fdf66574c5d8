//! Remote events into Matrix: portals, ghosts, messages, edits, deletions,
//! reactions, typing, receipts and bridge states.

use std::collections::BTreeSet;

use ruma::api::client::message::send_message_event;
use ruma::api::client::receipt::create_receipt;
use ruma::api::client::redact::redact_event;
use ruma::api::client::room::create_room;
use ruma::api::client::state::send_state_event;
use ruma::api::client::typing::create_typing_event;
use ruma::events::reaction::ReactionEventContent;
use ruma::events::receipt::ReceiptThread;
use ruma::events::relation::{Annotation, InReplyTo, Reply};
use ruma::events::room::message::{Relation, ReplacementMetadata, RoomMessageEventContent};
use ruma::events::room::name::RoomNameEventContent;
use ruma::events::room::topic::RoomTopicEventContent;
use ruma::events::{MessageLikeEventContent, MessageLikeEventType};
use ruma::serde::Raw;
use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedTransactionId,
    OwnedUserId, RoomId, UInt,
};
use sha2::{Digest, Sha256};

use super::double_puppet::{self, Author};
use super::store::{MessageKind, MessageRecord, PortalKey, PortalRecord};
use super::{Bridge, BridgeError, LoginContext, html, media};
use weft_runtime::events::{
    ChatKind, ChatMember, ChatResync, Delete, Edit, EventSender, MediaMessage, MediaSource,
    Message, Reaction, ReadReceipt, RemoteEvent, Typing,
};

use crate::matrix::HsError;

/// A transaction id derived from what is being sent: if the host dies
/// after sending and before recording the mapping, the retry reuses the id
/// and the homeserver answers with the same event instead of a duplicate.
fn stable_txn(parts: &[&str]) -> OwnedTransactionId {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    OwnedTransactionId::from(format!("weft-{}", hex::encode(&hash.finalize()[..16])))
}

fn protocol(error: impl std::fmt::Display) -> BridgeError {
    BridgeError::Homeserver(HsError::Protocol(error.to_string()))
}

pub(super) fn parse_room(portal: &PortalRecord) -> Result<OwnedRoomId, BridgeError> {
    RoomId::parse(&portal.room_id).map_err(protocol)
}

fn parse_event(record: &MessageRecord) -> Result<OwnedEventId, BridgeError> {
    EventId::parse(&record.event_id).map_err(protocol)
}

impl Bridge {
    /// Bridges one remote event of login `ctx`.
    pub(super) async fn handle_remote(
        &self,
        ctx: &LoginContext,
        event: &RemoteEvent,
    ) -> Result<(), BridgeError> {
        tracing::debug!(login = %ctx.key(), kind = event.kind(), chat = event.chat_id(), "bridging a remote event");
        match event {
            RemoteEvent::ChatResync(chat) => self.resync_chat(ctx, chat).await.map(drop),
            RemoteEvent::Message(message) => self.bridge_message(ctx, message).await,
            RemoteEvent::Media(media) => self.bridge_media(ctx, media).await,
            RemoteEvent::Edit(edit) => self.bridge_edit(ctx, edit).await,
            RemoteEvent::Delete(delete) => self.bridge_delete(ctx, delete).await,
            RemoteEvent::Reaction(reaction) => self.bridge_reaction(ctx, reaction).await,
            RemoteEvent::Typing(typing) => self.bridge_typing(ctx, typing).await,
            RemoteEvent::ReadReceipt(receipt) => self.bridge_receipt(ctx, receipt).await,
            RemoteEvent::BridgeState(state) => {
                self.announce_state(ctx, state.state.into(), state.message.as_deref())
                    .await
            }
        }
    }

    /// The portal key of `chat_id` for this login. Connectors that split
    /// portals (the default) always get the login as receiver; others get
    /// it for direct chats only, sharing group rooms between logins.
    pub fn portal_key(&self, ctx: &LoginContext, chat_id: &str, direct: bool) -> PortalKey {
        let receiver = if ctx.plugin.manifest.split_portals() || direct {
            ctx.key().id.clone()
        } else {
            String::new()
        };
        PortalKey {
            plugin: ctx.key().plugin.clone(),
            chat_id: chat_id.to_owned(),
            receiver,
        }
    }

    /// The existing portal of `chat_id` for this login, if any.
    fn find_portal(
        &self,
        ctx: &LoginContext,
        chat_id: &str,
    ) -> Result<Option<PortalRecord>, BridgeError> {
        if let Some(portal) = self.store.portal(&self.portal_key(ctx, chat_id, true))? {
            return Ok(Some(portal));
        }
        Ok(self.store.portal(&self.portal_key(ctx, chat_id, false))?)
    }

    /// Creates or updates the portal of a chat.
    async fn resync_chat(
        &self,
        ctx: &LoginContext,
        chat: &ChatResync,
    ) -> Result<Option<PortalRecord>, BridgeError> {
        let _shared = match ctx.plugin.manifest.split_portals() {
            true => None,
            false => Some(self.shared_portals.lock().await),
        };
        let direct = chat.kind == ChatKind::Direct;
        let mut ghosts = Vec::new();
        for member in chat.members.iter().filter(|m| !m.is_me) {
            let ghost = self
                .ensure_ghost(
                    &ctx.plugin,
                    &member.user.id,
                    member.user.display_name.as_deref(),
                )
                .await?;
            ghosts.push((ghost, member.user.display_name.clone()));
        }
        let name = chat.name.clone().or_else(|| {
            // A direct chat is named after the other person, so clients
            // show something better than the bot's name.
            direct
                .then(|| ghosts.first().and_then(|(_, name)| name.clone()))
                .flatten()
        });
        match self.find_portal(ctx, &chat.chat_id)? {
            Some(mut portal) => {
                tracing::debug!(login = %ctx.key(), chat = %chat.chat_id, invited = ?portal.invited, "resyncing an existing portal");
                let room = parse_room(&portal)?;
                if name.is_some() && name != portal.name {
                    let content = RoomNameEventContent::new(name.clone().unwrap_or_default());
                    let request = send_state_event::v3::Request::new(
                        room.clone(),
                        &ruma::events::EmptyStateKey,
                        &content,
                    )
                    .map_err(protocol)?;
                    self.client.send(request, None).await?;
                    portal.name = name;
                }
                if chat.topic.is_some() && chat.topic != portal.topic {
                    let content =
                        RoomTopicEventContent::new(chat.topic.clone().unwrap_or_default());
                    let request = send_state_event::v3::Request::new(
                        room.clone(),
                        &ruma::events::EmptyStateKey,
                        &content,
                    )
                    .map_err(protocol)?;
                    self.client.send(request, None).await?;
                    portal.topic = chat.topic.clone();
                }
                let mut joined = std::mem::take(&mut portal.ghosts);
                for (ghost, _) in &ghosts {
                    self.ensure_joined(&room, ghost, &mut joined).await?;
                }
                portal.ghosts = joined;
                self.store.put_portal(&portal)?;
                if portal.awaiting_backfill {
                    // Its creation was interrupted: finish it first.
                    self.finish_backfill(ctx, &mut portal).await?;
                }
                // A shared portal serves several logins: each login's
                // owner is invited the first time their login syncs it.
                self.invite_owner(ctx, &room, &mut portal).await?;
                Ok(Some(portal))
            }
            None if chat.create_portal => {
                let key = self.portal_key(ctx, &chat.chat_id, direct);
                self.create_portal(ctx, key, name, chat.topic.clone(), direct, &ghosts)
                    .await
                    .map(Some)
            }
            None => Ok(None),
        }
    }

    /// Creates a portal's room: the bot creates it, invites the login's
    /// owner and the ghosts, and the ghosts join. With backfill on, the
    /// history goes in before the owner is invited.
    async fn create_portal(
        &self,
        ctx: &LoginContext,
        key: PortalKey,
        name: Option<String>,
        topic: Option<String>,
        direct: bool,
        ghosts: &[(OwnedUserId, Option<String>)],
    ) -> Result<PortalRecord, BridgeError> {
        // With history to send, the owner is invited after it, so that the
        // old messages do not notify them one by one. (A double-puppeted
        // owner joins first, since some history may be theirs to send; the
        // bridge marks it read for them afterwards.)
        let backfill = self.wants_backfill(ctx);
        let defer_invite = backfill && self.puppet(ctx).is_none();
        let mut request = create_room::v3::Request::new();
        request.name = name.clone();
        request.topic = topic.clone();
        request.is_direct = direct;
        request.preset = Some(create_room::v3::RoomPreset::PrivateChat);
        request.invite = ghosts.iter().map(|(g, _)| g.clone()).collect();
        if !defer_invite {
            request.invite.push(ctx.owner.clone());
        }
        let bridge_info = serde_json::json!({
            "type": "m.bridge",
            "state_key": format!("weft://{}/{}", key.plugin, key.chat_id),
            "content": {
                "bridgebot": self.bot(),
                "protocol": { "id": key.plugin, "displayname": ctx.plugin.manifest.network_name() },
                "channel": { "id": key.chat_id, "displayname": name },
                "com.beeper.room_type": if direct { "dm" } else { "group" },
            },
        });
        request.initial_state = vec![Raw::from_json(
            serde_json::value::to_raw_value(&bridge_info).map_err(protocol)?,
        )];
        let room_id = self.client.send(request, None).await?.room_id;
        let mut joined = BTreeSet::new();
        for (ghost, _) in ghosts {
            self.client
                .send(
                    ruma::api::client::membership::join_room_by_id::v3::Request::new(
                        room_id.clone(),
                    ),
                    Some(ghost),
                )
                .await?;
            joined.insert(ghost.to_string());
        }
        let mut portal = PortalRecord {
            key,
            room_id: room_id.to_string(),
            name,
            topic,
            direct,
            ghosts: joined,
            invited: BTreeSet::new(),
            awaiting_backfill: backfill,
        };
        if !defer_invite {
            portal.invited.insert(ctx.owner.to_string());
        }
        self.store.put_portal(&portal)?;
        weft_storage::flush_async(self.store.storage()).await?;
        tracing::info!(login = %ctx.key(), chat = %portal.key.chat_id, room = %room_id, "portal created");
        if backfill {
            if !defer_invite {
                self.invite_owner(ctx, &room_id, &mut portal).await?;
            }
            self.finish_backfill(ctx, &mut portal).await?;
        } else {
            self.invite_owner(ctx, &room_id, &mut portal).await?;
        }
        Ok(portal)
    }

    /// Invites `ctx`'s owner to the portal, once; with double puppeting,
    /// their puppet accepts at once.
    pub(super) async fn invite_owner(
        &self,
        ctx: &LoginContext,
        room: &RoomId,
        portal: &mut PortalRecord,
    ) -> Result<(), BridgeError> {
        if !portal.invited.contains(ctx.owner.as_str()) {
            tracing::debug!(login = %ctx.key(), %room, owner = %ctx.owner, "inviting a login's owner to a portal");
            self.invite(room, &ctx.owner).await?;
            portal.invited.insert(ctx.owner.to_string());
            self.store.put_portal(portal)?;
        }
        let mut joined = std::mem::take(&mut portal.ghosts);
        let result = self.ensure_owner_joined(ctx, room, &mut joined).await;
        portal.ghosts = joined;
        if result? {
            self.store.put_portal(portal)?;
        }
        Ok(())
    }

    /// The portal of `chat_id`, created on the spot if the connector sent
    /// an event for a chat it never resynced.
    async fn portal_for_event(
        &self,
        ctx: &LoginContext,
        chat_id: &str,
        sender: &EventSender,
    ) -> Result<PortalRecord, BridgeError> {
        if let Some(mut portal) = self.find_portal(ctx, chat_id)? {
            if portal.awaiting_backfill {
                // Its creation was interrupted: finish it first.
                self.finish_backfill(ctx, &mut portal).await?;
            }
            return Ok(portal);
        }
        let chat = ChatResync {
            chat_id: chat_id.to_owned(),
            name: None,
            topic: None,
            kind: ChatKind::Group,
            members: vec![ChatMember {
                user: sender.user.clone(),
                is_me: sender.is_from_me,
            }],
            create_portal: true,
        };
        self.resync_chat(ctx, &chat)
            .await?
            .ok_or_else(|| BridgeError::Unavailable("the portal could not be created".into()))
    }

    /// The ghost that sends an event, joined to the portal.
    pub(super) async fn sender_ghost(
        &self,
        ctx: &LoginContext,
        portal: &mut PortalRecord,
        sender: &EventSender,
    ) -> Result<OwnedUserId, BridgeError> {
        let ghost = self
            .ensure_ghost(
                &ctx.plugin,
                &sender.user.id,
                sender.user.display_name.as_deref(),
            )
            .await?;
        let room = parse_room(portal)?;
        let mut joined = std::mem::take(&mut portal.ghosts);
        let result = self.ensure_joined(&room, &ghost, &mut joined).await;
        portal.ghosts = joined;
        if result? {
            self.store.put_portal(portal)?;
        }
        Ok(ghost)
    }

    /// Sends `content` into `room` as `author`, at `timestamp_ms` (the
    /// remote time), with transaction id `txn` (stable, so a retry is not
    /// a duplicate).
    pub(super) async fn send_as(
        &self,
        room: &RoomId,
        txn: OwnedTransactionId,
        content: &impl MessageLikeEventContent,
        author: &Author,
        timestamp_ms: Option<u64>,
    ) -> Result<OwnedEventId, BridgeError> {
        let json = serde_json::to_value(content).map_err(protocol)?;
        self.send_json_as(room, txn, content.event_type(), json, author, timestamp_ms)
            .await
    }

    /// [`Self::send_as`] for content built as JSON.
    async fn send_json_as(
        &self,
        room: &RoomId,
        txn: OwnedTransactionId,
        event_type: MessageLikeEventType,
        mut content: serde_json::Value,
        author: &Author,
        timestamp_ms: Option<u64>,
    ) -> Result<OwnedEventId, BridgeError> {
        if let Author::Owner(_) = author {
            double_puppet::mark(&mut content, self.puppet_source());
        }
        let raw = Raw::from_json(serde_json::value::to_raw_value(&content).map_err(protocol)?);
        let mut request =
            send_message_event::v3::Request::new_raw(room.to_owned(), txn, event_type, raw);
        // Appservices may set the origin timestamp, so history shows when a
        // message was sent remotely rather than when it was bridged.
        request.timestamp = timestamp_ms
            .and_then(UInt::new)
            .map(MilliSecondsSinceUnixEpoch);
        Ok(self
            .client_of(author)
            .send(request, Some(author.user()))
            .await?
            .event_id)
    }

    /// The Matrix event of remote message `target`, to reply to, if it
    /// was bridged.
    fn reply_to(
        &self,
        portal: &PortalRecord,
        target: Option<&String>,
    ) -> Result<Option<OwnedEventId>, BridgeError> {
        let Some(target) = target else {
            return Ok(None);
        };
        match self.store.message_by_remote(&portal.key, target)? {
            Some(record) => Ok(Some(parse_event(&record)?)),
            None => Ok(None),
        }
    }

    /// Whether remote message `message_id` was bridged already: a
    /// connector replay, history the poll sees again, or the echo of a
    /// message that came from Matrix.
    fn already_bridged(
        &self,
        ctx: &LoginContext,
        portal: &PortalRecord,
        message_id: &str,
    ) -> Result<bool, BridgeError> {
        let known = self
            .store
            .message_by_remote(&portal.key, message_id)?
            .is_some();
        if known {
            tracing::debug!(login = %ctx.key(), message = %message_id, "ignoring a duplicate message");
        }
        Ok(known)
    }

    async fn bridge_message(
        &self,
        ctx: &LoginContext,
        message: &Message,
    ) -> Result<(), BridgeError> {
        let mut portal = self
            .portal_for_event(ctx, &message.chat_id, &message.sender)
            .await?;
        self.bridge_message_in(ctx, &mut portal, message).await
    }

    /// Sends `message` into `portal`.
    pub(super) async fn bridge_message_in(
        &self,
        ctx: &LoginContext,
        portal: &mut PortalRecord,
        message: &Message,
    ) -> Result<(), BridgeError> {
        if self.already_bridged(ctx, portal, &message.message_id)? {
            return Ok(());
        }
        let author = self.author(ctx, portal, &message.sender).await?;
        let room = parse_room(portal)?;
        let mut content = text_content(&message.text, message.html.as_deref());
        content.relates_to = self
            .reply_to(portal, message.reply_to.as_ref())?
            .map(|event| Relation::Reply(Reply::new(InReplyTo::new(event))));
        let txn = message_txn(portal, &message.message_id);
        let event_id = self
            .send_as(&room, txn, &content, &author, Some(message.timestamp_ms))
            .await?;
        self.record(
            portal,
            message.message_id.clone(),
            &event_id,
            MessageKind::Message,
        )
    }

    /// A message with a file: the file is fetched if the connector gave a
    /// URL, uploaded as the sender, and sent as `m.image`, `m.video`,
    /// `m.audio` or `m.file`. A file that cannot be fetched, or turns out
    /// larger than the plugin's limit, becomes a text message saying so.
    async fn bridge_media(
        &self,
        ctx: &LoginContext,
        message: &MediaMessage,
    ) -> Result<(), BridgeError> {
        let mut portal = self
            .portal_for_event(ctx, &message.chat_id, &message.sender)
            .await?;
        self.bridge_media_in(ctx, &mut portal, message).await
    }

    /// Sends `message`, with its file, into `portal`.
    pub(super) async fn bridge_media_in(
        &self,
        ctx: &LoginContext,
        portal: &mut PortalRecord,
        message: &MediaMessage,
    ) -> Result<(), BridgeError> {
        if self.already_bridged(ctx, portal, &message.message_id)? {
            return Ok(());
        }
        let author = self.author(ctx, portal, &message.sender).await?;
        let room = parse_room(portal)?;
        let attachment = &message.attachment;
        let fetched = match &attachment.source {
            MediaSource::Bytes(bytes) => Ok(bytes.clone()),
            MediaSource::Url { url, headers } => self
                .registry
                .fetch_media(ctx.key().plugin.as_str(), url, headers, MEDIA_FETCH_TIMEOUT)
                .await
                .map(|(_, bytes)| bytes),
        };
        let limit = ctx.plugin.capabilities.max_media_bytes;
        let bytes = fetched.and_then(|bytes| {
            if bytes.len() as u64 > limit {
                Err(format!(
                    "it is larger than the limit of {}",
                    media::human_size(limit)
                ))
            } else {
                Ok(bytes)
            }
        });
        let txn = message_txn(portal, &message.message_id);
        let reply = self.reply_to(portal, message.reply_to.as_ref())?;
        let mut content = match bytes {
            Ok(bytes) => {
                let size = bytes.len();
                let url = self
                    .client_of(&author)
                    .upload(
                        bytes,
                        &attachment.mime_type,
                        &attachment.file_name,
                        author.user(),
                    )
                    .await?;
                media::content_of(attachment, &url, size, message.caption.as_deref())
            }
            Err(reason) => {
                tracing::warn!(login = %ctx.key(), message = %message.message_id, %reason, "a remote file was not bridged");
                let text = format!(
                    "📎 {} (the file could not be bridged: {reason})",
                    attachment.file_name
                );
                let text = match &message.caption {
                    Some(caption) => format!("{caption}\n{text}"),
                    None => text,
                };
                serde_json::to_value(RoomMessageEventContent::text_plain(text)).map_err(protocol)?
            }
        };
        if let Some(event) = reply {
            content["m.relates_to"] = serde_json::json!({
                "m.in_reply_to": { "event_id": event },
            });
        }
        let event_id = self
            .send_json_as(
                &room,
                txn,
                MessageLikeEventType::RoomMessage,
                content,
                &author,
                Some(message.timestamp_ms),
            )
            .await?;
        self.record(
            portal,
            message.message_id.clone(),
            &event_id,
            MessageKind::Message,
        )
    }

    async fn bridge_edit(&self, ctx: &LoginContext, edit: &Edit) -> Result<(), BridgeError> {
        let Some(mut portal) = self.find_portal(ctx, &edit.chat_id)? else {
            return Ok(());
        };
        let Some(target) = self
            .store
            .message_by_remote(&portal.key, &edit.message_id)?
        else {
            tracing::debug!(login = %ctx.key(), message = %edit.message_id, "edit of an unknown message ignored");
            return Ok(());
        };
        let author = self.author(ctx, &mut portal, &edit.sender).await?;
        let new = text_content(&edit.text, edit.html.as_deref());
        let content = new.make_replacement(ReplacementMetadata::new(parse_event(&target)?, None));
        let txn = stable_txn(&[
            "edit",
            &target.event_id,
            &edit.timestamp_ms.to_string(),
            &edit.text,
        ]);
        self.send_as(
            &parse_room(&portal)?,
            txn,
            &content,
            &author,
            Some(edit.timestamp_ms),
        )
        .await?;
        Ok(())
    }

    async fn bridge_delete(&self, ctx: &LoginContext, delete: &Delete) -> Result<(), BridgeError> {
        let Some(portal) = self.find_portal(ctx, &delete.chat_id)? else {
            return Ok(());
        };
        let Some(target) = self
            .store
            .message_by_remote(&portal.key, &delete.message_id)?
        else {
            return Ok(());
        };
        self.redact_mapped(&portal, &target).await
    }

    async fn bridge_reaction(
        &self,
        ctx: &LoginContext,
        reaction: &Reaction,
    ) -> Result<(), BridgeError> {
        let Some(mut portal) = self.find_portal(ctx, &reaction.chat_id)? else {
            return Ok(());
        };
        let reaction_id = format!(
            "{}\u{1}{}\u{1}{}",
            reaction.message_id, reaction.sender.user.id, reaction.key
        );
        let existing = self.store.message_by_remote(&portal.key, &reaction_id)?;
        if reaction.removed {
            if let Some(existing) = existing {
                self.redact_mapped(&portal, &existing).await?;
            }
            return Ok(());
        }
        if existing.is_some() {
            return Ok(());
        }
        let Some(target) = self
            .store
            .message_by_remote(&portal.key, &reaction.message_id)?
        else {
            return Ok(());
        };
        let author = self.author(ctx, &mut portal, &reaction.sender).await?;
        let content =
            ReactionEventContent::new(Annotation::new(parse_event(&target)?, reaction.key.clone()));
        let event_id = self
            .send_as(
                &parse_room(&portal)?,
                stable_txn(&["react", &reaction_id]),
                &content,
                &author,
                Some(reaction.timestamp_ms),
            )
            .await?;
        self.record(&portal, reaction_id, &event_id, MessageKind::Reaction)
    }

    /// Records that remote `remote_id` is Matrix event `event_id`.
    fn record(
        &self,
        portal: &PortalRecord,
        remote_id: String,
        event_id: &EventId,
        kind: MessageKind,
    ) -> Result<(), BridgeError> {
        self.store.put_message(&MessageRecord {
            portal: portal.key.clone(),
            remote_id,
            event_id: event_id.to_string(),
            room_id: portal.room_id.clone(),
            kind,
        })?;
        Ok(())
    }

    /// Redacts a bridged event and forgets its mapping. (The bot created
    /// the room and may redact any event in it.)
    async fn redact_mapped(
        &self,
        portal: &PortalRecord,
        target: &MessageRecord,
    ) -> Result<(), BridgeError> {
        let request = redact_event::v3::Request::new(
            parse_room(portal)?,
            parse_event(target)?,
            stable_txn(&["redact", &target.event_id]),
        );
        self.client.send(request, None).await?;
        self.store.remove_message(target)?;
        Ok(())
    }

    async fn bridge_typing(&self, ctx: &LoginContext, typing: &Typing) -> Result<(), BridgeError> {
        let Some(mut portal) = self.find_portal(ctx, &typing.chat_id)? else {
            return Ok(());
        };
        // The user's own typing (often their own Matrix typing, passed on
        // and reported back) is not shown to them.
        if typing.sender.is_from_me {
            return Ok(());
        }
        let ghost = self.sender_ghost(ctx, &mut portal, &typing.sender).await?;
        let state = if typing.timeout_ms == 0 {
            create_typing_event::v3::Typing::No
        } else {
            create_typing_event::v3::Typing::Yes(create_typing_event::v3::TypingInfo::new(
                std::time::Duration::from_millis(typing.timeout_ms.into()),
            ))
        };
        let request =
            create_typing_event::v3::Request::new(ghost.clone(), parse_room(&portal)?, state);
        self.client.send(request, Some(&ghost)).await?;
        Ok(())
    }

    async fn bridge_receipt(
        &self,
        ctx: &LoginContext,
        receipt: &ReadReceipt,
    ) -> Result<(), BridgeError> {
        let Some(mut portal) = self.find_portal(ctx, &receipt.chat_id)? else {
            return Ok(());
        };
        let Some(target) = self.store.message_by_remote(&portal.key, &receipt.up_to)? else {
            return Ok(());
        };
        // Reading on the remote app marks the chat read on Matrix too, when
        // the bridge can act as the user; their ghost's receipt would only
        // be noise.
        if receipt.sender.is_from_me && self.puppet(ctx).is_none() {
            return Ok(());
        }
        let author = self.author(ctx, &mut portal, &receipt.sender).await?;
        self.send_receipt(&parse_room(&portal)?, &parse_event(&target)?, &author)
            .await
    }

    /// A read receipt of `author` on `event`.
    pub(super) async fn send_receipt(
        &self,
        room: &RoomId,
        event: &EventId,
        author: &Author,
    ) -> Result<(), BridgeError> {
        let mut request = create_receipt::v3::Request::new(
            room.to_owned(),
            create_receipt::v3::ReceiptType::Read,
            event.to_owned(),
        );
        request.thread = ReceiptThread::Unthreaded;
        self.client_of(author)
            .send(request, Some(author.user()))
            .await?;
        Ok(())
    }
}

/// The transaction id of remote message `message_id` in `portal`.
fn message_txn(portal: &PortalRecord, message_id: &str) -> OwnedTransactionId {
    stable_txn(&[
        &portal.key.plugin,
        &portal.key.chat_id,
        &portal.key.receiver,
        message_id,
    ])
}

/// How long fetching a remote file may take.
const MEDIA_FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A text message, its remote HTML cut down to what Matrix allows.
fn text_content(text: &str, remote_html: Option<&str>) -> RoomMessageEventContent {
    match remote_html {
        Some(remote_html) => {
            RoomMessageEventContent::text_html(text.to_owned(), html::sanitize(remote_html))
        }
        None => RoomMessageEventContent::text_plain(text.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_ids_depend_on_every_part_and_only_on_them() {
        let one = stable_txn(&["echo", "c1", "alice", "m1"]);
        // The same parts give the same id: a resend after a crash is the
        // same transaction for the homeserver.
        assert_eq!(one, stable_txn(&["echo", "c1", "alice", "m1"]));
        // Parts cannot run into each other.
        assert_ne!(one, stable_txn(&["echo", "c1a", "lice", "m1"]));
        assert_ne!(one, stable_txn(&["echo", "c1", "alice", "m2"]));
        assert!(one.as_str().starts_with("weft-"));
    }
}
