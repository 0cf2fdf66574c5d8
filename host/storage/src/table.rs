//! A typed view of a tree: keys are [`KeyBuf`]s, values are JSON.

use std::marker::PhantomData;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{KeyBuf, Result, Storage, StorageError, Tree};

/// A tree whose values are `V`, stored as JSON.
pub struct Table<V> {
    name: &'static str,
    tree: Arc<dyn Tree>,
    _value: PhantomData<fn() -> V>,
}

impl<V> Clone for Table<V> {
    fn clone(&self) -> Self {
        Self {
            name: self.name,
            tree: self.tree.clone(),
            _value: PhantomData,
        }
    }
}

impl<V: Serialize + DeserializeOwned> Table<V> {
    /// Opens tree `name` of `storage` as a table.
    pub fn open(storage: &dyn Storage, name: &'static str) -> Result<Self> {
        Ok(Self {
            name,
            tree: storage.tree(name)?,
            _value: PhantomData,
        })
    }

    fn decode(&self, bytes: &[u8]) -> Result<V> {
        serde_json::from_slice(bytes).map_err(|e| StorageError::Decode {
            tree: self.name,
            message: e.to_string(),
        })
    }

    fn encode(value: &V) -> Vec<u8> {
        serde_json::to_vec(value).expect("host records always serialize")
    }

    /// The value under `key`.
    pub fn get(&self, key: &KeyBuf) -> Result<Option<V>> {
        self.tree
            .get(key.as_bytes())?
            .map(|b| self.decode(&b))
            .transpose()
    }

    /// Stores `value` under `key`.
    pub fn put(&self, key: &KeyBuf, value: &V) -> Result<()> {
        self.tree
            .insert(key.as_bytes(), &Self::encode(value))
            .map(drop)
    }

    /// Stores `value` under `key` only if nothing is there; returns whether
    /// it stored.
    pub fn put_if_absent(&self, key: &KeyBuf, value: &V) -> Result<bool> {
        self.tree
            .compare_and_swap(key.as_bytes(), None, Some(&Self::encode(value)))
    }

    /// Removes `key`; returns the value it had.
    pub fn remove(&self, key: &KeyBuf) -> Result<Option<V>> {
        self.tree
            .remove(key.as_bytes())?
            .map(|b| self.decode(&b))
            .transpose()
    }

    /// Every entry under `prefix`, in key order.
    pub fn scan(&self, prefix: &KeyBuf) -> Result<Vec<(Vec<u8>, V)>> {
        let mut out = Vec::new();
        self.tree.for_each(prefix.as_bytes(), &mut |key, value| {
            out.push((key.to_vec(), self.decode(value)?));
            Ok(())
        })?;
        Ok(out)
    }

    /// Removes every entry under `prefix`.
    pub fn remove_prefix(&self, prefix: &KeyBuf) -> Result<usize> {
        self.tree.remove_prefix(prefix.as_bytes())
    }

    /// The underlying tree, for byte-level access.
    pub fn tree(&self) -> &Arc<dyn Tree> {
        &self.tree
    }
}
