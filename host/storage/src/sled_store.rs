//! The sled backend: the embedded default.

use std::path::Path;
use std::sync::Arc;

use super::{Result, Storage, StorageError, Tree};

/// Storage in a sled database directory.
pub struct SledStorage {
    db: sled::Db,
}

impl SledStorage {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let db = sled::Config::new()
            .path(path)
            // sled flushes its log in the background this often; the host
            // also flushes explicitly where a write must be durable before
            // it answers (an appservice transaction, a queued event).
            .flush_every_ms(Some(200))
            .open()
            .map_err(|e| StorageError::Backend(format!("cannot open {}: {e}", path.display())))?;
        Ok(Self { db })
    }

    /// A temporary database, deleted when dropped.
    pub fn temporary() -> Result<Self> {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .map_err(backend)?;
        Ok(Self { db })
    }
}

fn backend(error: sled::Error) -> StorageError {
    StorageError::Backend(error.to_string())
}

impl Storage for SledStorage {
    fn tree(&self, name: &'static str) -> Result<Arc<dyn Tree>> {
        Ok(Arc::new(SledTree(
            self.db.open_tree(name).map_err(backend)?,
        )))
    }

    fn flush(&self) -> Result<()> {
        self.db.flush().map(drop).map_err(backend)
    }
}

struct SledTree(sled::Tree);

impl Tree for SledTree {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.0.get(key).map_err(backend)?.map(|v| v.to_vec()))
    }

    fn insert(&self, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .0
            .insert(key, value)
            .map_err(backend)?
            .map(|v| v.to_vec()))
    }

    fn remove(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.0.remove(key).map_err(backend)?.map(|v| v.to_vec()))
    }

    fn compare_and_swap(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool> {
        Ok(self
            .0
            .compare_and_swap(key, expected, new)
            .map_err(backend)?
            .is_ok())
    }

    fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let iter = match start_after {
            Some(after) if after >= prefix => self
                .0
                .range::<&[u8], _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            _ => self.0.range::<&[u8], _>(prefix..),
        };
        let mut out = Vec::new();
        for entry in iter {
            let (k, v) = entry.map_err(backend)?;
            if !k.starts_with(prefix) || out.len() == limit {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn last_with_prefix(&self, prefix: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        match self.0.scan_prefix(prefix).next_back() {
            Some(entry) => {
                let (k, v) = entry.map_err(backend)?;
                Ok(Some((k.to_vec(), v.to_vec())))
            }
            None => Ok(None),
        }
    }

    fn remove_prefix(&self, prefix: &[u8]) -> Result<usize> {
        let mut batch = sled::Batch::default();
        let mut count = 0;
        for entry in self.0.scan_prefix(prefix).keys() {
            batch.remove(entry.map_err(backend)?);
            count += 1;
        }
        self.0.apply_batch(batch).map_err(backend)?;
        Ok(count)
    }
}
