//! Encryption at rest: a [`Storage`] that seals the values of chosen trees
//! (login metadata, plugins' KV, the host's tokens) with
//! XChaCha20-Poly1305 before they reach the backend.
//!
//! Keys stay in the clear (the layers above scan by prefix); values are
//! `MAGIC ‖ key id ‖ nonce ‖ ciphertext`. The tree's name and the entry's
//! key are the associated data, so a sealed value moved to another key or
//! tree no longer opens: one login's tokens cannot be swapped into another
//! login's record. A value without the magic is a plaintext one from
//! before sealing, and [`SealedStorage::reseal`] seals it.
//!
//! **Rotation**: a keyring holds the current key and any previous ones;
//! values open with whichever key sealed them, and `reseal` re-seals every
//! value not sealed with the current key, after which the previous keys
//! can go.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

use crate::{Result, Storage, StorageError, Tree};

/// Starts every sealed value. JSON never starts with a NUL byte, so no
/// value written before sealing is mistaken for a sealed one.
const MAGIC: &[u8; 4] = b"\0ws1";
const KEY_ID_LEN: usize = 4;
const NONCE_LEN: usize = 24;
const HEADER_LEN: usize = MAGIC.len() + KEY_ID_LEN + NONCE_LEN;
/// Poly1305's tag, after the ciphertext.
const TAG_LEN: usize = 16;

/// A 256-bit secret key. Its `Debug` shows only its id.
#[derive(Clone)]
pub struct SecretKey {
    bytes: [u8; 32],
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", hex::encode(self.id()))
    }
}

/// Why a key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read or written.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The text is not a key.
    #[error("key file {path} does not hold a key: 64 hex digits expected")]
    Malformed {
        /// The file.
        path: String,
    },
}

impl SecretKey {
    /// A new random key.
    pub fn generate() -> Self {
        let key = XChaCha20Poly1305::generate_key(&mut OsRng);
        Self { bytes: key.into() }
    }

    /// The key written as 64 hex digits (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes: [u8; 32] = hex::decode(text.trim()).ok()?.try_into().ok()?;
        Some(Self { bytes })
    }

    /// The key in file `path`.
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_hex(&text).ok_or_else(|| KeyError::Malformed {
            path: path.display().to_string(),
        })
    }

    /// The key in file `path`, which is created with a new key, readable
    /// by this user only, if it does not exist. Answers whether it was
    /// created.
    pub fn read_or_create(path: &Path) -> Result<(Self, bool), KeyError> {
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        let key = Self::generate();
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(path) {
            Ok(mut file) => {
                use std::io::Write as _;
                file.write_all(format!("{}\n", hex::encode(key.bytes)).as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(io)?;
                Ok((key, true))
            }
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                Ok((Self::read(path)?, false))
            }
            Err(error) => Err(io(error)),
        }
    }

    /// A short, public fingerprint of the key (stored with each value).
    pub fn id(&self) -> [u8; KEY_ID_LEN] {
        let digest = Sha256::new()
            .chain_update(b"weft sealed-storage key id\0")
            .chain_update(self.bytes)
            .finalize();
        let mut id = [0; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        id
    }

    /// The key as 64 hex digits, to write it down.
    pub fn to_hex(&self) -> String {
        hex::encode(self.bytes)
    }
}

/// The current key and the previous ones still readable.
pub struct Keyring {
    current: ([u8; KEY_ID_LEN], XChaCha20Poly1305),
    previous: Vec<([u8; KEY_ID_LEN], XChaCha20Poly1305)>,
}

impl Keyring {
    /// Seals with `current`; opens with it or any of `previous`.
    pub fn new(current: &SecretKey, previous: &[SecretKey]) -> Self {
        let cipher = |key: &SecretKey| XChaCha20Poly1305::new(&key.bytes.into());
        Self {
            current: (current.id(), cipher(current)),
            previous: previous
                .iter()
                .filter(|key| key.id() != current.id())
                .map(|key| (key.id(), cipher(key)))
                .collect(),
        }
    }

    fn aad(tree: &str, key: &[u8]) -> Vec<u8> {
        let mut aad = Vec::with_capacity(tree.len() + 1 + key.len());
        aad.extend_from_slice(tree.as_bytes());
        aad.push(0);
        aad.extend_from_slice(key);
        aad
    }

