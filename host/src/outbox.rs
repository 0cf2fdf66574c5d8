//! The outbox: remote events a connector queued, stored durably until the
//! bridge has turned them into Matrix events.
//!
//! `queue-event` returns only once its event is here, so a connector may
//! advance its cursor right after: a host crash between the two loses
//! nothing, and the bridge picks the event up after the restart.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::logins::LoginKey;
use crate::runtime::bindings::imports::matrix::RemoteEvent;
use crate::storage::{self, Storage, StorageError, Tree, trees};

/// Who is told that a login has new events.
pub trait EventSink: Send + Sync + 'static {
    /// Login `login` has new events in the outbox.
    fn events_queued(&self, login: &LoginKey);
}

/// The outbox of every login.
pub struct Outbox {
    tree: Arc<dyn Tree>,
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
    /// The event.
    pub event: RemoteEvent,
}

impl Outbox {
    /// Opens the outbox in `storage`.
    pub fn open(storage: &Arc<dyn Storage>) -> storage::Result<Self> {
        let tree = storage.tree(trees::OUTBOX)?;
        // Entries are (plugin, login, seq); the largest seq is what matters.
        let mut last = 0;
        tree.for_each(b"", &mut |key, _| {
            last = last.max(seq_of(key));
            Ok(())
        })?;
        Ok(Self {
            tree,
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
        let now = crate::logins::now_ms() * 1000;
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

    /// Stores `event` at the end of `login`'s queue and tells the sink.
    pub fn append(&self, login: &LoginKey, event: &RemoteEvent) -> storage::Result<u64> {
        let seq = self.next_seq();
        let value = serde_json::to_vec(event).expect("remote events always serialize");
        self.tree
            .insert(login.storage_prefix().push_u64(seq).as_bytes(), &value)?;
        if let Some(sink) = self.sink.read().expect("sink lock poisoned").as_ref() {
            sink.events_queued(login);
        }
        Ok(seq)
    }

    /// The oldest events of `login`, at most `limit`.
    pub fn peek(&self, login: &LoginKey, limit: usize) -> storage::Result<Vec<QueuedEvent>> {
        let prefix = login.storage_prefix();
        self.tree
            .scan(prefix.as_bytes(), None, limit)?
            .into_iter()
            .map(|(key, value)| {
                let seq = seq_of(&key);
                let event = serde_json::from_slice(&value).map_err(|e| StorageError::Decode {
                    tree: trees::OUTBOX,
                    message: e.to_string(),
                })?;
                Ok(QueuedEvent { seq, event })
            })
            .collect()
    }

    /// Removes event `seq` of `login`: it has been bridged.
    pub fn ack(&self, login: &LoginKey, seq: u64) -> storage::Result<()> {
        self.tree
            .remove(login.storage_prefix().push_u64(seq).as_bytes())
            .map(drop)
    }

    /// Removes every event of `login` (it was deleted).
    pub fn clear(&self, login: &LoginKey) -> storage::Result<usize> {
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
    key.len().checked_sub(8).map_or(0, |start| {
        u64::from_be_bytes(key[start..].try_into().expect("8 bytes"))
    })
}
