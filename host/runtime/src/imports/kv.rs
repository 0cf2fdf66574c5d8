//! `weft:plugin/kv`: the instance's own namespace of the plugin KV tree.
//!
//! Keys are stored as `namespace prefix ++ plugin key`; the prefix (plugin
//! id, then login) is fixed by the host when the instance is created, so no
//! key a plugin can write reaches another namespace.

use crate::bindings::imports::kv::{Host, KvError};
use crate::state::PluginState;

/// The longest key, in bytes.
pub(crate) const MAX_KEY: usize = 512;
/// The largest value, in bytes.
pub(crate) const MAX_VALUE: usize = 1 << 20;

/// The most keys one `list-keys` call returns.
const MAX_LIST: u32 = 1000;

impl PluginState {
    fn kv_key(&self, key: &str) -> Result<Vec<u8>, KvError> {
        if key.is_empty() || key.len() > MAX_KEY {
            return Err(KvError::InvalidKey(format!(
                "a key has 1 to {MAX_KEY} bytes"
            )));
        }
        Ok(self.ctx.namespace.clone().push_raw(key).into_bytes())
    }

    /// Takes one write from the call's budget (see `CallBudget`).
    fn kv_write_budget(&mut self) -> Result<(), KvError> {
        if self.budget.take_kv_write() {
            Ok(())
        } else {
            Err(KvError::Storage(format!(
                "more than {} KV writes in one call: return, and write the rest in the next call",
                crate::state::CallBudget::KV_WRITES
            )))
        }
    }

    /// Accounts for replacing `old` with `new` under a key of `key_len`
    /// bytes, refusing growth past the quota.
    fn kv_account(
        &mut self,
        key_len: usize,
        old: Option<usize>,
        new: Option<usize>,
    ) -> Result<(), KvError> {
        let size = |value: Option<usize>| value.map_or(0, |v| (key_len + v) as u64);
        let usage = self.ctx.kv_usage - size(old).min(self.ctx.kv_usage) + size(new);
        let quota = self.ctx.runtime.config.kv_quota_mb << 20;
        if usage > quota && size(new) > size(old) {
            return Err(KvError::QuotaExceeded(quota));
        }
        self.ctx.kv_usage = usage;
        if let Some(written) = new {
            self.ctx.counters.kv_written(key_len + written);
        }
        Ok(())
    }
}

fn storage_error(error: weft_storage::StorageError) -> KvError {
    tracing::error!(%error, "plugin KV storage failed");
    KvError::Storage("the host's storage failed".into())
}

impl Host for PluginState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, KvError>> {
        let key = match self.kv_key(&key) {
            Ok(k) => k,
            Err(e) => return Ok(Err(e)),
        };
        Ok(self.ctx.runtime.kv.get(&key).map_err(storage_error))
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), KvError>> {
        let full = match self.kv_key(&key) {
            Ok(k) => k,
            Err(e) => return Ok(Err(e)),
        };
        if let Err(e) = self.kv_write_budget() {
            return Ok(Err(e));
        }
        if value.len() > MAX_VALUE {
            return Ok(Err(KvError::ValueTooLarge(MAX_VALUE as u64)));
        }
        let tree = self.ctx.runtime.kv.clone();
        // Only this instance writes its namespace, so reading the old size
        // first cannot race with another writer.
        let old = match tree.value_len(&full) {
            Ok(old) => old,
            Err(e) => return Ok(Err(storage_error(e))),
        };
        if let Err(e) = self.kv_account(full.len(), old, Some(value.len())) {
            return Ok(Err(e));
        }
        Ok(tree.put(&full, &value).map_err(storage_error))
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<bool, KvError>> {
        let full = match self.kv_key(&key) {
            Ok(k) => k,
            Err(e) => return Ok(Err(e)),
        };
        if let Err(e) = self.kv_write_budget() {
            return Ok(Err(e));
        }
        match self.ctx.runtime.kv.remove(&full) {
            Ok(old) => {
                let existed = old.is_some();
                let _ = self.kv_account(full.len(), old.map(|v| v.len()), None);
                Ok(Ok(existed))
            }
            Err(e) => Ok(Err(storage_error(e))),
        }
    }

    async fn list_keys(
        &mut self,
        prefix: String,
        start_after: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Result<Vec<String>, KvError>> {
        if prefix.len() > MAX_KEY || start_after.as_ref().is_some_and(|s| s.len() > MAX_KEY) {
            return Ok(Err(KvError::InvalidKey(format!(
                "a key has at most {MAX_KEY} bytes"
            ))));
        }
        let namespace = self.ctx.namespace.as_bytes().to_vec();
        let full_prefix = self.ctx.namespace.clone().push_raw(&prefix).into_bytes();
        let after = start_after.map(|s| self.ctx.namespace.clone().push_raw(s).into_bytes());
        let limit = limit.min(MAX_LIST) as usize;
        let entries = match self
            .ctx
            .runtime
            .kv
            .scan(&full_prefix, after.as_deref(), limit)
        {
            Ok(entries) => entries,
            Err(e) => return Ok(Err(storage_error(e))),
        };
        Ok(Ok(entries
            .into_iter()
            .map(|(key, _)| String::from_utf8_lossy(&key[namespace.len()..]).into_owned())
            .collect()))
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        replacement: Option<Vec<u8>>,
    ) -> wasmtime::Result<Result<bool, KvError>> {
        let full = match self.kv_key(&key) {
            Ok(k) => k,
            Err(e) => return Ok(Err(e)),
        };
        if let Err(e) = self.kv_write_budget() {
            return Ok(Err(e));
        }
        if replacement.as_ref().is_some_and(|v| v.len() > MAX_VALUE) {
            return Ok(Err(KvError::ValueTooLarge(MAX_VALUE as u64)));
        }
        let old_len = expected.as_ref().map(Vec::len);
        let new_len = replacement.as_ref().map(Vec::len);
        let usage_before = self.ctx.kv_usage;
        if let Err(e) = self.kv_account(full.len(), old_len, new_len) {
            return Ok(Err(e));
        }
        match self.ctx.runtime.kv.compare_and_swap(
            &full,
            expected.as_deref(),
            replacement.as_deref(),
        ) {
            Ok(true) => Ok(Ok(true)),
            Ok(false) => {
                self.ctx.kv_usage = usage_before;
                Ok(Ok(false))
            }
            Err(e) => {
                self.ctx.kv_usage = usage_before;
                Ok(Err(storage_error(e)))
            }
        }
    }
}
