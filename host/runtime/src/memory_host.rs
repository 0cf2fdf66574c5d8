//! A host that keeps its logins in memory and records every event their
//! plugins queue, in order: for running the runtime without weft-host, in
//! weft-testing's harness and in the runtime's own tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::LoginKey;
use crate::events::RemoteEvent;
use crate::plugin::LoadedPlugin;
use crate::services::{HostServices, LoginInfo};

/// An in-memory [`HostServices`]. Plugins are admitted unless
/// [`MemoryHost::refuse_plugins`] says otherwise.
#[derive(Default)]
pub struct MemoryHost {
    logins: Mutex<BTreeMap<LoginKey, (LoginInfo, String)>>,
    events: Mutex<Vec<(LoginKey, RemoteEvent)>>,
    /// Counts queued events, so a test can wait for the next one.
    queued: watch::Sender<usize>,
    refusal: Mutex<Option<String>>,
}

/// Takes a lock even if a panicking test poisoned it: the data is plain
/// records, valid after any panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl MemoryHost {
    /// Stores login `key`, which a registry then starts with its plugin.
    pub fn add_login(&self, key: LoginKey, info: LoginInfo, metadata: String) {
        lock(&self.logins).insert(key, (info, metadata));
    }

    /// Every event queued so far, with its login, in order.
    pub fn events(&self) -> Vec<(LoginKey, RemoteEvent)> {
        lock(&self.events).clone()
    }

    /// The events login `key` queued, in order.
    pub fn events_of(&self, key: &LoginKey) -> Vec<RemoteEvent> {
        lock(&self.events)
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// The number of events queued so far, updated on each.
    pub fn subscribe(&self) -> watch::Receiver<usize> {
        self.queued.subscribe()
    }

    /// From now on, refuses every plugin at load with `reason`, as a host
    /// refuses one whose namespace overlaps another's.
    pub fn refuse_plugins(&self, reason: impl Into<String>) {
        *lock(&self.refusal) = Some(reason.into());
    }
}

impl HostServices for MemoryHost {
    fn queue_event(&self, login: &LoginKey, event: RemoteEvent) -> weft_storage::Result<()> {
        lock(&self.events).push((login.clone(), event));
        self.queued.send_modify(|n| *n += 1);
        Ok(())
    }

    fn login(&self, login: &LoginKey) -> weft_storage::Result<Option<LoginInfo>> {
        Ok(lock(&self.logins).get(login).map(|(info, _)| info.clone()))
    }

    fn metadata(&self, login: &LoginKey) -> weft_storage::Result<Option<String>> {
        Ok(lock(&self.logins)
            .get(login)
            .map(|(_, metadata)| metadata.clone()))
    }

    fn set_metadata(&self, login: &LoginKey, metadata: String) -> weft_storage::Result<bool> {
        Ok(match lock(&self.logins).get_mut(login) {
            Some((_, stored)) => {
                *stored = metadata;
                true
            }
            None => false,
        })
    }

    fn logins_of(&self, plugin: &str) -> weft_storage::Result<Vec<LoginKey>> {
        Ok(lock(&self.logins)
            .keys()
            .filter(|k| k.plugin == plugin)
            .cloned()
            .collect())
    }

    fn admit(&self, plugin: &LoadedPlugin, _others: &[Arc<LoadedPlugin>]) -> Result<(), String> {
        match lock(&self.refusal).as_ref() {
            Some(reason) => Err(format!("{}: {reason}", plugin.id())),
            None => Ok(()),
        }
    }
}
