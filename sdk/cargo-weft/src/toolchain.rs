//! Finding a toolchain that builds wasm, and running it.
//!
//! Two routes, tried in this order:
//! - **rustup**: the target's standard library is installed
//!   (`rustup target add wasm32-unknown-unknown`), the usual developer
//!   machine.
//! - **Debian**: no rustup target can be downloaded (only package
//!   registries are reachable), but Debian's `rustc-web` ships the standard
//!   library's source, enough to build `std` for wasm with `-Zbuild-std`.
//!   `scripts/setup.sh` installs it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use anyhow::{Context, Result, bail};

/// The wasm targets a plugin can be built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// No WASI: clocks and randomness come through the SDK's host imports.
    UnknownUnknown,
    /// WASI preview 1, adapted to a component with the reactor adapter.
    WasiP1,
    /// WASI preview 2: rustc emits a component directly.
    WasiP2,
}

impl Target {
    pub fn triple(self) -> &'static str {
        match self {
            Self::UnknownUnknown => "wasm32-unknown-unknown",
            Self::WasiP1 => "wasm32-wasip1",
            Self::WasiP2 => "wasm32-wasip2",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.triple())
    }
}

impl FromStr for Target {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "wasm32-unknown-unknown" => Ok(Self::UnknownUnknown),
            "wasm32-wasip1" => Ok(Self::WasiP1),
            "wasm32-wasip2" => Ok(Self::WasiP2),
            other => bail!(
                "unsupported plugin target `{other}` (use wasm32-unknown-unknown, wasm32-wasip1 or wasm32-wasip2)"
            ),
        }
    }
}

/// Which route the user asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ToolchainChoice {
    /// rustup if it has the target, else Debian's.
    #[default]
    Auto,
    /// rustup only.
    Rustup,
    /// Debian's `rustc-web` with `-Zbuild-std` only.
    Debian,
}

/// A toolchain able to build one target.
#[derive(Debug)]
pub struct Toolchain {
    target: Target,
    route: Route,
}

#[derive(Debug)]
enum Route {
    Rustup {
        cargo: PathBuf,
    },
    Debian {
        rustc: PathBuf,
        cargo: PathBuf,
        linker: PathBuf,
    },
}

impl fmt::Display for Toolchain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.route {
            Route::Rustup { .. } => f.write_str("rustup's toolchain"),
            Route::Debian { rustc, linker, .. } => write!(
                f,
                "Debian's {} with -Zbuild-std and {}",
                rustc.display(),
                linker.display()
            ),
        }
    }
}

const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";

impl Toolchain {
    pub fn detect(target: Target, choice: ToolchainChoice) -> Result<Self> {
        if matches!(choice, ToolchainChoice::Auto | ToolchainChoice::Rustup) {
            match rustup_route(target) {
                Ok(route) => return Ok(Self { target, route }),
                Err(error) if choice == ToolchainChoice::Rustup => return Err(error),
                Err(_) => {}
            }
        }
        let route = debian_route(target).with_context(|| {
            format!(
                "no toolchain builds {target}: run `rustup target add {target}`, or on Debian \
                 `scripts/setup.sh` (installs rustc-web, rust-web-src and lld)"
            )
        })?;
        Ok(Self { target, route })
    }

