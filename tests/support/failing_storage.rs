//! A storage that can be made to fail every write, as a full disk does:
//! reads still work, writes and flushes answer "No space left on device".

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use weft_storage::{Result, Storage, StorageError, Tree};

/// The switch, shared by the storage and its trees.
#[derive(Clone, Default)]
pub struct DiskFull {
    full: Arc<AtomicBool>,
    refused: Arc<AtomicUsize>,
}

impl DiskFull {
    /// Fills the disk (`true`) or frees it.
    pub fn set(&self, full: bool) {
        self.full.store(full, Ordering::SeqCst);
    }

    /// How many writes were refused so far.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }

    fn check(&self) -> Result<()> {
        if self.full.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(StorageError::Backend(
                "No space left on device (os error 28)".into(),
            ));
        }
        Ok(())
    }
}

/// `inner`, failing its writes while `disk` is full.
pub struct FailingStorage {
    inner: Arc<dyn Storage>,
    disk: DiskFull,
}

impl FailingStorage {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Storage>, disk: DiskFull) -> Self {
        Self { inner, disk }
    }
}

impl Storage for FailingStorage {
    fn tree(&self, name: &'static str) -> Result<Arc<dyn Tree>> {
        Ok(Arc::new(FailingTree {
            inner: self.inner.tree(name)?,
            disk: self.disk.clone(),
        }))
    }

    fn flush(&self) -> Result<()> {
        self.disk.check()?;
        self.inner.flush()
    }
}

struct FailingTree {
    inner: Arc<dyn Tree>,
    disk: DiskFull,
}

impl Tree for FailingTree {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.get(key)
    }

    fn insert(&self, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>> {
        self.disk.check()?;
        self.inner.insert(key, value)
    }

    fn remove(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.disk.check()?;
        self.inner.remove(key)
    }

    fn compare_and_swap(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool> {
        self.disk.check()?;
        self.inner.compare_and_swap(key, expected, new)
    }

    fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.inner.scan(prefix, start_after, limit)
    }

    fn last_with_prefix(&self, prefix: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        self.inner.last_with_prefix(prefix)
    }

    fn remove_prefix(&self, prefix: &[u8]) -> Result<usize> {
        self.disk.check()?;
        self.inner.remove_prefix(prefix)
    }
}
