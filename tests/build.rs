//! Builds every plugin of the workspace (the echo example, the test
//! fixtures, the production plugins) from source with `cargo-weft`, so the
//! tests always run the components of the code they were compiled with.
//! Cargo reruns this whenever a plugin's source, the SDK or the WIT
//! changes.

use std::path::PathBuf;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest_dir.parent().expect("tests/ is in the workspace");
    for watched in [
        "sdk/src",
        "sdk/Cargo.toml",
        "wit",
        "examples/echo",
        "tests/fixtures",
        "plugins",
        "Cargo.lock",
    ] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }
    println!("cargo:rerun-if-env-changed=WEFT_WASM_TOOLCHAIN");
    println!("cargo:rerun-if-env-changed=WEFT_PLUGIN_TARGET");

    let target_dir = workspace.join("target");
    let out_dir = target_dir.join("test-plugins");
    let toolchain = match std::env::var("WEFT_WASM_TOOLCHAIN").as_deref() {
        Ok("rustup") => cargo_weft::ToolchainChoice::Rustup,
        Ok("debian") => cargo_weft::ToolchainChoice::Debian,
        _ => cargo_weft::ToolchainChoice::Auto,
    };
    let target = std::env::var("WEFT_PLUGIN_TARGET")
        .ok()
        .map(|t| t.parse().expect("WEFT_PLUGIN_TARGET names a wasm target"));
    let options = cargo_weft::BuildOptions {
        packages: Vec::new(),
        out_dir: Some(out_dir.clone()),
        toolchain,
        manifest_path: Some(workspace.join("Cargo.toml")),
        target,
        // Not the directory this build holds locked.
        wasm_target_dir: Some(target_dir.join("wasm")),
    };
    if let Err(error) = cargo_weft::build(&options) {
        panic!("building the plugins for the tests failed: {error:#}");
    }
    println!("cargo:rustc-env=WEFT_TEST_PLUGINS={}", out_dir.display());
}
