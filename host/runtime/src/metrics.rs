//! Counters the runtime keeps about itself, for `weft bench`, the status
//! page and `/metrics`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// How many timer lateness samples are kept (the most recent ones).
const LATENESS_SAMPLES: usize = 100_000;

/// The runtime's counters. All are totals since the host started.
#[derive(Default)]
pub(crate) struct Metrics {
    pub(crate) instances_created: AtomicU64,
    pub(crate) calls: AtomicU64,
    pub(crate) traps: AtomicU64,
    pub(crate) hibernations: AtomicU64,
    pub(crate) wakes: AtomicU64,
    pub(crate) timers_fired: AtomicU64,
    lateness: Mutex<Lateness>,
}

#[derive(Default)]
struct Lateness {
    samples: Vec<u32>,
    next: usize,
}

/// A copy of the counters.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MetricsSnapshot {
    /// Instances created (starts, restarts, wakes, upgrades, processes).
    pub instances_created: u64,
    /// Calls into plugins.
    pub calls: u64,
    /// Calls that trapped or ran out of time or memory.
    pub traps: u64,
    /// Times a login dropped its instance to hibernate.
    pub hibernations: u64,
    /// Times a hibernating login was woken.
    pub wakes: u64,
    /// Timer firings.
    pub timers_fired: u64,
}

impl Metrics {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Records that a timer fired `late_ms` after it was due.
    pub(crate) fn timer_fired(&self, late_ms: u64) {
        Self::bump(&self.timers_fired);
        let mut lateness = self.lateness.lock().expect("lateness lock poisoned");
        let sample = u32::try_from(late_ms).unwrap_or(u32::MAX);
        if lateness.samples.len() < LATENESS_SAMPLES {
            lateness.samples.push(sample);
        } else {
            let at = lateness.next;
            lateness.samples[at] = sample;
            lateness.next = (at + 1) % LATENESS_SAMPLES;
        }
    }

    /// Takes the timer lateness samples recorded so far, in milliseconds.
    pub(crate) fn take_lateness(&self) -> Vec<u32> {
        let mut lateness = self.lateness.lock().expect("lateness lock poisoned");
        lateness.next = 0;
        std::mem::take(&mut lateness.samples)
    }

    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            instances_created: get(&self.instances_created),
            calls: get(&self.calls),
            traps: get(&self.traps),
            hibernations: get(&self.hibernations),
            wakes: get(&self.wakes),
            timers_fired: get(&self.timers_fired),
        }
    }
}
