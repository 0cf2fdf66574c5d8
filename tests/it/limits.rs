//! Memory caps, deadlines and crash loops: a misbehaving instance is
//! stopped and the host and other instances keep going.

use std::time::Duration;

use weft_host::logins::StateEvent;
use weft_runtime::{CallError, Phase, WorkError};
use weft_tests::host::{TestHost, ask, send};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_allocates_without_bound_traps_at_the_memory_cap() {
    let test = TestHost::builder().plugin("probe").start().await;
    let greedy = test.login("probe", "greedy").await;
    let calm = test.login("probe", "calm").await;

    let error = send(&greedy, "alloc-forever").await.unwrap_err();
    // The probe's manifest asks for 32 MiB; the trap names the cap.
    assert!(
        matches!(&error, WorkError::Call(CallError::MemoryCap(m)) if m.contains("32 MiB")),
        "{error:?}"
    );
    // The other login is untouched, and the greedy one restarts.
    assert_eq!(ask(&calm, "version").await, "0.1.0");
    greedy
        .wait_for(Duration::from_secs(10), |s| {
            s.phase == Phase::Running && s.instances_started == 2
        })
        .await
        .expect("the greedy login restarts");
    assert_eq!(ask(&greedy, "version").await, "0.1.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_under_the_cap_is_usable_and_reported() {
    let test = TestHost::builder().plugin("probe").start().await;
    let login = test.login("probe", "holder").await;
    let before = login.status().memory_bytes;
    assert_eq!(ask(&login, "hold 8").await, "held=8");
    let after = login.status().memory_bytes;
    // Eight MiB more linear memory, within the 32 MiB cap.
    assert!(
        after >= before + (8 << 20),
        "before {before}, after {after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_loops_forever_is_interrupted_at_its_deadline_while_others_answer() {
    let test = TestHost::builder().plugin("probe").start().await;
    let spinner = test.login("probe", "spinner").await;
    let other = test.login("probe", "other").await;

    let spinning = tokio::spawn({
        let spinner = spinner.clone();
        async move { send(&spinner, "spin").await }
    });
    // Once the guest is in its loop...
    let registry = test.host.registry().clone();
    weft_tests::eventually(Duration::from_secs(5), "the spin to begin", || {
        let kv = registry.login_kv(spinner.key(), "probe").ok()?;
        kv.iter().any(|(k, _)| k == "spinning").then_some(())
    })
    .await;
    // ...another guest answers: guests yield every epoch tick instead of
    // holding a worker thread. The spinning call can only end at its
    // 2-second deadline, long after this answer.
    assert_eq!(ask(&other, "version").await, "0.1.0");
    assert!(
        !spinning.is_finished(),
        "the spinning call ended before its deadline"
    );

    let error = spinning.await.unwrap().unwrap_err();
    // The probe's deadline is 2000 ms; the error says so.
    assert!(
        matches!(&error, WorkError::Call(CallError::Deadline(d)) if d.as_millis() == 2000),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("2000-millisecond deadline"),
        "{error}"
    );
    spinner
        .wait_for(Duration::from_secs(10), |s| {
            s.phase == Phase::Running && s.instances_started == 2
        })
        .await
        .expect("the spinner restarts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_traps_on_every_start_stops_in_a_crash_loop_with_a_clear_state() {
    let test = TestHost::builder()
        .plugin("probe")
        .config("[plugin.probe.settings]\nstart-trap = true")
        .start()
        .await;
    let login = test.login("probe", "doomed").await;

    let status = login
        .wait_for(Duration::from_secs(20), |s| s.phase == Phase::Failed)
        .await
        .expect("the login gives up");
    // It tried the first start plus `max-restarts` (3) restarts, no more.
    assert_eq!(status.instances_started, 4);
    assert_eq!(status.strikes, 4);
    assert!(status.last_error.unwrap().contains("traps in start"));
    // The login's bridge state tells the user why.
    let record = test.host.logins().store.get(login.key()).unwrap().unwrap();
    assert_eq!(record.state.state_event, StateEvent::UnknownError);
    assert_eq!(record.state.error.as_deref(), Some("plugin-crash-loop"));
    assert!(
        record
            .state
            .message
            .unwrap()
            .contains("stopped after 4 failures")
    );
    // Work sent to it fails at once with that reason instead of hanging.
    let error = send(&login, "version").await.unwrap_err();
    assert!(
        matches!(&error, WorkError::Unavailable(m) if m.contains("stopped after")),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_kv_value_is_refused_and_changes_nothing() {
    let test = TestHost::builder().plugin("probe").start().await;
    let login = test.login("probe", "kv").await;
    let answer = ask(&login, "kv-big 2000000").await;
    // The value cap is 1 MiB and the error carries it.
    assert_eq!(answer, "error=ValueTooLarge(1048576)");
    assert_eq!(ask(&login, "kv-get big").await, "<none>");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kv_namespace_stops_growing_at_its_quota_and_deleting_frees_room() {
    let test = TestHost::builder()
        .plugin("probe")
        .runtime("kv-quota-mb = 1")
        .start()
        .await;
    let login = test.login("probe", "hoarder").await;
    // Two values of 400 kB fit in 1 MiB; the third does not, and the error
    // carries the quota.
    let answer = ask(&login, "kv-fill f 3 400000").await;
    assert_eq!(answer, "error at 2: QuotaExceeded(1048576)");
    assert_eq!(ask(&login, "kv-get f2").await, "<none>");
    // Deleting makes room again.
    assert_eq!(ask(&login, "kv-delete f0").await, "true");
    assert_eq!(ask(&login, "kv-fill g 1 400000").await, "ok");
    // Another login has its own quota.
    let other = test.login("probe", "other").await;
    assert_eq!(ask(&other, "kv-fill f 2 400000").await, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_restarts_a_login_stopped_in_a_crash_loop_once_the_cause_is_fixed() {
    let test = TestHost::builder().plugin("probe").start().await;
    let login = test.login("probe", "fragile").await;
    // Every instance traps in `start` for the next second.
    let until = weft_host::logins::now_ms() + 1_000;
    ask(&login, &format!("kv-set-u64 trap-on-start-until {until}")).await;
    let _ = send(&login, "trap").await;
    login
        .wait_for(Duration::from_secs(20), |s| s.phase == Phase::Failed)
        .await
        .expect("crash loop");

    // The cause goes away (here: the time passes), then the operator
    // restarts the login through the admin API.
    weft_tests::eventually(Duration::from_secs(5), "the trap window to pass", || {
        (weft_host::logins::now_ms() > until).then_some(())
    })
    .await;
    let url = format!(
        "http://{}/_weft/admin/v1/logins/probe:fragile/restart",
        test.host.admin_addr().unwrap()
    );
    let response = reqwest::Client::new()
        .post(url)
        .bearer_auth(weft_tests::host::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    login
        .wait_for(Duration::from_secs(10), |s| s.phase == Phase::Running)
        .await
        .expect("running again");
    assert_eq!(ask(&login, "version").await, "0.1.0");
    // The restart is a fresh start, not a left-over restart attempt.
    assert_eq!(login.status().strikes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_flooding_events_or_kv_writes_is_stopped_at_the_call_budget_while_others_answer() {
    let test = TestHost::builder().plugin("probe").start().await;
    let flooder = test.login("probe", "flooder").await;
    let other = test.login("probe", "other").await;

    // While one login floods, another answers; its worst latency is
    // printed, not asserted (timing belongs in benchmarks).
    let flooding = {
        let flooder = flooder.clone();
        tokio::spawn(async move {
            let events = ask(&flooder, "event-flood chat 6000").await;
            let writes = ask(&flooder, "kv-fill flood- 5001 1").await;
            (events, writes)
        })
    };
    let mut worst = Duration::ZERO;
    let mut answered = 0;
    while !flooding.is_finished() {
        let asked = std::time::Instant::now();
        assert_eq!(ask(&other, "whoami").await, "other");
        worst = worst.max(asked.elapsed());
        answered += 1;
    }
    let (events, writes) = flooding.await.unwrap();
    println!("during the flood another login answered {answered} times, the slowest in {worst:?}");

    // Each call stops at its budget with the transient storage error...
    assert!(events.starts_with("queued 5000, then Storage("), "{events}");
    assert!(writes.starts_with("error at 5000: Storage("), "{writes}");
    // ...and the next call has a fresh one.
    assert_eq!(ask(&flooder, "event-flood chat 10").await, "queued 10");
    assert_eq!(ask(&flooder, "kv-set after flood").await, "ok");
}

/// A host let go without `shutdown` (an embedder that drops it, a test
/// that ends) must not leave its logins running: each actor holds the
/// runtime and the engine's instance pool, whose kernel mappings add up
/// to the process's limit, and would go on calling its plugin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_dropped_without_shutdown_stops_its_logins_and_frees_its_runtime() {
    let test = TestHost::builder().plugin("probe").start().await;
    let login = test.login("probe", "short-lived").await;
    assert_eq!(ask(&login, "version").await, "0.1.0");
    let registry = std::sync::Arc::downgrade(test.host.registry());

    drop(test);

    login
        .wait_for(Duration::from_secs(10), |s| s.phase == Phase::Stopped)
        .await
        .expect("the login's actor ends");
    weft_tests::eventually(Duration::from_secs(10), "the registry to be freed", || {
        (registry.strong_count() == 0).then_some(())
    })
    .await;
}
