//! A homeserver with OAuth-delegated auth (MSC3861, "MAS mode"): Synapse
//! with oidc-provider standing in for MAS. The bridge works there, and the
//! rig behaves as a real MAS deployment does.

use serde_json::{Value, json};
use weft_tests::bridge::{BridgeEnv, BridgeOptions};
use weft_tests::mas::DelegatedHomeserver;
use weft_tests::matrix::MatrixUser;
use weft_tests::synapse::DOMAIN;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_of_a_delegated_homeserver_opens_the_management_room_logs_in_and_messages_go_both_ways()
 {
    let env = BridgeEnv::start_with(BridgeOptions {
        delegated_auth: true,
        ..BridgeOptions::default()
    })
    .await;
    let user = env.user("user").await;
    assert_eq!(user.whoami().await, Ok(format!("@user:{DOMAIN}")));

    // The bot answers a DM with its management room greeting.
    env.management_room(&user).await;

    // The provisioning API takes the user's MAS token.
    let alice = env.login(&user, "alice").await;
    let portal = env.portal_room(&alice, "c1").await;
    user.wait_for_rooms(2, &[]).await;
    user.wait_for_body(&portal, "Hi! I echo what you say.")
        .await;

    // Matrix to remote, and the echo bot's answer back.
    user.send_text(&portal, "hello from matrix").await;
    user.wait_for_body(&portal, "echo: hello from matrix").await;
    let sent: Vec<_> = env
        .echo
        .service
        .messages("c1")
        .into_iter()
        .filter(|m| m.text == "hello from matrix")
        .collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].sender, "alice");

    // Remote to Matrix, from the remote sender's ghost.
    env.echo.service.say("c1", "echo", "hello from echo");
    let event = user.wait_for_body(&portal, "hello from echo").await;
    assert_eq!(event["sender"], format!("@echo_echo:{DOMAIN}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mas_token_ends_at_once_with_its_device_but_a_revoked_one_lives_on_in_synapses_cache() {
    let homeserver = DelegatedHomeserver::start(&[]).await;
    homeserver.provision_user("alice").await;
    let alice = format!("@alice:{DOMAIN}");
    let user = |token: &str| MatrixUser::from_token(homeserver.url(), &alice, token);

    // A token of a device works.
    let phone = user(&homeserver.token_for_device("alice", "PHONE").await);
    assert_eq!(phone.whoami().await, Ok(alice.clone()));
    let introspected = homeserver.introspect(&phone.token).await;
    assert_eq!(introspected["active"], true, "{introspected}");
    assert_eq!(introspected["username"], "alice", "{introspected}");

    // Revoked before Synapse saw it: refused.
    let unused = user(&homeserver.token_for("alice").await);
    homeserver.revoke(&unused.token).await;
    assert_eq!(unused.whoami().await, Err(401));

    // Revoked after Synapse saw it: MAS says inactive, but Synapse keeps
    // its answer for two minutes.
    let laptop = user(&homeserver.token_for_device("alice", "LAPTOP").await);
    assert!(laptop.whoami().await.is_ok());
    homeserver.revoke(&laptop.token).await;
    assert_eq!(
        homeserver.introspect(&laptop.token).await,
        json!({ "active": false })
    );
    assert!(
        laptop.whoami().await.is_ok(),
        "Synapse caches an introspection for two minutes"
    );

    // Deleting the device ends its token at once, and only its token.
    homeserver.delete_device("alice", "LAPTOP").await;
    assert_eq!(laptop.whoami().await, Err(401));
    homeserver.delete_device("alice", "PHONE").await;
    assert_eq!(phone.whoami().await, Err(401));
    let tablet = user(&homeserver.token_for_device("alice", "TABLET").await);
    assert_eq!(tablet.whoami().await, Ok(alice.clone()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_appservice_registers_its_users_with_inhibit_login_and_cannot_log_them_in() {
    let dir = tempfile::tempdir().unwrap();
    let registration = dir.path().join("registration.yaml");
    let as_token = "test-as-token-0123456789";
    std::fs::write(
        &registration,
        format!(
            "id: test-appservice\nurl: null\nas_token: {as_token}\nhs_token: test-hs-token-0123456789\n\
             sender_localpart: asbot\nrate_limited: false\n\
             namespaces:\n  users:\n    - exclusive: true\n      regex: '@as_.*:{DOMAIN}'\n  aliases: []\n  rooms: []\n"
        ),
    )
    .unwrap();
    let homeserver = DelegatedHomeserver::start(&[&registration]).await;
    let http = reqwest::Client::new();
    let call = |path: &str, body: Value| {
        http.post(format!("{}/_matrix/client/v3/{path}", homeserver.url()))
            .bearer_auth(as_token)
            .json(&body)
            .send()
    };

    // The as_token needs no introspection.
    let bot = MatrixUser::from_token(homeserver.url(), &format!("@asbot:{DOMAIN}"), as_token);
    assert_eq!(bot.whoami().await, Ok(format!("@asbot:{DOMAIN}")));

    // No access tokens for the appservice's users: no /login at all, and
    // /register only without a login.
    let login = call(
        "login",
        json!({ "type": "m.login.application_service",
                "identifier": { "type": "m.id.user", "user": "as_ghost" } }),
    )
    .await
    .unwrap();
    assert_eq!(login.status(), 404);
    let register = call(
        "register",
        json!({ "type": "m.login.application_service", "username": "as_ghost" }),
    )
    .await
    .unwrap();
    assert_eq!(register.status(), 400);
    let error: Value = register.json().await.unwrap();
    assert_eq!(
        error["errcode"], "M_APPSERVICE_LOGIN_UNSUPPORTED",
        "{error}"
    );
    let register = call(
        "register",
        json!({ "type": "m.login.application_service", "username": "as_ghost",
                "inhibit_login": true }),
    )
    .await
    .unwrap();
    assert_eq!(register.status(), 200);
    let registered: Value = register.json().await.unwrap();
    assert_eq!(registered["user_id"], format!("@as_ghost:{DOMAIN}"));
    assert!(registered.get("access_token").is_none(), "{registered}");

    // The registered ghost is usable by masquerading.
    let whoami: Value = http
        .get(format!(
            "{}/_matrix/client/v3/account/whoami?user_id=@as_ghost:{DOMAIN}",
            homeserver.url()
        ))
        .bearer_auth(as_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(whoami["user_id"], format!("@as_ghost:{DOMAIN}"), "{whoami}");
}
