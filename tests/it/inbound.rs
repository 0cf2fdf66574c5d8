//! Matrix → remote against a real Synapse: transactions are stored and
//! answered at once, handled in order per room, survive a killed host and
//! a restarted homeserver, wait for their plugin, and failures are told.

use std::time::Duration;

use serde_json::Value;
use weft_tests::bridge::{BridgeEnv, BridgeOptions};
use weft_tests::matrix::MatrixUser;
use weft_tests::until;

const WAIT: Duration = Duration::from_secs(30);

/// How many of `chat`'s remote messages from `sender` read `text`.
fn remote_count(env: &BridgeEnv, chat: &str, sender: &str, text: &str) -> usize {
    env.echo
        .service
        .messages(chat)
        .iter()
        .filter(|m| m.sender == sender && m.text == text && !m.deleted)
        .count()
}

/// The portal room a user was invited to for their only login, once its
/// history is in.
async fn only_portal(user: &MatrixUser, except: &[String]) -> String {
    let room = user.wait_for_rooms(1, except).await.remove(0);
    user.wait_for_body(&room, "Hi! I echo what you say.").await;
    room
}

/// The Matrix events waiting in `room`'s inbound queue, per the admin API.
async fn pending(env: &BridgeEnv, room: &str) -> u64 {
    let (status, inbound) = env.admin(reqwest::Method::GET, "/inbound").await;
    if status != 200 {
        return 0;
    }
    inbound["pending"][room].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_that_takes_8_s_per_message_does_not_delay_another_users_message() {
    let env = BridgeEnv::start().await;
    let slow_user = env.user("slow").await;
    let quick_user = env.user("quick").await;
    env.login(&slow_user, "alice").await;
    env.login(&quick_user, "bob").await;
    let slow_room = only_portal(&slow_user, &[]).await;
    let quick_room = only_portal(&quick_user, &[]).await;
    // Alice's network takes 8 s to take each message (within the 10 s
    // call deadline, and long enough that Bob's round trip fits inside it
    // even on a loaded machine).
    env.echo
        .service
        .set_send_delay("alice", Duration::from_secs(8));

    slow_user.send_text(&slow_room, "slow one").await;
    // The slow message is stored and being handled...
    until(WAIT, "the slow message to be taken", || async {
        (pending(&env, &slow_room).await == 1).then_some(())
    })
    .await;
    quick_user.send_text(&quick_room, "quick one").await;
    // ...and Bob's message goes through (and is answered) while Alice's
    // network is still busy with hers.
    quick_user
        .wait_for_body(&quick_room, "echo: quick one")
        .await;
    assert_eq!(
        remote_count(&env, "c1", "alice", "slow one"),
        0,
        "the slow message was expected to be still in flight"
    );
    slow_user.wait_for_body(&slow_room, "echo: slow one").await;
    assert_eq!(remote_count(&env, "c1", "alice", "slow one"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_right_after_the_200_handles_the_event_after_restart_exactly_once() {
    let mut env = BridgeEnv::start_with(BridgeOptions {
        process: true,
        ..Default::default()
    })
    .await;
    let user = env.user("user").await;
    env.login(&user, "alice").await;
    let room = only_portal(&user, &[]).await;

    // The first message hangs at the remote network, holding the room's
    // queue; the second is stored behind it and answered with a 200.
    env.echo
        .service
        .set_send_delay("alice", Duration::from_secs(3600));
    user.send_text(&room, "first").await;
    until(WAIT, "the first message to be taken", || async {
        (pending(&env, &room).await == 1).then_some(())
    })
    .await;
    user.send_text(&room, "second").await;
    until(WAIT, "the second message to be stored", || async {
        (pending(&env, &room).await == 2).then_some(())
    })
    .await;
    // Killed: no shutdown, no flush, the homeserver considers both done.
    env.kill_host();
    env.echo.service.set_send_delay("alice", Duration::ZERO);
    env.start_host().await;

    user.wait_for_body(&room, "echo: second").await;
    assert_eq!(remote_count(&env, "c1", "alice", "second"), 1);
    // The first was handed to the connector before the kill: it is never
    // sent twice, and if it did not get through the room says so (that it
    // may not have been delivered, or, if the connector's call timed out
    // before the kill, that it was not).
    let first = remote_count(&env, "c1", "alice", "first");
    assert!(first <= 1);
    if first == 0 {
        let notice = user.wait_for_text(&room, "delivered").await;
        assert!(notice.starts_with('⚠'), "{notice}");
    }
    // Another message shows the queue is flowing and nothing else came
    // back from before the kill.
    user.send_text(&room, "third").await;
    user.wait_for_body(&room, "echo: third").await;
    assert_eq!(remote_count(&env, "c1", "alice", "second"), 1);
    assert_eq!(pending(&env, &room).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_synapse_restarts_and_reuses_transaction_ids_new_events_are_still_handled() {
    let mut env = BridgeEnv::start().await;
    let user = env.user("user").await;
    env.login(&user, "alice").await;
    let room = only_portal(&user, &[]).await;
    user.send_text(&room, "before the restart").await;
    user.wait_for_body(&room, "echo: before the restart").await;

    // Synapse on SQLite numbers its appservice transactions from 1 again.
    env.synapse.restart().await;
    user.send_text(&room, "after the restart").await;
    user.wait_for_body(&room, "echo: after the restart").await;
    assert_eq!(remote_count(&env, "c1", "alice", "after the restart"), 1);
    assert_eq!(remote_count(&env, "c1", "alice", "before the restart"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_fails_for_good_is_told_to_the_room_and_listed_for_operators() {
    let env = BridgeEnv::start().await;
    let user = env.user("user").await;
    env.login(&user, "alice").await;
    let room = only_portal(&user, &[]).await;
    // The remote network forgets the login: sending fails for good.
    env.echo.service.revoke_tokens("alice");
    let event = user.send_text(&room, "lost in transit").await;

    let notice = user.wait_for_text(&room, "not delivered").await;
    assert!(notice.starts_with('⚠'), "{notice}");
    let (status, inbound) = env.admin(reqwest::Method::GET, "/inbound").await;
    assert_eq!(status, 200);
    let letters = inbound["dead_letters"].as_array().unwrap();
    let letter = letters
        .iter()
        .find(|l| l["event_id"] == event.as_str())
        .unwrap_or_else(|| panic!("{event} is not among {letters:?}"));
    assert_eq!(letter["room_id"], room.as_str());
    assert!(
        letter["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not delivered")),
        "{letter}"
    );
    assert_eq!(inbound["pending"].get(&room), None::<&Value>);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_arrives_while_its_plugin_is_unloaded_waits_and_is_delivered_once() {
    let env = BridgeEnv::start().await;
    let user = env.user("user").await;
    env.login(&user, "alice").await;
    let room = only_portal(&user, &[]).await;
    let (status, _) = env.admin(reqwest::Method::DELETE, "/plugins/echo").await;
    assert_eq!(status, 200);
    user.send_text(&room, "while away").await;
    // Stored, and waiting for the plugin rather than failed.
    until(WAIT, "the message to be stored", || async {
        (pending(&env, &room).await == 1).then_some(())
    })
    .await;
    assert_eq!(remote_count(&env, "c1", "alice", "while away"), 0);

    let body = serde_json::json!({ "path": env.plugin_file("echo") });
    let (status, loaded) = env
        .admin_with(reqwest::Method::POST, "/plugins", body)
        .await;
    assert_eq!(status, 200, "{loaded}");
    user.wait_for_body(&room, "echo: while away").await;
    assert_eq!(remote_count(&env, "c1", "alice", "while away"), 1);
    assert!(
        !user
            .bodies(&room)
            .await
            .iter()
            .any(|b| b.contains("not delivered")),
        "a waiting message is not a failed one"
    );
}
