//! Builds weft plugins into WebAssembly components: the library behind
//! `cargo weft`, also used by build scripts (the integration tests build
//! their fixtures with it, so `cargo test` never runs stale plugins).
//!
//! A plugin is a library package with a `[package.metadata.weft]` table
//! naming its manifest. Each is compiled for wasm as a `cdylib` (rustup's
//! target if installed, else Debian's `rustc-web` with `-Zbuild-std`),
//! turned into a component with `wit-component` (adding the WASI adapter
//! for `wasm32-wasip1` builds), given its manifest in a custom section,
//! and written to `<out-dir>/<package>.wasm`.
//!
//! [`new_plugin`] (`cargo weft new`) writes a standalone plugin crate of a
//! given role that builds and loads as it is.

mod componentize;
mod scaffold;
mod toolchain;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use cargo_metadata::{MetadataCommand, Package};

pub use crate::scaffold::{NewOptions, NewPlugin, Role, SdkSource, new_plugin};
pub use crate::toolchain::{Target, Toolchain, ToolchainChoice};

/// What to build.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Only these packages (default: every plugin in the workspace).
    pub packages: Vec<String>,
    /// Where to write the components (default: `<target dir>/plugins`).
    pub out_dir: Option<PathBuf>,
    /// Which toolchain to use.
    pub toolchain: ToolchainChoice,
    /// The workspace's `Cargo.toml` (default: found from the current
    /// directory).
    pub manifest_path: Option<PathBuf>,
    /// The target of plugins that name none (default:
    /// wasm32-unknown-unknown if a toolchain builds it, else
    /// wasm32-wasip2).
    pub target: Option<Target>,
    /// Where the wasm builds go (default: `<target dir>/wasm`). A build
    /// script must give one outside the directory its own build locks.
    pub wasm_target_dir: Option<PathBuf>,
}

/// A component that was built.
#[derive(Debug, Clone)]
pub struct BuiltPlugin {
    /// The package it was built from.
    pub package: String,
    /// The package's directory.
    pub dir: PathBuf,
    /// The component.
    pub path: PathBuf,
}

/// One plugin package to build.
struct PluginPackage {
    package: Package,
    manifest_path: PathBuf,
    target: Target,
}

/// The target for plugins that name none: `wasm32-unknown-unknown` (no
/// WASI, smallest) when a toolchain builds it, else `wasm32-wasip2`, the
/// target a developer may have added with rustup instead.
pub fn default_target(choice: ToolchainChoice) -> Target {
    if Toolchain::detect(Target::UnknownUnknown, choice).is_err()
        && Toolchain::detect(Target::WasiP2, choice).is_ok()
    {
        Target::WasiP2
    } else {
        Target::UnknownUnknown
    }
}

/// Builds the plugins `options` selects; returns what it wrote.
pub fn build(options: &BuildOptions) -> Result<Vec<BuiltPlugin>> {
    let selected = &options.packages;
    let choice = options.toolchain;
    let manifest_path = &options.manifest_path;
    let default_target = options
        .target
        .unwrap_or_else(|| default_target(options.toolchain));
    let mut command = MetadataCommand::new();
    command.no_deps();
    if let Some(path) = &manifest_path {
        command.manifest_path(path);
    }
    let metadata = command
        .exec()
        .context("failed to read the workspace with `cargo metadata`")?;
    let workspace_root = metadata.workspace_root.as_std_path().to_owned();
    let target_dir = metadata.target_directory.as_std_path().to_owned();
    let out_dir = options
        .out_dir
        .clone()
        .unwrap_or_else(|| target_dir.join("plugins"));

    let mut plugins = Vec::new();
    for package in metadata.workspace_packages() {
        let Some(weft) = package.metadata.get("weft") else {
            continue;
        };
        if !selected.is_empty() && !selected.contains(&package.name.to_string()) {
            continue;
        }
        let manifest = weft
            .get("manifest")
            .and_then(|m| m.as_str())
            .unwrap_or("weft.toml");
        let dir = package
            .manifest_path
            .parent()
            .context("package manifest has no directory")?;
        let target = match weft.get("target").and_then(|t| t.as_str()) {
            None => default_target,
            Some(name) => name
                .parse()
                .with_context(|| format!("package `{}`", package.name))?,
        };
        let manifest_path = dir.as_std_path().join(manifest);
        // Before any compiling: a bad manifest fails fast.
        componentize::read_manifest(&manifest_path, &package.version.to_string())
            .with_context(|| format!("package `{}`", package.name))?;
        plugins.push(PluginPackage {
            package: package.clone(),
            manifest_path,
            target,
        });
    }
    for name in selected {
        if !plugins.iter().any(|p| p.package.name.as_str() == name) {
            bail!(
                "package `{name}` is not a plugin of this workspace (no [package.metadata.weft])"
            );
        }
    }
    if plugins.is_empty() {
        bail!("no plugins found: a plugin package has a [package.metadata.weft] table");
    }

    // A workspace without its own `[profile.plugin]` gets ours.
    let supply_profile = !defines_plugin_profile(&workspace_root.join("Cargo.toml"));
    // Plugins of one target share one `std` build in the wasm target
    // directory, so each build after the first is quick.
    let mut by_target: BTreeMap<Target, Vec<&PluginPackage>> = BTreeMap::new();
    for plugin in &plugins {
        by_target.entry(plugin.target).or_default().push(plugin);
    }
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("failed to create {}", out_dir.display()))?;
    let wasm_target_dir = options
        .wasm_target_dir
        .clone()
        .unwrap_or_else(|| target_dir.join("wasm"));
    let mut built = Vec::new();
    for (target, group) in by_target {
        let toolchain = Toolchain::detect(target, choice)?;
        eprintln!(
            "building {} plugin(s) for {target} with {toolchain}",
            group.len()
        );
        for plugin in group {
            toolchain.build(
                &workspace_root,
                &wasm_target_dir,
                &plugin.package.name,
                supply_profile,
            )?;
            let module_path =
                toolchain.artifact(&wasm_target_dir, &plugin.package.name.replace('-', "_"));
            let out = componentize::componentize(
                &module_path,
                &plugin.manifest_path,
                &plugin.package.name,
                &plugin.package.version.to_string(),
                target,
                &out_dir,
            )
            .with_context(|| format!("failed to build plugin `{}`", plugin.package.name))?;
            eprintln!("  {}", out.display());
            built.push(BuiltPlugin {
                package: plugin.package.name.to_string(),
                dir: plugin
                    .manifest_path
                    .parent()
                    .map(ToOwned::to_owned)
                    .unwrap_or_default(),
                path: out,
            });
        }
    }
    Ok(built)
}

/// Whether the workspace's `Cargo.toml` defines `[profile.plugin]`.
fn defines_plugin_profile(cargo_toml: &std::path::Path) -> bool {
    std::fs::read_to_string(cargo_toml)
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .and_then(|t| t.get("profile")?.get("plugin").cloned())
        .is_some()
}
