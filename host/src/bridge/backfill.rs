//! Backfill: a new portal starts with the chat's recent history.
//!
//! When the bridge creates a portal it asks the connector for the newest
//! messages of the chat (as many as `[bridge] backfill-messages`), sends
//! them in order with their remote times (the appservice `ts` override),
//! and only then invites the owner, so the old messages do not notify
//! them one by one. Their remote ids are recorded like any bridged
//! message's, so the next poll's copies are dropped.
//!
//! The portal record says it is awaiting its history until this is done:
//! a crash or a failing homeserver midway resumes it at the next event of
//! the chat, sending only what is missing.

use std::time::Duration;

use weft_runtime::WorkError;
use weft_runtime::connector::PluginError;
use weft_runtime::events::RemoteEvent;

use super::double_puppet::Author;
use super::remote::parse_room;
use super::store::PortalRecord;
use super::{Bridge, BridgeError, LoginContext};

/// How long the connector may take to fetch history.
const HISTORY_TIMEOUT: Duration = Duration::from_secs(60);

impl Bridge {
    /// Whether new portals of `ctx` get history.
    pub(super) fn wants_backfill(&self, ctx: &LoginContext) -> bool {
        self.config.bridge.backfill_messages > 0 && self.registry.login(ctx.key()).is_some()
    }

    /// Sends the history of a new portal, then invites its owner and marks
    /// the portal complete.
    pub(super) async fn finish_backfill(
        &self,
        ctx: &LoginContext,
        portal: &mut PortalRecord,
    ) -> Result<(), BridgeError> {
        let history = self.fetch_history(ctx, &portal.key.chat_id).await;
        let mut last = None;
        for event in &history {
            match event {
                RemoteEvent::Message(message) if message.chat_id == portal.key.chat_id => {
                    self.bridge_message_in(ctx, portal, message).await?;
                    last = Some(message.message_id.clone());
                }
                RemoteEvent::Media(message) if message.chat_id == portal.key.chat_id => {
                    self.bridge_media_in(ctx, portal, message).await?;
                    last = Some(message.message_id.clone());
                }
                _ => {}
            }
        }
        let room = parse_room(portal)?;
        // A double-puppeted owner is in the room already: mark the history
        // read for them.
        if self.puppet(ctx).is_some()
            && let Some(last) = last
            && let Some(record) = self.store.message_by_remote(&portal.key, &last)?
            && let Ok(event) = ruma::EventId::parse(&record.event_id)
        {
            self.send_receipt(&room, &event, &Author::Owner(ctx.owner.clone()))
                .await?;
        }
        self.invite_owner(ctx, &room, portal).await?;
        portal.awaiting_backfill = false;
        self.store.put_portal(portal)?;
        tracing::info!(login = %ctx.key(), chat = %portal.key.chat_id, messages = history.len(), "portal history sent");
        Ok(())
    }

    /// The newest messages of `chat`, oldest first, at most the operator's
    /// limit; none if the connector has no history to give.
    async fn fetch_history(&self, ctx: &LoginContext, chat: &str) -> Vec<RemoteEvent> {
        let limit = self.config.bridge.backfill_messages;
        let Some(handle) = self.registry.login(ctx.key()) else {
            return Vec::new();
        };
        let fetched = tokio::time::timeout(
            HISTORY_TIMEOUT,
            handle.fetch_history(chat.to_owned(), limit),
        )
        .await;
        let mut history = match fetched {
            Ok(Ok(history)) => history,
            Ok(Err(WorkError::Plugin(PluginError::Unsupported(_)))) => Vec::new(),
            Ok(Err(error)) => {
                tracing::warn!(login = %ctx.key(), chat, %error, "the connector gave no history");
                Vec::new()
            }
            Err(_) => {
                tracing::warn!(login = %ctx.key(), chat, "the connector did not give history in time");
                Vec::new()
            }
        };
        // A connector that gives more than asked: keep the newest.
        let excess = history.len().saturating_sub(limit as usize);
        history.drain(..excess);
        history
    }
}
