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
