//! The Matrix side against a real Synapse: portals split by login, ghosts,
//! messages both ways, transactions, restarts.

use std::time::Duration;

use weft_tests::bridge::BridgeEnv;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_with_two_logins_gets_separate_rooms_and_messages_stay_in_their_own() {
    let env = BridgeEnv::start().await;
    // A group chat that both remote accounts are in, with a third person.
    env.echo.service.add_user("carol", "pw", "Carol");
    let group = env
        .echo
        .service
        .add_chat(Some("Team"), "group", &["alice", "bob", "carol"]);

    let user = env.user("user").await;
    let alice = env.login(&user, "alice").await;
    let bob = env.login(&user, "bob").await;
    assert_eq!(alice.to_string(), "echo:alice");

    // Each login gets its own room for its echo chat and for the group.
    let alice_echo = env.portal_room(&alice, "c1").await;
    let bob_echo = env.portal_room(&bob, "c2").await;
    let alice_group = env.portal_room(&alice, &group).await;
    let bob_group = env.portal_room(&bob, &group).await;
    assert_ne!(alice_group, bob_group, "two logins must never share a room");
    let rooms = user.wait_for_rooms(4, &[]).await;
    for room in [&alice_echo, &bob_echo, &alice_group, &bob_group] {
        assert!(rooms.contains(room));
    }
    assert_eq!(user.room_name(&alice_group).await.as_deref(), Some("Team"));

    // The echo bot's greeting to Alice lands in Alice's room only.
    user.wait_for_body(&alice_echo, "Hi! I echo what you say.")
        .await;
    env.echo.service.say("c1", "echo", "only for alice");
    let event = user.wait_for_body(&alice_echo, "only for alice").await;
    // It is sent by the echo bot's ghost, not the bridge bot.
    assert_eq!(event["sender"], "@echo_echo:localhost");
    // A message in the shared group reaches both logins' group rooms.
    env.echo.service.say(&group, "carol", "hello team");
    user.wait_for_body(&alice_group, "hello team").await;
    user.wait_for_body(&bob_group, "hello team").await;

    tokio::time::sleep(Duration::from_millis(500)).await;
    for room in [&bob_echo, &bob_group, &alice_group] {
        assert!(
            !user
                .bodies(room)
                .await
                .contains(&"only for alice".to_owned()),
            "leaked into {room}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matrix_message_reaches_the_right_login_exactly_once_and_is_not_echoed_back() {
    let env = BridgeEnv::start().await;
    let user = env.user("user").await;
    let alice = env.login(&user, "alice").await;
    let bob = env.login(&user, "bob").await;
    let alice_echo = env.portal_room(&alice, "c1").await;
    let bob_echo = env.portal_room(&bob, "c2").await;
    user.wait_for_rooms(2, &[]).await;
    user.wait_for_body(&alice_echo, "Hi! I echo what you say.")
        .await;

    user.send_text(&alice_echo, "hello from matrix").await;
    // The echo bot's answer comes back through the bridge...
    user.wait_for_body(&alice_echo, "echo: hello from matrix")
        .await;
    // ...and the remote chat got the message once, from Alice's account.
    let remote: Vec<_> = env
        .echo
        .service
        .messages("c1")
        .into_iter()
        .filter(|m| m.text == "hello from matrix")
        .collect();
    assert_eq!(remote.len(), 1, "{remote:?}");
    assert_eq!(remote[0].sender, "alice");
    // Bob's chat never saw it.
    assert!(
        env.echo
            .service
            .messages("c2")
            .iter()
            .all(|m| m.text != "hello from matrix")
    );
    // The connector saw its own message on its next polls, and the bridge
    // dropped that echo: the room has the user's message once, and no
    // ghost repeated it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let copies: Vec<_> = user
        .messages(&alice_echo)
        .await
        .into_iter()
        .filter(|e| e["content"]["body"] == "hello from matrix")
        .collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(copies[0]["sender"], user.user_id.as_str());
    assert!(
        !user
            .bodies(&bob_echo)
            .await
            .iter()
            .any(|b| b.contains("hello from matrix"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_transaction_changes_nothing_and_a_wrong_hs_token_is_refused() {
    let env = BridgeEnv::start().await;
    let user = env.user("user").await;
    let alice = env.login(&user, "alice").await;
    let room = env.portal_room(&alice, "c1").await;
    user.wait_for_rooms(1, &[]).await;
    let registration = weft_host::matrix::registration::read(&env.registration()).unwrap();
    let event = serde_json::json!({
        "type": "m.room.message", "event_id": "$replayed-event", "room_id": room, "sender": user.user_id,
        "origin_server_ts": 1, "content": { "msgtype": "m.text", "body": "sent once" },
    });
    let put = |txn: &'static str, token: Option<String>| {
        let url = format!("{}/_matrix/app/v1/transactions/{txn}", env.appservice_url());
        let mut request = reqwest::Client::new()
            .put(url)
            .json(&serde_json::json!({ "events": [event.clone()] }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };

    // Without a token: 401; with a wrong one: 403. Nothing reaches the
    // remote side.
    assert_eq!(put("t-none", None).await.unwrap().status(), 401);
    assert_eq!(
        put("t-wrong", Some("not-the-hs-token".into()))
            .await
            .unwrap()
            .status(),
        403
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        env.echo
            .service
            .messages("c1")
            .iter()
            .all(|m| m.text != "sent once")
    );

    // The right token: delivered once.
    assert_eq!(
        put("t-1", Some(registration.hs_token.clone()))
            .await
            .unwrap()
            .status(),
        200
    );
    // The same transaction again, and the same event in a new transaction
    // (a homeserver retry after a crash): nothing more.
    assert_eq!(
        put("t-1", Some(registration.hs_token.clone()))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        put("t-2", Some(registration.hs_token.clone()))
            .await
            .unwrap()
            .status(),
        200
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent: Vec<_> = env
        .echo
        .service
        .messages("c1")
        .into_iter()
        .filter(|m| m.text == "sent once")
        .collect();
    assert_eq!(sent.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portals_ghosts_and_mappings_survive_a_host_restart_without_duplicates() {
    let mut env = BridgeEnv::start().await;
    let user = env.user("user").await;
    let alice = env.login(&user, "alice").await;
    let room = env.portal_room(&alice, "c1").await;
    user.wait_for_rooms(1, &[]).await;
    user.wait_for_body(&room, "Hi! I echo what you say.").await;
    user.send_text(&room, "before the restart").await;
    user.wait_for_body(&room, "echo: before the restart").await;

    env.stop_host().await;
    // While the host is down, the remote side moves on.
    env.echo.service.say("c1", "echo", "while you were away");
    env.start_host().await;

    user.wait_for_body(&room, "while you were away").await;
    user.send_text(&room, "after the restart").await;
    user.wait_for_body(&room, "echo: after the restart").await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Same room (the portal was kept), no message twice, no new rooms.
    let bodies = user.bodies(&room).await;
    for body in [
        "Hi! I echo what you say.",
        "before the restart",
        "echo: before the restart",
        "while you were away",
    ] {
        assert_eq!(
            bodies.iter().filter(|b| *b == body).count(),
            1,
            "{body} in {bodies:?}"
        );
    }
    assert_eq!(user.joined_rooms().await, vec![room]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_or_malformed_transaction_is_refused_with_a_clear_error() {
    let env = BridgeEnv::start().await;
    let registration = weft_host::matrix::registration::read(&env.registration()).unwrap();
    let url = format!("{}/_matrix/app/v1/transactions/big", env.appservice_url());
    let client = reqwest::Client::new();
    // Over the 8 MiB body limit.
    let body = format!("{{\"events\":[],\"padding\":\"{}\"}}", "x".repeat(9 << 20));
    let response = client
        .put(&url)
        .bearer_auth(&registration.hs_token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    // Not JSON.
    let response = client
        .put(&url)
        .bearer_auth(&registration.hs_token)
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error: serde_json::Value = response.json().await.unwrap();
    assert_eq!(error["errcode"], "M_NOT_JSON");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_homeserver_can_ping_the_appservice_and_query_its_users() {
    let env = BridgeEnv::start().await;
    let registration = weft_host::matrix::registration::read(&env.registration()).unwrap();
    let client = reqwest::Client::new();
    // Synapse's appservice ping calls our /_matrix/app/v1/ping with the
    // hs_token and answers only if that succeeded.
    let ping = client
        .post(format!(
            "{}/_matrix/client/v1/appservice/weft/ping",
            env.synapse.url
        ))
        .bearer_auth(&registration.as_token)
        .json(&serde_json::json!({ "transaction_id": "ping-1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(ping.status(), 200, "{}", ping.text().await.unwrap());

    let query = |path: String| {
        client
            .get(format!("{}{path}", env.appservice_url()))
            .bearer_auth(&registration.hs_token)
            .send()
    };
    // A ghost of a loaded connector exists (and is registered on demand);
    // a user outside the bridge's namespaces does not; nor do aliases.
    assert_eq!(
        query("/_matrix/app/v1/users/@echo_zed:localhost".into())
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        query("/_matrix/app/v1/users/@zed:localhost".into())
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        query("/_matrix/app/v1/rooms/%23anything:localhost".into())
            .await
            .unwrap()
            .status(),
        404
    );
}
