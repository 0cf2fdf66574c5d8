//! Plugins built for WASI load, and WASI grants them nothing but clocks
//! and randomness.

use weft_tests::host::{TestHost, ask};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasip1_plugin_loads_and_gets_clocks_but_no_files_env_or_stdout() {
    let test = TestHost::builder().plugin("wasi-probe").start().await;
    let login = test.login("wasi-probe", "alice").await;
    let now = weft_host::logins::now_ms();
    // std's clock works through WASI.
    let time: u64 = ask(&login, "time").await.parse().unwrap();
    assert!(time.abs_diff(now) < 60_000, "{time} vs {now}");
    // The host's environment is not visible.
    assert_eq!(ask(&login, "env").await, "0");
    // No directory is preopened: reading or writing any path fails.
    assert!(ask(&login, "fs").await.starts_with("denied"));
    assert!(ask(&login, "write").await.starts_with("denied"));
    assert!(!std::path::Path::new("/tmp/weft-escape").exists());
    // Printing goes nowhere, without failing.
    assert_eq!(ask(&login, "print").await, "printed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_without_wasi_gets_clocks_and_randomness_from_the_host() {
    let test = TestHost::builder().plugin("probe").start().await;
    let login = test.login("probe", "alice").await;
    let time: u64 = ask(&login, "time").await.parse().unwrap();
    assert!(time.abs_diff(weft_host::logins::now_ms()) < 60_000);
    let one = ask(&login, "random").await;
    let two = ask(&login, "random").await;
    // Sixteen random bytes, different each time.
    assert_eq!(one.len(), 32);
    assert_ne!(one, two);
}
