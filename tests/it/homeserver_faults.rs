//! A homeserver that rate-limits, fails and drops connections: messages
//! still arrive, in order, once.

use weft_tests::bridge::{BridgeEnv, BridgeOptions};
use weft_tests::fault_proxy::Fault;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_homeserver_that_drops_fails_and_rate_limits_every_message_arrives_once_in_order()
{
    let env = BridgeEnv::start_with(BridgeOptions {
        fault_proxy: true,
        ..Default::default()
    })
    .await;
    let user = env.user("user").await;
    env.login(&user, "alice").await;
    let room = user.wait_for_rooms(1, &[]).await.remove(0);
    user.wait_for_body(&room, "Hi! I echo what you say.").await;

    let proxy = env.fault_proxy.as_ref().unwrap();
    proxy.arm();
    let sent: Vec<String> = (0..16).map(|n| format!("message {n}")).collect();
    for text in &sent {
        env.echo.service.say("c1", "echo", text);
    }
    user.wait_for_body(&room, "message 15").await;

    let bodies: Vec<String> = user
        .bodies(&room)
        .await
        .into_iter()
        .filter(|b| b.starts_with("message "))
        .collect();
    assert_eq!(bodies, sent, "every message once, in order");
    let injected: Vec<Fault> = proxy.injected().into_iter().map(|(f, _)| f).collect();
    for fault in [
        Fault::RateLimited,
        Fault::ServerError,
        Fault::DroppedBefore,
        Fault::DroppedAfter,
    ] {
        assert!(
            injected.contains(&fault),
            "{fault:?} was never injected: {injected:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_that_arrive_while_the_homeserver_is_down_for_20_s_wait_and_arrive_once_in_order()
{
    let env = BridgeEnv::start_with(BridgeOptions {
        fault_proxy: true,
        ..Default::default()
    })
    .await;
    let user = env.user("user").await;
    env.login(&user, "alice").await;
    let room = user.wait_for_rooms(1, &[]).await.remove(0);
    user.wait_for_body(&room, "Hi! I echo what you say.").await;
    let proxy = env.fault_proxy.as_ref().unwrap();

    // The homeserver goes away; the remote side goes on talking.
    proxy.set_down(true);
    let sent: Vec<String> = (0..100).map(|n| format!("while down {n:03}")).collect();
    for text in &sent {
        env.echo.service.say("c1", "echo", text);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // 20 s later it is back.
    let back = std::time::Instant::now();
    proxy.set_down(false);
    user.wait_for_body(&room, "while down 099").await;
    let bodies: Vec<String> = user
        .all_bodies(&room)
        .await
        .into_iter()
        .filter(|b| b.starts_with("while down "))
        .collect();
    println!(
        "homeserver down 20 s: {} sent, {} delivered, all {} s after it came back",
        sent.len(),
        bodies.len(),
        back.elapsed().as_secs()
    );
    assert_eq!(bodies, sent, "every message once, in order");
}
