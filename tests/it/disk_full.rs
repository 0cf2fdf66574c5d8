//! A full disk: while the host cannot write it takes no new work (the
//! homeserver is told to retry, plugins are told to try later), loses
//! nothing, and once space returns everything flows, once and in order.

use std::time::Duration;

use weft_tests::bridge::{BridgeEnv, BridgeOptions};
use weft_tests::failing_storage::DiskFull;
use weft_tests::until;

const WAIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_disk_full_nothing_is_lost_and_everything_flows_once_space_returns() {
    let disk = DiskFull::default();
    let env = BridgeEnv::start_with(BridgeOptions {
        disk: Some(disk.clone()),
        ..Default::default()
    })
    .await;
    let user = env.user("user").await;
    env.login(&user, "alice").await;
    let room = user.wait_for_rooms(1, &[]).await.remove(0);
    user.wait_for_body(&room, "Hi! I echo what you say.").await;
    let registration = weft_host::matrix::registration::read(&env.registration()).unwrap();

    disk.set(true);
    // A transaction the host cannot store is refused with a 500, so the
    // homeserver keeps it and retries.
    let refused = reqwest::Client::new()
        .put(format!(
            "{}/_matrix/app/v1/transactions/while-full",
            env.appservice_url()
        ))
        .bearer_auth(&registration.hs_token)
        .json(&serde_json::json!({ "events": [{
            "type": "m.room.message", "event_id": "$while-full", "room_id": room,
            "sender": user.user_id, "origin_server_ts": 1,
            "content": { "msgtype": "m.text", "body": "direct while full" },
        }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 500);
    // Both ways while the disk stays full.
    let remote: Vec<String> = (0..20)
        .map(|n| format!("remote while full {n:02}"))
        .collect();
    for text in &remote {
        env.echo.service.say("c1", "echo", text);
    }
    let matrix: Vec<String> = (0..5).map(|n| format!("matrix while full {n}")).collect();
    for text in &matrix {
        user.send_text(&room, text).await;
    }
    // The host met the full disk more than once (its polls and the
    // homeserver's retries were refused), then space returns.
    until(WAIT, "the host to be refused writes", || async {
        (disk.refused() >= 10).then_some(())
    })
    .await;
    let refused_writes = disk.refused();
    disk.set(false);

    let echoes: Vec<String> = matrix.iter().map(|m| format!("echo: {m}")).collect();
    until(WAIT, "everything to arrive", || async {
        let bodies = user.all_bodies(&room).await;
        (remote.iter().chain(&echoes).all(|b| bodies.contains(b))).then_some(())
    })
    .await;
    let bodies = user.all_bodies(&room).await;
    for expected in [&remote, &echoes] {
        let arrived: Vec<&String> = bodies.iter().filter(|b| expected.contains(b)).collect();
        assert_eq!(
            arrived,
            expected.iter().collect::<Vec<_>>(),
            "each once, in order"
        );
    }
    let at_remote: Vec<String> = env
        .echo
        .service
        .messages("c1")
        .into_iter()
        .filter(|m| m.sender == "alice")
        .map(|m| m.text)
        .collect();
    for text in &matrix {
        assert_eq!(at_remote.iter().filter(|t| *t == text).count(), 1, "{text}");
    }
    println!(
        "disk full: {refused_writes} writes refused; {} remote and {} Matrix messages, all delivered once, in order",
        remote.len(),
        matrix.len()
    );
}
