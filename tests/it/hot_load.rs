//! Operators hot-load, upgrade and unload plugins in a running host.

use std::collections::BTreeMap;
use std::time::Duration;

use weft_host::logins::LoginKey;
use weft_runtime::plugin::LoadError;
use weft_runtime::{LoadOutcome, RegistryError};
use weft_tests::echo::Echo;
use weft_tests::host::{TestHost, ask, copy_component, relabelled, send};
use weft_tests::{component, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrading_echo_while_logins_are_live_keeps_their_kv_state_and_loses_no_message() {
    let echo = Echo::start().await;
    let test = TestHost::builder()
        .plugin("echo")
        .grant("echo", &echo.grant(30))
        .start()
        .await;
    let alice = test
        .login_with("echo", "alice", echo.session("alice").await)
        .await;
    let bob = test
        .login_with("echo", "bob", echo.session("bob").await)
        .await;
    // Both logins sync their greeting from the echo bot.
    test.events
        .wait_for("both greetings", |_| {
            !test.events.message_ids(alice.key()).is_empty()
                && !test.events.message_ids(bob.key()).is_empty()
        })
        .await;

    // Messages keep arriving on the remote side throughout the upgrade.
    let feeder = {
        let service = echo.service.clone();
        tokio::spawn(async move {
            let mut sent = Vec::new();
            let mut pace = tokio::time::interval(Duration::from_millis(15));
            for n in 0..40 {
                pace.tick().await;
                sent.push(("alice", service.say("c1", "echo", &format!("to alice {n}"))));
                sent.push(("bob", service.say("c2", "echo", &format!("to bob {n}"))));
            }
            sent
        })
    };
    // The upgrade starts once messages are flowing.
    test.events
        .wait_for("the first messages", |_| {
            test.events.message_ids(alice.key()).len() > 3
        })
        .await;
    let next = relabelled(&test.plugins_dir(), "echo", "echo-next", "0.1.1");
    let outcome = test
        .host
        .registry()
        .load_file(&next)
        .await
        .expect("upgrade");
    // Both live logins moved to the new version.
    assert!(
        matches!(&outcome, LoadOutcome::Upgraded { from, to, logins: 2, .. } if from == "0.1.0" && to == "0.1.1"),
        "{outcome:?}"
    );
    assert_eq!(alice.status().plugin_version, "0.1.1");
    assert_eq!(bob.status().plugin_version, "0.1.1");

    let sent = feeder.await.unwrap();
    let last_alice = sent
        .iter()
        .rev()
        .find(|(who, _)| *who == "alice")
        .unwrap()
        .1
        .clone();
    let last_bob = sent
        .iter()
        .rev()
        .find(|(who, _)| *who == "bob")
        .unwrap()
        .1
        .clone();
    test.events
        .wait_for("the last messages", |_| {
            test.events.message_ids(alice.key()).contains(&last_alice)
                && test.events.message_ids(bob.key()).contains(&last_bob)
        })
        .await;

    for (login, who) in [(alice.key(), "alice"), (bob.key(), "bob")] {
        let ids = test.events.message_ids(login);
        let mut counts: BTreeMap<&String, usize> = BTreeMap::new();
        for id in &ids {
            *counts.entry(id).or_default() += 1;
        }
        // No message was bridged twice: the cursor in KV carried over.
        assert!(
            counts.values().all(|c| *c == 1),
            "{who} saw duplicates: {counts:?}"
        );
        // None was lost either.
        for (_, id) in sent.iter().filter(|(w, _)| *w == who) {
            assert!(ids.contains(id), "{who} never saw {id}");
        }
    }
    let kv = test.host.registry().login_kv(alice.key(), "echo").unwrap();
    let cursor: u64 = kv
        .iter()
        .find(|(k, _)| k == "cursor")
        .map(|(_, v)| serde_json::from_slice(v).unwrap())
        .unwrap();
    assert!(cursor >= last_alice.trim_start_matches('m').parse::<u64>().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrading_the_probe_moves_logins_to_the_new_code_and_no_message_is_lost() {
    let test = TestHost::builder().plugin("probe").start().await;
    let alice = test.login("probe", "alice").await;
    let bob = test.login("probe", "bob").await;
    ask(&alice, "kv-set note from-0.1").await;
    assert_eq!(ask(&alice, "version").await, "0.1.0");

    // Work sent while the upgrade runs waits in the mailbox and is served.
    let senders: Vec<_> = (0..20)
        .map(|n| {
            let login = if n % 2 == 0 {
                alice.clone()
            } else {
                bob.clone()
            };
            tokio::spawn(async move { send(&login, "version").await })
        })
        .collect();
    let outcome = test
        .host
        .registry()
        .load_file(&component("probe-next"))
        .await
        .expect("upgrade");
    assert!(
        matches!(outcome, LoadOutcome::Upgraded { logins: 2, .. }),
        "{outcome:?}"
    );
    for sender in senders {
        let answer = sender
            .await
            .unwrap()
            .expect("no work is lost across the upgrade");
        assert!(answer == "0.1.0" || answer == "0.2.0", "{answer}");
    }
    // The new code runs, on the old state.
    assert_eq!(ask(&alice, "version").await, "0.2.0");
    assert_eq!(ask(&alice, "kv-get note").await, "from-0.1");
    assert_eq!(
        test.host
            .registry()
            .plugin("probe")
            .unwrap()
            .version()
            .to_string(),
        "0.2.0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_that_fails_to_start_is_rolled_back_for_every_login() {
    let test = TestHost::builder().plugin("probe").start().await;
    let alice = test.login("probe", "alice").await;
    let bob = test.login("probe", "bob").await;
    // Bob's instance of 0.2.0 will trap in `start`; Alice's will not.
    ask(&bob, "kv-set trap-on-start-version 0.2.0").await;

    let error = test
        .host
        .registry()
        .load_file(&component("probe-next"))
        .await
        .unwrap_err();
    // The error names the login that refused and why.
    assert!(
        matches!(&error, RegistryError::Upgrade { login, .. } if login == "probe:bob"),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("traps in start of version 0.2.0"),
        "{error}"
    );
    // Alice, who had moved, is back on 0.1.0 with Bob; so is the registry.
    assert_eq!(ask(&alice, "version").await, "0.1.0");
    assert_eq!(ask(&bob, "version").await, "0.1.0");
    assert_eq!(
        test.host
            .registry()
            .plugin("probe")
            .unwrap()
            .version()
            .to_string(),
        "0.1.0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_component_is_refused_and_the_old_version_keeps_running() {
    let test = TestHost::builder().plugin("probe").start().await;
    let login = test.login("probe", "alice").await;
    let bad = relabelled(&test.plugins_dir(), "probe", "probe-bad", "0.3.0");
    std::fs::write(&bad, b"\0asm\x0d\0\x01\0 this is not a component").unwrap();

    let error = test.host.registry().load_file(&bad).await.unwrap_err();
    // The error says what is wrong with the file.
    assert!(
        matches!(&error, RegistryError::Load(LoadError::Compile(_))),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("not a valid wasm component"),
        "{error}"
    );
    // The old version is still current and its login still answers.
    assert_eq!(
        test.host
            .registry()
            .plugin("probe")
            .unwrap()
            .version()
            .to_string(),
        "0.1.0"
    );
    assert_eq!(ask(&login, "version").await, "0.1.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watched_directory_loads_upgrades_and_unloads_plugins() {
    let test = TestHost::builder().plugin("probe").watch().start().await;
    let login = test.login("probe", "alice").await;
    let registry = test.host.registry().clone();

    // Dropping a new component in loads it.
    copy_component("token-provider", &test.plugins_dir());
    eventually(Duration::from_secs(15), "token-provider loaded", || {
        registry.plugin("token-provider")
    })
    .await;

    // Replacing a component upgrades it, with its live login.
    std::fs::copy(
        component("probe-next"),
        test.plugins_dir().join("probe.wasm"),
    )
    .unwrap();
    eventually(Duration::from_secs(15), "probe 0.2.0", || {
        (login.status().plugin_version == "0.2.0").then_some(())
    })
    .await;
    assert_eq!(ask(&login, "version").await, "0.2.0");

    // A corrupt file is refused; the error is listed and nothing changes.
    std::fs::write(test.plugins_dir().join("broken.wasm"), b"not wasm").unwrap();
    let errors = test.host.load_errors().clone();
    let message = eventually(Duration::from_secs(15), "the load error", || {
        errors.lock().unwrap().values().next().cloned()
    })
    .await;
    assert!(
        message.contains("manifest") || message.contains("wasm"),
        "{message}"
    );
    assert_eq!(ask(&login, "version").await, "0.2.0");

    // Removing a component unloads it.
    std::fs::remove_file(test.plugins_dir().join("token-provider.wasm")).unwrap();
    eventually(Duration::from_secs(15), "token-provider unloaded", || {
        registry.plugin("token-provider").is_none().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_loads_plugins_and_refuses_without_its_token() {
    let test = TestHost::builder().start().await;
    let base = format!("http://{}/_weft/admin/v1", test.host.admin_addr().unwrap());
    let client = reqwest::Client::new();

    let denied = client
        .get(format!("{base}/plugins"))
        .bearer_auth("wrong-token-wrong-token")
        .send()
        .await
        .unwrap();
    // A wrong token is refused before anything else happens.
    assert_eq!(denied.status(), 403);

    let loaded: serde_json::Value = client
        .post(format!("{base}/plugins"))
        .bearer_auth(weft_tests::host::ADMIN_TOKEN)
        .json(&serde_json::json!({ "path": component("probe") }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(loaded["outcome"], "loaded");
    assert_eq!(loaded["id"], "probe");

    let created = client
        .post(format!("{base}/logins"))
        .bearer_auth(weft_tests::host::ADMIN_TOKEN)
        .json(&serde_json::json!({ "plugin": "probe", "id": "carol", "owner": "@carol:test", "metadata": { "secret": "s3cr3t" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let listing = client
        .get(format!("{base}/logins"))
        .bearer_auth(weft_tests::host::ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The login is listed, and its metadata (tokens) never is.
    assert!(listing.contains("\"key\":\"probe:carol\""), "{listing}");
    assert!(!listing.contains("s3cr3t"), "{listing}");

    let bad = client
        .post(format!("{base}/plugins"))
        .bearer_auth(weft_tests::host::ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: serde_json::Value = bad.json().await.unwrap();
    assert_eq!(body["errcode"], "M_NOT_JSON");

    let login = test
        .host
        .registry()
        .login(&LoginKey::new("probe", "carol"))
        .unwrap();
    assert_eq!(ask(&login, "whoami").await, "carol");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_created_while_its_plugin_is_being_upgraded_starts_on_the_new_version() {
    // Each start takes 300 ms, so an upgrade of three logins takes about
    // a second.
    let test = TestHost::builder()
        .plugin("probe")
        .config("[plugin.probe.settings]\nstart-sleep-ms = 300")
        .start()
        .await;
    let existing = [
        test.login("probe", "a").await,
        test.login("probe", "b").await,
        test.login("probe", "c").await,
    ];
    for login in &existing {
        login
            .wait_for(Duration::from_secs(10), |s| {
                s.phase == weft_runtime::Phase::Running
            })
            .await
            .expect("running");
    }
    let registry = test.host.registry().clone();
    let upgrade = tokio::spawn(async move {
        registry
            .load_file(&component("probe-next"))
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    });
    // Once the first login has moved, the upgrade is under way: the
    // plugin's current version is still 0.1.0 until every login moved.
    existing[0]
        .wait_for(Duration::from_secs(10), |s| s.plugin_version == "0.2.0")
        .await
        .expect("the upgrade started");
    let newcomer = test.login("probe", "newcomer").await;
    upgrade.await.unwrap().expect("the upgrade succeeds");
    // The login created meanwhile runs the new version, like the others.
    assert_eq!(ask(&newcomer, "version").await, "0.2.0");
    for login in &existing {
        assert_eq!(ask(login, "version").await, "0.2.0");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ghost_namespace_that_is_not_delimited_or_overlaps_another_connector_is_refused() {
    // `a` would claim real users such as @alice.
    let test = TestHost::builder()
        .grant(
            "probe",
            &format!(
                "{}\nghost-prefix = \"a\"",
                weft_tests::host::DEFAULT_PROBE_GRANT
            ),
        )
        .start()
        .await;
    let path = copy_component("probe", &test.plugins_dir());
    let error = test.host.registry().load_file(&path).await.unwrap_err();
    assert!(error.to_string().contains("ghost prefix `a`"), "{error}");
    assert!(test.host.registry().plugin("probe").is_none());

    // Two connectors whose namespaces overlap: the second one is refused
    // and the error names the first.
    let test = TestHost::builder()
        .plugin("probe")
        .grant(
            "echo",
            "http = [\"http://127.0.0.1:*\"]\nprivate-networks = true\nghost-prefix = \"probe_x_\"",
        )
        .config("[plugin.echo.settings]\nbase-url = \"http://127.0.0.1:1\"")
        .start()
        .await;
    assert!(test.host.registry().plugin("probe").is_some());
    let path = copy_component("echo", &test.plugins_dir());
    let error = test.host.registry().load_file(&path).await.unwrap_err();
    assert!(
        error.to_string().contains("overlaps plugin probe"),
        "{error}"
    );
    assert!(test.host.registry().plugin("echo").is_none());
}
