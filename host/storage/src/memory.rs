//! An in-memory backend, for tests and benchmarks. Nothing survives the
//! process.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, RwLock};

use super::{Result, Storage, Tree};

/// In-memory storage.
#[derive(Default)]
pub struct MemoryStorage {
    trees: Mutex<BTreeMap<&'static str, Arc<MemoryTree>>>,
}

impl MemoryStorage {
    /// Empty storage.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Storage for MemoryStorage {
    fn tree(&self, name: &'static str) -> Result<Arc<dyn Tree>> {
        let mut trees = self.trees.lock().expect("storage lock poisoned");
        Ok(trees.entry(name).or_default().clone())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }
}

#[derive(Default)]
struct MemoryTree {
    entries: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryTree {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        self.entries.read().expect("tree lock poisoned")
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        self.entries.write().expect("tree lock poisoned")
    }
}

impl Tree for MemoryTree {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.read().get(key).cloned())
    }

    fn insert(&self, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.write().insert(key.to_vec(), value.to_vec()))
    }

    fn remove(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.write().remove(key))
    }

    fn compare_and_swap(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool> {
        let mut entries = self.write();
        if entries.get(key).map(Vec::as_slice) != expected {
            return Ok(false);
        }
        match new {
            Some(value) => entries.insert(key.to_vec(), value.to_vec()),
            None => entries.remove(key),
        };
        Ok(true)
    }

    fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let entries = self.read();
        let lower = match start_after {
            Some(after) if after >= prefix => Bound::Excluded(after.to_vec()),
            _ => Bound::Included(prefix.to_vec()),
        };
        Ok(entries
            .range((lower, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn last_with_prefix(&self, prefix: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        Ok(self
            .read()
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .last()
            .map(|(k, v)| (k.clone(), v.clone())))
    }

    fn remove_prefix(&self, prefix: &[u8]) -> Result<usize> {
        let mut entries = self.write();
        let keys: Vec<Vec<u8>> = entries
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &keys {
            entries.remove(key);
        }
        Ok(keys.len())
    }
}
