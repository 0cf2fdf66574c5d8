//! The Matrix side against a real Synapse: portals split by login, ghosts,
//! messages both ways, transactions, restarts.

use std::time::Duration;

use weft_tests::bridge::{BridgeEnv, BridgeOptions};

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

    // A later message in the group reaching both group rooms shows that
    // both logins have bridged everything sent before it.
    env.echo.service.say(&group, "carol", "marker");
    user.wait_for_body(&alice_group, "marker").await;
    user.wait_for_body(&bob_group, "marker").await;
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
    // dropped that echo: once a later remote message has arrived, the room
    // has the user's message once, and no ghost repeated it.
    env.echo.service.say("c1", "echo", "marker");
    user.wait_for_body(&alice_echo, "marker").await;
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
    // remote side: once a later message sent the normal way has arrived,
    // the refused one is still not there.
    assert_eq!(put("t-none", None).await.unwrap().status(), 401);
    // The token in the query string (the old appservice API) is not
    // looked at: it would end up in access logs.
    let in_query = reqwest::Client::new()
        .put(format!(
            "{}/_matrix/app/v1/transactions/t-query?access_token={}",
            env.appservice_url(),
            registration.hs_token
        ))
        .json(&serde_json::json!({ "events": [event.clone()] }))
        .send()
        .await
        .unwrap();
    assert_eq!(in_query.status(), 401);
    assert_eq!(
        put("t-wrong", Some("not-the-hs-token".into()))
            .await
            .unwrap()
            .status(),
        403
    );
    user.send_text(&room, "first marker").await;
    wait_remote(&env, "c1", "first marker").await;
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
    // Events of one room are handled in order: a later message arriving
    // shows the replays were handled.
    user.send_text(&room, "second marker").await;
    wait_remote(&env, "c1", "second marker").await;
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
    // A later remote message shows every earlier one was bridged.
    env.echo.service.say("c1", "echo", "marker");
    user.wait_for_body(&room, "marker").await;

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
    // No connection is reused: the server closes the one it refused a
    // body on, and a request sent on it would fail.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
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
    // Nested deeper than any event is: refused, not a stack overflow.
    let nested = format!(
        "{{\"events\":[{}{}]}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let response = client
        .put(format!("{}-nested", url))
        .bearer_auth(&registration.hs_token)
        .header("content-type", "application/json")
        .body(nested)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    // Event types it does not know, and rooms that are not portals, are
    // accepted and ignored; the listener still answers afterwards.
    let response = client
        .put(format!("{}-unknown", url))
        .bearer_auth(&registration.hs_token)
        .json(&serde_json::json!({ "events": [
            { "type": "org.example.hologram", "event_id": "$h1", "room_id": "!nowhere:localhost",
              "sender": "@someone:localhost", "origin_server_ts": 1, "content": { "x": 1 } },
            { "type": "m.room.message", "event_id": "$h2", "room_id": "!nowhere:localhost",
              "sender": "@someone:localhost", "origin_server_ts": 1,
              "content": { "msgtype": "m.text", "body": "to no portal" } },
            { "not": "an event" },
        ] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let ping = client
        .post(format!("{}/_matrix/app/v1/ping", env.appservice_url()))
        .bearer_auth(&registration.hs_token)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(ping.status(), 200);
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

/// Waits until `text` was posted in remote chat `chat`.
async fn wait_remote(env: &BridgeEnv, chat: &str, text: &str) {
    weft_tests::eventually(Duration::from_secs(20), text, || {
        env.echo
            .service
            .messages(chat)
            .iter()
            .any(|m| m.text == text)
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_user_whose_ghost_id_would_pass_255_bytes_gets_a_short_ghost_and_bridging_goes_on()
{
    let env = BridgeEnv::start().await;
    let user = env.user("user").await;
    let long = format!("very-{}-long", "l".repeat(300));
    env.echo.service.add_user(&long, "pw", "Long Name");
    let chat = env
        .echo
        .service
        .add_chat(Some("Long names"), "group", &["alice", &long]);
    let alice = env.login(&user, "alice").await;
    let room = env.portal_room(&alice, &chat).await;
    user.wait_for_rooms(2, &[]).await;

    env.echo.service.say(&chat, &long, "from far away");
    let event = user.wait_for_body(&room, "from far away").await;
    // The ghost's id fits Matrix's limit, in its shortened form.
    let sender = event["sender"].as_str().unwrap();
    assert!(sender.len() <= 255, "{sender}");
    assert!(sender.starts_with("@echo_very-"), "{sender}");
    assert!(sender.contains("=="), "{sender}");
    // The login keeps bridging after it (nothing is stuck in its queue).
    env.echo.service.say(&chat, &long, "and again");
    let again = user.wait_for_body(&room, "and again").await;
    assert_eq!(again["sender"], sender);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_login_through_the_admin_api_unbridges_its_portals() {
    let env = BridgeEnv::start().await;
    let user = env.user("user").await;
    let alice = env.login(&user, "alice").await;
    let room = env.portal_room(&alice, "c1").await;
    user.wait_for_rooms(1, &[]).await;
    user.wait_for_body(&room, "Hi! I echo what you say.").await;

    let (status, _) = env
        .admin(reqwest::Method::DELETE, "/logins/echo:alice")
        .await;
    assert_eq!(status, 200);
    // The same unbridging as a user's logout: a notice, and the portal
    // is forgotten.
    user.wait_for_text(&room, "no longer bridged").await;
    let bridge = env.host().bridge().unwrap();
    assert!(bridge.store.portal_of_room(&room).unwrap().is_none());
    assert!(env.host().logins().store.get(&alice).unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_that_shares_group_portals_invites_every_logins_owner_to_the_one_room() {
    let env = BridgeEnv::start_with(BridgeOptions {
        manifest_edits: vec![(
            "split-portals = true".into(),
            "split-portals = false".into(),
        )],
        ..Default::default()
    })
    .await;
    let group = env
        .echo
        .service
        .add_chat(Some("Team"), "group", &["alice", "bob"]);
    let anna = env.user("anna").await;
    let ben = env.user("ben").await;
    let alice = env.login(&anna, "alice").await;
    let bob = env.login(&ben, "bob").await;
    let room = env.shared_portal_room(&group).await;
    // Both owners are invited to the one room (and each also has their
    // own direct chat with the echo bot).
    ben.wait_for_rooms(2, &[]).await;
    anna.wait_for_rooms(2, &[]).await;
    assert!(ben.joined_rooms().await.contains(&room));
    assert!(anna.joined_rooms().await.contains(&room));
    // Each user's messages go out through their own login.
    anna.send_text(&room, "from anna").await;
    ben.send_text(&room, "from ben").await;
    wait_remote(&env, &group, "from anna").await;
    wait_remote(&env, &group, "from ben").await;
    let senders: Vec<(String, String)> = env
        .echo
        .service
        .messages(&group)
        .into_iter()
        .map(|m| (m.text, m.sender))
        .collect();
    assert!(
        senders.contains(&("from anna".into(), "alice".into())),
        "{senders:?}"
    );
    assert!(
        senders.contains(&("from ben".into(), "bob".into())),
        "{senders:?}"
    );
    let _ = (alice, bob);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_homeserver_refuses_for_good_becomes_a_dead_letter_and_later_events_flow() {
    // The host as a process, logging at debug: the refused message's text
    // must not end up in its log.
    let env = BridgeEnv::start_with(BridgeOptions {
        process: true,
        log_filter: Some("debug".into()),
        ..Default::default()
    })
    .await;
    let user = env.user("user").await;
    env.login(&user, "alice").await;
    let room = user.wait_for_rooms(1, &[]).await.remove(0);
    user.wait_for_body(&room, "Hi! I echo what you say.").await;
    // An HTML body just under the connector limit makes an event over
    // Matrix's 64 KiB: Synapse refuses it with 413.
    let huge = format!("<p>{}</p>", "x".repeat(65_000));
    env.echo.service.say_html("c1", "echo", "huge", &huge);
    env.echo.service.say("c1", "echo", "after the huge one");
    user.wait_for_body(&room, "after the huge one").await;
    // The refused event is kept for the operator, with the reason.
    let (status, letters) = env.admin(reqwest::Method::GET, "/dead-letters").await;
    assert_eq!(status, 200);
    let letters = letters.as_array().unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["kind"], "message");
    assert!(
        letters[0]["reason"]
            .as_str()
            .unwrap()
            .contains("M_TOO_LARGE"),
        "{letters:?}"
    );
    // Its content is shown only on request, and never logged.
    assert!(letters[0].get("stored").is_none());
    let log = env.host_log();
    assert!(log.contains("dead letters"), "the refusal is logged");
    let leaks: Vec<String> = log
        .lines()
        .filter(|l| l.contains(&"x".repeat(64)))
        .map(|l| l.chars().take(300).collect())
        .collect();
    assert!(
        leaks.is_empty(),
        "the message's text is in the log: {leaks:#?}"
    );
}
