//! The sled backend: the embedded default.

use std::path::Path;
use std::sync::Arc;

use super::{Result, Storage, StorageError, Tree};

/// Storage in a sled database directory.
pub struct SledStorage {
    db: sled::Db,
}

impl SledStorage {
    /// Opens (or creates) the database at `path`. While another handle
    /// holds the database's lock (a host restarting in the same process
    /// whose last tasks are still ending, or another weft on the same
    /// directory) it waits up to ten seconds for it.
    pub fn open(path: &Path) -> Result<Self> {
        const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
        let started = std::time::Instant::now();
        loop {
            let opened = sled::Config::new()
                .path(path)
                // sled flushes its log in the background this often; the
                // host also flushes explicitly where a write must be
                // durable before it answers (an appservice transaction, a
                // queued event).
                .flush_every_ms(Some(200))
                .open();
            match opened {
                Ok(db) => return Ok(Self { db }),
                // sled reports the lock as an I/O error of kind `Other`,
                // naming it in the message.
                Err(sled::Error::Io(error))
                    if error.to_string().contains("could not acquire lock")
                        && started.elapsed() < LOCK_WAIT =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(error) => {
                    return Err(StorageError::Backend(format!(
                        "cannot open {}: {error}",
                        path.display()
                    )));
                }
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_a_database_still_held_waits_until_it_is_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let first = SledStorage::open(&path).unwrap();
        first.tree("t").unwrap().insert(b"k", b"v").unwrap();
        first.flush().unwrap();
        let holder = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(first);
        });
        // The lock is held for another 300 ms: the open waits, then reads.
        let second = SledStorage::open(&path).unwrap();
        assert_eq!(second.tree("t").unwrap().get(b"k").unwrap().unwrap(), b"v");
        holder.join().unwrap();
    }
}
