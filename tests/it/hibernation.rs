//! Idle logins hibernate: their instance and task go, and their next
//! timer or event brings them back, with nothing lost.

use std::time::Duration;

use weft_runtime::{LoginHandle, Phase};
use weft_tests::host::{TestHost, ask};

async fn sleepy_host() -> TestHost {
    TestHost::builder()
        .plugin("probe")
        .runtime("hibernate = true\nhibernate-after-ms = 50")
        .start()
        .await
}

/// A counter of the probe's KV, read from the host's storage without
/// waking the login.
fn stored_counter(test: &TestHost, login: &LoginHandle, key: &str) -> u64 {
    test.host
        .registry()
        .login_kv(login.key(), "probe")
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| serde_json::from_slice(&v).ok())
        .unwrap_or(0)
}

async fn hibernating(login: &LoginHandle) {
    login
        .wait_for(Duration::from_secs(10), |s| s.phase == Phase::Hibernating)
        .await
        .expect("the login hibernates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_login_hibernates_and_wakes_for_each_timer_with_start_run_first() {
    let test = sleepy_host().await;
    let login = test.login("probe", "sleeper").await;
    // A timer half a second away: longer than the idle time, so the login
    // sleeps between firings.
    ask(&login, "interval nap 500").await;
    hibernating(&login).await;
    // It fires again and again, waking each time.
    weft_tests::eventually(Duration::from_secs(20), "three firings and sleeps", || {
        (stored_counter(&test, &login, "ticks/nap") >= 3 && login.status().hibernations >= 3)
            .then_some(())
    })
    .await;
    // Each wake made a fresh instance and ran `start` on it before the
    // timer (the first start, plus one per wake).
    assert!(stored_counter(&test, &login, "starts") >= 3);
    assert!(login.status().instances_started >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matrix_event_wakes_a_hibernating_login_and_gets_its_answer() {
    let test = sleepy_host().await;
    let login = test.login("probe", "sleeper").await;
    ask(&login, "kv-set note kept").await;
    hibernating(&login).await;
    let before = login.status().instances_started;
    // The event wakes it; state kept in KV is there.
    assert_eq!(ask(&login, "kv-get note").await, "kept");
    assert_eq!(login.status().instances_started, before + 1);
    // And it goes back to sleep.
    hibernating(&login).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_message_timer_or_event_is_lost_while_a_login_keeps_falling_asleep() {
    let test = sleepy_host().await;
    let login = test.login("probe", "busy").await;
    // A one-shot timer set before a sleep fires after it.
    ask(&login, "timeout once 300").await;
    // Messages arrive at varying moments: some while it sleeps, some while
    // it is falling asleep, some while it wakes.
    let mut pace = tokio::time::interval(Duration::from_millis(7));
    for n in 0..150u64 {
        for _ in 0..(n % 11) {
            pace.tick().await;
        }
        assert_eq!(ask(&login, &format!("event chat m{n} hello")).await, "ok");
    }
    // Every message was answered (above), every queued event arrived, in
    // order, once...
    test.events
        .wait_for("150 events", |events| events.len() >= 150)
        .await;
    let ids = test.events.message_ids(login.key());
    let expected: Vec<String> = (0..150).map(|n| format!("m{n}")).collect();
    assert_eq!(ids, expected);
    // ...the one-shot timer fired exactly once...
    weft_tests::eventually(Duration::from_secs(10), "the timeout", || {
        (stored_counter(&test, &login, "ticks/once") == 1).then_some(())
    })
    .await;
    // ...and the login did fall asleep along the way.
    assert!(login.status().hibernations > 3, "{:?}", login.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hibernating_logins_move_to_a_new_version_and_wake_on_it() {
    let test = sleepy_host().await;
    let login = test.login("probe", "sleeper").await;
    hibernating(&login).await;
    test.host
        .registry()
        .load_file(&weft_tests::component("probe-next"))
        .await
        .expect("upgrade");
    // The upgrade did not wake it...
    assert_eq!(login.status().phase, Phase::Hibernating);
    assert_eq!(login.status().plugin_version, "0.2.0");
    // ...and when something does, it runs the new version.
    assert_eq!(ask(&login, "version").await, "0.2.0");
}
