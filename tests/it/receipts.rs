//! Read receipts and typing both ways, against a real Synapse.

use std::time::Duration;

use serde_json::Value;
use weft_tests::bridge::BridgeEnv;
use weft_tests::matrix::MatrixUser;
use weft_tests::until;

use echo_service::ActivityKind;

const WAIT: Duration = Duration::from_secs(30);
const BOT_GHOST: &str = "@echo_echo:localhost";

async fn alice_room(env: &BridgeEnv, user: &MatrixUser) -> String {
    env.login(user, "alice").await;
    let room = user.wait_for_rooms(1, &[]).await.remove(0);
    user.wait_for_body(&room, "Hi! I echo what you say.").await;
    room
}

/// The room's ephemeral event of `kind`, as `/sync` shows it.
async fn ephemeral(user: &MatrixUser, room: &str, kind: &str) -> Option<Value> {
    let synced = user.synced_room(room).await;
    synced["ephemeral"]["events"]
        .as_array()?
        .iter()
        .find(|e| e["type"] == kind)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_typing_and_read_markers_show_as_the_ghost_in_the_right_portal() {
    let env = BridgeEnv::start().await;
    let user = env.user("user").await;
    let room = alice_room(&env, &user).await;

    env.echo.service.set_typing("c1", "echo", true).unwrap();
    until(WAIT, "the ghost typing", || async {
        let typing = ephemeral(&user, &room, "m.typing").await?;
        typing["content"]["user_ids"]
            .as_array()?
            .contains(&Value::from(BOT_GHOST))
            .then_some(())
    })
    .await;
    env.echo.service.set_typing("c1", "echo", false).unwrap();
    // Remote events are bridged in order: once a later message is in, the
    // stop was sent (long before the 30 s the typing was announced for).
    env.echo.service.say("c1", "echo", "done typing");
    user.wait_for_body(&room, "done typing").await;
    let typing = ephemeral(&user, &room, "m.typing").await;
    let still = typing
        .and_then(|t| t["content"]["user_ids"].as_array().cloned())
        .unwrap_or_default();
    assert!(!still.contains(&Value::from(BOT_GHOST)), "{still:?}");

    // The echo bot reads every message it answers: the ghost's receipt
    // lands on the user's message.
    let mine = user.send_text(&room, "read me").await;
    user.wait_for_body(&room, "echo: read me").await;
    until(WAIT, "the ghost's read receipt", || async {
        let receipts = ephemeral(&user, &room, "m.receipt").await?;
        receipts["content"][&mine]["m.read"]
            .get(BOT_GHOST)
            .map(drop)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owners_read_receipts_and_typing_on_matrix_reach_the_connector() {
    let env = BridgeEnv::start().await;
    let user = env.user("user").await;
    let room = alice_room(&env, &user).await;
    let remote_id = env.echo.service.say("c1", "echo", "unread");
    let event = user.wait_for_body(&room, "unread").await;
    let alice_did = |kind: ActivityKind| {
        let service = env.echo.service.clone();
        move || {
            let kind = kind.clone();
            let service = service.clone();
            async move {
                service
                    .activity("c1")
                    .into_iter()
                    .find(|a| a.actor == "alice" && a.kind == kind)
            }
        }
    };

    user.read_up_to(&room, event["event_id"].as_str().unwrap())
        .await;
    until(
        WAIT,
        "alice's read marker",
        alice_did(ActivityKind::Read { up_to: remote_id }),
    )
    .await;

    user.set_typing(&room, true).await;
    until(
        WAIT,
        "alice typing",
        alice_did(ActivityKind::Typing { typing: true }),
    )
    .await;
    user.set_typing(&room, false).await;
    until(
        WAIT,
        "alice no longer typing",
        alice_did(ActivityKind::Typing { typing: false }),
    )
    .await;
}
