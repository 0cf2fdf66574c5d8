//! A real headless browser (Debian's Chromium, driven by playwright-core
//! from `tests/browser`), for tests of the pages the host serves.

use std::path::PathBuf;

use serde_json::Value;

/// Where tests keep screenshots to look at (`target/test-artifacts`).
pub fn artifact(name: &str) -> PathBuf {
    let dir = crate::workspace().join("target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("create the artifacts directory");
    dir.join(name)
}

/// Opens `url` on a phone-sized screen, pastes `text` into the page's box,
/// presses send and waits for the page's verdict; saves a screenshot as
/// `screenshot`. Returns the driver's report: `state` (`success` or
/// `error`), `message`, `csp`, `requests`, `blocked`, `console_errors`.
pub async fn paste_and_send(url: &str, text: &str, screenshot: &str) -> Value {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let paste = dir.path().join("paste.txt");
    std::fs::write(&paste, text).expect("write the paste");
    let script = crate::workspace().join("tests/browser/capture.mjs");
    let run = tokio::process::Command::new("node")
        .arg(&script)
        .arg(url)
        .arg(&paste)
        .arg(artifact(screenshot))
        .kill_on_drop(true)
        .output();
    // The driver waits 15 s for the verdict; a browser that hangs past
    // that is killed.
    let output = tokio::time::timeout(std::time::Duration::from_secs(60), run)
        .await
        .expect("the browser run finishes within a minute")
        .expect("node runs (scripts/setup.sh installs it, Chromium and tests/browser)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the browser run failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("the driver prints one JSON line")
}
