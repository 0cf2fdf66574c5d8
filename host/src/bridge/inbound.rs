//! The inbound queue: Matrix events the homeserver pushed, stored before
//! the transaction is answered and handled afterwards, in order per room.
//!
//! A transaction's events are deduplicated by event id, which is unique
//! for good. Transaction ids are not: Synapse numbers them again from 1
//! after it restarts with an empty queue, so a bridge that skipped "known"
//! transaction ids would drop every event after a homeserver restart. An
//! event is stored once, under its room and a sequence number, and a room
//! worker takes it from there; one that fails for good goes to the
//! inbound dead letters, with a notice in its room.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ruma::OwnedRoomId;
use serde::{Deserialize, Serialize};
use weft_storage::{self as storage, KeyBuf, Storage, StorageError, Table, Tree};

use super::from_matrix::IncomingEvent;
use crate::logins::now_ms;
use crate::trees;

/// An inbound event that could not be handled.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InboundDeadLetter {
    /// The room.
    pub room_id: String,
    /// The event.
    pub event_id: String,
    /// Its type.
    pub kind: String,
    /// When it was given up on, in Unix milliseconds.
    pub at_ms: u64,
    /// Why.
    pub reason: String,
}

/// The inbound queue of every room.
pub struct Inbound {
    queue: Arc<dyn Tree>,
    seen: Table<u64>,
    dead: Table<InboundDeadLetter>,
    last_seq: AtomicU64,
}

/// An event waiting in a room's queue.
pub struct QueuedInbound {
    /// Its position.
    pub seq: u64,
    /// The event, or why it does not decode.
    pub event: Result<IncomingEvent, String>,
}

impl Inbound {
    /// Opens the queue in `storage`.
    pub fn open(storage: &Arc<dyn Storage>) -> storage::Result<Self> {
        let queue = storage.tree(trees::INBOUND)?;
        let mut last = 0;
        queue.for_each(b"", &mut |key, _| {
            last = last.max(seq_of(key));
            Ok(())
        })?;
        Ok(Self {
            queue,
            seen: Table::open(storage.as_ref(), trees::INBOUND_SEEN)?,
            dead: Table::open(storage.as_ref(), trees::INBOUND_DEAD)?,
            last_seq: AtomicU64::new(last),
        })
    }

    fn key(room: &str, seq: u64) -> KeyBuf {
        KeyBuf::new().push(room).push_u64(seq)
    }

    /// Stores every event of a transaction not seen before; returns the
    /// rooms that got new events. Writes the queue entry before marking
    /// the event seen, so a crash in between stores it twice rather than
    /// never (the dispatch marker keeps a duplicate from reaching a
    /// connector twice).
    pub fn accept(&self, events: &[serde_json::Value]) -> storage::Result<Vec<OwnedRoomId>> {
        let mut rooms: Vec<OwnedRoomId> = Vec::new();
        for raw in events {
            let Ok(event) = serde_json::from_value::<IncomingEvent>(raw.clone()) else {
                tracing::debug!("skipping an event the bridge cannot read");
                continue;
            };
            let seen = KeyBuf::new().push(event.event_id.as_str());
            if self.seen.get(&seen)?.is_some() {
                continue;
            }
            let seq = self.last_seq.fetch_add(1, Ordering::Relaxed) + 1;
            let value = serde_json::to_vec(raw)
                .map_err(|e| StorageError::Backend(format!("cannot encode an event: {e}")))?;
            self.queue
                .insert(Self::key(event.room_id.as_str(), seq).as_bytes(), &value)?;
            self.seen.put(&seen, &now_ms())?;
            if !rooms.contains(&event.room_id) {
                rooms.push(event.room_id);
            }
        }
        Ok(rooms)
    }

    /// The oldest events of `room`, at most `limit`.
    pub fn peek(&self, room: &str, limit: usize) -> storage::Result<Vec<QueuedInbound>> {
        let prefix = KeyBuf::new().push(room);
        Ok(self
            .queue
            .scan(prefix.as_bytes(), None, limit)?
            .into_iter()
            .map(|(key, value)| QueuedInbound {
                seq: seq_of(&key),
                event: serde_json::from_slice(&value)
                    .map_err(|e| format!("the stored event does not decode: {e}")),
            })
            .collect())
    }

    /// Removes event `seq` of `room`: it was handled.
    pub fn ack(&self, room: &str, seq: u64) -> storage::Result<()> {
        self.queue.remove(Self::key(room, seq).as_bytes()).map(drop)
    }