    /// Builds `package` as a `cdylib` with the `plugin` profile into
    /// `target_dir`. (Plugin crates are plain libraries, so that native
    /// builds of the workspace link; only here do they become cdylibs.)
    /// With `supply_profile`, the profile comes from [`PLUGIN_PROFILE`]
    /// (for workspaces that do not define their own).
    pub(crate) fn build(
        &self,
        workspace: &Path,
        target_dir: &Path,
        package: &str,
        supply_profile: bool,
    ) -> Result<()> {
        let triple = self.target.triple();
        let mut command = match &self.route {
            Route::Rustup { cargo } => Command::new(cargo),
            Route::Debian { cargo, .. } => Command::new(cargo),
        };
        command
            .current_dir(workspace)
            .args([
                "rustc",
                "--lib",
                "--crate-type",
                "cdylib",
                "--profile",
                "plugin",
            ])
            .args(["--target", triple, "-p", package]);
        if supply_profile {
            for setting in PLUGIN_PROFILE {
                command.args(["--config", &format!("profile.plugin.{setting}")]);
            }
        }
        command
            .env("CARGO_TARGET_DIR", target_dir)
            // Flags meant for the host build must not leak into the wasm one.
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("RUSTC_WRAPPER")
            // Under `cargo clippy` a build script's environment carries
            // clippy as the wrapper; the plugin build is a plain one.
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .env_remove("CLIPPY_ARGS")
            .env_remove("CARGO_BUILD_TARGET");
        match &self.route {
            Route::Rustup { .. } => {
                command.env_remove("RUSTFLAGS");
            }
            Route::Debian { rustc, linker, .. } => {
                let mut rustflags = format!("-C linker={}", linker.display());
                if self.target == Target::WasiP1 {
                    // Debian's wasi-libc; std links it statically otherwise.
                    rustflags.push_str(" -L /usr/lib/wasm32-wasi -C target-feature=-crt-static");
                }
                command
                    .arg("-Zbuild-std=std,panic_abort")
                    // Debian's rustc is a stable release: this unlocks
                    // -Zbuild-std, which the recipe needs and nothing else.
                    .env("RUSTC_BOOTSTRAP", "1")
                    .env("RUSTC", rustc)
                    .env("RUSTFLAGS", rustflags)
                    // rustup's proxies would otherwise pick rustup's rustc.
                    .env_remove("RUSTUP_TOOLCHAIN");
            }
        }
        let status = command
            .status()
            .with_context(|| format!("failed to run {:?}", command.get_program()))?;
        if !status.success() {
            bail!("building {package} for {triple} failed ({status})");
        }
        Ok(())
    }

    /// Where the build leaves the `.wasm` of library `lib_name`.
    pub(crate) fn artifact(&self, target_dir: &Path, lib_name: &str) -> PathBuf {
        target_dir
            .join(self.target.triple())
            .join("plugin")
            .join(format!("{lib_name}.wasm"))
    }
}

/// The `plugin` profile `cargo weft build` uses when the workspace has
/// none: small and fast code, abort on panic (a panic traps; the host
/// restarts the instance). The same as this repository's `Cargo.toml`.
pub(crate) const PLUGIN_PROFILE: &[&str] = &[
    "inherits=\"release\"",
    "opt-level=\"s\"",
    "lto=true",
    "codegen-units=1",
    "panic=\"abort\"",
    "debug=false",
    "strip=\"debuginfo\"",
];

fn rustup_route(target: Target) -> Result<Route> {
    // `cargo` sets $CARGO when it runs us as a subcommand; use the same one.
    let cargo = std::env::var_os("CARGO")
        .map(PathBuf::from)
        .unwrap_or_else(|| "cargo".into());
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", target.triple()])
        .output()
        .context("failed to run rustc")?;
    let libdir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    let has_std = output.status.success()
        && std::fs::read_dir(&libdir).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("libstd-"))
        });
    if !has_std {
        bail!("rustup has no standard library for {target}");
    }
    Ok(Route::Rustup { cargo })
}

fn debian_route(target: Target) -> Result<Route> {
    if target == Target::WasiP2 {
        bail!("the Debian route builds wasm32-unknown-unknown and wasm32-wasip1 only");
    }
    let rustc = PathBuf::from(DEBIAN_RUSTC);
    let cargo = PathBuf::from(DEBIAN_CARGO);
    if !rustc.exists() || !cargo.exists() {
        bail!("Debian's rustc-web and cargo-web are not installed");
    }
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .context("failed to run Debian's rustc")?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if !sysroot.join("lib/rustlib/src/rust/library/std").exists() {
        bail!("the standard library's source is missing (apt-get install rust-web-src)");
    }
    let linker = find_wasm_ld().context("no wasm linker (apt-get install lld-19)")?;
    if target == Target::WasiP1 && !Path::new("/usr/lib/wasm32-wasi/libc.a").exists() {
        bail!("wasi-libc is missing (apt-get install wasi-libc)");
    }
    Ok(Route::Debian {
        rustc,
        cargo,
        linker,
    })
}

/// The newest `wasm-ld-N` in /usr/bin, or `wasm-ld`.
fn find_wasm_ld() -> Option<PathBuf> {
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/bin")
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let version = name.strip_prefix("wasm-ld-")?.parse().ok()?;
            Some((version, entry.path()))
        })
        .collect();
    versioned.sort();
    versioned
        .pop()
        .map(|(_, path)| path)
        .or_else(|| Some(PathBuf::from("/usr/bin/wasm-ld")).filter(|p| p.exists()))
}
