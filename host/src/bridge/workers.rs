//! Serial workers, one per key (a login's outbox, a room's inbound
//! queue): waking a key runs its drain until the queue is empty, never two
//! drains of one key at once, and different keys concurrently.
//!
//! A drain that fails transiently is retried with backoff (the
//! homeserver's `Retry-After` wins); a wake during the wait retries at
//! once, e.g. when the plugin an event waits for is loaded. A worker whose
//! queue is empty ends, so idle rooms cost nothing.
//!
//! During a homeserver outage that is wrong twice over: every new event
//! would retry at once and push the backoff to its maximum, so delivery
//! would resume up to two minutes after the homeserver came back, and
//! thousands of workers would each probe it. So a worker stalled on an
//! outage ignores wakes and waits for its backoff or for the [`Outage`]
//! prober, one task that asks the homeserver every two seconds while
//! anyone waits, and wakes them all when it answers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::sync::atomic::{AtomicUsize, Ordering};

use futures::future::BoxFuture;
use tokio::sync::{Notify, mpsc, watch};

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

/// Workers waiting out an outage of the homeserver, and the signal that
/// it is back.
pub(crate) struct Outage {
    waiting: AtomicUsize,
    started_waiting: Notify,
    back: watch::Sender<u64>,
}

impl Outage {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            waiting: AtomicUsize::new(0),
            started_waiting: Notify::new(),
            back: watch::channel(0).0,
        })
    }

    /// Starts the prober: while any worker waits, it calls `answers`
    /// every `every`, and when that says the homeserver answers, wakes
    /// every waiting worker. Ends when aborted.
    pub(crate) fn spawn_prober<F>(
        self: &Arc<Self>,
        every: Duration,
        answers: F,
    ) -> tokio::task::JoinHandle<()>
    where
        F: Fn() -> BoxFuture<'static, bool> + Send + Sync + 'static,
    {
        let outage = self.clone();
        tokio::spawn(async move {
            loop {
                if outage.waiting.load(Ordering::Acquire) == 0 {
                    outage.started_waiting.notified().await;
                    continue;
                }
                tokio::time::sleep(every).await;
                if outage.waiting.load(Ordering::Acquire) > 0 && answers().await {
                    tracing::info!("the homeserver answers again; resuming");
                    outage.back.send_modify(|n| *n += 1);
                }
            }
        })
    }

    /// Marks a worker waiting until the guard drops.
    fn wait(self: &Arc<Self>) -> (OutageWait, watch::Receiver<u64>) {
        let mut back = self.back.subscribe();
        back.mark_unchanged();
        self.waiting.fetch_add(1, Ordering::AcqRel);
        self.started_waiting.notify_one();
        (OutageWait(self.clone()), back)
    }
}

/// A worker waiting out an outage; counted until dropped.
struct OutageWait(Arc<Outage>);

impl Drop for OutageWait {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The workers of one kind of queue.
pub(crate) struct Workers<K> {
    what: &'static str,
    drain: Drain<K>,
    running: Arc<Mutex<Running<K>>>,
    outage: Arc<Outage>,
}

/// The running workers: key → (generation, wake channel). The generation
/// tells a worker that ends whether the entry is still its own.
type Running<K> = BTreeMap<K, (u64, mpsc::UnboundedSender<()>)>;

static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl<K> Workers<K>
where
    K: Ord + Clone + std::fmt::Display + Send + Sync + 'static,
{
    /// Workers named `what` (for logs) that run `drain`, waiting out
    /// homeserver outages with `outage`.
    pub(crate) fn new(what: &'static str, drain: Drain<K>, outage: Arc<Outage>) -> Self {
        Self {
            what,
            drain,
            running: Arc::default(),
            outage,
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
        let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
        running.insert(key.clone(), (generation, tx));
        tokio::spawn(run(
            self.what,
            key.clone(),
            generation,
            Shared {
                drain: self.drain.clone(),
                running: self.running.clone(),
                outage: self.outage.clone(),
            },
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

/// What a worker shares with the others of its kind.
struct Shared<K> {
    drain: Drain<K>,
    running: Arc<Mutex<Running<K>>>,
    outage: Arc<Outage>,
}

async fn run<K>(
    what: &'static str,
    key: K,
    generation: u64,
    shared: Shared<K>,
    mut wake: mpsc::UnboundedReceiver<()>,
) where
    K: Ord + Clone + std::fmt::Display + Send + Sync + 'static,
{
    let Shared {
        drain,
        running,
        outage,
    } = shared;
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
                    if error.is_homeserver_outage() {
                        // New events do not bring the homeserver back:
                        // wait for the backoff or for the prober.
                        let (_waiting, mut back) = outage.wait();
                        let sleep = tokio::time::sleep(delay);
                        tokio::pin!(sleep);
                        loop {
                            tokio::select! {
                                _ = &mut sleep => break,
                                _ = back.changed() => break,
                                woken = wake.recv() => if woken.is_none() { return },
                            }
                        }
                    } else {
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            woken = wake.recv() => if woken.is_none() { return },
                        }
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
