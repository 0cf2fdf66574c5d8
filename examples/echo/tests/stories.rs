//! The echo connector's own tests, on the weft-testing harness: the
//! component built from this crate, a fake echo service answering from
//! canned responses, and a manual clock for the poll timer.

use serde_json::json;
use weft_testing::{
    ChatKind, Harness, PluginError, RecordedRequest, RemoteEvent, Reply, StateKind, StepParams,
    WorkError,
};

const SERVICE: &str = "https://echo.test";

async fn echo() -> Harness {
    Harness::builder(weft_testing::plugin!())
        .setting("base-url", SERVICE)
        .grant_http(SERVICE)
        .start()
        .await
        .expect("the echo connector loads")
}

fn alice() -> serde_json::Value {
    json!({ "token": "alice-token", "user_id": "alice" })
}

/// The service as a new login sees it: one group chat, and an activity
/// log whose newest entry is number 5.
fn a_service_with_one_chat(harness: &Harness) {
    let http = harness.http();
    http.on(
        "GET",
        &format!("{SERVICE}/api/chats"),
        Reply::json(
            200,
            json!([{
                "id": "lunch",
                "name": "Lunch",
                "kind": "group",
                "members": [
                    { "id": "alice", "display_name": "Alice" },
                    { "id": "bob", "display_name": "Bob" },
                ],
            }]),
        ),
    );
    http.on_fn("GET", &format!("{SERVICE}/api/events"), |request| {
        let after: u64 = request
            .query("after")
            .and_then(|a| a.parse().ok())
            .unwrap_or(0);
        // Entry 3 is older than the login; nothing came after 5 yet.
        let events = if after < 5 {
            vec![bob_says(3, "old news")]
        } else {
            vec![]
        };
        Reply::json(
            200,
            json!({ "events": events, "has_more": false, "latest": 5 }),
        )
    });
}

fn bob_says(seq: u64, text: &str) -> serde_json::Value {
    json!({
        "seq": seq,
        "chat_id": "lunch",
        "actor": { "id": "bob", "display_name": "Bob" },
        "ts": 1_700_000_000_000u64 + seq,
        "type": "message",
        "message": {
            "id": format!("m{seq}"),
            "seq": seq,
            "chat_id": "lunch",
            "sender": { "id": "bob", "display_name": "Bob" },
            "text": text,
            "html": null,
            "reply_to": null,
            "ts": 1_700_000_000_000u64 + seq,
        },
    })
}

fn bearer(request: &RecordedRequest) -> Option<&str> {
    request.header("authorization")
}

#[tokio::test]
async fn a_password_login_completes_with_the_services_token_as_metadata() {
    let harness = echo().await;
    harness.http().on(
        "POST",
        &format!("{SERVICE}/api/login"),
        Reply::json(
            200,
            json!({ "token": "alice-token", "user_id": "alice", "display_name": "Alice" }),
        ),
    );

    let (mut flow, step) = harness.login_flow("password").await.unwrap();
    assert!(matches!(step.params, StepParams::UserInput(_)));
    let done = flow
        .submit(&step, &[("username", "alice"), ("password", "hunter2")])
        .await
        .unwrap();

    let StepParams::Complete(complete) = &done.params else {
        panic!("the login did not complete: {done:?}");
    };
    assert_eq!(complete.login_id, "alice");
    assert_eq!(complete.remote_name, "Alice");
    let sent = &harness.http().requests_to(&format!("{SERVICE}/api/login"))[0];
    assert_eq!(
        sent.json(),
        json!({ "username": "alice", "password": "hunter2" })
    );
    let login = harness.complete(&done).await.unwrap();
    assert_eq!(login.metadata(), alice());
}

#[tokio::test]
async fn a_wrong_password_is_an_error_the_user_can_read() {
    let harness = echo().await;
    harness
        .http()
        .on("POST", &format!("{SERVICE}/api/login"), Reply::status(401));

    let (mut flow, step) = harness.login_flow("password").await.unwrap();
    let error = flow
        .submit(&step, &[("username", "alice"), ("password", "wrong")])
        .await
        .unwrap_err();

    assert!(
        error.to_string().contains("Wrong user name or password"),
        "{error}"
    );
}

