//! Double puppeting: what the user sent from the remote app appears in
//! Matrix as sent by their own Matrix account, not by a ghost.
//!
//! As in bridgev2, the bridge asserts the user's identity with a second
//! appservice registration that claims every local user non-exclusively
//! and receives no traffic (`url: null`); with its token, `?user_id=`
//! may name any user of the homeserver. No password or token of the user
//! is needed. Only users of the bridge's own homeserver can be puppeted;
//! others keep their remote ghost.
//!
//! Events sent this way carry [`MARKER`] in their content, so that when
//! the homeserver pushes them back the bridge knows they came from the
//! remote side and does not send them there again.

use std::collections::BTreeSet;

use ruma::api::client::membership::join_room_by_id;
use ruma::{OwnedUserId, RoomId, UserId};
use serde_json::Value;

use super::store::PortalRecord;
use super::{Bridge, BridgeError, LoginContext};
use crate::matrix::HomeserverClient;

/// The content key that marks an event the bridge sent as a user.
pub(crate) const MARKER: &str = "fi.mau.double_puppet_source";

/// Whether `content` was sent by this bridge (`source`) as a user.
pub(crate) fn is_marked(content: &Value, source: &str) -> bool {
    content.get(MARKER).and_then(Value::as_str) == Some(source)
}

/// Marks `content` as sent by this bridge as a user.
pub(crate) fn mark(content: &mut Value, source: &str) {
    if let Some(object) = content.as_object_mut() {
        object.insert(MARKER.to_owned(), Value::String(source.to_owned()));
    }
}

/// Who sends a bridged event into Matrix.
pub(super) enum Author {
    /// The remote user's ghost, with the appservice's token.
    Ghost(OwnedUserId),
    /// The login's owner, with the double-puppeting token.
    Owner(OwnedUserId),
}

impl Author {
    /// The Matrix user.
    pub(super) fn user(&self) -> &UserId {
        match self {
            Self::Ghost(user) | Self::Owner(user) => user,
        }
    }
}

impl Bridge {
    /// The value of [`MARKER`] for this bridge: its appservice id.
    pub(super) fn puppet_source(&self) -> &str {
        self.config
            .appservice
            .as_ref()
            .map_or("weft", |a| a.id.as_str())
    }

    /// The client that can act as `ctx`'s owner, if double puppeting is on
    /// and the owner is on this homeserver.
    pub(super) fn puppet(&self, ctx: &LoginContext) -> Option<&HomeserverClient> {
        let client = self.puppets.as_ref()?;
        (ctx.owner.server_name().as_str() == self.namespaces.domain).then_some(client)
    }

    /// The client that sends as `author`.
    pub(super) fn client_of(&self, author: &Author) -> &HomeserverClient {
        match (author, &self.puppets) {
            (Author::Owner(_), Some(puppets)) => puppets,
            _ => &self.client,
        }
    }

    /// Makes sure `ctx`'s owner has joined the portal, as their puppet
    /// (they were invited when the portal was made or first synced).
    pub(super) async fn ensure_owner_joined(
        &self,
        ctx: &LoginContext,
        room: &RoomId,
        portal_members: &mut BTreeSet<String>,
    ) -> Result<bool, BridgeError> {
        let Some(puppet) = self.puppet(ctx) else {
            return Ok(false);
        };
        if portal_members.contains(ctx.owner.as_str()) {
            return Ok(false);
        }
        puppet
            .send(
                join_room_by_id::v3::Request::new(room.to_owned()),
                Some(&ctx.owner),
            )
            .await?;
        portal_members.insert(ctx.owner.to_string());
        Ok(true)
    }

    /// Who sends an event of `sender` in `portal`: the owner's own account
    /// for their messages when double puppeting is on, else the ghost.
    pub(super) async fn author(
        &self,
        ctx: &LoginContext,
        portal: &mut PortalRecord,
        sender: &weft_runtime::events::EventSender,
    ) -> Result<Author, BridgeError> {
        if sender.is_from_me && self.puppet(ctx).is_some() {
            let room = super::remote::parse_room(portal)?;
            let mut joined = std::mem::take(&mut portal.ghosts);
            let result = self.ensure_owner_joined(ctx, &room, &mut joined).await;
            portal.ghosts = joined;
            if result? {
                self.store.put_portal(portal)?;
            }
            return Ok(Author::Owner(ctx.owner.clone()));
        }
        Ok(Author::Ghost(self.sender_ghost(ctx, portal, sender).await?))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_this_bridges_marker_counts() {
        let mut content = json!({ "msgtype": "m.text", "body": "hi" });
        assert!(!is_marked(&content, "weft"));
        mark(&mut content, "weft");
        assert!(is_marked(&content, "weft"));
        // Another bridge's puppet is a user like any other to us.
        assert!(!is_marked(&content, "other"));
    }
}
