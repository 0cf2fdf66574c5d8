//! Crashes with messages in flight both ways: the host is killed with
//! SIGKILL (no shutdown, no flush) several times while a remote user and
//! a Matrix user talk, and nothing is lost, duplicated or reordered.
//! Prints its counts (`cargo test chaos -- --nocapture`).

use std::collections::BTreeMap;
use std::time::Duration;

use weft_tests::bridge::{BridgeEnv, BridgeOptions};
use weft_tests::until;

const FROM_REMOTE: usize = 200;
const FROM_MATRIX: usize = 60;
const KILLS: usize = 3;
const WAIT: Duration = Duration::from_secs(240);

/// How many times each of `expected` occurs in `seen`, and whether those
/// that occur do so in `expected`'s order.
fn tally(expected: &[String], seen: &[String]) -> (usize, usize, bool) {
    let mut counts: BTreeMap<&str, usize> = expected.iter().map(|e| (e.as_str(), 0)).collect();
    let mut order = Vec::new();
    for body in seen {
        if let Some(count) = counts.get_mut(body.as_str()) {
            *count += 1;
            order.push(body.clone());
        }
    }
    let lost = counts.values().filter(|c| **c == 0).count();
    let duplicated = counts.values().map(|c| c.saturating_sub(1)).sum();
    let mut in_order = order.clone();
    in_order.sort_by_key(|body| expected.iter().position(|e| e == body));
    (lost, duplicated, in_order == order)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_three_times_while_messages_flow_both_ways_loses_and_duplicates_nothing() {
    let mut env = BridgeEnv::start_with(BridgeOptions {
        process: true,
        ..Default::default()
    })
    .await;
    let user = env.user("user").await;
    env.login(&user, "alice").await;
    let room = user.wait_for_rooms(1, &[]).await.remove(0);
    user.wait_for_body(&room, "Hi! I echo what you say.").await;
    let chat = env.echo.echo_chat("alice");

    let remote: Vec<String> = (0..FROM_REMOTE).map(|i| format!("remote {i:03}")).collect();
    let matrix: Vec<String> = (0..FROM_MATRIX).map(|i| format!("matrix {i:03}")).collect();
    let echoes: Vec<String> = matrix.iter().map(|m| format!("echo: {m}")).collect();

    // The remote user talks at about 100 messages a second; the Matrix user
    // as fast as the homeserver takes them.
    let service = env.echo.service.clone();
    let talker = {
        let (chat, remote) = (chat.clone(), remote.clone());
        tokio::spawn(async move {
            for text in remote {
                service.say(&chat, echo_service::ECHO_BOT, &text);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let writer = {
        let (user, room, matrix) = (user.clone(), room.clone(), matrix.clone());
        tokio::spawn(async move {
            for text in matrix {
                user.send_text(&room, &text).await;
            }
        })
    };

    // Kill the host at spread-out points, each time once it has bridged
    // more since the last restart.
    for kill in 0..KILLS {
        let before = user.all_bodies(&room).await.len();
        until(
            WAIT,
            "the host to bridge more before the next kill",
            || async {
                (user.all_bodies(&room).await.len() >= before + 20 + kill * 7).then_some(())
            },
        )
        .await;
        env.kill_host();
        tokio::time::sleep(Duration::from_millis(200 + 150 * kill as u64)).await;
        env.start_host().await;
    }
    talker.await.unwrap();
    writer.await.unwrap();

    // Everything arrives: the remote messages and the echoes in Matrix,
    // the Matrix messages at the remote side.
    until(WAIT, "every message to arrive", || async {
        let bodies = user.all_bodies(&room).await;
        let (lost_remote, ..) = tally(&remote, &bodies);
        let (lost_echoes, ..) = tally(&echoes, &bodies);
        (lost_remote == 0 && lost_echoes == 0).then_some(())
    })
    .await;
    let bodies = user.all_bodies(&room).await;
    let at_remote: Vec<String> = env
        .echo
        .service
        .messages(&chat)
        .into_iter()
        .filter(|m| m.sender == "alice" && !m.deleted)
        .map(|m| m.text)
        .collect();

    let (remote_lost, remote_duplicated, remote_ordered) = tally(&remote, &bodies);
    let (echo_lost, echo_duplicated, echo_ordered) = tally(&echoes, &bodies);
    let (matrix_lost, matrix_duplicated, matrix_ordered) = tally(&matrix, &at_remote);
    println!(
        "chaos: {KILLS} SIGKILLs; remote→Matrix sent {} lost {remote_lost} duplicated {remote_duplicated}; \
         Matrix→remote sent {} lost {matrix_lost} duplicated {matrix_duplicated}; \
         echoes back lost {echo_lost} duplicated {echo_duplicated}",
        remote.len(),
        matrix.len(),
    );
    assert_eq!((remote_lost, remote_duplicated), (0, 0));
    assert_eq!((matrix_lost, matrix_duplicated), (0, 0));
    assert_eq!((echo_lost, echo_duplicated), (0, 0));
    assert!(remote_ordered && matrix_ordered && echo_ordered);
}