#[tokio::test]
async fn a_new_login_announces_its_chats_and_bridges_only_what_comes_after_it() {
    let harness = echo().await;
    a_service_with_one_chat(&harness);
    let login = harness.login("alice", alice()).await.unwrap();

    login.fire("poll").await.unwrap();

    let chats = login.chats();
    assert_eq!(chats.len(), 1);
    assert_eq!(chats[0].chat_id, "lunch");
    assert_eq!(chats[0].kind, ChatKind::Group);
    assert!(
        chats[0]
            .members
            .iter()
            .any(|m| m.is_me && m.user.id == "alice")
    );
    // The login starts at the newest entry: entry 3 is a portal's
    // history, never a new message.
    assert!(login.messages().is_empty());
    assert!(
        harness
            .http()
            .requests()
            .iter()
            .all(|r| r.query("after").as_deref() != Some("0"))
    );
    assert_eq!(login.kv()["cursor"], b"5");
    assert_eq!(
        login.states().last().map(|s| s.state),
        Some(StateKind::Connected)
    );
    for request in harness.http().requests() {
        assert_eq!(
            bearer(&request),
            Some("Bearer alice-token"),
            "{}",
            request.url
        );
    }
}

#[tokio::test]
async fn a_message_reaches_matrix_once_and_the_cursor_moves_past_it() {
    let harness = echo().await;
    a_service_with_one_chat(&harness);
    let login = harness.login("alice", alice()).await.unwrap();
    login.fire("poll").await.unwrap();

    // Bob writes: the log now has entry 7.
    harness.http().once(
        "GET",
        &format!("{SERVICE}/api/events?after=5&limit=100"),
        Reply::json(
            200,
            json!({ "events": [bob_says(7, "soup!")], "has_more": false, "latest": 7 }),
        ),
    );
    login.fire("poll").await.unwrap();
    login.fire("poll").await.unwrap();

    let messages = login.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0].text, "soup!");
    assert_eq!(messages[0].message_id, "m7");
    assert_eq!(messages[0].sender.user.id, "bob");
    assert!(!messages[0].sender.is_from_me);
    assert_eq!(login.kv()["cursor"], b"7");
    // The second poll asked from 7 on.
    let last = harness.http().requests().pop().unwrap();
    assert_eq!(last.query("after").as_deref(), Some("7"));
}

#[tokio::test]
async fn a_message_from_matrix_is_posted_to_its_chat() {
    let harness = echo().await;
    a_service_with_one_chat(&harness);
    harness.http().on(
        "POST",
        &format!("{SERVICE}/api/chats/lunch/messages"),
        Reply::json(200, json!({ "id": "m8" })),
    );
    let login = harness.login("alice", alice()).await.unwrap();

    let remote_id = login.send_text("lunch", "noodles").await.unwrap();

    assert_eq!(remote_id, "m8");
    let posted = &harness
        .http()
        .requests_to(&format!("{SERVICE}/api/chats/lunch/messages"))[0];
    assert_eq!(posted.json()["text"], "noodles");
    assert_eq!(bearer(posted), Some("Bearer alice-token"));
}

#[tokio::test]
async fn a_rejected_token_is_reported_once_and_stops_the_poll_until_relogin() {
    let harness = echo().await;
    harness
        .http()
        .on("GET", &format!("{SERVICE}/api/chats"), Reply::status(401));
    let login = harness.login("alice", alice()).await.unwrap();

    let error = login.fire("poll").await.unwrap_err();

    assert!(
        matches!(error, WorkError::Plugin(PluginError::BadCredentials(_))),
        "{error:?}"
    );
    let rejected: Vec<_> = login
        .states()
        .into_iter()
        .filter(|s| s.state == StateKind::BadCredentials)
        .collect();
    assert_eq!(rejected.len(), 1);
    assert_eq!(
        rejected[0].error_code.as_deref(),
        Some("echo-token-rejected")
    );
    // The timers are paused: the poll does not run again.
    let again = login.fire("poll").await.unwrap_err();
    assert!(matches!(again, WorkError::Unavailable(_)), "{again:?}");
    assert_eq!(
        harness
            .http()
            .requests_to(&format!("{SERVICE}/api/chats"))
            .len(),
        1
    );
}

#[tokio::test]
async fn an_unreachable_service_is_a_transient_disconnect() {
    let harness = echo().await;
    // No canned response: every request fails to connect.
    let login = harness.login("alice", alice()).await.unwrap();

    login.fire("poll").await.unwrap_err();

    let state = login.states().pop().unwrap();
    assert_eq!(state.state, StateKind::TransientDisconnect);
    assert_eq!(state.error_code.as_deref(), Some("echo-unreachable"));
    assert_eq!(harness.http().unanswered().len(), 1);
    assert!(
        login
            .events()
            .iter()
            .all(|e| matches!(e, RemoteEvent::BridgeState(_)))
    );
}
