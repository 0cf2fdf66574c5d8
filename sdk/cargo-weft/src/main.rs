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

use std::path::PathBuf;

use anyhow::Result;
use cargo_weft::{BuildOptions, Target, Toolchain, ToolchainChoice};
use clap::{Parser, Subcommand};

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
            let options = BuildOptions {
                packages,
                out_dir,
                toolchain,
                manifest_path,
                target,
                wasm_target_dir: None,
            };
            cargo_weft::build(&options).map(drop)
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
