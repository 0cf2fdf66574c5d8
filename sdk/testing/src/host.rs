//! The host a harness's plugins run in: logins and their metadata in
//! memory, and every event and state they queue recorded in order.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio::sync::watch;
use weft_runtime::events::RemoteEvent;
use weft_runtime::{HostServices, LoginInfo, LoginKey};

#[derive(Default)]
pub(crate) struct RecordingHost {
    logins: Mutex<BTreeMap<LoginKey, (LoginInfo, String)>>,
    events: Mutex<Vec<(LoginKey, RemoteEvent)>>,
    /// Counts queued events, so a test can wait for the next one.
    queued: watch::Sender<usize>,
}

impl RecordingHost {
    pub(crate) fn add_login(&self, info: LoginInfo, key: LoginKey, metadata: String) {
        self.logins
            .lock()
            .expect("logins poisoned")
            .insert(key, (info, metadata));
    }

    pub(crate) fn events_of(&self, key: &LoginKey) -> Vec<RemoteEvent> {
        self.events
            .lock()
            .expect("events poisoned")
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, e)| e.clone())
            .collect()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<usize> {
        self.queued.subscribe()
    }
}

impl HostServices for RecordingHost {
    fn queue_event(&self, login: &LoginKey, event: RemoteEvent) -> weft_storage::Result<()> {
        self.events
            .lock()
            .expect("events poisoned")
            .push((login.clone(), event));
        self.queued.send_modify(|n| *n += 1);
        Ok(())
    }

    fn login(&self, login: &LoginKey) -> weft_storage::Result<Option<LoginInfo>> {
        Ok(self
            .logins
            .lock()
            .expect("logins poisoned")
            .get(login)
            .map(|(info, _)| info.clone()))
    }

    fn metadata(&self, login: &LoginKey) -> weft_storage::Result<Option<String>> {
        Ok(self
            .logins
            .lock()
            .expect("logins poisoned")
            .get(login)
            .map(|(_, metadata)| metadata.clone()))
    }

    fn set_metadata(&self, login: &LoginKey, metadata: String) -> weft_storage::Result<bool> {
        Ok(
            match self.logins.lock().expect("logins poisoned").get_mut(login) {
                Some((_, stored)) => {
                    *stored = metadata;
                    true
                }
                None => false,
            },
        )
    }

    fn logins_of(&self, plugin: &str) -> weft_storage::Result<Vec<LoginKey>> {
        Ok(self
            .logins
            .lock()
            .expect("logins poisoned")
            .keys()
            .filter(|k| k.plugin == plugin)
            .cloned()
            .collect())
    }
}
