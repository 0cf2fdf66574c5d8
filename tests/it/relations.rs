//! Edits, reactions, redactions and replies both ways, and remote HTML,
//! against a real Synapse.

use std::time::Duration;

use serde_json::Value;
use weft_tests::bridge::BridgeEnv;
use weft_tests::matrix::MatrixUser;
use weft_tests::until;

const WAIT: Duration = Duration::from_secs(30);
const BOT_GHOST: &str = "@echo_echo:localhost";

async fn alice_room(env: &BridgeEnv, user: &MatrixUser) -> String {
    env.login(user, "alice").await;
    let room = user.wait_for_rooms(1, &[]).await.remove(0);
    user.wait_for_body(&room, "Hi! I echo what you say.").await;
    room
}

/// The first event of `room` that `matches`, once there is one.
async fn wait_for_event(
    user: &MatrixUser,
    room: &str,
    what: &str,
    matches: impl Fn(&Value) -> bool,
) -> Value {
    until(WAIT, what, || async {
        user.events(room).await.into_iter().find(|e| matches(e))
    })
    .await
}

fn is_redacted(event: &Value) -> bool {
    event["unsigned"].get("redacted_because").is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_edits_reactions_replies_and_deletions_land_on_the_right_matrix_events() {
    let env = BridgeEnv::start().await;
    let user = env.user("user").await;
    let room = alice_room(&env, &user).await;
    let service = &env.echo.service;

    let remote_id = service.say("c1", "echo", "original");
    let original = user.wait_for_body(&room, "original").await;
    let original_id = original["event_id"].as_str().unwrap().to_owned();

    service.edit("c1", &remote_id, "edited").unwrap();
    let edit = wait_for_event(&user, &room, "the edit", |e| {
        e["content"]["m.relates_to"]["rel_type"] == "m.replace"
    })
    .await;
    assert_eq!(
        edit["content"]["m.relates_to"]["event_id"],
        original_id.as_str()
    );
    assert_eq!(edit["content"]["m.new_content"]["body"], "edited");
    assert_eq!(edit["sender"], BOT_GHOST);

    service
        .react("c1", &remote_id, "echo", "👍", false)
        .unwrap();
    let reaction =
        wait_for_event(&user, &room, "the reaction", |e| e["type"] == "m.reaction").await;
    assert_eq!(
        reaction["content"]["m.relates_to"]["event_id"],
        original_id.as_str()
    );
    assert_eq!(reaction["content"]["m.relates_to"]["key"], "👍");
    assert_eq!(reaction["sender"], BOT_GHOST);
    let reaction_id = reaction["event_id"].as_str().unwrap().to_owned();

    // Taking the reaction back redacts it.
    service.react("c1", &remote_id, "echo", "👍", true).unwrap();
    wait_for_event(&user, &room, "the reaction's redaction", |e| {
        e["event_id"] == reaction_id.as_str() && is_redacted(e)
    })
    .await;

    service.reply("c1", "echo", "a reply", &remote_id);
    let reply = user.wait_for_body(&room, "a reply").await;
    assert_eq!(
        reply["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        original_id.as_str()
    );

    service.delete("c1", &remote_id).unwrap();
    wait_for_event(&user, &room, "the original's redaction", |e| {
        e["event_id"] == original_id.as_str() && is_redacted(e)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_edits_reactions_replies_and_redactions_reach_the_remote_messages_they_target() {
    let env = BridgeEnv::start().await;
    let user = env.user("user").await;
    let room = alice_room(&env, &user).await;
    let service = &env.echo.service;
    let remote = |text: &str| service.messages("c1").into_iter().find(|m| m.text == text);

    let sent = user.send_text(&room, "from matrix").await;
    let answer = user.wait_for_body(&room, "echo: from matrix").await;
    let answer_id = answer["event_id"].as_str().unwrap().to_owned();
    let mine = remote("from matrix").expect("the message reached the chat");
    let bots = remote("echo: from matrix").unwrap();

    user.edit(&room, &sent, "edited on matrix").await;
    until(WAIT, "the remote edit", || async {
        service
            .messages("c1")
            .into_iter()
            .find(|m| m.id == mine.id && m.text == "edited on matrix" && m.edits == 1)
    })
    .await;

    let reaction = user.react(&room, &answer_id, "🎉").await;
    until(WAIT, "the remote reaction", || async {
        service
            .messages("c1")
            .into_iter()
            .find(|m| m.id == bots.id && m.reactions.get("🎉") == Some(&vec!["alice".to_owned()]))
    })
    .await;
    user.redact(&room, &reaction).await;
    until(WAIT, "the remote reaction's removal", || async {
        service
            .messages("c1")
            .into_iter()
            .find(|m| m.id == bots.id && m.reactions.is_empty())
    })
    .await;

    user.reply(&room, &answer_id, "replying").await;
    let reply = until(WAIT, "the remote reply", || async { remote("replying") }).await;
    assert_eq!(reply.reply_to.as_deref(), Some(bots.id.as_str()));

    user.redact(&room, &sent).await;
    until(WAIT, "the remote deletion", || async {
        service
            .messages("c1")
            .into_iter()
            .find(|m| m.id == mine.id && m.deleted)
    })
    .await;
    // Each went once: one edit, one message of each text.
    let texts: Vec<String> = service.messages("c1").into_iter().map(|m| m.text).collect();
    assert_eq!(texts.iter().filter(|t| *t == "replying").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_remote_html_reaches_matrix_without_scripts_handlers_or_javascript_links() {
    let env = BridgeEnv::start().await;
    let user = env.user("user").await;
    let room = alice_room(&env, &user).await;
    let hostile = concat!(
        "<b>bold</b><script>alert(1)</script>",
        "<img src=\"x\" onerror=\"alert(2)\">",
        "<a href=\"javascript:alert(3)\">click</a>",
        "<a href=\"https://example.org/\" onclick=\"alert(4)\">fine</a>",
        "<p style=\"position:fixed\">styled</p>",
    );
    env.echo
        .service
        .say_html("c1", "echo", "the plain body", hostile);
    let event = user.wait_for_body(&room, "the plain body").await;
    let html = event["content"]["formatted_body"].as_str().unwrap();
    assert_eq!(event["content"]["format"], "org.matrix.custom.html");
    assert!(html.contains("<b>bold</b>"), "{html}");
    assert!(html.contains("https://example.org/"), "{html}");
    for forbidden in [
        "<script",
        "alert",
        "onerror",
        "onclick",
        "javascript:",
        "style=",
    ] {
        assert!(!html.contains(forbidden), "`{forbidden}` survived: {html}");
    }
}
