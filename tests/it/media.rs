//! Files both ways against a real Synapse: remote files are fetched under
//! the plugin's grant, uploaded and sent with their info; Matrix files are
//! downloaded with authenticated media and handed to the connector; the
//! operator's size limit holds both ways.

use std::time::Duration;

use weft_tests::bridge::{BridgeEnv, BridgeOptions};
use weft_tests::matrix::MatrixUser;
use weft_tests::until;

const WAIT: Duration = Duration::from_secs(30);

async fn alice_room(env: &BridgeEnv, user: &MatrixUser) -> String {
    env.login(user, "alice").await;
    let room = user.wait_for_rooms(1, &[]).await.remove(0);
    user.wait_for_body(&room, "Hi! I echo what you say.").await;
    room
}

/// Bytes that are not all the same, so a truncated or reordered copy shows.
fn file_bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_picture_arrives_as_m_image_with_its_info_uploaded_as_the_ghost() {
    let env = BridgeEnv::start().await;
    let user = env.user("user").await;
    let room = alice_room(&env, &user).await;
    let picture = file_bytes(3000);
    env.echo.service.say_file(
        "c1",
        "echo",
        "cat.png",
        "image/png",
        picture.clone(),
        "a cat",
    );

    let event = user.wait_for_body(&room, "a cat").await;
    let content = &event["content"];
    assert_eq!(content["msgtype"], "m.image");
    assert_eq!(content["filename"], "cat.png");
    assert_eq!(content["info"]["mimetype"], "image/png");
    assert_eq!(content["info"]["size"], 3000);
    assert_eq!(event["sender"], "@echo_echo:localhost");
    let url = content["url"].as_str().unwrap();
    assert_eq!(user.download(url).await, picture);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_sent_on_matrix_reaches_the_remote_chat_and_comes_back_as_the_same_file() {
    let env = BridgeEnv::start().await;
    let user = env.user("user").await;
    let room = alice_room(&env, &user).await;
    let notes = file_bytes(5000);
    user.send_file(
        &room,
        "m.file",
        "notes.txt",
        "text/plain",
        notes.clone(),
        Some("my notes"),
    )
    .await;

    // The remote chat has it, with its caption and its bytes...
    let sent = until(WAIT, "the file in the remote chat", || async {
        env.echo
            .service
            .messages("c1")
            .into_iter()
            .find(|m| m.sender == "alice" && m.file.is_some())
    })
    .await;
    assert_eq!(sent.text, "my notes");
    let file = sent.file.unwrap();
    assert_eq!(file.name, "notes.txt");
    let (_, mime_type, bytes) = env.echo.service.file(&file.id).unwrap();
    assert_eq!(mime_type, "text/plain");
    assert_eq!(bytes, notes);
    // ...and the echo bot's copy comes back to Matrix as a file.
    let echo = user.wait_for_body(&room, "echo: notes.txt").await;
    assert_eq!(echo["content"]["msgtype"], "m.file");
    let url = echo["content"]["url"].as_str().unwrap();
    assert_eq!(user.download(url).await, notes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_beyond_the_operators_limit_are_refused_both_ways_with_a_clear_message() {
    let env = BridgeEnv::start_with(BridgeOptions {
        echo_grants: vec!["max-media-bytes = 1024".into()],
        ..Default::default()
    })
    .await;
    let user = env.user("user").await;
    let room = alice_room(&env, &user).await;

    user.send_file(
        &room,
        "m.file",
        "big.bin",
        "application/octet-stream",
        file_bytes(4096),
        None,
    )
    .await;
    let notice = user.wait_for_text(&room, "larger than the limit").await;
    assert!(notice.contains("1.0 KiB"), "{notice}");

    env.echo.service.say_file(
        "c1",
        "echo",
        "huge.bin",
        "application/octet-stream",
        file_bytes(4096),
        "",
    );
    let text = user.wait_for_text(&room, "huge.bin").await;
    assert!(text.contains("not bridged"), "{text}");
    // A small file still goes through.
    env.echo.service.say_file(
        "c1",
        "echo",
        "tiny.txt",
        "text/plain",
        file_bytes(100),
        "tiny",
    );
    let tiny = user.wait_for_body(&room, "tiny").await;
    assert_eq!(tiny["content"]["msgtype"], "m.file");
    assert!(
        env.echo
            .service
            .messages("c1")
            .iter()
            .all(|m| m.file.as_ref().is_none_or(|f| f.name != "big.bin")),
        "the oversized Matrix file must not reach the remote chat"
    );
}
