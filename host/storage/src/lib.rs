//! weft's storage layer: a small ordered key-value trait with a sled
//! backend (the embedded default) and an in-memory one (for tests and
//! benchmarks).
//!
//! Everything weft keeps lives here: the runtime's plugin KV namespaces and
//! timers, and the host's login records, portals, message mappings and
//! event outbox. Keeping the trait this small (ordered trees of byte keys,
//! with compare-and-swap) is what lets another backend be added; the
//! [`storage_conformance_tests!`] suite pins the behaviour every backend
//! must have. The layers above name their own trees; this crate knows none
//! of them. [`SealedStorage`] wraps any backend and encrypts the values of
//! the trees it is told hold secrets.

pub mod conformance;
mod keys;
mod memory;
mod sealed;
mod sled_store;
mod table;

use std::sync::Arc;

pub use keys::{KeyBuf, split_components};
pub use memory::MemoryStorage;
pub use sealed::{KeyError, Keyring, SealedStorage, SecretKey};
pub use sled_store::SledStorage;
pub use table::Table;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The backend failed (I/O, corruption).
    #[error("storage backend failed: {0}")]
    Backend(String),
    /// A stored value did not decode as the expected type.
    #[error("stored value in `{tree}` does not decode: {message}")]
    Decode {
        /// The tree it came from.
        tree: &'static str,
        /// What was wrong.
        message: String,
    },
}

/// `Result` with [`StorageError`].
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// What [`Tree::for_each`] calls with each key and value.
pub type Visitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<()> + 'a;

/// A named, ordered map of byte keys to byte values.
pub trait Tree: Send + Sync + 'static {
    /// The value under `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Stores `value` under `key`; returns the previous value.
    fn insert(&self, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Removes `key`; returns the previous value.
    fn remove(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Stores `value` under `key`, for a caller that does not want the
    /// previous value: a tree that transforms values (sealing) then does
    /// not undo that for a value no one reads.
    fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.insert(key, value).map(drop)
    }
    /// The length of the value under `key`, without reading it where the
    /// tree can tell (a sealed value's length is its plaintext's plus a
    /// fixed overhead).
    fn value_len(&self, key: &[u8]) -> Result<Option<usize>> {
        Ok(self.get(key)?.map(|value| value.len()))
    }
    /// Replaces the value of `key` with `new` if it is `expected` (`None`
    /// meaning absent; a `new` of `None` removes). Returns whether it did.
    fn compare_and_swap(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool>;
    /// Entries whose key starts with `prefix` and sorts after `start_after`
    /// (if given), in key order, at most `limit`.
    fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// The last entry whose key starts with `prefix`.
    fn last_with_prefix(&self, prefix: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>>;
    /// Removes every entry whose key starts with `prefix`; returns how many.
    fn remove_prefix(&self, prefix: &[u8]) -> Result<usize>;

    /// Calls `visit` with every entry under `prefix`, in key order, reading
    /// the tree a page at a time so a large prefix is never held whole.
    fn for_each(&self, prefix: &[u8], visit: &mut Visitor<'_>) -> Result<()> {
        const PAGE: usize = 1000;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self.scan(prefix, after.as_deref(), PAGE)?;
            for (key, value) in &page {
                visit(key, value)?;
            }
            if page.len() < PAGE {
                return Ok(());
            }
            after = page.last().map(|(key, _)| key.clone());
        }
    }
}

/// A storage backend: a set of trees.
pub trait Storage: Send + Sync + 'static {
    /// The tree called `name`, created if needed.
    fn tree(&self, name: &'static str) -> Result<Arc<dyn Tree>>;
    /// Makes every write so far durable. Blocks: async callers use
    /// [`flush_async`].
    fn flush(&self) -> Result<()>;
}

/// Flushes `storage` on the blocking pool.
pub async fn flush_async(storage: &Arc<dyn Storage>) -> Result<()> {
    let storage = storage.clone();
    tokio::task::spawn_blocking(move || storage.flush())
        .await
        .map_err(|e| StorageError::Backend(format!("flush task failed: {e}")))?
}