    fn seal(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<Vec<u8>> {
        let (id, cipher) = &self.current;
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = Self::aad(tree, key);
        let sealed = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: value,
                    aad: &aad,
                },
            )
            .map_err(|_| StorageError::Backend("sealing a value failed".into()))?;
        let mut out = Vec::with_capacity(HEADER_LEN + sealed.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The plaintext of `raw`, stored under `key` in `tree`.
    fn open(&self, tree: &'static str, key: &[u8], raw: Vec<u8>) -> Result<Vec<u8>> {
        if !raw.starts_with(MAGIC) {
            return Ok(raw);
        }
        let undecodable = |message: &str| StorageError::Decode {
            tree,
            message: message.to_owned(),
        };
        if raw.len() < HEADER_LEN {
            return Err(undecodable("a sealed value is truncated"));
        }
        let id = &raw[MAGIC.len()..MAGIC.len() + KEY_ID_LEN];
        let nonce = XNonce::from_slice(&raw[MAGIC.len() + KEY_ID_LEN..HEADER_LEN]);
        let cipher = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|(known, _)| known == id)
            .map(|(_, cipher)| cipher)
            .ok_or_else(|| {
                undecodable(&format!(
                    "a value is sealed with key {}, which is not in the keyring (see [secrets] previous-key-files)",
                    hex::encode(id)
                ))
            })?;
        let aad = Self::aad(tree, key);
        cipher
            .decrypt(
                nonce,
                Payload {
                    msg: &raw[HEADER_LEN..],
                    aad: &aad,
                },
            )
            .map_err(|_| undecodable("a sealed value does not open: it was altered or moved"))
    }

    fn is_current(&self, raw: &[u8]) -> bool {
        raw.starts_with(MAGIC) && raw[MAGIC.len()..].starts_with(&self.current.0)
    }
}

/// A storage whose trees named in `sealed` keep their values encrypted.
pub struct SealedStorage {
    inner: Arc<dyn Storage>,
    keys: Arc<Keyring>,
    sealed: BTreeSet<&'static str>,
}

impl SealedStorage {
    /// Seals the values of trees `sealed` of `inner` with `keys`.
    pub fn new(inner: Arc<dyn Storage>, keys: Keyring, sealed: &[&'static str]) -> Self {
        Self {
            inner,
            keys: Arc::new(keys),
            sealed: sealed.iter().copied().collect(),
        }
    }

    /// Seals every value of the sealed trees that is in plaintext or
    /// sealed with a previous key; answers how many it sealed. Run at
    /// start, it finishes a rotation and seals what an older version
    /// wrote.
    pub fn reseal(&self) -> Result<usize> {
        let mut count = 0;
        for name in &self.sealed {
            let raw = self.inner.tree(name)?;
            let mut stale = Vec::new();
            raw.for_each(b"", &mut |key, value| {
                if !self.keys.is_current(value) {
                    stale.push((key.to_vec(), value.to_vec()));
                }
                Ok(())
            })?;
            for (key, value) in stale {
                let plain = self.keys.open(name, &key, value.clone())?;
                let sealed = self.keys.seal(name, &key, &plain)?;
                // A value changed meanwhile is sealed already.
                if raw.compare_and_swap(&key, Some(&value), Some(&sealed))? {
                    count += 1;
                }
            }
        }
        if count > 0 {
            self.inner.flush()?;
        }
        Ok(count)
    }
}

impl Storage for SealedStorage {
    fn tree(&self, name: &'static str) -> Result<Arc<dyn Tree>> {
        let tree = self.inner.tree(name)?;
        if self.sealed.contains(name) {
            Ok(Arc::new(SealedTree {
                name,
                inner: tree,
                keys: self.keys.clone(),
            }))
        } else {
            Ok(tree)
        }
    }

    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }
}

struct SealedTree {
    name: &'static str,
    inner: Arc<dyn Tree>,
    keys: Arc<Keyring>,
}

impl SealedTree {
    fn open(&self, key: &[u8], raw: Option<Vec<u8>>) -> Result<Option<Vec<u8>>> {
        raw.map(|raw| self.keys.open(self.name, key, raw))
            .transpose()
    }

    fn open_entries(&self, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        entries
            .into_iter()
            .map(|(key, raw)| {
                let value = self.keys.open(self.name, &key, raw)?;
                Ok((key, value))
            })
            .collect()
    }
}

