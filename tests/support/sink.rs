//! An event sink that records what connectors queued, in order.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use weft_host::logins::LoginKey;
use weft_host::outbox::{EventSink, Outbox};
use weft_runtime::events::RemoteEvent;

/// Records every remote event, draining the outbox like the bridge would.
#[derive(Default)]
pub struct RecordingSink {
    outbox: Mutex<Weak<Outbox>>,
    events: Mutex<Vec<(LoginKey, RemoteEvent)>>,
    draining: tokio::sync::Mutex<()>,
}

impl RecordingSink {
    /// Starts draining `outbox` (call once the host is up).
    pub fn attach(&self, outbox: &Arc<Outbox>) {
        *self.outbox.lock().unwrap() = Arc::downgrade(outbox);
    }

    /// Everything recorded so far.
    pub fn events(&self) -> Vec<(LoginKey, RemoteEvent)> {
        self.events.lock().unwrap().clone()
    }

    /// The ids of the messages recorded for `login`, in order.
    pub fn message_ids(&self, login: &LoginKey) -> Vec<String> {
        self.events()
            .into_iter()
            .filter(|(key, _)| key == login)
            .filter_map(|(_, event)| match event {
                RemoteEvent::Message(m) => Some(m.message_id),
                _ => None,
            })
            .collect()
    }

    /// Waits until `check` holds over the recorded events (a snapshot, so
    /// `check` may call the recorder's other methods).
    pub async fn wait_for(&self, what: &str, check: impl Fn(&[(LoginKey, RemoteEvent)]) -> bool) {
        crate::eventually(Duration::from_secs(20), what, || {
            check(&self.events()).then_some(())
        })
        .await
    }

    async fn drain(self: Arc<Self>, login: LoginKey) {
        let _one_at_a_time = self.draining.lock().await;
        let Some(outbox) = self.outbox.lock().unwrap().upgrade() else {
            return;
        };
        loop {
            let batch = outbox.peek(&login, 100).expect("outbox readable");
            if batch.is_empty() {
                return;
            }
            for queued in batch {
                let event = queued.event.expect("queued events decode");
                self.events.lock().unwrap().push((login.clone(), event));
                outbox.ack(&login, queued.seq).expect("outbox writable");
            }
        }
    }
}

/// The sink handed to the host; holds the recorder.
pub struct SinkHandle(pub Arc<RecordingSink>);

impl EventSink for SinkHandle {
    fn events_queued(&self, login: &LoginKey) {
        let recorder = self.0.clone();
        let login = login.clone();
        tokio::spawn(recorder.drain(login));
    }
}
