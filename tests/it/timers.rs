//! Host timers drive the poll loop.

use std::time::Duration;

use weft_tests::host::{TestHost, ask};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interval_fires_repeatedly_and_stops_when_cancelled() {
    let test = TestHost::builder().plugin("probe").start().await;
    let login = test.login("probe", "ticker").await;
    assert_eq!(ask(&login, "interval tick 30").await, "ok");

    // The plugin's state advances with each firing.
    let mut seen = 0;
    for _ in 0..200 {
        seen = ask(&login, "counter ticks/tick")
            .await
            .parse::<u64>()
            .unwrap();
        if seen >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen >= 3, "only {seen} ticks");

    assert_eq!(ask(&login, "cancel tick").await, "true");
    // Calls are serial per login, so nothing fires after the cancel.
    let at_cancel = ask(&login, "counter ticks/tick").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ask(&login, "counter ticks/tick").await, at_cancel);
    // Cancelling again says there was nothing to cancel.
    assert_eq!(ask(&login, "cancel tick").await, "false");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_fires_once() {
    let test = TestHost::builder().plugin("probe").start().await;
    let login = test.login("probe", "once").await;
    ask(&login, "timeout ping 20").await;
    let mut fired = String::new();
    for _ in 0..100 {
        fired = ask(&login, "counter ticks/ping").await;
        if fired == "1" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(fired, "1");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(ask(&login, "counter ticks/ping").await, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timer_limits_come_back_as_typed_errors() {
    let test = TestHost::builder().plugin("probe").start().await;
    let login = test.login("probe", "limits").await;
    // The test host's minimum is 10 ms.
    let error = weft_tests::host::send(&login, "interval fast 1")
        .await
        .unwrap_err();
    assert!(error.to_string().contains("at least 10 ms"), "{error}");
    // The probe's manifest asks for 8 timers.
    for n in 0..8 {
        ask(&login, &format!("interval t{n} 60000")).await;
    }
    let error = weft_tests::host::send(&login, "interval t8 60000")
        .await
        .unwrap_err();
    assert!(error.to_string().contains("at most 8 timers"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_and_kv_survive_a_host_restart() {
    let test = TestHost::builder().plugin("probe").start().await;
    let login = test.login("probe", "durable").await;
    ask(&login, "kv-set note kept").await;
    ask(&login, "interval beat 30").await;
    let dir = test.stop().await;

    let test = TestHost::builder().reuse(dir).start().await;
    let login = test
        .host
        .registry()
        .login(&weft_host::logins::LoginKey::new("probe", "durable"))
        .expect("the login runs again");
    assert_eq!(ask(&login, "kv-get note").await, "kept");
    // The interval set before the restart fires after it, with nobody
    // setting it again.
    let before = ask(&login, "counter ticks/beat")
        .await
        .parse::<u64>()
        .unwrap();
    let mut after = before;
    for _ in 0..100 {
        after = ask(&login, "counter ticks/beat")
            .await
            .parse::<u64>()
            .unwrap();
        if after > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(after > before, "no tick after the restart");
}