impl Tree for SealedTree {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.open(key, self.inner.get(key)?)
    }

    fn insert(&self, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>> {
        let sealed = self.keys.seal(self.name, key, value)?;
        self.open(key, self.inner.insert(key, &sealed)?)
    }

    fn remove(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.open(key, self.inner.remove(key)?)
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let sealed = self.keys.seal(self.name, key, value)?;
        self.inner.put(key, &sealed)
    }

    fn value_len(&self, key: &[u8]) -> Result<Option<usize>> {
        Ok(self.inner.get(key)?.map(|raw| {
            if raw.starts_with(MAGIC) {
                raw.len().saturating_sub(HEADER_LEN + TAG_LEN)
            } else {
                raw.len()
            }
        }))
    }

    fn compare_and_swap(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool> {
        // Sealing is randomized, so the comparison is on plaintexts and
        // the swap on the exact sealed bytes read: a write in between
        // makes the swap fail, and the loop looks again.
        let sealed_new = new
            .map(|value| self.keys.seal(self.name, key, value))
            .transpose()?;
        loop {
            let raw = self.inner.get(key)?;
            let current = self.open(key, raw.clone())?;
            if current.as_deref() != expected {
                return Ok(false);
            }
            if self
                .inner
                .compare_and_swap(key, raw.as_deref(), sealed_new.as_deref())?
            {
                return Ok(true);
            }
        }
    }

    fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.open_entries(self.inner.scan(prefix, start_after, limit)?)
    }

    fn last_with_prefix(&self, prefix: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        match self.inner.last_with_prefix(prefix)? {
            Some((key, raw)) => {
                let value = self.keys.open(self.name, &key, raw)?;
                Ok(Some((key, value)))
            }
            None => Ok(None),
        }
    }

    fn remove_prefix(&self, prefix: &[u8]) -> Result<usize> {
        self.inner.remove_prefix(prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStorage;

    fn sealed(
        inner: &Arc<dyn Storage>,
        current: &SecretKey,
        previous: &[SecretKey],
    ) -> SealedStorage {
        SealedStorage::new(inner.clone(), Keyring::new(current, previous), &["secret"])
    }

    crate::storage_conformance_tests!(
        conformance_when_sealed,
        super::SealedStorage::new(
            std::sync::Arc::new(crate::MemoryStorage::new()),
            super::Keyring::new(&super::SecretKey::generate(), &[]),
            &["conformance"],
        )
    );

    #[test]
    fn a_sealed_value_reads_back_but_is_not_stored_in_the_clear() {
        let inner: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let storage = sealed(&inner, &SecretKey::generate(), &[]);
        storage
            .tree("secret")
            .unwrap()
            .insert(b"k", b"refresh-token-123")
            .unwrap();
        storage
            .tree("plain")
            .unwrap()
            .insert(b"k", b"visible")
            .unwrap();

        assert_eq!(
            storage.tree("secret").unwrap().get(b"k").unwrap().unwrap(),
            b"refresh-token-123"
        );
        let raw = inner.tree("secret").unwrap().get(b"k").unwrap().unwrap();
        assert!(raw.starts_with(MAGIC));
        assert!(!raw.windows(17).any(|w| w == b"refresh-token-123"));
        // Other trees are left as they are.
        assert_eq!(
            inner.tree("plain").unwrap().get(b"k").unwrap().unwrap(),
            b"visible"
        );
    }

    #[test]
    fn a_sealed_value_moved_to_another_key_does_not_open() {
        let inner: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let storage = sealed(&inner, &SecretKey::generate(), &[]);
        storage
            .tree("secret")
            .unwrap()
            .insert(b"alice", b"alice's token")
            .unwrap();
        let raw = inner
            .tree("secret")
            .unwrap()
            .get(b"alice")
            .unwrap()
            .unwrap();
        inner
            .tree("secret")
            .unwrap()
            .insert(b"mallory", &raw)
            .unwrap();

        let error = storage.tree("secret").unwrap().get(b"mallory").unwrap_err();
        assert!(error.to_string().contains("altered or moved"), "{error}");
    }

    #[test]
    fn rotating_the_key_reseals_everything_and_the_old_key_can_go() {
        let inner: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let old = SecretKey::generate();
        let new = SecretKey::generate();
        sealed(&inner, &old, &[])
            .tree("secret")
            .unwrap()
            .insert(b"k", b"v")
            .unwrap();
        // Plaintext from before sealing was turned on.
        inner
            .tree("secret")
            .unwrap()
            .insert(b"legacy", b"{\"token\":\"t\"}")
            .unwrap();

        // Without the old key, its value does not open, with a clear error.
        let error = sealed(&inner, &new, &[])
            .tree("secret")
            .unwrap()
            .get(b"k")
            .unwrap_err();
        assert!(error.to_string().contains("previous-key-files"), "{error}");

        // With it, the value opens, and a reseal moves all to the new key.
        let rotating = sealed(&inner, &new, &[old]);
        assert_eq!(rotating.reseal().unwrap(), 2);
        assert_eq!(rotating.reseal().unwrap(), 0);

        let after = sealed(&inner, &new, &[]);
        let tree = after.tree("secret").unwrap();
        assert_eq!(tree.get(b"k").unwrap().unwrap(), b"v");
        assert_eq!(tree.get(b"legacy").unwrap().unwrap(), b"{\"token\":\"t\"}");
        let raw = inner
            .tree("secret")
            .unwrap()
            .get(b"legacy")
            .unwrap()
            .unwrap();
        assert!(raw.starts_with(MAGIC));
    }

    #[test]
    fn a_key_file_is_created_once_readable_by_its_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        let (first, created) = SecretKey::read_or_create(&path).unwrap();
        assert!(created);
        let (second, created) = SecretKey::read_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(first.id(), second.id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "not a key").unwrap();
        assert!(matches!(
            SecretKey::read(&path),
            Err(KeyError::Malformed { .. })
        ));
    }
}
