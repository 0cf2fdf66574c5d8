//! The outbox: remote events a connector queued, stored durably until the
//! bridge has turned them into Matrix events, and the dead letters: events
//! that could not be.
//!
//! Entries are the host's own, versioned form of the runtime's
//! [`RemoteEvent`] (`{"v":1,"event":…}`), never a generated binding
//! serialized as is, so a stored event keeps meaning the same across
//! upgrades of the bindings. An entry that does not decode (written by a
//! future version, or damaged), or that the bridge refuses for good, moves
//! to the dead letters, where operators see it (`weft dead-letters`), and
//! the login's other events keep flowing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use weft_runtime::events::RemoteEvent;
use weft_storage::{self as storage, KeyBuf, Storage, StorageError, Tree};

use crate::logins::{LoginKey, now_ms};
use crate::trees;

/// Who is told that a login has new events.
pub trait EventSink: Send + Sync + 'static {
    /// Login `login` has new events in the outbox.
    fn events_queued(&self, login: &LoginKey);
}

/// An outbox entry, as stored.
#[derive(Serialize, Deserialize)]
#[serde(tag = "v")]
enum StoredEvent {
    /// The first (and current) form.
    #[serde(rename = "1")]
    V1 { event: RemoteEvent },
}

/// An event that could not be bridged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The login.
    pub login: LoginKey,
    /// Its position in the login's queue.
    pub seq: u64,
    /// When it became a dead letter, in Unix milliseconds.
    pub at_ms: u64,
    /// Why.
    pub reason: String,
    /// What kind of event it was (never its content, which may be
    /// private).
    pub kind: String,
    /// The entry as it was stored, for an operator to inspect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored: Option<String>,
}

/// The outbox of every login.
pub struct Outbox {
    tree: Arc<dyn Tree>,
    dead: Arc<dyn Tree>,
    /// The last sequence number handed out. Sequence numbers come from the
    /// clock (microseconds) but never go backwards, so events keep their
    /// order across restarts.
    last_seq: AtomicU64,
    sink: RwLock<Option<Arc<dyn EventSink>>>,
}

/// An event waiting in the outbox.
#[derive(Debug, Clone)]
pub struct QueuedEvent {
    /// Its position in the login's queue.
    pub seq: u64,
    /// The event, or why it does not decode.
    pub event: Result<RemoteEvent, String>,
}

impl Outbox {
    /// Opens the outbox in `storage`.
    pub fn open(storage: &Arc<dyn Storage>) -> storage::Result<Self> {
        let tree = storage.tree(trees::OUTBOX)?;
        let dead = storage.tree(trees::DEAD_LETTERS)?;
        // Entries are (plugin, login, seq); the largest seq is what matters.
        let mut last = 0;
        tree.for_each(b"", &mut |key, _| {
            last = last.max(seq_of(key));
            Ok(())
        })?;
        Ok(Self {
            tree,
            dead,
            last_seq: AtomicU64::new(last),
            sink: RwLock::new(None),
        })
    }

    /// Stops telling anyone (at shutdown: the sink holds the bridge, which
    /// holds the services that hold this outbox).
    pub fn clear_sink(&self) {
        *self.sink.write().expect("sink lock poisoned") = None;
    }

    /// Sets who is told about new events.
    pub fn set_sink(&self, sink: Arc<dyn EventSink>) {
        *self.sink.write().expect("sink lock poisoned") = Some(sink);
    }

    fn next_seq(&self) -> u64 {
        let now = now_ms() * 1000;
        let mut last = self.last_seq.load(Ordering::Relaxed);
        loop {
            let next = now.max(last + 1);
            match self.last_seq.compare_exchange_weak(
                last,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return next,
                Err(actual) => last = actual,
            }
        }
    }

    fn key(login: &LoginKey, seq: u64) -> KeyBuf {
        login.storage_prefix().push_u64(seq)
    }

