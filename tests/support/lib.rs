//! Test support: hosts on real storage in temporary directories, plugins
//! built from source by `cargo weft build`, and real HTTP servers on
//! loopback.

pub mod host;
pub use fake_teams::identity as ms_identity;
pub use fake_teams::msal_cache;
pub mod servers;
pub mod sink;

use std::path::PathBuf;
use std::time::Duration;

/// The time now, in Unix seconds (token lifetimes in fixtures).
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// The browser cache of a teams.live.com session just signed in with
/// `tokens` (from the fake identity platform), its access token
/// expiring at `access_expires_on` (Unix seconds) as MSAL stored it.
pub fn web_session(tokens: &ms_identity::Tokens, access_expires_on: u64) -> msal_cache::MsalCache {
    let mut tokens = tokens.clone();
    tokens.access_expires_on = access_expires_on;
    msal_cache::MsalCache::signed_in(&tokens)
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_owned()
}

/// The component of package `package`, built from source by this crate's
/// build script (so it is never older than the code it is tested with).
pub fn component(package: &str) -> PathBuf {
    let path = PathBuf::from(env!("WEFT_TEST_PLUGINS")).join(format!("{package}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: the build script builds every plugin package of the workspace",
        path.display()
    );
    path
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after
/// `timeout` with `what`.
pub async fn eventually<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Calls `check` every 20 ms until it returns `Some`, or panics after
/// `timeout` with `what`: the async form of [`eventually`].
pub async fn until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Installs a log subscriber once, honouring `RUST_LOG` (quiet by default).
pub fn init_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    weft_host::init_tls();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

pub mod bridge;
pub mod browser;
pub mod echo;
pub mod failing_storage;
pub mod fault_proxy;
pub mod mas;
pub mod matrix;
pub mod mumble;
pub mod qr;
pub mod synapse;

/// The `weft` binary as this crate builds it (`weft-test-host`), beside
/// the test binary's directory.
pub fn host_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binaries are in target/<profile>/deps");
    let binary = dir.join("weft-test-host");
    assert!(
        binary.exists(),
        "{} is missing: `cargo test` builds it with the test crate",
        binary.display()
    );
    binary
}
