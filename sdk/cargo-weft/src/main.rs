//! `cargo weft`: builds weft plugins into WebAssembly components.
//!
//! ```text
//! cargo weft build                 # every plugin in the workspace
//! cargo weft build -p echo         # one plugin
//! cargo weft toolchain             # which wasm toolchain would be used
//! ```
//!
//! A plugin is a `cdylib` package with a `[package.metadata.weft]` table
//! naming its manifest. The tool compiles each plugin for wasm, turns the
//! core module into a component with `wit-component` (adding the WASI
//! adapter for `wasm32-wasip1` builds), embeds the manifest in a custom
//! section, and writes `<out-dir>/<plugin id>.wasm`.

mod componentize;
mod toolchain;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use cargo_metadata::{MetadataCommand, Package};
use clap::{Parser, Subcommand};

use crate::toolchain::{Target, Toolchain, ToolchainChoice};

#[derive(Parser)]
#[command(name = "cargo-weft", bin_name = "cargo weft", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build plugins into components.
    Build {
        /// Build only these packages (default: every plugin in the workspace).
        #[arg(short, long = "package")]
        packages: Vec<String>,
        /// Where to write the components (default: `<target dir>/plugins`).
        #[arg(long)]
        out_dir: Option<PathBuf>,
        /// Which toolchain to use.
        #[arg(long, value_enum, default_value_t = ToolchainChoice::Auto, env = "WEFT_WASM_TOOLCHAIN")]
        toolchain: ToolchainChoice,
        /// Path to the workspace's `Cargo.toml` (default: found from the current directory).
        #[arg(long)]
        manifest_path: Option<PathBuf>,
        /// The target of plugins that do not name one (default:
        /// wasm32-unknown-unknown if a toolchain builds it, else
        /// wasm32-wasip2).
        #[arg(long)]
        target: Option<Target>,
    },
    /// Show which toolchain builds each wasm target, or how to get one.
    Toolchain,
}

/// One plugin package to build.
struct PluginPackage {
    package: Package,
    manifest_path: PathBuf,
    target: Target,
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    // `cargo weft build` runs us as `cargo-weft weft build`.
    let mut args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("weft") {
        args.remove(1);
    }
    match Cli::parse_from(args).command {
        Command::Build {
            packages,
            out_dir,
            toolchain,
            manifest_path,
            target,
        } => {
            let default_target = match target {
                Some(target) => target,
                None => default_target(toolchain),
            };
            build(&packages, out_dir, toolchain, manifest_path, default_target)
        }
        Command::Toolchain => {
            for target in [Target::UnknownUnknown, Target::WasiP1, Target::WasiP2] {
                match Toolchain::detect(target, ToolchainChoice::Auto) {
                    Ok(toolchain) => println!("{target}: {toolchain}"),
                    Err(error) => println!("{target}: unavailable: {error:#}"),
                }
            }
            Ok(())
        }
    }
}

/// The target for plugins that name none: `wasm32-unknown-unknown` (no
/// WASI, smallest) when a toolchain builds it, else `wasm32-wasip2`, the
/// target a developer may have added with rustup instead.
fn default_target(choice: ToolchainChoice) -> Target {
    if Toolchain::detect(Target::UnknownUnknown, choice).is_err()
        && Toolchain::detect(Target::WasiP2, choice).is_ok()
    {
        Target::WasiP2
    } else {
        Target::UnknownUnknown
    }
}

fn build(
    selected: &[String],
    out_dir: Option<PathBuf>,
    choice: ToolchainChoice,
    manifest_path: Option<PathBuf>,
    default_target: Target,
) -> Result<()> {
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
    let out_dir = out_dir.unwrap_or_else(|| target_dir.join("plugins"));

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
        plugins.push(PluginPackage {
            package: package.clone(),
            manifest_path: dir.as_std_path().join(manifest),
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

    // Plugins of one target share one `std` build in the wasm target
    // directory, so each build after the first is quick.
    let mut by_target: BTreeMap<Target, Vec<&PluginPackage>> = BTreeMap::new();
    for plugin in &plugins {
        by_target.entry(plugin.target).or_default().push(plugin);
    }
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("failed to create {}", out_dir.display()))?;
    let wasm_target_dir = target_dir.join("wasm");
    for (target, group) in by_target {
        let toolchain = Toolchain::detect(target, choice)?;
        eprintln!(
            "building {} plugin(s) for {target} with {toolchain}",
            group.len()
        );
        for plugin in group {
            toolchain.build(&workspace_root, &wasm_target_dir, &plugin.package.name)?;
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
        }
    }
    Ok(())
}
