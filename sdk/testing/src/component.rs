//! Building the plugin under test into a component, once per test binary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use anyhow::{Context, Result};

/// Builds the plugin package `package` in `crate_dir` into a component with
/// `cargo-weft`'s library (the same build as `cargo weft build`), and
/// returns its path. Built once per test binary; later calls return the
/// same path. Use [`plugin!`](crate::plugin) rather than calling this.
///
/// The wasm build goes to `<target dir>/wasm` and the component to
/// `<target dir>/weft-testing`, outside the directory `cargo test` holds
/// locked. `WEFT_WASM_TOOLCHAIN=rustup|debian` picks the toolchain, as
/// for `cargo weft build`.
pub fn build_plugin(crate_dir: &str, package: &str) -> Result<PathBuf> {
    static BUILT: OnceLock<Mutex<BTreeMap<String, PathBuf>>> = OnceLock::new();
    // Held while building: tests of one binary run in parallel, and all
    // of them want the same component.
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(path) = built.get(package) {
        return Ok(path.clone());
    }
    let crate_dir = Path::new(crate_dir);
    let target_dir = target_dir(crate_dir);
    let toolchain = match std::env::var("WEFT_WASM_TOOLCHAIN").as_deref() {
        Ok("rustup") => cargo_weft::ToolchainChoice::Rustup,
        Ok("debian") => cargo_weft::ToolchainChoice::Debian,
        _ => cargo_weft::ToolchainChoice::Auto,
    };
    let options = cargo_weft::BuildOptions {
        packages: vec![package.to_owned()],
        out_dir: Some(target_dir.join("weft-testing")),
        toolchain,
        manifest_path: Some(crate_dir.join("Cargo.toml")),
        target: None,
        wasm_target_dir: Some(target_dir.join("wasm")),
    };
    let plugins = cargo_weft::build(&options)
        .with_context(|| format!("building plugin `{package}` for its tests"))?;
    let path = plugins
        .into_iter()
        .find(|p| p.package == package)
        .with_context(|| {
            format!(
                "`{package}` is not a weft plugin: its Cargo.toml needs a [package.metadata.weft] table"
            )
        })?
        .path;
    built.insert(package.to_owned(), path.clone());
    Ok(path)
}

/// The target directory of the crate's build: `CARGO_TARGET_DIR`, or the
/// `target` directory beside the nearest `Cargo.lock` (the workspace's).
fn target_dir(crate_dir: &Path) -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    crate_dir
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())
        .unwrap_or(crate_dir)
        .join("target")
}
