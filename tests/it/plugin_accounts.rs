//! The `appservice` import and plugin routes, from a plugin's side
//! (`tests/fixtures/account-probe`): a plugin reaches only the users of
//! its granted namespace and the rooms it created, and not at all without
//! the operator's grant.

use serde_json::{Value, json};
use weft_tests::bridge::{BridgeEnv, BridgeOptions};
use weft_tests::synapse::DOMAIN;

async fn call(env: &BridgeEnv, body: Value) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{}/probe/call", env.appservice_url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn denied(answer: &Value) -> bool {
    answer["error"]
        .as_str()
        .is_some_and(|e| e.starts_with("denied:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_reaches_only_its_own_users_and_rooms() {
    let env = BridgeEnv::start_with(BridgeOptions {
        plugins: vec!["account-probe"],
        config: vec![
            "[plugin.account-probe]".into(),
            "appservice = true".into(),
            "[plugin.account-probe.routes]".into(),
            "prefix = \"/probe\"".into(),
        ],
        ..Default::default()
    })
    .await;
    assert_eq!(
        call(&env, json!({ "op": "server-name" })).await["ok"],
        DOMAIN
    );

    let registered = call(&env, json!({ "op": "register", "localpart": "probe1" })).await;
    let token = registered["ok"]
        .as_str()
        .expect("a new user's token")
        .to_owned();
    let again = call(&env, json!({ "op": "register", "localpart": "probe1" })).await;
    assert_eq!(again["ok"], Value::Null, "registered twice: {again}");
    let login = call(&env, json!({ "op": "login", "localpart": "probe1" })).await;
    assert!(login["ok"].is_string(), "{login}");
    let me = call(&env, json!({ "op": "whoami", "token": token })).await;
    assert_eq!(me["ok"], format!("@probe1:{DOMAIN}"));
    let unknown = call(&env, json!({ "op": "whoami", "token": "syt_not_a_token" })).await;
    assert_eq!(unknown["ok"], Value::Null);

    // Outside the namespace: the bot, another connector's ghosts, names
    // that only start like the plugin's, and ordinary users.
    let user = env.user("someone").await;
    for localpart in [
        "weftbot",
        "echo_alice",
        "probe1x",
        "Probe1",
        "xprobe1",
        "",
        "someone",
    ] {
        for op in ["register", "login"] {
            let answer = call(&env, json!({ "op": op, "localpart": localpart })).await;
            assert!(denied(&answer), "{op} {localpart:?}: {answer}");
        }
    }
    let theirs = call(&env, json!({ "op": "whoami", "token": user.token })).await;
    assert!(denied(&theirs), "{theirs}");

    // Its own rooms only: never a room someone else made (a portal, a
    // management room), and never for users outside its namespace.
    let created = call(&env, json!({ "op": "create-room", "localpart": "Lobby" })).await;
    let room = created["ok"].as_str().unwrap().to_owned();
    let joined = call(
        &env,
        json!({ "op": "join", "room": room, "localpart": "probe1" }),
    )
    .await;
    assert_eq!(joined["ok"], true, "{joined}");
    let bot = call(
        &env,
        json!({ "op": "join", "room": room, "localpart": "weftbot" }),
    )
    .await;
    assert!(denied(&bot), "{bot}");
    let management = user.create_dm(&env.bot()).await;
    let other = call(
        &env,
        json!({ "op": "join", "room": management, "localpart": "probe1" }),
    )
    .await;
    assert!(denied(&other), "{other}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_asking_for_appservice_without_the_grant_does_not_load() {
    let env = BridgeEnv::start_with(BridgeOptions {
        plugins: vec!["account-probe"],
        ..Default::default()
    })
    .await;
    assert!(env.host().registry().plugin("account-probe").is_none());
    let errors = env.host().load_errors().lock().unwrap().clone();
    let message = errors
        .values()
        .next()
        .expect("the refusal is listed")
        .clone();
    assert!(
        message.contains("`appservice`") && message.contains("[plugin.account-probe]"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pattern_that_covers_ghosts_or_escapes_its_anchors_is_refused_at_load() {
    for (pattern, why) in [
        ("[a-z_]+", "covers the bridge bot"),
        ("echo_[0-9]+", "covers plugin echo's ghosts"),
        ("[0-9]+)|(.*", "is not a regular expression"),
        (".*", "matches the empty name"),
    ] {
        let env = BridgeEnv::start_with(BridgeOptions {
            plugins: vec!["account-probe"],
            config: vec![
                "[plugin.account-probe]".into(),
                "appservice = true".into(),
                format!("appservice-users = '{pattern}'"),
            ],
            ..Default::default()
        })
        .await;
        // Whichever loads second is refused: the probe (its pattern), or
        // the connector whose ghosts it would cover.
        let errors = env.host().load_errors().lock().unwrap().clone();
        assert!(
            errors.values().any(|message| message.contains(why)),
            "{pattern}: {errors:?}"
        );
        let probe = env.host().registry().plugin("account-probe").is_some();
        let echo = env.host().registry().plugin("echo").is_some();
        assert!(!(probe && echo), "{pattern}: both loaded");
    }
}
