//! A plugin author's path: a crate of their own, outside this repository,
//! built with `cargo weft build` and checked by the host, as the README's
//! "A plugin crate of your own" says.

use std::process::Command;

const CARGO_TOML: &str = r#"[package]
name = "my-feed"
version = "0.1.0"
edition = "2024"

[dependencies]
weft-sdk = { path = "SDK" }

[package.metadata.weft]
manifest = "weft.toml"

[workspace]
"#;

const MANIFEST: &str = r#"id = "my-feed"
api = "0.1"
world = "connector"

[connector]
network-name = "My feed"
ghost-prefix = "myfeed_"
"#;

const LIB_RS: &str = r#"#[derive(Default)]
struct MyFeed;

impl weft_sdk::Login for MyFeed {}

impl weft_sdk::Connector for MyFeed {
    fn start(&mut self) -> weft_sdk::Result<()> {
        weft_sdk::timers::set_interval("poll", std::time::Duration::from_secs(5))?;
        Ok(())
    }
}

weft_sdk::register_connector!(MyFeed);
"#;

fn write_crate(dir: &std::path::Path, manifest: &str) {
    let sdk = weft_tests::workspace().join("sdk");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        CARGO_TOML.replace("SDK", sdk.to_str().unwrap()),
    )
    .unwrap();
    std::fs::write(dir.join("weft.toml"), manifest).unwrap();
    std::fs::write(dir.join("src/lib.rs"), LIB_RS).unwrap();
}

fn build(dir: &std::path::Path) -> anyhow::Result<Vec<cargo_weft::BuiltPlugin>> {
    cargo_weft::build(&cargo_weft::BuildOptions {
        manifest_path: Some(dir.join("Cargo.toml")),
        out_dir: Some(dir.join("out")),
        // Its own wasm build directory (this test's cargo holds the
        // workspace's), kept between runs.
        wasm_target_dir: Some(weft_tests::workspace().join("target/standalone-wasm")),
        ..Default::default()
    })
}

#[test]
fn a_plugin_crate_outside_the_repository_builds_without_a_profile_of_its_own_and_loads() {
    let dir = tempfile::tempdir().unwrap();
    write_crate(dir.path(), MANIFEST);
    let built = build(dir.path()).expect("the standalone crate builds");
    assert_eq!(built.len(), 1);
    let component = &built[0].path;
    let output = Command::new(env!("CARGO_BIN_EXE_weft-test-host"))
        .current_dir(dir.path())
        .args(["--config", "none.toml", "check-plugin"])
        .arg(component)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("my-feed 0.1.0 (connector) loads"), "{text}");
}

#[test]
fn a_manifest_the_host_would_refuse_fails_the_build_before_compiling() {
    let dir = tempfile::tempdir().unwrap();
    // An unknown key, and a connector without its [connector] table.
    write_crate(
        dir.path(),
        "id = \"my-feed\"\napi = \"0.1\"\nworld = \"connector\"\npoll-secs = 5\n",
    );
    let error = format!("{:#}", build(dir.path()).unwrap_err());
    assert!(error.contains("poll-secs"), "{error}");
    // Nothing was compiled for it.
    assert!(!dir.path().join("out").exists());
}
