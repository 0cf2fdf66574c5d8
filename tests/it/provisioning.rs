//! The provisioning API and the management room, against a real Synapse.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use weft_host::logins::{LoginKey, StateEvent};
use weft_tests::bridge::{BridgeEnv, PROVISIONING_SECRET, step_path};
use weft_tests::eventually;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_lists_flows_logs_in_with_both_flows_shows_states_and_logs_out() {
    let env = BridgeEnv::start().await;
    let user = env.user("user").await;

    let (status, flows) = env
        .provision(&user, Method::GET, "/login/flows", None)
        .await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = flows["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["echo:password", "echo:code"]);

    // The password flow: a user_input step with bridgev2's field shapes.
    let (_, step) = env
        .provision(&user, Method::POST, "/login/start/echo:password", None)
        .await;
    assert_eq!(step["type"], "user_input");
    assert_eq!(step["user_input"]["fields"][0]["type"], "username");
    assert_eq!(step["user_input"]["fields"][1]["type"], "password");
    let path = step_path(&step, "user_input");
    // A wrong password is the plugin's "invalid input", shown as it is.
    let (status, error) = env
        .provision(
            &user,
            Method::POST,
            &path,
            Some(json!({ "username": "alice", "password": "nope" })),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("Wrong user name or password"),
        "{error}"
    );
    let (status, done) = env
        .provision(
            &user,
            Method::POST,
            &path,
            Some(json!({ "username": "alice", "password": "pw" })),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(done["complete"]["user_login_id"], "echo:alice");

    // The code flow: display_and_wait, approved on the remote side while
    // the client long-polls.
    let (_, step) = env
        .provision(&user, Method::POST, "/login/start/echo:code", None)
        .await;
    assert_eq!(step["type"], "display_and_wait");
    assert_eq!(step["display_and_wait"]["type"], "code");
    let code = step["display_and_wait"]["data"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = step_path(&step, "display_and_wait");
    // The client long-polls; the user approves on the remote side
    // meanwhile, and the long poll answers with the completed login.
    let (poll, approved) = tokio::join!(env.provision(&user, Method::POST, &path, None), async {
        env.echo.service.approve_code(&code, "bob")
    });
    assert!(approved, "the echo service knows the code");
    let (status, done) = poll;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["complete"]["user_login_id"], "echo:bob");

    let (_, logins) = env.provision(&user, Method::GET, "/logins", None).await;
    assert_eq!(logins["login_ids"], json!(["echo:alice", "echo:bob"]));
    // whoami shows each login's state; both connect.
    let whoami = weft_tests::until(Duration::from_secs(10), "both logins CONNECTED", || async {
        let (_, whoami) = env.provision(&user, Method::GET, "/whoami", None).await;
        let states: Vec<String> = whoami["logins"]
            .as_array()?
            .iter()
            .filter_map(|l| l["state"]["state_event"].as_str().map(str::to_owned))
            .collect();
        (states == ["CONNECTED", "CONNECTED"]).then_some(whoami)
    })
    .await;
    assert_eq!(whoami["bridge_bot"], env.bot());
    assert_eq!(whoami["logins"][0]["name"], "Alice");

    // Logout removes the login and stops its instance, and the connector
    // logged out of the remote service.
    let alice = LoginKey::new("echo", "alice");
    let room = env.portal_room(&alice, "c1").await;
    let (status, _) = env
        .provision(&user, Method::POST, "/logout/echo:alice", None)
        .await;
    assert_eq!(status, 200);
    let (_, logins) = env.provision(&user, Method::GET, "/logins", None).await;
    assert_eq!(logins["login_ids"], json!(["echo:bob"]));
    assert!(env.host().registry().login(&alice).is_none());
    assert!(
        env.host()
            .bridge()
            .unwrap()
            .store
            .portal_of_room(&room)
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_requires_a_valid_token_and_the_shared_secret_acts_for_a_user() {
    let env = BridgeEnv::start().await;
    let user = env.user("user").await;
    let url = format!("{}/_matrix/provision/v3/logins", env.appservice_url());
    let client = reqwest::Client::new();

    // No token.
    assert_eq!(client.get(&url).send().await.unwrap().status(), 401);
    // A token the homeserver does not know.
    let response = client
        .get(&url)
        .bearer_auth("syt_not_a_real_token")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    // A user's real token, claiming to be someone else.
    let response = client
        .get(format!("{url}?user_id=@other:localhost"))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    // The shared secret acts as the given user.
    let response = client
        .get(format!("{url}?user_id={}", user.user_id))
        .bearer_auth(PROVISIONING_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Login steps take at most a megabyte: a body declared larger is
    // refused with the API's JSON error before it is read.
    let answer = raw_request(
        &env.appservice_url(),
        &format!(
            "POST /_matrix/provision/v3/login/step/lp_x/step/user_input HTTP/1.1\r\nHost: localhost\r\n\
             Authorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            user.token,
            2 << 20
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("M_TOO_LARGE"), "{answer}");
    // Starting a login takes no body; one declared at 9 MiB is refused
    // before a byte of it is read (and before the token is checked), not
    // ignored.
    let answer = raw_request(
        &env.appservice_url(),
        &format!(
            "POST /_matrix/provision/v3/login/start/echo:password HTTP/1.1\r\nHost: localhost\r\n\
             Authorization: Bearer {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            user.token,
            9 << 20
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("M_TOO_LARGE"), "{answer}");
    // A user of another server is not permitted by default.
    let response = client
        .get(format!("{url}?user_id=@mallory:evil.example"))
        .bearer_auth(PROVISIONING_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_logs_in_lists_and_logs_out_through_the_management_room() {
    let env = BridgeEnv::start().await;
    let user = env.user("user").await;
    let room = env.management_room(&user).await;

    user.send_text(&room, "login echo:password").await;
    user.wait_for_text(&room, "send your user name").await;
    user.send_text(&room, "alice").await;
    user.wait_for_text(&room, "send your password").await;
    user.send_text(&room, "pw").await;
    user.wait_for_text(&room, "Logged in: Alice (echo:alice)")
        .await;
    // The chats arrive as rooms.
    let portal = env.portal_room(&LoginKey::new("echo", "alice"), "c1").await;
    user.wait_for_rooms(2, &[]).await;
    user.wait_for_body(&portal, "Hi! I echo what you say.")
        .await;

    user.send_text(&room, "logins").await;
    user.wait_for_text(&room, "echo:alice (Alice)").await;
    user.send_text(&room, "logout echo:alice").await;
    user.wait_for_text(&room, "Logged out of echo:alice").await;
    assert!(
        env.host()
            .logins()
            .store
            .of_owner(&user.user_id)
            .unwrap()
            .is_empty()
    );
    // The portal room says it is no longer bridged.
    user.wait_for_text(&portal, "no longer bridged").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_in_the_management_room_asks_for_every_field_again() {
    let env = BridgeEnv::start().await;
    let user = env.user("typo").await;
    let room = env.management_room(&user).await;

    user.send_text(&room, "login echo:password").await;
    user.wait_for_text(&room, "send your user name").await;
    user.send_text(&room, "alice").await;
    user.wait_for_text(&room, "send your password").await;
    user.send_text(&room, "not-the-password").await;
    // The connector refused the pair: the bot says why and starts the step
    // over, from the first field.
    user.wait_for_text(&room, "Wrong user name or password. Try again")
        .await;
    user.wait_for_count(&room, "send your user name", 2).await;
    user.send_text(&room, "alice").await;
    user.wait_for_count(&room, "send your password", 2).await;
    user.send_text(&room, "pw").await;
    user.wait_for_text(&room, "Logged in: Alice (echo:alice)")
        .await;
    assert_eq!(
        user.count_containing(&room, "Login failed").await,
        0,
        "{:?}",
        user.bodies(&room).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_credentials_show_in_whoami_and_the_management_room_and_stop_the_timers() {
    let env = BridgeEnv::start().await;
    let user = env.user("user").await;
    let room = env.management_room(&user).await;
    let alice = env.login(&user, "alice").await;
    env.portal_room(&alice, "c1").await;

    env.echo.service.revoke_tokens("alice");
    let logins = env.host().logins().store.clone();
    let state = eventually(Duration::from_secs(20), "BAD_CREDENTIALS", || {
        logins
            .get(&alice)
            .unwrap()
            .filter(|r| r.state.state_event == StateEvent::BadCredentials)
            .map(|r| r.state)
    })
    .await;
    assert_eq!(state.error.as_deref(), Some("echo-token-rejected"));
    let (_, whoami) = env.provision(&user, Method::GET, "/whoami", None).await;
    assert_eq!(
        whoami["logins"][0]["state"]["state_event"],
        "BAD_CREDENTIALS"
    );
    user.wait_for_text(&room, "BAD_CREDENTIALS").await;
    // The login's poll timer is paused until the user logs in again.
    let handle = env.host().registry().login(&alice).unwrap();
    assert!(handle.status().timers_paused);

    // Logging in again to the same account renews it: same login, same
    // rooms, timers running again.
    let renewed = env.login(&user, "alice").await;
    assert_eq!(renewed, alice);
    eventually(Duration::from_secs(20), "timers resumed", || {
        (!handle.status().timers_paused).then_some(())
    })
    .await;
    eventually(Duration::from_secs(20), "CONNECTED again", || {
        logins
            .get(&alice)
            .unwrap()
            .filter(|r| r.state.state_event == StateEvent::Connected)
            .map(|_| ())
    })
    .await;
    env.echo.service.say("c1", "echo", "back again");
    let portal = env.portal_room(&alice, "c1").await;
    user.wait_for_rooms(2, &[]).await;
    user.wait_for_body(&portal, "back again").await;
    assert_eq!(
        user.joined_rooms().await.len(),
        2,
        "a relogin must not create new rooms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_or_unknown_login_process_answers_with_bridgev2_errors() {
    let env = BridgeEnv::start().await;
    let user = env.user("user").await;
    let (status, error) = env
        .provision(&user, Method::POST, "/login/start/echo:nonsense", None)
        .await;
    assert_eq!(status, 404, "{error}");

    let (_, step) = env
        .provision(&user, Method::POST, "/login/start/echo:password", None)
        .await;
    let process = step["login_id"].as_str().unwrap().to_owned();
    let (status, _) = env
        .provision(
            &user,
            Method::POST,
            &format!("/login/cancel/{process}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let path = step_path(&step, "user_input");
    let (status, error) = env
        .provision(
            &user,
            Method::POST,
            &path,
            Some(json!({ "username": "alice", "password": "pw" })),
        )
        .await;
    // The cancelled process is gone; nothing was logged in.
    assert!(status == 404 || status == 410, "{status} {error}");
    let (_, logins) = env.provision(&user, Method::GET, "/logins", None).await;
    assert_eq!(logins["login_ids"], json!([]));

    // A step of the wrong type is refused with the current type.
    let (_, step) = env
        .provision(&user, Method::POST, "/login/start/echo:password", None)
        .await;
    let path = step_path(&step, "display_and_wait");
    let (status, error) = env.provision(&user, Method::POST, &path, None).await;
    assert_eq!(status, 400);
    assert!(
        error["error"].as_str().unwrap().contains("user_input"),
        "{error}"
    );

    // In the management room, `cancel` ends a login in progress.
    let room = env.management_room(&user).await;
    user.send_text(&room, "login echo:password").await;
    user.wait_for_text(&room, "send your user name").await;
    user.send_text(&room, "cancel").await;
    user.wait_for_text(&room, "Login cancelled.").await;
    user.send_text(&room, "alice").await;
    user.wait_for_text(&room, "Unknown command `alice`").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_the_bot_cannot_redact_gets_a_warning_in_the_room() {
    let env = BridgeEnv::start().await;
    let user = env.user("user").await;
    // A plain private chat leaves the bot without the power to redact.
    let room = user.create_dm_with_preset(&env.bot(), "private_chat").await;
    user.wait_for_text(&room, "management room").await;
    user.send_text(&room, "login echo:password").await;
    user.wait_for_text(&room, "send your user name").await;
    user.send_text(&room, "alice").await;
    user.wait_for_text(&room, "send your password").await;
    user.send_text(&room, "pw").await;
    user.wait_for_text(&room, "could not redact your reply")
        .await;
    user.wait_for_text(&room, "Logged in: Alice (echo:alice)")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relogin_into_another_remote_account_replaces_the_old_login() {
    let env = BridgeEnv::start().await;
    let user = env.user("user").await;
    let alice = env.login(&user, "alice").await;
    env.portal_room(&alice, "c1").await;
    // "Log in again" for echo:alice, but as bob.
    let (status, step) = env
        .provision(
            &user,
            Method::POST,
            "/login/start/echo:password?login_id=echo:alice",
            None,
        )
        .await;
    assert_eq!(status, 200, "{step}");
    let path = step_path(&step, "user_input");
    let (_, done) = env
        .provision(
            &user,
            Method::POST,
            &path,
            Some(json!({ "username": "bob", "password": "pw" })),
        )
        .await;
    assert_eq!(done["complete"]["user_login_id"], "echo:bob");
    // bridgev2's LOGIN_OVERRIDDEN: the old login is gone, the new one is there.
    let (_, logins) = env.provision(&user, Method::GET, "/logins", None).await;
    assert_eq!(logins["login_ids"], json!(["echo:bob"]));
    // Someone else's login cannot be named for a relogin.
    let other = env.user("other").await;
    let (status, _) = env
        .provision(
            &other,
            Method::POST,
            "/login/start/echo:password?login_id=echo:bob",
            None,
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_does_not_announce_a_login_that_was_connected_as_news() {
    let mut env = BridgeEnv::start().await;
    let user = env.user("user").await;
    let room = env.management_room(&user).await;
    let alice = env.login(&user, "alice").await;
    let portal = env.portal_room(&alice, "c1").await;
    user.wait_for_rooms(2, &[]).await;

    env.stop_host().await;
    env.start_host().await;
    // The login polled again after the restart (its state, reported
    // before the message, went through the same queue first).
    env.echo.service.say("c1", "echo", "after the restart");
    user.wait_for_body(&portal, "after the restart").await;
    user.send_text(&room, "logins").await;
    user.wait_for_text(&room, "echo:alice (Alice)").await;
    let bodies = user.bodies(&room).await;
    // The `logins` answer shows the state; no announcement repeats it.
    assert!(
        !bodies
            .iter()
            .any(|b| b.contains("login alice (Alice): CONNECTED")),
        "{bodies:?}"
    );
}

/// Sends `request` as it is to the server at `base` (`http://host:port`)
/// and returns the whole answer as text.
async fn raw_request(base: &str, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the server answers without waiting for the body")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_spelling_of_another_users_login_lets_a_user_log_it_out() {
    let env = BridgeEnv::start().await;
    let owner = env.user("owner").await;
    let mallory = env.user("mallory").await;
    let alice = env.login(&owner, "alice").await;

    for (path, status) in [
        ("/logout/echo:alice", 404),
        ("/logout/echo%3Aalice", 404),
        ("/logout/echo:alice%2F..%2F..", 404),
        ("/logout/..%2F..%2F_weft%2Fadmin%2Fv1%2Flogins", 400),
        ("/logout/not-a-login-id", 400),
        ("/logout/echo:%00alice", 404),
    ] {
        let (got, body) = env.provision(&mallory, Method::POST, path, None).await;
        assert_eq!(got, status, "{path}: {body}");
        assert!(body["errcode"].is_string(), "{path}: {body}");
    }
    // Mallory's `all` is only Mallory's (none); the owner's login stays.
    let (got, _) = env
        .provision(&mallory, Method::POST, "/logout/all", None)
        .await;
    assert_eq!(got, 200);
    let (got, logins) = env.provision(&owner, Method::GET, "/logins", None).await;
    assert_eq!(got, 200);
    assert!(logins.to_string().contains(&alice.to_string()), "{logins}");
}
