//! Serial workers, one per key (a login's outbox, a room's inbound
//! queue): waking a key runs its drain until the queue is empty, never two
//! drains of one key at once, and different keys concurrently.
//!
//! A drain that fails transiently is retried with backoff (the
//! homeserver's `Retry-After` wins); a wake during the wait retries at
//! once, e.g. when the plugin an event waits for is loaded. A worker whose
//! queue is empty ends, so idle rooms cost nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::mpsc;

use super::BridgeError;

/// Drains the queue of one key.
pub(crate) type Drain<K> =
    Arc<dyn Fn(K, Attempt) -> BoxFuture<'static, Result<(), Stalled>> + Send + Sync>;

/// A drain that stopped at an event it could not handle yet.
#[derive(Debug)]
pub(crate) struct Stalled {
    /// Why.
    pub error: BridgeError,
    /// Whether it handled anything before: then the next failure is a new
    /// one, and the backoff starts over.
    pub progressed: bool,
}

/// How long a drain's head has been failing, so the drain can tell the
/// user about a long delay once.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Attempt {
    /// How many times in a row the drain failed before this try.
    pub failures: u32,
    /// Since when it has been failing.
    pub failing_since: Option<std::time::Instant>,
}

/// The workers of one kind of queue.
pub(crate) struct Workers<K> {
    what: &'static str,
    drain: Drain<K>,
    running: Arc<Mutex<Running<K>>>,
}

/// The running workers: key → (generation, wake channel). The generation
/// tells a worker that ends whether the entry is still its own.
type Running<K> = BTreeMap<K, (u64, mpsc::UnboundedSender<()>)>;

static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl<K> Workers<K>
where
    K: Ord + Clone + std::fmt::Display + Send + Sync + 'static,
{
    /// Workers named `what` (for logs) that run `drain`.
    pub(crate) fn new(what: &'static str, drain: Drain<K>) -> Self {
        Self {
            what,
            drain,
            running: Arc::default(),
        }
    }

    /// Makes sure `key`'s queue gets drained: wakes its worker, or starts
    /// one.
    pub(crate) fn wake(&self, key: &K) {
        let mut running = self.running.lock().expect("worker map poisoned");
        if let Some((_, worker)) = running.get(key)
            && worker.send(()).is_ok()
        {
            return;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let generation = GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        running.insert(key.clone(), (generation, tx));
        tokio::spawn(run(
            self.what,
            key.clone(),
            generation,
            self.drain.clone(),
            self.running.clone(),
            rx,
        ));
    }

    /// Wakes every running worker (e.g. a plugin was loaded).
    pub(crate) fn wake_all(&self) {
        for (_, worker) in self.running.lock().expect("worker map poisoned").values() {
            let _ = worker.send(());
        }
    }

    /// Forgets `key`'s worker; it ends after its current step.
    pub(crate) fn forget(&self, key: &K) {
        self.running
            .lock()
            .expect("worker map poisoned")
            .remove(key);
    }

    /// Forgets every worker (at shutdown).
    pub(crate) fn clear(&self) {
        self.running.lock().expect("worker map poisoned").clear();
    }
}

async fn run<K>(
    what: &'static str,
    key: K,
    generation: u64,
    drain: Drain<K>,
    running: Arc<Mutex<Running<K>>>,
    mut wake: mpsc::UnboundedReceiver<()>,
) where
    K: Ord + Clone + std::fmt::Display + Send + Sync + 'static,
{
    loop {
        while wake.try_recv().is_ok() {}
        let mut backoff = crate::matrix::client::retry_backoff();
        let mut attempt = Attempt::default();
        loop {
            match drain(key.clone(), attempt).await {
                Ok(()) => break,
                Err(Stalled { error, progressed }) => {
                    if progressed {
                        backoff = crate::matrix::client::retry_backoff();
                        attempt = Attempt::default();
                    }
                    // The homeserver's own Retry-After wins over ours.
                    let delay = error
                        .retry_after()
                        .or_else(|| backoff.next())
                        .unwrap_or(Duration::from_secs(60));
                    tracing::warn!(%key, %error, retry_in_ms = delay.as_millis() as u64, "{what} paused; will retry");
                    attempt.failures += 1;
                    attempt
                        .failing_since
                        .get_or_insert_with(std::time::Instant::now);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        woken = wake.recv() => if woken.is_none() { return },
                    }
                }
            }
        }
        // Done: end, unless a wake came in meanwhile (checked under the
        // lock `wake` takes, so no wake is lost between the two).
        let mut map = running.lock().expect("worker map poisoned");
        match wake.try_recv() {
            Ok(()) => continue,
            Err(mpsc::error::TryRecvError::Disconnected) => return,
            Err(mpsc::error::TryRecvError::Empty) => {
                if map.get(&key).is_some_and(|(g, _)| *g == generation) {
                    map.remove(&key);
                }
                return;
            }
        }
    }
}
