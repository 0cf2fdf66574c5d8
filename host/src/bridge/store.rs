//! What the bridge remembers: portals, ghosts, message mappings, users and
//! which Matrix events went to a connector.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use weft_storage::{self as storage, KeyBuf, Storage, Table};

use crate::logins::LoginKey;
use crate::trees;

/// A portal: one remote chat as seen by one receiver.
///
/// For connectors that split portals by login (all portals here, by
/// default), the receiver is always the login id, so two logins never
/// share a room, even for the same remote chat.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortalKey {
    /// The connector plugin.
    pub plugin: String,
    /// The remote chat id.
    pub chat_id: String,
    /// The login id that receives this portal; empty for a portal shared
    /// by all logins (only for connectors that do not split portals).
    pub receiver: String,
}

impl PortalKey {
    /// The storage key.
    pub fn storage_key(&self) -> KeyBuf {
        KeyBuf::new()
            .push(&self.plugin)
            .push(&self.chat_id)
            .push(&self.receiver)
    }

    /// The login this portal belongs to, if it has a receiver.
    pub fn login(&self) -> Option<LoginKey> {
        (!self.receiver.is_empty()).then(|| LoginKey::new(&self.plugin, &self.receiver))
    }
}

/// A portal's room and what the bridge last set in it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PortalRecord {
    /// The portal.
    pub key: PortalKey,
    /// Its Matrix room.
    pub room_id: String,
    /// The name last set.
    pub name: Option<String>,
    /// The topic last set.
    pub topic: Option<String>,
    /// Whether it is a direct chat.
    pub direct: bool,
    /// Users the bridge acts as that have joined the room: ghosts, and
    /// owners joined by their double puppet.
    pub ghosts: BTreeSet<String>,
    /// Matrix users the bot has invited (the owners of the logins that
    /// share the portal).
    #[serde(default)]
    pub invited: BTreeSet<String>,
    /// The room was created and still waits for its history; its owner is
    /// invited after it (so old messages do not notify them).
    #[serde(default)]
    pub awaiting_backfill: bool,
}

/// A ghost: the Matrix user that stands for one remote user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GhostRecord {
    /// Its Matrix user id.
    pub user_id: String,
    /// The display name last set.
    pub display_name: Option<String>,
}

/// A bridged message or reaction: its Matrix event and its remote id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageRecord {
    /// The portal it is in.
    pub portal: PortalKey,
    /// Its remote id (for a reaction: `<message id>\u{0}<sender>\u{0}<key>`,
    /// or the id the connector returned).
    pub remote_id: String,
    /// The Matrix event.
    pub event_id: String,
    /// The Matrix room.
    pub room_id: String,
    /// What kind of event it is.
    pub kind: MessageKind,
}

/// The kinds of mapped events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageKind {
    /// A message.
    Message,
    /// A reaction, with the remote message it reacts to in `remote_id`.
    Reaction,
}

/// What the bridge knows of a Matrix user.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UserRecord {
    /// The user's management room with the bot.
    pub management_room: Option<String>,
}

/// The bridge's tables.
#[derive(Clone)]
pub struct BridgeStore {
    storage: Arc<dyn Storage>,
    portals: Table<PortalRecord>,
    room_portal: Table<PortalKey>,
    ghosts: Table<GhostRecord>,
    by_remote: Table<MessageRecord>,
    by_event: Table<MessageRecord>,
    users: Table<UserRecord>,
    /// Management room → its user, so a message is routed without
    /// scanning every user.
    management_rooms: Table<String>,
    dispatched: Table<u64>,
    plugin_rooms: Table<u64>,
}

impl BridgeStore {
    /// Opens the tables in `storage`.
    pub fn open(storage: &Arc<dyn Storage>) -> storage::Result<Self> {
        let s = storage.as_ref();
        Ok(Self {
            storage: storage.clone(),
            portals: Table::open(s, trees::PORTALS)?,
            room_portal: Table::open(s, trees::ROOM_PORTAL)?,
            ghosts: Table::open(s, trees::GHOSTS)?,
            by_remote: Table::open(s, trees::MESSAGE_BY_REMOTE)?,
            by_event: Table::open(s, trees::MESSAGE_BY_EVENT)?,
            users: Table::open(s, trees::USERS)?,
            management_rooms: Table::open(s, trees::MANAGEMENT_ROOMS)?,
            dispatched: Table::open(s, trees::DISPATCHED)?,
            plugin_rooms: Table::open(s, trees::PLUGIN_ROOMS)?,
        })
    }

    /// The underlying storage.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// Records that `plugin` created `room_id` (`appservice.create-room`).
    pub fn put_plugin_room(&self, plugin: &str, room_id: &str) -> storage::Result<()> {
        let key = KeyBuf::new().push(plugin).push(room_id);
        self.plugin_rooms.put(&key, &weft_runtime::now_ms())
    }

    /// Whether `plugin` created `room_id`.
    pub fn is_plugin_room(&self, plugin: &str, room_id: &str) -> storage::Result<bool> {
        let key = KeyBuf::new().push(plugin).push(room_id);
        Ok(self.plugin_rooms.get(&key)?.is_some())
    }