    /// Moves event `seq` of `room` to the dead letters with `reason`.
    pub fn bury(
        &self,
        room: &str,
        seq: u64,
        event: Option<&IncomingEvent>,
        reason: &str,
    ) -> storage::Result<()> {
        let letter = InboundDeadLetter {
            room_id: room.to_owned(),
            event_id: event.map(|e| e.event_id.to_string()).unwrap_or_default(),
            kind: event
                .map(|e| e.kind.clone())
                .unwrap_or_else(|| "undecodable".into()),
            at_ms: now_ms(),
            reason: reason.to_owned(),
        };
        tracing::warn!(room, event = %letter.event_id, kind = %letter.kind, reason, "Matrix event moved to the dead letters");
        self.dead.put(&Self::key(room, seq), &letter)?;
        self.ack(room, seq)
    }

    /// The dead letters, oldest room first, at most `limit`.
    pub fn dead_letters(&self, limit: usize) -> storage::Result<Vec<InboundDeadLetter>> {
        let mut letters: Vec<InboundDeadLetter> = self
            .dead
            .scan(&KeyBuf::new())?
            .into_iter()
            .map(|(_, letter)| letter)
            .collect();
        letters.truncate(limit);
        Ok(letters)
    }

    /// The rooms with events waiting, e.g. after a restart.
    pub fn pending_rooms(&self) -> storage::Result<Vec<String>> {
        Ok(self.pending_counts()?.into_keys().collect())
    }

    /// How many events wait in each room.
    pub fn pending_counts(&self) -> storage::Result<BTreeMap<String, usize>> {
        let mut counts = BTreeMap::new();
        self.queue.for_each(b"", &mut |key, _| {
            if let Some(room) = room_of(key) {
                *counts.entry(room).or_insert(0) += 1;
            }
            Ok(())
        })?;
        Ok(counts)
    }

    /// Forgets event ids seen before `before_ms`: the homeserver does not
    /// send an event again after days.
    pub fn prune_seen(&self, before_ms: u64) -> storage::Result<usize> {
        let old: Vec<Vec<u8>> = self
            .seen
            .scan(&KeyBuf::new())?
            .into_iter()
            .filter(|(_, at)| *at < before_ms)
            .map(|(k, _)| k)
            .collect();
        for key in &old {
            self.seen.tree().remove(key)?;
        }
        Ok(old.len())
    }
}

/// The room of a queue key.
fn room_of(key: &[u8]) -> Option<String> {
    let parts = storage::split_components(&key[..key.len().saturating_sub(8)]);
    match parts.as_slice() {
        [room] => Some(String::from_utf8_lossy(room).into_owned()),
        _ => None,
    }
}

fn seq_of(key: &[u8]) -> u64 {
    key.len()
        .checked_sub(8)
        .and_then(|start| key[start..].try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use weft_storage::MemoryStorage;

    use super::*;

    fn event(id: &str, room: &str, body: &str) -> serde_json::Value {
        json!({
            "type": "m.room.message", "event_id": id, "room_id": room, "sender": "@u:x",
            "origin_server_ts": 1, "content": { "msgtype": "m.text", "body": body },
        })
    }

    #[test]
    fn an_event_is_queued_once_whatever_transaction_brings_it() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let inbound = Inbound::open(&storage).unwrap();
        let first = inbound
            .accept(&[event("$1", "!a", "one"), event("$2", "!b", "two")])
            .unwrap();
        assert_eq!(first.len(), 2);
        // The same event again (a retry, or a reused transaction id after a
        // homeserver restart carrying old events): nothing new.
        assert!(
            inbound
                .accept(&[event("$1", "!a", "one")])
                .unwrap()
                .is_empty()
        );
        // A new event under any transaction id is queued.
        assert_eq!(
            inbound.accept(&[event("$3", "!a", "three")]).unwrap().len(),
            1
        );
        let queued = inbound.peek("!a", 10).unwrap();
        let ids: Vec<String> = queued
            .iter()
            .map(|q| q.event.as_ref().unwrap().event_id.to_string())
            .collect();
        assert_eq!(ids, ["$1", "$3"]);
    }

    #[test]
    fn queues_survive_a_reopen_in_order_and_dead_letters_keep_the_reason() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let inbound = Inbound::open(&storage).unwrap();
        inbound.accept(&[event("$1", "!a", "one")]).unwrap();
        drop(inbound);
        let inbound = Inbound::open(&storage).unwrap();
        inbound.accept(&[event("$2", "!a", "two")]).unwrap();
        assert_eq!(inbound.pending_rooms().unwrap(), ["!a"]);
        let queued = inbound.peek("!a", 10).unwrap();
        assert!(queued[0].seq < queued[1].seq);
        let first = queued[0].event.as_ref().unwrap();
        inbound
            .bury("!a", queued[0].seq, Some(first), "the connector refused it")
            .unwrap();
        let letters = inbound.dead_letters(10).unwrap();
        assert_eq!(letters[0].event_id, "$1");
        assert_eq!(letters[0].reason, "the connector refused it");
        assert_eq!(inbound.peek("!a", 10).unwrap().len(), 1);
    }
}
