//! A login's timers: what the `timers` import sets and what drives the
//! login's poll loop.
//!
//! The table belongs to the login's actor, not to an instance, and is
//! persisted, so timers survive traps, upgrades and restarts. Due times are
//! wall-clock milliseconds so they mean the same after a restart.

use std::collections::BTreeMap;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// How far a new interval's first firing is spread, at most: enough that
/// thousands of logins started together do not poll together, short
/// enough that a new login syncs soon.
const MAX_INITIAL_SPREAD_MS: u64 = 10_000;

/// Each firing moves by up to this fraction of the period, so logins that
/// happen to line up drift apart again.
const JITTER: f64 = 0.05;

/// One timer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Timer {
    /// Repeating or not.
    pub(crate) kind: TimerKind,
    /// When it is next due, in Unix milliseconds.
    pub(crate) due_ms: u64,
}

/// Whether a timer repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum TimerKind {
    /// Fires every `period_ms`.
    Interval {
        /// The period.
        period_ms: u32,
    },
    /// Fires once.
    Timeout,
}

/// Why a timer was refused (mirrors the WIT `timer-error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TimerError {
    /// Bad name.
    InvalidName(String),
    /// Too many timers; the limit.
    TooMany(u32),
    /// Too short; the minimum.
    TooShort(u32),
}

/// A login's timers.
#[derive(Debug, Clone)]
pub(crate) struct TimerTable {
    timers: BTreeMap<String, Timer>,
    max: u32,
    min_ms: u32,
    /// Changed since it was last persisted.
    pub(crate) dirty: bool,
}

impl TimerTable {
    /// A table with persisted `timers`, allowing at most `max` timers no
    /// shorter than `min_ms`.
    pub(crate) fn new(timers: BTreeMap<String, Timer>, max: u32, min_ms: u32) -> Self {
        Self {
            timers,
            max,
            min_ms,
            dirty: false,
        }
    }

    /// The timers, to persist.
    pub(crate) fn timers(&self) -> &BTreeMap<String, Timer> {
        &self.timers
    }

    fn check(&self, name: &str, ms: u32) -> Result<(), TimerError> {
        if name.is_empty() || name.len() > 128 {
            return Err(TimerError::InvalidName(
                "a timer name has 1 to 128 bytes".into(),
            ));
        }
        if ms < self.min_ms {
            return Err(TimerError::TooShort(self.min_ms));
        }
        if !self.timers.contains_key(name) && self.timers.len() >= self.max as usize {
            return Err(TimerError::TooMany(self.max));
        }
        Ok(())
    }

    /// Sets a repeating timer. Setting the same period again keeps the
    /// timer's phase, so a plugin that sets its timers in every `start`
    /// does not reset them.
    pub(crate) fn set_interval(
        &mut self,
        name: &str,
        period_ms: u32,
        now_ms: u64,
    ) -> Result<(), TimerError> {
        self.check(name, period_ms)?;
        let kind = TimerKind::Interval { period_ms };
        if self.timers.get(name).is_some_and(|t| t.kind == kind) {
            return Ok(());
        }
        let spread = u64::from(period_ms).min(MAX_INITIAL_SPREAD_MS);
        let due_ms = now_ms + rand::rng().random_range(0..=spread);
        self.timers.insert(name.to_owned(), Timer { kind, due_ms });
        self.dirty = true;
        Ok(())
    }

    /// Sets a one-shot timer.
    pub(crate) fn set_timeout(
        &mut self,
        name: &str,
        delay_ms: u32,
        now_ms: u64,
    ) -> Result<(), TimerError> {
        self.check(name, delay_ms)?;
        self.timers.insert(
            name.to_owned(),
            Timer {
                kind: TimerKind::Timeout,
                due_ms: now_ms + u64::from(delay_ms),
            },
        );
        self.dirty = true;
        Ok(())
    }

    /// Cancels `name`; returns whether it existed.
    pub(crate) fn cancel(&mut self, name: &str) -> bool {
        let existed = self.timers.remove(name).is_some();
        self.dirty |= existed;
        existed
    }

    /// When the earliest timer is due.
    pub(crate) fn next_due_ms(&self) -> Option<u64> {
        self.timers.values().map(|t| t.due_ms).min()
    }

    /// Takes timer `name` as if it were due at `now_ms`, whenever it is
    /// really due: a timeout is removed, an interval next fires one period
    /// after `now_ms`. `None` if there is no such timer.
    pub(crate) fn take_named(&mut self, name: &str, now_ms: u64) -> Option<()> {
        let timer = self.timers.get_mut(name)?;
        match timer.kind {
            TimerKind::Timeout => {
                self.timers.remove(name);
            }
            TimerKind::Interval { period_ms } => timer.due_ms = now_ms + u64::from(period_ms),
        }
        self.dirty = true;
        Some(())
    }

