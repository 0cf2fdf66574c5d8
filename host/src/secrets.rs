//! Secrets at rest: the data directory readable by the host's user only,
//! and login metadata and plugins' KV (access, refresh and skype tokens,
//! Brmble users' Matrix tokens) sealed in the store with the key from
//! `[secrets]`.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use weft_storage::{Keyring, SealedStorage, SecretKey, Storage};

use crate::config::Config;
use crate::trees;

/// The trees whose values are sealed.
const SEALED_TREES: &[&str] = &[trees::LOGINS, weft_runtime::PLUGIN_KV_TREE];

/// Creates the data directory if needed and makes it, and everything in
/// it, readable by the host's user only.
pub(crate) fn restrict_data_dir(dir: &Path) -> Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("failed to create {}", dir.display()))?;
    #[cfg(unix)]
    restrict(dir, true)?;
    Ok(())
}

/// Sets `path` to 0700 (directories) or 0600 (files), recursively.
#[cfg(unix)]
fn restrict(path: &Path, is_dir: bool) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = if is_dir { 0o700 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("failed to restrict {}", path.display()))?;
    if is_dir {
        for entry in
            std::fs::read_dir(path).with_context(|| format!("failed to read {}", path.display()))?
        {
            let entry = entry?;
            let kind = entry.file_type()?;
            // A symlink is the operator's doing; leave its target alone.
            if kind.is_dir() || kind.is_file() {
                restrict(&entry.path(), kind.is_dir())?;
            }
        }
    }
    Ok(())
}

/// `storage` with the secret-holding trees sealed with the configured key
/// (created on first run), after re-sealing whatever is in plaintext or
/// under a previous key.
pub(crate) fn seal(config: &Config, storage: Arc<dyn Storage>) -> Result<Arc<dyn Storage>> {
    let key_file = config.key_file();
    let (key, created) = SecretKey::read_or_create(&key_file)
        .context("the key that encrypts secrets at rest ([secrets] key-file)")?;
    if created {
        tracing::info!(
            path = %key_file.display(),
            "created the key that encrypts tokens at rest; back it up with the database (without it, every login must log in again)"
        );
    }
    let previous = config
        .secrets
        .previous_key_files
        .iter()
        .map(|path| SecretKey::read(path))
        .collect::<Result<Vec<_>, _>>()
        .context("[secrets] previous-key-files")?;
    let sealed = SealedStorage::new(storage, Keyring::new(&key, &previous), SEALED_TREES);
    let resealed = sealed
        .reseal()
        .context("sealing the stored secrets with the current key")?;
    if resealed > 0 {
        tracing::info!(resealed, "sealed stored values with the current key");
    }
    if !previous.is_empty() {
        tracing::info!(
            "every stored secret is sealed with the current key: the files in [secrets] previous-key-files are no longer needed"
        );
    }
    Ok(Arc::new(sealed))
}