    /// Stores `event` at the end of `login`'s queue and tells the sink.
    pub fn append(&self, login: &LoginKey, event: RemoteEvent) -> storage::Result<u64> {
        let seq = self.next_seq();
        let value = serde_json::to_vec(&StoredEvent::V1 { event })
            .map_err(|e| StorageError::Backend(format!("cannot encode an event: {e}")))?;
        self.tree.insert(Self::key(login, seq).as_bytes(), &value)?;
        if let Some(sink) = self.sink.read().expect("sink lock poisoned").as_ref() {
            sink.events_queued(login);
        }
        Ok(seq)
    }

    /// The oldest events of `login`, at most `limit`. An entry that does
    /// not decode comes back as an `Err` with the reason, for the caller
    /// to move to the dead letters.
    pub fn peek(&self, login: &LoginKey, limit: usize) -> storage::Result<Vec<QueuedEvent>> {
        let prefix = login.storage_prefix();
        Ok(self
            .tree
            .scan(prefix.as_bytes(), None, limit)?
            .into_iter()
            .map(|(key, value)| QueuedEvent {
                seq: seq_of(&key),
                event: match serde_json::from_slice::<StoredEvent>(&value) {
                    Ok(StoredEvent::V1 { event }) => Ok(event),
                    Err(error) => Err(format!("the stored event does not decode: {error}")),
                },
            })
            .collect())
    }

    /// Removes event `seq` of `login`: it has been bridged.
    pub fn ack(&self, login: &LoginKey, seq: u64) -> storage::Result<()> {
        self.tree.remove(Self::key(login, seq).as_bytes()).map(drop)
    }

    /// Moves event `seq` of `login` to the dead letters, with `reason`.
    pub fn bury(&self, login: &LoginKey, seq: u64, reason: &str) -> storage::Result<()> {
        let key = Self::key(login, seq);
        let Some(stored) = self.tree.get(key.as_bytes())? else {
            return Ok(());
        };
        let kind = match serde_json::from_slice::<StoredEvent>(&stored) {
            Ok(StoredEvent::V1 { event }) => event.kind().to_owned(),
            Err(_) => "undecodable".to_owned(),
        };
        let letter = DeadLetter {
            login: login.clone(),
            seq,
            at_ms: now_ms(),
            reason: reason.to_owned(),
            kind,
            stored: Some(String::from_utf8_lossy(&stored).into_owned()),
        };
        let value = serde_json::to_vec(&letter)
            .map_err(|e| StorageError::Backend(format!("cannot encode a dead letter: {e}")))?;
        self.dead.insert(key.as_bytes(), &value)?;
        self.tree.remove(key.as_bytes())?;
        tracing::warn!(%login, seq, kind = letter.kind, reason, "remote event moved to the dead letters");
        Ok(())
    }

    /// The dead letters, oldest first, at most `limit`, without their
    /// stored content unless `with_content`.
    pub fn dead_letters(
        &self,
        limit: usize,
        with_content: bool,
    ) -> storage::Result<Vec<DeadLetter>> {
        let mut letters = Vec::new();
        self.dead.for_each(b"", &mut |_, value| {
            if letters.len() < limit
                && let Ok(mut letter) = serde_json::from_slice::<DeadLetter>(value)
            {
                if !with_content {
                    letter.stored = None;
                }
                letters.push(letter);
            }
            Ok(())
        })?;
        Ok(letters)
    }

    /// How many events wait to be bridged, over every login.
    pub fn pending_count(&self) -> storage::Result<usize> {
        let mut count = 0;
        self.tree.for_each(b"", &mut |_, _| {
            count += 1;
            Ok(())
        })?;
        Ok(count)
    }

    /// How many dead letters there are.
    pub fn dead_letter_count(&self) -> storage::Result<usize> {
        let mut count = 0;
        self.dead.for_each(b"", &mut |_, _| {
            count += 1;
            Ok(())
        })?;
        Ok(count)
    }

    /// Removes every event and dead letter of `login` (it was deleted).
    pub fn clear(&self, login: &LoginKey) -> storage::Result<usize> {
        self.dead.remove_prefix(login.storage_prefix().as_bytes())?;
        self.tree.remove_prefix(login.storage_prefix().as_bytes())
    }

