//! Counters the runtime keeps about itself, for `weft bench`, the status
//! page and `/metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    plugins: Mutex<BTreeMap<String, Arc<PluginCounters>>>,
}

/// The upper bounds of the call latency histogram, in seconds.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5, 10.0,
];

/// How an outgoing HTTP request of a plugin ended.
pub const HTTP_OUTCOMES: [&str; 7] = [
    "ok",
    "denied",
    "timeout",
    "too-large",
    "connect",
    "invalid-request",
    "protocol",
];

/// One plugin's counters, across its versions.
#[derive(Default)]
pub(crate) struct PluginCounters {
    live_instances: AtomicI64,
    calls: AtomicU64,
    traps: AtomicU64,
    restarts: AtomicU64,
    /// Calls per latency bucket (the last one past every bound).
    latency: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_sum_us: AtomicU64,
    http: [AtomicU64; HTTP_OUTCOMES.len()],
    events_out: AtomicU64,
    events_in: AtomicU64,
    kv_bytes_written: AtomicU64,
}

impl PluginCounters {
    pub(crate) fn instance_created(&self) {
        self.live_instances.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn instance_dropped(&self) {
        self.live_instances.fetch_sub(1, Ordering::Relaxed);
    }

    /// A call that took `took` and trapped or not.
    pub(crate) fn call(&self, took: Duration, trapped: bool) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if trapped {
            self.traps.fetch_add(1, Ordering::Relaxed);
        }
        let secs = took.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|bound| secs <= *bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.latency_sum_us.fetch_add(micros, Ordering::Relaxed);
    }

    pub(crate) fn restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// An outgoing HTTP request that ended as `HTTP_OUTCOMES[outcome]`.
    pub(crate) fn http(&self, outcome: usize) {
        if let Some(counter) = self.http.get(outcome) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn event_out(&self) {
        self.events_out.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn event_in(&self) {
        self.events_in.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn kv_written(&self, bytes: usize) {
        self.kv_bytes_written
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn snapshot(&self, plugin: &str) -> PluginMetrics {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PluginMetrics {
            plugin: plugin.to_owned(),
            live_instances: self.live_instances.load(Ordering::Relaxed).max(0) as u64,
            calls: get(&self.calls),
            traps: get(&self.traps),
            restarts: get(&self.restarts),
            latency_buckets: self.latency.iter().map(get).collect(),
            latency_sum_seconds: get(&self.latency_sum_us) as f64 / 1e6,
            http_by_outcome: HTTP_OUTCOMES
                .iter()
                .zip(&self.http)
                .map(|(outcome, count)| (*outcome, get(count)))
                .collect(),
            events_out: get(&self.events_out),
            events_in: get(&self.events_in),
            kv_bytes_written: get(&self.kv_bytes_written),
        }
    }
}

/// One plugin's counters, copied (totals since the host started).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PluginMetrics {
    /// The plugin id.
    pub plugin: String,
    /// Instances alive now (logins, providers, processes, route handlers).
    pub live_instances: u64,
    /// Calls into it.
    pub calls: u64,
    /// Calls that trapped, ran out of time or memory.
    pub traps: u64,
    /// Logins restarted after a trap.
    pub restarts: u64,
    /// Calls per latency bucket: one per bound of [`LATENCY_BUCKETS`], then
    /// the calls past the last bound (not cumulative).
    pub latency_buckets: Vec<u64>,
    /// The total time of all calls, in seconds.
    pub latency_sum_seconds: f64,
    /// Outgoing HTTP requests by how they ended (see [`HTTP_OUTCOMES`]).
    pub http_by_outcome: Vec<(&'static str, u64)>,
    /// Remote events it queued for Matrix.
    pub events_out: u64,
    /// Matrix events handed to it.
    pub events_in: u64,
    /// Bytes it wrote to its KV state (keys and values).
    pub kv_bytes_written: u64,
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

    /// The counters of plugin `id`.
    pub(crate) fn plugin(&self, id: &str) -> Arc<PluginCounters> {
        self.plugins
            .lock()
            .expect("plugin metrics poisoned")
            .entry(id.to_owned())
            .or_default()
            .clone()
    }

    /// Every plugin's counters, copied.
    pub(crate) fn plugins(&self) -> Vec<PluginMetrics> {
        self.plugins
            .lock()
            .expect("plugin metrics poisoned")
            .iter()
            .map(|(id, counters)| counters.snapshot(id))
            .collect()
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
