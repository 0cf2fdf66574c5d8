//! Hot-loading from the plugins directory.
//!
//! At start the host loads every `*.wasm` in the directory; afterwards it
//! watches the directory. A new or changed component (or its `.toml`
//! manifest) is loaded or upgraded; a removed component is unloaded. Events
//! are debounced so that a file being copied in is read once it is whole;
//! a file caught half-written fails to load, the old version keeps running,
//! and the next event loads it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify_debouncer_mini::{DebounceEventResult, new_debouncer, notify::RecursiveMode};
use tokio::sync::mpsc;

use weft_runtime::plugin::components_in;
use weft_runtime::{LoadOutcome, Registry};

/// The last load error per file.
pub type LoadErrors = Arc<Mutex<BTreeMap<PathBuf, String>>>;

/// How long the directory must be quiet before changes are acted on.
const DEBOUNCE: Duration = Duration::from_millis(400);

/// Loads (or upgrades to) `path`, recording the outcome in `errors`.
pub async fn load_one(registry: &Registry, errors: &LoadErrors, path: &Path) {
    let result = registry.load_file(path).await;
    let mut errors = errors.lock().expect("load error map poisoned");
    match result {
        Ok(outcome) => {
            errors.remove(path);
            match outcome {
                LoadOutcome::Unchanged { .. } => {}
                outcome => tracing::info!(path = %path.display(), ?outcome, "plugin file loaded"),
            }
        }
        Err(error) => {
            tracing::error!(path = %path.display(), %error, "plugin file refused");
            errors.insert(path.to_owned(), error.to_string());
        }
    }
}

/// Loads every component in `dir`.
pub async fn load_dir(registry: &Registry, errors: &LoadErrors, dir: &Path) -> std::io::Result<()> {
    for path in components_in(dir)? {
        load_one(registry, errors, &path).await;
    }
    Ok(())
}

/// Watches `dir` until the returned guard is dropped.
pub fn watch(
    registry: Arc<Registry>,
    errors: LoadErrors,
    dir: PathBuf,
) -> anyhow::Result<impl Drop> {
    let (tx, mut rx) = mpsc::unbounded_channel::<PathBuf>();
    let mut debouncer = new_debouncer(DEBOUNCE, move |result: DebounceEventResult| match result {
        Ok(events) => {
            for event in events {
                let _ = tx.send(event.path);
            }
        }
        Err(error) => tracing::warn!(%error, "plugin directory watch error"),
    })?;
    debouncer
        .watcher()
        .watch(&dir, RecursiveMode::NonRecursive)?;
    tokio::spawn(async move {
        // What each refused file held when it was refused: reading a file
        // can itself raise events, and a file that has not changed is not
        // tried (and reported) again.
        let mut refused: BTreeMap<PathBuf, [u8; 32]> = BTreeMap::new();
        while let Some(path) = rx.recv().await {
            let component = match path.extension().and_then(|e| e.to_str()) {
                Some("wasm") => path,
                Some("toml") => path.with_extension("wasm"),
                _ => continue,
            };
            if component.is_file() {
                let print = fingerprint(&component);
                if print.is_some() && refused.get(&component) == print.as_ref() {
                    continue;
                }
                load_one(&registry, &errors, &component).await;
                let failed = errors
                    .lock()
                    .expect("load error map poisoned")
                    .contains_key(&component);
                match (failed, print) {
                    (true, Some(print)) => {
                        refused.insert(component, print);
                    }
                    _ => {
                        refused.remove(&component);
                    }
                }
            } else {
                refused.remove(&component);
                unload_removed(&registry, &component).await;
                errors
                    .lock()
                    .expect("load error map poisoned")
                    .remove(&component);
            }
        }
    });
    Ok(debouncer)
}

/// A digest of a component and the manifest beside it, if it reads.
fn fingerprint(component: &Path) -> Option<[u8; 32]> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(std::fs::read(component).ok()?);
    if let Ok(manifest) = std::fs::read(component.with_extension("toml")) {
        hasher.update(b"\0manifest\0");
        hasher.update(manifest);
    }
    Some(hasher.finalize().into())
}

async fn unload_removed(registry: &Registry, path: &Path) {
    for plugin in registry.plugins() {
        if plugin.source.as_deref() == Some(path.display().to_string().as_str()) {
            match registry.unload(&plugin.id).await {
                Ok(()) => {
                    tracing::info!(plugin = %plugin.id, path = %path.display(), "plugin file removed; unloaded")
                }
                Err(error) => {
                    tracing::warn!(plugin = %plugin.id, %error, "failed to unload a removed plugin")
                }
            }
        }
    }
}