    /// The portal `key`.
    pub fn portal(&self, key: &PortalKey) -> storage::Result<Option<PortalRecord>> {
        self.portals.get(&key.storage_key())
    }

    /// The portal of room `room_id`.
    pub fn portal_of_room(&self, room_id: &str) -> storage::Result<Option<PortalRecord>> {
        match self.room_portal.get(&KeyBuf::new().push(room_id))? {
            Some(key) => self.portal(&key),
            None => Ok(None),
        }
    }

    /// Stores a portal and its room index.
    pub fn put_portal(&self, record: &PortalRecord) -> storage::Result<()> {
        self.portals.put(&record.key.storage_key(), record)?;
        self.room_portal
            .put(&KeyBuf::new().push(&record.room_id), &record.key)
    }

    /// Every portal of `plugin`.
    pub fn portals_of_plugin(&self, plugin: &str) -> storage::Result<Vec<PortalRecord>> {
        Ok(self
            .portals
            .scan(&KeyBuf::new().push(plugin))?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }

    /// Every portal whose receiver is login `login`.
    pub fn portals_of_login(&self, login: &LoginKey) -> storage::Result<Vec<PortalRecord>> {
        Ok(self
            .portals_of_plugin(&login.plugin)?
            .into_iter()
            .filter(|p| p.key.receiver == login.id)
            .collect())
    }

    /// Forgets a portal, its room index and its message mappings.
    pub fn remove_portal(&self, record: &PortalRecord) -> storage::Result<()> {
        for (_, message) in self.by_remote.scan(&record.key.storage_key())? {
            self.by_event
                .remove(&KeyBuf::new().push(&message.event_id))?;
        }
        self.by_remote.remove_prefix(&record.key.storage_key())?;
        self.room_portal
            .remove(&KeyBuf::new().push(&record.room_id))?;
        self.portals.remove(&record.key.storage_key()).map(drop)
    }

    /// The ghost with user id `user_id`.
    pub fn ghost(&self, user_id: &str) -> storage::Result<Option<GhostRecord>> {
        self.ghosts.get(&KeyBuf::new().push(user_id))
    }

    /// Stores a ghost.
    pub fn put_ghost(&self, record: &GhostRecord) -> storage::Result<()> {
        self.ghosts
            .put(&KeyBuf::new().push(&record.user_id), record)
    }

    /// The mapped event of remote id `remote_id` in `portal`.
    pub fn message_by_remote(
        &self,
        portal: &PortalKey,
        remote_id: &str,
    ) -> storage::Result<Option<MessageRecord>> {
        self.by_remote.get(&portal.storage_key().push(remote_id))
    }

    /// The mapping of Matrix event `event_id`.
    pub fn message_by_event(&self, event_id: &str) -> storage::Result<Option<MessageRecord>> {
        self.by_event.get(&KeyBuf::new().push(event_id))
    }

    /// Stores a mapping both ways.
    pub fn put_message(&self, record: &MessageRecord) -> storage::Result<()> {
        self.by_remote
            .put(&record.portal.storage_key().push(&record.remote_id), record)?;
        self.by_event
            .put(&KeyBuf::new().push(&record.event_id), record)
    }

    /// Stores the mapping of remote id `remote_id` unless one exists;
    /// returns whether it stored (false: a duplicate).
    pub fn claim_message(&self, record: &MessageRecord) -> storage::Result<bool> {
        if !self
            .by_remote
            .put_if_absent(&record.portal.storage_key().push(&record.remote_id), record)?
        {
            return Ok(false);
        }
        self.by_event
            .put(&KeyBuf::new().push(&record.event_id), record)?;
        Ok(true)
    }

    /// Removes a mapping both ways.
    pub fn remove_message(&self, record: &MessageRecord) -> storage::Result<()> {
        self.by_remote
            .remove(&record.portal.storage_key().push(&record.remote_id))?;
        self.by_event
            .remove(&KeyBuf::new().push(&record.event_id))
            .map(drop)
    }

    /// What the bridge knows of `user_id`.
    pub fn user(&self, user_id: &str) -> storage::Result<UserRecord> {
        Ok(self
            .users
            .get(&KeyBuf::new().push(user_id))?
            .unwrap_or_default())
    }

    /// Stores what the bridge knows of `user_id`, keeping the management
    /// room index in step.
    pub fn put_user(&self, user_id: &str, record: &UserRecord) -> storage::Result<()> {
        let old = self.user(user_id)?.management_room;
        if let Some(old) = old.filter(|old| Some(old) != record.management_room.as_ref()) {
            self.management_rooms.remove(&KeyBuf::new().push(old))?;
        }
        if let Some(room) = &record.management_room {
            self.management_rooms
                .put(&KeyBuf::new().push(room), &user_id.to_owned())?;
        }
        self.users.put(&KeyBuf::new().push(user_id), record)
    }

    /// The user whose management room is `room_id`, if any.
    pub fn management_room_owner(&self, room_id: &str) -> storage::Result<Option<String>> {
        self.management_rooms.get(&KeyBuf::new().push(room_id))
    }

    /// Forgets dispatch marks recorded before `before_ms` (the homeserver
    /// does not send an event again after days).
    pub fn prune_dispatched(&self, before_ms: u64) -> storage::Result<usize> {
        let old: Vec<Vec<u8>> = self
            .dispatched
            .scan(&KeyBuf::new())?
            .into_iter()
            .filter(|(_, at)| *at < before_ms)
            .map(|(k, _)| k)
            .collect();
        for key in &old {
            self.dispatched.tree().remove(key)?;
        }
        Ok(old.len())
    }

    /// Marks Matrix event `event_id` as dispatched to a connector; returns
    /// false if it already was (a replay after a crash), so each Matrix
    /// event reaches the remote side at most once.
    pub fn claim_matrix_event(&self, event_id: &str) -> storage::Result<bool> {
        self.dispatched.put_if_absent(
            &KeyBuf::new().push("event").push(event_id),
            &crate::logins::now_ms(),
        )
    }
}

#[cfg(test)]
mod tests {
    use weft_storage::MemoryStorage;

