//! Double puppeting against a real Synapse with the second registration.

use weft_tests::bridge::{BridgeEnv, BridgeOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_double_puppeting_what_the_user_sent_remotely_appears_as_their_own_account() {
    let env = BridgeEnv::start_with(BridgeOptions {
        bridge_settings: vec!["double-puppet = true".into()],
        ..Default::default()
    })
    .await;
    let user = env.user("user").await;
    env.login(&user, "alice").await;
    // The puppet joined the portal for the user: no invite to accept.
    let room = weft_tests::until(
        std::time::Duration::from_secs(30),
        "the user in the portal",
        || async { user.joined_rooms().await.into_iter().next() },
    )
    .await;
    user.wait_for_body(&room, "Hi! I echo what you say.").await;

    // Alice writes from the remote app.
    env.echo.service.say("c1", "alice", "from my phone");
    let event = user.wait_for_body(&room, "from my phone").await;
    assert_eq!(event["sender"], user.user_id.as_str());
    assert_eq!(event["content"]["fi.mau.double_puppet_source"], "weft");
    user.wait_for_body(&room, "echo: from my phone").await;

    // What the user sends on Matrix still goes to the remote chat; since
    // the room's events are handled in order, its answer also shows that
    // the puppet's event came back to the bridge and was not sent again.
    user.send_text(&room, "from matrix").await;
    user.wait_for_body(&room, "echo: from matrix").await;
    let copies = env
        .echo
        .service
        .messages("c1")
        .iter()
        .filter(|m| m.text == "from my phone")
        .count();
    assert_eq!(copies, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_double_puppeting_what_the_user_sent_remotely_comes_from_their_ghost() {
    let env = BridgeEnv::start().await;
    let user = env.user("user").await;
    env.login(&user, "alice").await;
    let room = user.wait_for_rooms(1, &[]).await.remove(0);
    env.echo.service.say("c1", "alice", "from my phone");
    let event = user.wait_for_body(&room, "from my phone").await;
    assert_eq!(event["sender"], "@echo_alice:localhost");
    assert!(
        event["content"]
            .get("fi.mau.double_puppet_source")
            .is_none()
    );
}
