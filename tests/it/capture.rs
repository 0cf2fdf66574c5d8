//! Capture pages: the host's one-time login pages and their rules, for
//! every plugin (here the probe connector's `capture` flow), against a
//! real Synapse and the host's real listener.

use reqwest::Method;
use serde_json::{Value, json};
use weft_host::logins::LoginKey;
use weft_tests::bridge::{BridgeEnv, BridgeOptions, step_path};
use weft_tests::matrix::MatrixUser;

fn options() -> BridgeOptions {
    BridgeOptions {
        plugins: vec!["probe"],
        config: vec![
            "[plugin.probe]".into(),
            "http = [\"http://127.0.0.1:*\"]".into(),
            "private-networks = true".into(),
        ],
        ..BridgeOptions::default()
    }
}

/// Starts the probe's capture flow; returns the waiting step and the
/// page's URL.
async fn start_capture(env: &BridgeEnv, user: &MatrixUser) -> (Value, String) {
    let (status, step) = env
        .provision(user, Method::POST, "/login/start/probe:capture", None)
        .await;
    assert_eq!(status, 200, "{step}");
    assert_eq!(step["type"], "display_and_wait");
    assert_eq!(step["display_and_wait"]["type"], "qr");
    let url = step["display_and_wait"]["data"]
        .as_str()
        .unwrap()
        .to_owned();
    (step, url)
}

