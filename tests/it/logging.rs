//! Plugin logs land in the host's `tracing` output, tagged with the plugin,
//! its version and the login; tokens never do.

use std::io::Write;
use std::sync::{Arc, Mutex};

use weft_tests::host::{TestHost, ask, send};

/// Collects formatted log output.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

// A current-thread runtime: the host's tasks run on this thread, where the
// capturing subscriber is the default.
#[tokio::test]
async fn plugin_logs_carry_plugin_version_and_login_and_never_the_token() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let test = TestHost::builder().plugin("probe").start().await;
    let secret = "tok_do-not-log-me-123";
    let login = test
        .login_with("probe", "alice", serde_json::json!({ "token": secret }))
        .await;
    assert_eq!(ask(&login, "log hello from the plugin").await, "logged");
    assert_eq!(
        ask(&login, "metadata").await,
        format!("{{\"token\":\"{secret}\"}}")
    );
    let _ = send(&login, "trap").await;
    login
        .wait_for(std::time::Duration::from_secs(10), |s| {
            s.instances_started == 2
        })
        .await
        .expect("the instance restarts after the trap");

    let text = captured.text();
    let line = text
        .lines()
        .find(|l| l.contains("hello from the plugin"))
        .expect("the plugin's record");
    // The record is tagged with the plugin, its version and the login, and
    // keeps the plugin's own fields.
    assert!(line.contains("plugin=\"probe\""), "{line}");
    assert!(line.contains("version=0.1.0"), "{line}");
    assert!(line.contains("login=\"probe:alice\""), "{line}");
    assert!(line.contains("detail=\"structured\""), "{line}");
    // A panic's message reaches the log with the trap, inside the login's
    // span, as does everything the host logs while it serves the login.
    assert!(
        text.contains("the probe was told to trap"),
        "no panic message logged"
    );
    let panic = text
        .lines()
        .find(|l| l.contains("weft::plugin: panicked at"))
        .expect("the panic's record");
    assert!(panic.contains("login{plugin=probe login=alice}"), "{panic}");
    let restart = text
        .lines()
        .find(|l| l.contains("instance failed; restarting"))
        .expect("the restart's record");
    assert!(
        restart.contains("login{plugin=probe login=alice}"),
        "{restart}"
    );
    // The login's token was handled (stored, read back) but never logged.
    assert!(!text.contains(secret), "the token leaked into the logs");
}

#[tokio::test]
async fn a_refused_plugin_file_is_reported_once_until_it_changes() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let refusals = || captured.text().matches("plugin file refused").count();

    let test = TestHost::builder().plugin("probe").watch().start().await;
    let broken = test.plugins_dir().join("broken.wasm");
    std::fs::write(&broken, b"not a component").unwrap();
    weft_tests::eventually(
        std::time::Duration::from_secs(10),
        "the broken file is refused",
        || (refusals() == 1).then_some(()),
    )
    .await;
    // Two later changes go through the watcher (each after its debounce):
    // a plugin arrives, then leaves. The broken file was not retried
    // meanwhile.
    let provider = weft_tests::host::copy_component("token-provider", &test.plugins_dir());
    weft_tests::eventually(
        std::time::Duration::from_secs(20),
        "the provider loads",
        || test.host.registry().plugin("token-provider").map(drop),
    )
    .await;
    std::fs::remove_file(&provider).unwrap();
    weft_tests::eventually(
        std::time::Duration::from_secs(20),
        "the provider unloads",
        || {
            test.host
                .registry()
                .plugin("token-provider")
                .is_none()
                .then_some(())
        },
    )
    .await;
    assert_eq!(refusals(), 1, "{}", captured.text());

    // A change to the file is tried (and reported) again.
    std::fs::write(&broken, b"still not a component").unwrap();
    weft_tests::eventually(
        std::time::Duration::from_secs(10),
        "the changed file is refused again",
        || (refusals() == 2).then_some(()),
    )
    .await;
}