    /// The logins that have events waiting, e.g. after a restart.
    pub fn pending_logins(&self) -> storage::Result<Vec<LoginKey>> {
        let mut logins: Vec<LoginKey> = Vec::new();
        self.tree.for_each(b"", &mut |key, _| {
            let parts = storage::split_components(&key[..key.len().saturating_sub(8)]);
            if let [plugin, id] = parts.as_slice() {
                let login =
                    LoginKey::new(String::from_utf8_lossy(plugin), String::from_utf8_lossy(id));
                if logins.last() != Some(&login) {
                    logins.push(login);
                }
            }
            Ok(())
        })?;
        Ok(logins)
    }
}

/// The sequence number at the end of an outbox key (0 for a key too short
/// to hold one).
fn seq_of(key: &[u8]) -> u64 {
    key.len()
        .checked_sub(8)
        .and_then(|start| key[start..].try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use weft_runtime::events::{StateKind, StateReport};
    use weft_storage::MemoryStorage;

    use super::*;

    fn outbox() -> (Arc<dyn Storage>, Outbox) {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let outbox = Outbox::open(&storage).unwrap();
        (storage, outbox)
    }

    fn state(message: &str) -> RemoteEvent {
        RemoteEvent::BridgeState(StateReport {
            state: StateKind::Connected,
            error_code: None,
            message: Some(message.into()),
        })
    }

    #[test]
    fn events_come_back_in_order_in_their_versioned_form() {
        let (storage, outbox) = outbox();
        let login = LoginKey::new("echo", "alice");
        outbox.append(&login, state("one")).unwrap();
        outbox.append(&login, state("two")).unwrap();
        let queued = outbox.peek(&login, 10).unwrap();
        // Both, oldest first.
        assert_eq!(queued.len(), 2);
        assert_eq!(queued[0].event.as_ref().unwrap(), &state("one"));
        assert!(queued[0].seq < queued[1].seq);
        // Stored as the host's versioned envelope, not a binding.
        let (_, raw) = storage
            .tree(trees::OUTBOX)
            .unwrap()
            .scan(b"", None, 1)
            .unwrap()[0]
            .clone();
        let raw: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(raw["v"], "1");
        assert_eq!(raw["event"]["type"], "bridge-state");
    }

    #[test]
    fn an_entry_that_does_not_decode_moves_to_the_dead_letters_and_the_rest_flows() {
        let (storage, outbox) = outbox();
        let login = LoginKey::new("echo", "alice");
        // An entry written by some other version of the host.
        storage
            .tree(trees::OUTBOX)
            .unwrap()
            .insert(
                login.storage_prefix().push_u64(1).as_bytes(),
                br#"{"v":"9","event":{"type":"hologram"}}"#,
            )
            .unwrap();
        outbox.append(&login, state("after")).unwrap();
        let queued = outbox.peek(&login, 10).unwrap();
        // The bad entry comes back as an error, not a failed peek.
        assert!(queued[0].event.is_err());
        outbox
            .bury(&login, queued[0].seq, queued[0].event.as_ref().unwrap_err())
            .unwrap();
        // The next peek starts with the good event.
        let queued = outbox.peek(&login, 10).unwrap();
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].event.as_ref().unwrap(), &state("after"));
        // The operator sees the dead letter, with its reason.
        let letters = outbox.dead_letters(10, true).unwrap();
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].kind, "undecodable");
        assert!(
            letters[0].reason.contains("does not decode"),
            "{}",
            letters[0].reason
        );
        assert!(letters[0].stored.as_deref().unwrap().contains("hologram"));
    }

    #[test]
    fn sequence_numbers_keep_growing_across_a_reopen() {
        let (storage, outbox) = outbox();
        let login = LoginKey::new("echo", "alice");
        let first = outbox.append(&login, state("one")).unwrap();
        drop(outbox);
        let reopened = Outbox::open(&storage).unwrap();
        // A restart never reuses or reorders positions.
        assert!(reopened.append(&login, state("two")).unwrap() > first);
        assert_eq!(reopened.pending_logins().unwrap(), vec![login]);
    }
}
