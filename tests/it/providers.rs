//! A connector uses a login provider's exports through the host.

use weft_tests::host::{TestHost, ask};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_calls_its_login_provider_through_the_host_with_per_login_state() {
    let test = TestHost::builder()
        .plugin("probe")
        .plugin("token-provider")
        .start()
        .await;
    let alice = test.login("probe", "alice").await;
    let bob = test.login("probe", "bob").await;
    // The provider's answer comes back typed through the connector.
    assert_eq!(
        ask(&alice, "tokens-refresh abc").await,
        "access=access-abc-1"
    );
    assert_eq!(
        ask(&alice, "tokens-refresh abc").await,
        "access=access-abc-2"
    );
    // The provider instance serving Bob has its own state.
    assert_eq!(ask(&bob, "tokens-refresh abc").await, "access=access-abc-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_grant_reaches_the_connector_as_a_typed_error() {
    let test = TestHost::builder()
        .plugin("probe")
        .plugin("token-provider")
        .start()
        .await;
    let alice = test.login("probe", "alice").await;
    let answer = ask(&alice, "tokens-refresh revoked").await;
    assert_eq!(
        answer,
        "error=InvalidGrant(\"the refresh token was revoked\")"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_traps_gives_the_connector_an_error_not_a_trap() {
    let test = TestHost::builder()
        .plugin("probe")
        .plugin("token-provider")
        .start()
        .await;
    let alice = test.login("probe", "alice").await;
    let answer = ask(&alice, "tokens-refresh trap").await;
    assert!(
        answer.starts_with("error=Unavailable(") && answer.contains("trapped"),
        "{answer}"
    );
    // The connector's instance is the same one, and the provider comes
    // back for the next call.
    assert_eq!(alice.status().instances_started, 1);
    assert_eq!(
        ask(&alice, "tokens-refresh abc").await,
        "access=access-abc-1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_provider_loaded_the_call_is_unavailable() {
    let test = TestHost::builder().plugin("probe").start().await;
    let alice = test.login("probe", "alice").await;
    let answer = ask(&alice, "tokens-refresh abc").await;
    assert_eq!(
        answer,
        "error=Unavailable(\"the token provider `token-provider` is not loaded\")"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_logins_refreshing_through_their_provider_at_once_all_succeed_under_a_limit_of_eight()
 {
    // Every connector call holds one of eight permits while it waits for
    // its provider; a provider call that needed a second permit would
    // wait for ever.
    let test = TestHost::builder()
        .plugin("probe")
        .plugin("token-provider")
        .runtime("max-concurrent-calls = 8")
        .start()
        .await;
    let mut logins = Vec::new();
    for n in 0..200 {
        logins.push(test.login("probe", &format!("user{n}")).await);
    }
    let answers = futures::future::join_all(
        logins
            .iter()
            .map(|login| async move { ask(login, "tokens-refresh abc").await }),
    )
    .await;
    // Each got its provider's first answer for its own login.
    assert_eq!(answers.len(), 200);
    assert!(
        answers.iter().all(|a| a == "access=access-abc-1"),
        "{:?}",
        answers.iter().find(|a| *a != "access=access-abc-1")
    );
    // And each login lists the provider actor serving it.
    let providers = test.host.registry().providers_of(logins[0].key());
    assert_eq!(providers.len(), 1);
    assert_eq!(providers[0].plugin, "token-provider");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_upgrade_moves_its_live_actors_and_keeps_their_state() {
    let test = TestHost::builder()
        .plugin("probe")
        .plugin("token-provider")
        .start()
        .await;
    let alice = test.login("probe", "alice").await;
    assert_eq!(
        ask(&alice, "tokens-refresh abc").await,
        "access=access-abc-1"
    );
    // The same provider under a new version, as an operator drops it in.
    let path = test.plugins_dir().join("token-provider.wasm");
    let bytes = std::fs::read(&path).unwrap();
    let manifest = weft_runtime::plugin::embedded_manifest(&bytes).unwrap();
    std::fs::write(
        path.with_extension("toml"),
        manifest.replace("version = \"0.1.0\"", "version = \"0.1.1\""),
    )
    .unwrap();
    let outcome = test.host.registry().load_file(&path).await.unwrap();
    assert!(
        matches!(outcome, weft_runtime::LoadOutcome::Upgraded { .. }),
        "{outcome:?}"
    );
    // The provider actor runs the new version, and its KV (the call
    // count) carried over.
    assert_eq!(
        test.host.registry().providers_of(alice.key())[0].version,
        "0.1.1"
    );
    assert_eq!(
        ask(&alice, "tokens-refresh abc").await,
        "access=access-abc-2"
    );
}