    use super::*;

    fn store() -> BridgeStore {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        BridgeStore::open(&storage).unwrap()
    }

    fn portal(chat: &str, receiver: &str, room: &str) -> PortalRecord {
        PortalRecord {
            key: PortalKey {
                plugin: "echo".into(),
                chat_id: chat.into(),
                receiver: receiver.into(),
            },
            room_id: room.into(),
            name: None,
            topic: None,
            direct: false,
            ghosts: BTreeSet::new(),
            invited: BTreeSet::new(),
            awaiting_backfill: false,
        }
    }

    fn message(portal: &PortalRecord, remote: &str, event: &str) -> MessageRecord {
        MessageRecord {
            portal: portal.key.clone(),
            remote_id: remote.into(),
            event_id: event.into(),
            room_id: portal.room_id.clone(),
            kind: MessageKind::Message,
        }
    }

    #[test]
    fn a_portal_is_found_by_key_by_room_and_by_login_and_forgetting_it_forgets_its_messages() {
        let store = store();
        let alice = portal("c1", "alice", "!a");
        let bob = portal("c1", "bob", "!b");
        store.put_portal(&alice).unwrap();
        store.put_portal(&bob).unwrap();
        store.put_message(&message(&alice, "m1", "$1")).unwrap();
        // The same chat has one portal per receiver.
        assert_eq!(store.portal_of_room("!b").unwrap().unwrap().key, bob.key);
        let of_alice = store
            .portals_of_login(&LoginKey::new("echo", "alice"))
            .unwrap();
        assert_eq!(of_alice.len(), 1);
        assert_eq!(of_alice[0].room_id, "!a");
        // Removing Alice's portal drops its room index and mappings only.
        store.remove_portal(&alice).unwrap();
        assert!(store.portal_of_room("!a").unwrap().is_none());
        assert!(store.message_by_event("$1").unwrap().is_none());
        assert!(store.portal(&bob.key).unwrap().is_some());
    }

    #[test]
    fn a_remote_id_is_claimed_once_and_found_both_ways() {
        let store = store();
        let room = portal("c1", "alice", "!a");
        let first = message(&room, "m1", "$1");
        assert!(store.claim_message(&first).unwrap());
        // A second claim of the same remote id is a duplicate.
        assert!(!store.claim_message(&message(&room, "m1", "$2")).unwrap());
        assert_eq!(
            store
                .message_by_remote(&room.key, "m1")
                .unwrap()
                .unwrap()
                .event_id,
            "$1"
        );
        assert_eq!(
            store.message_by_event("$1").unwrap().unwrap().remote_id,
            "m1"
        );
        assert!(store.message_by_event("$2").unwrap().is_none());
    }

    #[test]
    fn a_matrix_event_is_dispatched_once_until_its_mark_is_pruned() {
        let store = store();
        assert!(store.claim_matrix_event("$e").unwrap());
        assert!(!store.claim_matrix_event("$e").unwrap());
        // Pruning before a time in the past keeps the mark...
        store.prune_dispatched(1).unwrap();
        assert!(!store.claim_matrix_event("$e").unwrap());
        // ...and pruning before a time ahead forgets it.
        store.prune_dispatched(u64::MAX).unwrap();
        assert!(store.claim_matrix_event("$e").unwrap());
    }

    #[test]
    fn a_users_management_room_is_indexed_and_moves_with_it() {
        let store = store();
        let mut user = UserRecord {
            management_room: Some("!one".into()),
        };
        store.put_user("@u:x", &user).unwrap();
        assert_eq!(
            store.management_room_owner("!one").unwrap().as_deref(),
            Some("@u:x")
        );
        user.management_room = Some("!two".into());
        store.put_user("@u:x", &user).unwrap();
        // The old room no longer routes to the user; the new one does.
        assert!(store.management_room_owner("!one").unwrap().is_none());
        assert_eq!(
            store.management_room_owner("!two").unwrap().as_deref(),
            Some("@u:x")
        );
    }
}
