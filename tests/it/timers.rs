//! Host timers drive the poll loop.

use std::time::Duration;

use weft_host::logins::LoginKey;
use weft_runtime::LoginHandle;
use weft_tests::host::{TestHost, ask};
use weft_tests::until;

/// The probe's count of firings of timer `name`.
async fn ticks(login: &LoginHandle, name: &str) -> u64 {
    ask(login, &format!("counter ticks/{name}"))
        .await
        .parse()
        .expect("a number")
}

/// Waits until timer `name` has fired at least `n` times.
async fn fired(login: &LoginHandle, name: &str, n: u64) -> u64 {
    until(
        Duration::from_secs(10),
        &format!("{n} firings of {name}"),
        || async {
            let count = ticks(login, name).await;
            (count >= n).then_some(count)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interval_fires_repeatedly_and_stops_when_cancelled() {
    let test = TestHost::builder().plugin("probe").start().await;
    let login = test.login("probe", "ticker").await;
    assert_eq!(ask(&login, "interval tick 30").await, "ok");
    // The plugin's state advances with each firing.
    fired(&login, "tick", 3).await;

    assert_eq!(ask(&login, "cancel tick").await, "true");
    let at_cancel = ticks(&login, "tick").await;
    // Another timer firing three times at the same pace shows time went
    // by with timers being served...
    ask(&login, "interval witness 30").await;
    fired(&login, "witness", 3).await;
    // ...and the cancelled one did not fire meanwhile.
    assert_eq!(ticks(&login, "tick").await, at_cancel);
    // Cancelling again says there was nothing to cancel.
    assert_eq!(ask(&login, "cancel tick").await, "false");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_fires_once() {
    let test = TestHost::builder().plugin("probe").start().await;
    let login = test.login("probe", "once").await;
    ask(&login, "timeout ping 20").await;
    assert_eq!(fired(&login, "ping", 1).await, 1);
    // A later timeout firing shows the earlier one had every chance to
    // fire again, and did not.
    ask(&login, "timeout later 200").await;
    fired(&login, "later", 1).await;
    assert_eq!(ticks(&login, "ping").await, 1);
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
        .login(&LoginKey::new("probe", "durable"))
        .expect("the login runs again");
    assert_eq!(ask(&login, "kv-get note").await, "kept");
    // The interval set before the restart fires after it, with nobody
    // setting it again.
    let before = ticks(&login, "beat").await;
    fired(&login, "beat", before + 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_stuck_on_a_slow_remote_leaves_the_timers_of_the_others_on_time() {
    let server = weft_tests::servers::fixture_server().await;
    let test = TestHost::builder().plugin("probe").start().await;
    let stuck = test.login("probe", "stuck").await;
    let mut others = Vec::new();
    for n in 0..5 {
        let login = test.login("probe", &format!("other{n}")).await;
        assert_eq!(ask(&login, "interval tick 50").await, "ok");
        others.push(login);
    }
    let mut before = Vec::new();
    for login in &others {
        before.push(ticks(login, "tick").await);
    }
    drop(test.host.registry().take_timer_lateness());

    // The stuck login waits out its whole call deadline (2 s) on a remote
    // that answers in 30 s.
    let answer = ask(&stuck, &format!("http GET http://{server}/slow")).await;
    assert_eq!(answer, "error=Timeout");

    // Meanwhile every other login kept firing...
    for (login, before) in others.iter().zip(before) {
        let after = ticks(login, "tick").await;
        assert!(after >= before + 10, "{}: {before} → {after}", login.key());
    }
    // ...and how late their timers were is printed, not asserted.
    let mut lateness = test.host.registry().take_timer_lateness();
    lateness.sort_unstable();
    let at = |q: f64| lateness[((lateness.len() - 1) as f64 * q) as usize];
    println!(
        "while one login was stuck for 2 s, {} timer firings of 5 others: p50 {} ms, p99 {} ms, max {} ms late",
        lateness.len(),
        at(0.5),
        at(0.99),
        lateness.last().copied().unwrap_or(0)
    );
}
