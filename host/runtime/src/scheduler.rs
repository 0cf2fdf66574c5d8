//! Wakes hibernating logins when their next timer is due.
//!
//! One task for the whole host holds, for each hibernating login, only
//! its next due time and a weak reference to its slot: a hibernating login
//! has no task, no mailbox and no instance. When a due time comes, the
//! slot starts a new actor, which fires the timer.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use crate::actor::LoginSlot;
use crate::login::now_ms;

/// The wake-up schedule.
#[derive(Clone, Default)]
pub(crate) struct Scheduler {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// (due time, sequence) → the slot to wake.
    due: Mutex<BTreeMap<(u64, u64), Weak<LoginSlot>>>,
    sequence: std::sync::atomic::AtomicU64,
    changed: Notify,
}

impl Scheduler {
    /// Wakes `slot` at `due_ms` (Unix milliseconds), replacing any earlier
    /// entry for it.
    pub(crate) fn schedule(&self, slot: &Arc<LoginSlot>, due_ms: u64) {
        let due_ms = due_ms.max(1);
        slot.scheduled_due.store(due_ms, Ordering::Release);
        let sequence = self.inner.sequence.fetch_add(1, Ordering::Relaxed);
        let mut due = self.inner.due.lock().expect("schedule poisoned");
        let earliest = due.keys().next().map(|(at, _)| *at);
        due.insert((due_ms, sequence), Arc::downgrade(slot));
        drop(due);
        if earliest.is_none_or(|at| due_ms < at) {
            self.inner.changed.notify_one();
        }
    }

    /// How many wake-ups are pending (stale ones included).
    pub(crate) fn len(&self) -> usize {
        self.inner.due.lock().expect("schedule poisoned").len()
    }

    /// Runs the schedule until the returned task is aborted.
    pub(crate) fn spawn(&self) -> tokio::task::JoinHandle<()> {
        let inner = self.inner.clone();
        tokio::spawn(async move {
            loop {
                let now = now_ms();
                let mut woken = Vec::new();
                let next = {
                    let mut due = inner.due.lock().expect("schedule poisoned");
                    while let Some(entry) = due.first_entry() {
                        if entry.key().0 > now {
                            break;
                        }
                        let ((at, _), slot) = entry.remove_entry();
                        woken.push((at, slot));
                    }
                    due.keys().next().map(|(at, _)| *at)
                };
                for (at, slot) in woken {
                    // Only the slot's latest entry counts; an entry left
                    // from an earlier sleep is stale.
                    if let Some(slot) = slot.upgrade()
                        && slot
                            .scheduled_due
                            .compare_exchange(at, 0, Ordering::AcqRel, Ordering::Acquire)
                            .is_ok()
                    {
                        slot.wake();
                    }
                }
                let wait = next.map_or(Duration::from_secs(3600), |at| {
                    Duration::from_millis(at.saturating_sub(now_ms()))
                });
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = inner.changed.notified() => {}
                }
            }
        })
    }
}
