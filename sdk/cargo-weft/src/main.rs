//! `cargo weft`: builds weft plugins into WebAssembly components.
//!
//! ```text
//! cargo weft build                 # every plugin in the workspace
//! cargo weft build -p echo         # one plugin
//! cargo weft toolchain             # which wasm toolchain would be used
//! cargo weft new my-connector      # a plugin crate that builds and loads as it is
//! ```
//!
//! A plugin is a `cdylib` package with a `[package.metadata.weft]` table
//! naming its manifest. The tool compiles each plugin for wasm, turns the
//! core module into a component with `wit-component` (adding the WASI
//! adapter for `wasm32-wasip1` builds), embeds the manifest in a custom
//! section, and writes `<out-dir>/<plugin id>.wasm`.

use std::path::PathBuf;

use anyhow::Result;
use cargo_weft::{BuildOptions, NewOptions, Role, SdkSource, Target, Toolchain, ToolchainChoice};
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
    /// Create a plugin crate of its own that builds and loads as it is.
    New {
        /// The crate's directory (new, or empty).
        dir: PathBuf,
        /// The plugin id (default: the directory's name): 1-32 lowercase
        /// letters, digits, `-` or `_`.
        #[arg(long, value_name = "ID")]
        name: Option<String>,
        /// The plugin's role.
        #[arg(long, value_enum, default_value_t = Role::Connector)]
        role: Role,
        /// Depend on the weft-sdk in this directory, or in this weft
        /// checkout's sdk/ (default: the SDK this cargo-weft was built
        /// from, if it is still there).
        #[arg(long, value_name = "PATH", conflicts_with = "sdk_version")]
        sdk_path: Option<PathBuf>,
        /// Depend on this version of weft-sdk from the registry.
        #[arg(long, value_name = "VERSION")]
        sdk_version: Option<String>,
    },
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
        Command::New {
            dir,
            name,
            role,
            sdk_path,
            sdk_version,
        } => {
            let sdk = match (sdk_path, sdk_version) {
                (Some(path), _) => SdkSource::Path(path),
                (None, Some(version)) => SdkSource::Version(version),
                (None, None) => SdkSource::Auto,
            };
            let created = cargo_weft::new_plugin(&NewOptions {
                dir,
                id: name,
                role,
                sdk,
            })?;
            print_next_steps(&created, role);
            Ok(())
        }
    }
}

/// What was created, and the commands to run next.
fn print_next_steps(created: &cargo_weft::NewPlugin, role: Role) {
    println!(
        "Created {} `{}` in {}:",
        role.noun(),
        created.id,
        created.dir.display()
    );
    for file in &created.files {
        println!("  {}", file.display());
    }
    println!("with weft-sdk = {}", created.sdk);
    if created.sdk.starts_with('"') {
        println!("(from the registry: pass --sdk-path <weft checkout> to use a local SDK instead)");
    }
    let component = created.component();
    println!();
    println!("Next:");
    println!("  cd {}", created.dir.display());
    println!("  cargo weft build      # writes {}", component.display());
    println!(
        "  weft --config weft.example.toml check-plugin {}",
        component.display()
    );
    println!("  weft --config weft.example.toml run");
    println!("(`weft` is the host: `cargo install --path host` in weft's repository.)");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_takes_a_role_an_id_and_one_source_of_the_sdk() {
        let cli = Cli::try_parse_from([
            "cargo-weft",
            "new",
            "feed",
            "--role",
            "login-provider",
            "--name",
            "my-feed",
            "--sdk-path",
            "../weft",
        ])
        .unwrap();
        let Command::New {
            dir, name, role, ..
        } = cli.command
        else {
            panic!("not `new`")
        };
        assert_eq!(dir, PathBuf::from("feed"));
        assert_eq!(name.as_deref(), Some("my-feed"));
        assert_eq!(role, Role::LoginProvider);
        let both = Cli::try_parse_from([
            "cargo-weft",
            "new",
            "feed",
            "--sdk-path",
            "../weft",
            "--sdk-version",
            "0.1",
        ]);
        assert!(both.is_err());
    }
}