async fn post_capture(url: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{url}/capture"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn storage(user: &str) -> String {
    json!({ "storage": json!({ "user": user }).to_string() }).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_capture_unblocks_the_waiting_login_exactly_once_and_a_second_gets_409() {
    let env = BridgeEnv::start_with(options()).await;
    let user = env.user("capturer").await;
    let (step, url) = start_capture(&env, &user).await;
    assert!(
        url.starts_with(&format!("{}/login/", env.appservice_url())),
        "{url}"
    );

    // The page: plain HTML with a strict policy and nothing from elsewhere.
    let page = reqwest::get(&url).await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    // It may send only to its own capture URL.
    assert!(
        csp.contains(&format!("connect-src {url}/capture;")),
        "{csp}"
    );
    assert!(
        csp.contains(&format!("form-action {url}/capture;")),
        "{csp}"
    );
    assert_eq!(page.headers()["cache-control"], "no-store");
    let html = page.text().await.unwrap();
    assert!(html.contains("Log in to Probe"));
    // It names the Matrix user the login is for.
    assert!(
        html.contains(&format!(
            "This login is for <strong>{}</strong>",
            user.user_id
        )),
        "{html}"
    );
    assert!(!html.contains("<script src"), "no external scripts");

    // Two captures before the login takes one: the first wins, the second
    // is refused and changes nothing.
    let (status, body) = post_capture(&url, storage("alice")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post_capture(&url, storage("mallory")).await;
    assert_eq!(status, 409, "{body}");
    let path = step_path(&step, "display_and_wait");
    let (status, done) = env.provision(&user, Method::POST, &path, None).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["complete"]["user_login_id"], "probe:user-alice");
    let (_, logins) = env.provision(&user, Method::GET, "/logins", None).await;
    assert_eq!(logins["login_ids"], json!(["probe:user-alice"]), "{logins}");
    let record = env
        .host()
        .logins()
        .store
        .get(&LoginKey::new("probe", "user-alice"))
        .unwrap()
        .unwrap();
    assert_eq!(
        record.metadata,
        json!({ "material": json!({ "user": "alice" }).to_string() }).to_string()
    );
    // The process is over, and its page with it.
    assert_eq!(reqwest::get(&url).await.unwrap().status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_captures_are_refused_with_400_or_413_and_leave_the_session_open() {
    let env = BridgeEnv::start_with(options()).await;
    let user = env.user("careless").await;
    let (step, url) = start_capture(&env, &user).await;

    let (status, body) = post_capture(&url, "{not json").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = post_capture(&url, json!({ "storage": "not json" }).to_string()).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("not valid JSON"),
        "{body}"
    );
    let (status, _) = post_capture(&url, vec![b' '; 600 << 10]).await;
    assert_eq!(status, 413);

    // None of them used the session up.
    let (status, body) = post_capture(&url, storage("bob")).await;
    assert_eq!(status, 200, "{body}");
    let path = step_path(&step, "display_and_wait");
    let (_, done) = env.provision(&user, Method::POST, &path, None).await;
    assert_eq!(done["complete"]["user_login_id"], "probe:user-bob");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_sessions_each_get_their_own_capture() {
    let env = BridgeEnv::start_with(options()).await;
    let carol = env.user("carol").await;
    let dave = env.user("dave").await;
    let (carol_step, carol_url) = start_capture(&env, &carol).await;
    let (dave_step, dave_url) = start_capture(&env, &dave).await;
    assert_ne!(carol_url, dave_url);

    // Captured in the opposite order to the starts.
    assert_eq!(post_capture(&dave_url, storage("dave")).await.0, 200);
    assert_eq!(post_capture(&carol_url, storage("carol")).await.0, 200);
    let (_, carol_done) = env
        .provision(
            &carol,
            Method::POST,
            &step_path(&carol_step, "display_and_wait"),
            None,
        )
        .await;
    let (_, dave_done) = env
        .provision(
            &dave,
            Method::POST,
            &step_path(&dave_step, "display_and_wait"),
            None,
        )
        .await;
    assert_eq!(carol_done["complete"]["user_login_id"], "probe:user-carol");
    assert_eq!(dave_done["complete"]["user_login_id"], "probe:user-dave");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_cancelled_sessions_answer_404() {
    let env = BridgeEnv::start_with(options()).await;
    let user = env.user("erin").await;

    let unknown = format!(
        "{}/login/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        env.appservice_url()
    );
    assert_eq!(reqwest::get(&unknown).await.unwrap().status(), 404);
    assert_eq!(post_capture(&unknown, storage("x")).await.0, 404);

    // Cancelled: the page goes with the process.
    let (step, url) = start_capture(&env, &user).await;
    assert_eq!(reqwest::get(&url).await.unwrap().status(), 200);
    let process = step_path(&step, "display_and_wait");
    let process = process.split('/').nth(3).unwrap();
    let (status, body) = env
        .provision(
            &user,
            Method::POST,
            &format!("/login/cancel/{process}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(reqwest::get(&url).await.unwrap().status(), 404);
    assert_eq!(post_capture(&url, storage("late")).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_expires_with_its_login_process() {
    let mut options = options();
    // Pages never outlive their login process (here 2 s).
    options.bridge_settings = vec!["login-timeout-secs = 2".into()];
    let env = BridgeEnv::start_with(options).await;
    let user = env.user("frank").await;
    let (step, url) = start_capture(&env, &user).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    while reqwest::get(&url).await.unwrap().status() == 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the page never expired"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(reqwest::get(&url).await.unwrap().status(), 404);
    assert_eq!(post_capture(&url, storage("late")).await.0, 404);
    // And the process is over for the provisioning API as well.
    let path = step_path(&step, "display_and_wait");
    let (status, body) = env.provision(&user, Method::POST, &path, None).await;
    assert_ne!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_javascript_the_form_posts_and_the_page_shows_the_outcome() {
    let env = BridgeEnv::start_with(options()).await;
    let user = env.user("plain").await;
    let (step, url) = start_capture(&env, &user).await;
    let form = |text: &str| {
        reqwest::Client::new()
            .post(format!("{url}/capture"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("storage", text)
                    .finish(),
            )
            .send()
    };
    let refused = form("not json").await.unwrap();
    assert_eq!(refused.status(), 400);
    let html = refused.text().await.unwrap();
    assert!(html.contains("data-state=\"error\""), "{html}");
    assert!(html.contains("not valid JSON"), "{html}");
    let accepted = form(&json!({ "user": "gina" }).to_string()).await.unwrap();
    assert_eq!(accepted.status(), 200);
    assert!(
        accepted
            .text()
            .await
            .unwrap()
            .contains("data-state=\"success\"")
    );
    let (_, done) = env
        .provision(
            &user,
            Method::POST,
            &step_path(&step, "display_and_wait"),
            None,
        )
        .await;
    assert_eq!(done["complete"]["user_login_id"], "probe:user-gina");
}
