//! Two logins of one plugin share nothing.

use weft_runtime::{CallError, Phase, WorkError};
use weft_tests::host::{TestHost, ask, send};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_logins_of_one_plugin_each_see_only_their_own_kv() {
    let test = TestHost::builder().plugin("probe").start().await;
    let alice = test.login("probe", "alice").await;
    let bob = test.login("probe", "bob").await;

    assert_eq!(ask(&alice, "kv-set colour red").await, "ok");
    // Bob's namespace does not have Alice's key...
    assert_eq!(ask(&bob, "kv-get colour").await, "<none>");
    assert_eq!(ask(&bob, "kv-set colour blue").await, "ok");
    // ...and writing it there leaves Alice's value alone.
    assert_eq!(ask(&alice, "kv-get colour").await, "red");
    // Listing shows only the login's own keys.
    assert_eq!(ask(&alice, "kv-list").await, "colour,starts");
    // The host's storage agrees: two namespaces, one value each.
    let registry = test.host.registry();
    let alice_kv = registry.login_kv(alice.key(), "probe").unwrap();
    assert!(alice_kv.contains(&("colour".into(), b"red".to_vec())));
    let bob_kv = registry.login_kv(bob.key(), "probe").unwrap();
    assert!(bob_kv.contains(&("colour".into(), b"blue".to_vec())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_in_one_login_leaves_the_other_running_and_answering() {
    let test = TestHost::builder().plugin("probe").start().await;
    let alice = test.login("probe", "alice").await;
    let bob = test.login("probe", "bob").await;
    ask(&alice, "kv-set kept yes").await;
    ask(&bob, "kv-set mine bob").await;

    let error = send(&alice, "trap").await.unwrap_err();
    // The caller learns the instance trapped, with the panic message.
    assert!(
        matches!(&error, WorkError::Call(CallError::Trap(m)) if m.contains("told to trap")),
        "{error:?}"
    );
    // Bob's instance never noticed.
    assert_eq!(ask(&bob, "kv-get mine").await, "bob");
    assert_eq!(bob.status().instances_started, 1);

    // Alice comes back on a new instance, from her persisted state.
    let status = alice
        .wait_for(std::time::Duration::from_secs(10), |s| {
            s.phase == Phase::Running && s.instances_started == 2
        })
        .await
        .expect("alice restarts");
    assert_eq!(status.strikes, 1);
    assert_eq!(ask(&alice, "kv-get kept").await, "yes");
    // Her `start` ran once per instance.
    assert_eq!(ask(&alice, "counter starts").await, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_set_for_one_login_are_not_sent_for_another() {
    let server = weft_tests::servers::fixture_server().await;
    let test = TestHost::builder().plugin("probe").start().await;
    let alice = test.login("probe", "alice").await;
    let bob = test.login("probe", "bob").await;

    ask(
        &alice,
        &format!("http GET http://{server}/set-cookie alice-session"),
    )
    .await;
    // Alice's next request carries her cookie...
    let answer = ask(&alice, &format!("http GET http://{server}/echo-cookie")).await;
    assert!(answer.contains("session=alice-session"), "{answer}");
    // ...and Bob's does not: each instance has its own jar.
    let answer = ask(&bob, &format!("http GET http://{server}/echo-cookie")).await;
    assert!(answer.contains("no-cookie"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_swap_swaps_only_on_the_expected_value() {
    let test = TestHost::builder().plugin("probe").start().await;
    let login = test.login("probe", "cas").await;
    // Create only if absent.
    assert_eq!(ask(&login, "kv-cas lock - mine").await, "true");
    assert_eq!(ask(&login, "kv-cas lock - theirs").await, "false");
    // Replace only from the expected value.
    assert_eq!(ask(&login, "kv-cas lock theirs x").await, "false");
    assert_eq!(ask(&login, "kv-cas lock mine next").await, "true");
    assert_eq!(ask(&login, "kv-get lock").await, "next");
    // Delete by swapping to absent.
    assert_eq!(ask(&login, "kv-cas lock next -").await, "true");
    assert_eq!(ask(&login, "kv-get lock").await, "<none>");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crafted_kv_keys_stay_inside_the_namespace_of_their_own_login() {
    let test = TestHost::builder().plugin("probe").start().await;
    // Login ids that look like each other's prefixes.
    let alice = test.login("probe", "alice").await;
    let alice_too = test.login("probe", "alice-mallory").await;
    let mallory = test.login("probe", "mallory").await;
    assert_eq!(ask(&mallory, "kv-set secret mallory's").await, "ok");

    // Keys with the storage's separator and escape bytes, paths, another
    // login's and plugin's names, the longest key allowed.
    let longest = "k".repeat(512);
    let crafted = [
        "\u{0}",
        "\u{1}",
        "\u{0}\u{1}\u{0}",
        "../mallory/secret",
        "\u{0}mallory\u{0}secret",
        "mallory\u{0}secret",
        "probe\u{0}mallory\u{0}secret",
        "-mallory\u{0}secret",
        "é\u{ffff}",
        longest.as_str(),
    ];
    for key in crafted {
        assert_eq!(
            ask(&alice, &format!("kv-set {key} alice's")).await,
            "ok",
            "{key:?}"
        );
    }
    // One byte longer is refused with the typed error.
    let refused = send(&alice, &format!("kv-set {longest}k x"))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("1 to 512 bytes"), "{refused}");

    // Mallory's key is untouched and Mallory sees only it (and the
    // probe's own start counter).
    assert_eq!(ask(&mallory, "kv-get secret").await, "mallory's");
    assert_eq!(ask(&mallory, "kv-list").await, "secret,starts");
    // Alice's crafted keys read back as they are, and only in her
    // namespace: the login whose id extends hers sees none of them.
    for key in crafted {
        assert_eq!(
            ask(&alice, &format!("kv-get {key}")).await,
            "alice's",
            "{key:?}"
        );
        assert_eq!(
            ask(&alice_too, &format!("kv-get {key}")).await,
            "<none>",
            "{key:?}"
        );
    }
    assert_eq!(ask(&alice, "kv-get secret").await, "<none>");
    assert_eq!(ask(&alice_too, "kv-list").await, "starts");
    let listed = ask(&alice, "kv-list").await;
    assert_eq!(listed.split(',').count(), crafted.len() + 1, "{listed:?}");
}