    /// Takes the timer due first, whenever that is (see
    /// [`take_named`](Self::take_named)).
    pub(crate) fn take_first(&mut self, now_ms: u64) -> Option<String> {
        let name = self
            .timers
            .iter()
            .min_by_key(|(_, t)| t.due_ms)
            .map(|(n, _)| n.clone())?;
        self.take_named(&name, now_ms).map(|()| name)
    }

    /// Takes the earliest timer due by `now_ms`, with the time it was due:
    /// a timeout is removed, an interval moves to its next slot (skipping
    /// slots missed while the host was busy or down).
    pub(crate) fn take_due(&mut self, now_ms: u64) -> Option<(String, u64)> {
        let (name, timer) = self
            .timers
            .iter()
            .filter(|(_, t)| t.due_ms <= now_ms)
            .min_by_key(|(_, t)| t.due_ms)
            .map(|(n, t)| (n.clone(), t.clone()))?;
        match timer.kind {
            TimerKind::Timeout => {
                self.timers.remove(&name);
            }
            TimerKind::Interval { period_ms } => {
                let jittered = (f64::from(period_ms)
                    * (1.0 + rand::rng().random_range(-JITTER..=JITTER)))
                    as u64;
                let mut next = timer.due_ms + jittered.max(1);
                if next <= now_ms {
                    next = now_ms + jittered.max(1);
                }
                if let Some(t) = self.timers.get_mut(&name) {
                    t.due_ms = next;
                }
            }
        }
        self.dirty = true;
        Some((name, timer.due_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interval_fires_repeatedly_and_a_timeout_once() {
        let mut table = TimerTable::new(BTreeMap::new(), 4, 10);
        table.set_interval("poll", 100, 0).unwrap();
        table.set_timeout("once", 50, 0).unwrap();
        let mut fired = Vec::new();
        for now in (0..=1000).step_by(10) {
            while let Some(name) = table.take_due(now) {
                fired.push(name.0);
            }
        }
        // The timeout fired exactly once; the interval about ten times.
        assert_eq!(fired.iter().filter(|n| *n == "once").count(), 1);
        let polls = fired.iter().filter(|n| *n == "poll").count();
        assert!((9..=11).contains(&polls), "{polls}");
    }

    #[test]
    fn setting_the_same_interval_again_keeps_its_phase() {
        let mut table = TimerTable::new(BTreeMap::new(), 4, 10);
        table.set_interval("poll", 60_000, 0).unwrap();
        let due = table.next_due_ms();
        table.set_interval("poll", 60_000, 5_000).unwrap();
        // A restarted plugin re-setting its poll timer does not reset it.
        assert_eq!(table.next_due_ms(), due);
    }

    #[test]
    fn new_intervals_are_spread_so_logins_do_not_poll_together() {
        let dues: std::collections::BTreeSet<u64> = (0..50)
            .map(|_| {
                let mut table = TimerTable::new(BTreeMap::new(), 1, 10);
                table.set_interval("poll", 5_000, 0).unwrap();
                table.next_due_ms().unwrap()
            })
            .collect();
        // Fifty logins started at the same instant get (nearly) fifty
        // different first due times within the period.
        assert!(dues.len() > 40, "{}", dues.len());
        assert!(dues.iter().all(|d| *d <= 5_000));
    }

    #[test]
    fn limits_are_enforced_with_the_limit_in_the_error() {
        let mut table = TimerTable::new(BTreeMap::new(), 1, 100);
        assert_eq!(
            table.set_interval("a", 50, 0),
            Err(TimerError::TooShort(100))
        );
        table.set_interval("a", 100, 0).unwrap();
        assert_eq!(table.set_timeout("b", 100, 0), Err(TimerError::TooMany(1)));
        // Replacing an existing timer is not "one more".
        assert!(table.set_timeout("a", 100, 0).is_ok());
        assert!(matches!(
            table.set_timeout("", 100, 0),
            Err(TimerError::InvalidName(_))
        ));
    }

    #[test]
    fn missed_slots_are_skipped_not_replayed() {
        let mut table = TimerTable::new(BTreeMap::new(), 1, 10);
        table.set_timeout("x", 10, 0).unwrap();
        table.cancel("x");
        table.set_interval("poll", 100, 0).unwrap();
        // The host was away for ten periods: one firing, not ten.
        assert!(table.take_due(1_000).is_some());
        assert!(table.take_due(1_000).is_none());
    }
}
