//! A new portal's history, against a real Synapse.

use weft_tests::bridge::{BridgeEnv, BridgeOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_portal_starts_with_recent_history_at_the_original_times_without_notifying() {
    let env = BridgeEnv::start_with(BridgeOptions {
        bridge_settings: vec!["backfill-messages = 3".into()],
        ..Default::default()
    })
    .await;
    for n in 1..=5 {
        env.echo.service.say("c1", "echo", &format!("old {n}"));
    }
    let user = env.user("user").await;
    env.login(&user, "alice").await;
    let room = user.wait_for_rooms(1, &[]).await.remove(0);

    // The newest three, in order, each once, with their remote times.
    user.wait_for_body(&room, "old 5").await;
    let messages = user.messages(&room).await;
    let bodies: Vec<&str> = messages
        .iter()
        .map(|m| m["content"]["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["old 3", "old 4", "old 5"]);
    let remote = env.echo.service.messages("c1");
    for message in &messages {
        let body = message["content"]["body"].as_str().unwrap();
        let original = remote.iter().find(|m| m.text == body).unwrap();
        assert_eq!(message["origin_server_ts"], original.ts, "{body}");
    }
    // The user was invited after the history: none of it notified them.
    let synced = user.synced_room(&room).await;
    assert_eq!(
        synced["unread_notifications"]["notification_count"]
            .as_u64()
            .unwrap_or(0),
        0,
        "{synced}"
    );

    // New messages follow, once.
    env.echo.service.say("c1", "echo", "new");
    user.wait_for_body(&room, "new").await;
    assert_eq!(user.bodies(&room).await, ["old 3", "old 4", "old 5", "new"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_that_a_replaying_poll_sees_again_is_not_sent_twice() {
    // This connector replays its whole log on a new login, so the newest
    // messages come both as history and from the poll.
    let env = BridgeEnv::start_with(BridgeOptions {
        bridge_settings: vec!["backfill-messages = 3".into()],
        echo_settings: vec!["start-from = \"beginning\"".into()],
        ..Default::default()
    })
    .await;
    for n in 1..=5 {
        env.echo.service.say("c1", "echo", &format!("old {n}"));
    }
    let user = env.user("user").await;
    env.login(&user, "alice").await;
    let room = user.wait_for_rooms(1, &[]).await.remove(0);
    env.echo.service.say("c1", "echo", "marker");
    user.wait_for_body(&room, "marker").await;
    let mut bodies = user.bodies(&room).await;
    bodies.sort();
    assert_eq!(
        bodies,
        [
            "Hi! I echo what you say.",
            "marker",
            "old 1",
            "old 2",
            "old 3",
            "old 4",
            "old 5"
        ]
    );
}
