//! Secrets at rest: login tokens and plugins' stored credentials never
//! reach the disk in the clear, the data directory is the host user's
//! alone, and the key rotates without a login being lost.

use std::path::{Path, PathBuf};

use weft_host::logins::LoginKey;
use weft_tests::host::{TestHost, ask};

const METADATA_TOKEN: &str = "refresh-token-5c1d9e7a";
const KV_TOKEN: &str = "syt_matrix-token-83b2f0";

/// Every file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files(&path));
        } else {
            found.push(path);
        }
    }
    found
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// A host whose probe login holds a token in its metadata and another in
/// its KV, stopped; answers its directory.
async fn a_host_that_stored_two_tokens(extra_config: &str) -> tempfile::TempDir {
    let test = TestHost::builder()
        .plugin("probe")
        .config(extra_config)
        .start()
        .await;
    let login = test
        .login_with(
            "probe",
            "alice",
            serde_json::json!({ "refresh_token": METADATA_TOKEN }),
        )
        .await;
    assert_eq!(
        ask(&login, &format!("kv-set matrix-token {KV_TOKEN}")).await,
        "ok"
    );
    test.stop().await
}

/// Starts a host on `dir` and reads back both tokens through it.
async fn both_tokens_read_back(dir: tempfile::TempDir, extra_config: &str) -> tempfile::TempDir {
    let test = TestHost::builder()
        .plugin("probe")
        .config(extra_config)
        .reuse(dir)
        .start()
        .await;
    let key = LoginKey::new("probe", "alice");
    let record = test.host.logins().store.get(&key).unwrap().unwrap();
    assert!(
        record.metadata.contains(METADATA_TOKEN),
        "{}",
        record.metadata
    );
    let login = test.host.registry().login(&key).unwrap();
    assert_eq!(ask(&login, "kv-get matrix-token").await, KV_TOKEN);
    test.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_sealed_on_disk_in_a_directory_only_the_host_user_can_read() {
    let dir = a_host_that_stored_two_tokens("").await;
    let data = dir.path().join("data");

    let files = files(&data);
    assert!(files.iter().any(|f| f.ends_with("secret.key")), "{files:?}");
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        assert!(
            !contains(&bytes, METADATA_TOKEN),
            "{} holds the metadata token",
            file.display()
        );
        assert!(
            !contains(&bytes, KV_TOKEN),
            "{} holds the KV token",
            file.display()
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        for file in &files {
            assert_eq!(
                mode(file) & 0o077,
                0,
                "{} is readable by others",
                file.display()
            );
        }
    }
    // And the host reads them back after a restart.
    both_tokens_read_back(dir, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_rotates_without_losing_a_login_and_a_missing_key_stops_the_start_clearly() {
    let keys = tempfile::tempdir().unwrap();
    let old = keys.path().join("old.key");
    let new = keys.path().join("new.key");
    let dir =
        a_host_that_stored_two_tokens(&format!("[secrets]\nkey-file = \"{}\"\n", old.display()))
            .await;

    // Rotate: the new key is current, the old one still opens what it
    // sealed, and the start re-seals everything with the new one.
    let dir = both_tokens_read_back(
        dir,
        &format!(
            "[secrets]\nkey-file = \"{}\"\nprevious-key-files = [\"{}\"]\n",
            new.display(),
            old.display()
        ),
    )
    .await;
    // The old key is no longer needed.
    std::fs::remove_file(&old).unwrap();
    let dir = both_tokens_read_back(
        dir,
        &format!("[secrets]\nkey-file = \"{}\"\n", new.display()),
    )
    .await;

    // Without the key that sealed them, the host refuses to start and
    // says which setting to look at; nothing is overwritten.
    let other = keys.path().join("other.key");
    let config = weft_host::config::Config::from_toml(
        &format!(
            "data-dir = \"{}\"\n[secrets]\nkey-file = \"{}\"\n",
            dir.path().join("data").display(),
            other.display()
        ),
        dir.path(),
    )
    .unwrap();
    let error = match weft_host::host::Host::start(config).await {
        Ok(_) => panic!("the host started without the key"),
        Err(error) => format!("{error:#}"),
    };
    assert!(error.contains("previous-key-files"), "{error}");
    both_tokens_read_back(
        dir,
        &format!("[secrets]\nkey-file = \"{}\"\n", new.display()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_login_removes_its_tokens_from_the_store() {
    let test = TestHost::builder().plugin("probe").start().await;
    let key = LoginKey::new("probe", "alice");
    let login = test
        .login_with(
            "probe",
            "alice",
            serde_json::json!({ "refresh_token": METADATA_TOKEN }),
        )
        .await;
    assert_eq!(
        ask(&login, &format!("kv-set matrix-token {KV_TOKEN}")).await,
        "ok"
    );
    assert!(
        !test
            .host
            .registry()
            .login_kv(&key, "probe")
            .unwrap()
            .is_empty()
    );

    test.host
        .logins()
        .delete(&key, true, "the user logged out")
        .await
        .unwrap();

    assert!(test.host.logins().store.get(&key).unwrap().is_none());
    assert!(
        test.host
            .registry()
            .login_kv(&key, "probe")
            .unwrap()
            .is_empty()
    );
}
