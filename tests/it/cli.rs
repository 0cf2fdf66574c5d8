//! The `weft` command line, run as a process (the test crate builds it as
//! `weft-test-host`).

use std::process::Command;

fn weft(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_weft-test-host"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the weft binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn check_plugin_says_when_it_found_no_config_and_warns_of_private_hosts_without_the_grant() {
    let dir = tempfile::tempdir().unwrap();
    let probe = weft_tests::component("probe");
    let probe = probe.to_str().unwrap();

    let (ok, text) = weft(
        dir.path(),
        &["--config", "missing.toml", "check-plugin", probe],
    );
    assert!(text.contains("no config file at missing.toml"), "{text}");
    assert!(
        !ok,
        "the default grants do not cover the probe's http: {text}"
    );

    // Granted loopback but not private networks: it loads, with a warning.
    std::fs::write(
        dir.path().join("weft.toml"),
        "[plugin.probe]\nhttp = [\"http://127.0.0.1:*\"]\n",
    )
    .unwrap();
    let (ok, text) = weft(
        dir.path(),
        &["--config", "weft.toml", "check-plugin", probe],
    );
    assert!(ok, "{text}");
    assert!(text.contains("probe 0.1.0 (connector) loads"), "{text}");
    assert!(
        text.contains("warning: http://127.0.0.1:* is a loopback or private address"),
        "{text}"
    );

    // With the grant, no warning.
    std::fs::write(
        dir.path().join("weft.toml"),
        "[plugin.probe]\nhttp = [\"http://127.0.0.1:*\"]\nprivate-networks = true\n",
    )
    .unwrap();
    let (ok, text) = weft(
        dir.path(),
        &["--config", "weft.toml", "check-plugin", probe],
    );
    assert!(ok, "{text}");
    assert!(!text.contains("warning"), "{text}");
}

#[test]
fn check_config_names_the_offending_key_and_accepts_the_example_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("weft.toml"),
        "[runtime]\nmax-instances = \"many\"\n",
    )
    .unwrap();
    let (ok, text) = weft(dir.path(), &["--config", "weft.toml", "check-config"]);
    assert!(!ok, "{text}");
    assert!(text.contains("at `runtime.max-instances`"), "{text}");

    let example = weft_tests::workspace().join("examples/weft.toml");
    let (ok, text) = weft(
        dir.path(),
        &["--config", example.to_str().unwrap(), "check-config"],
    );
    assert!(ok, "{text}");
    assert!(text.contains("is valid"), "{text}");
}
