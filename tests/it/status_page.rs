//! The status page on the admin listener: a host with the echo connector,
//! one login connected and one refused, a plugin file that fails to load
//! and a dead letter; seen without credentials, through its sign-in form
//! in headless Chromium, and with the admin token as a bearer.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, LOCATION, SET_COOKIE};
use serde_json::{Value, json};
use weft_host::logins::{LoginKey, StateEvent};
use weft_runtime::events::{EventSender, Message, RemoteEvent, RemoteUser};
use weft_tests::echo::Echo;
use weft_tests::host::{ADMIN_TOKEN, TestHost};
use weft_tests::{browser, eventually};

const PATH: &str = "/_weft/admin/v1/status";
/// A remote name that would be markup if it were not escaped.
const HOSTILE_NAME: &str = "<img src=x onerror=alert(1)>Mallory";
/// Mallory's connector metadata: the page never shows metadata.
const FORGED_TOKEN: &str = "forged-echo-token-never-shown";
/// The dead letter's content: the page never shows content.
const DEAD_TEXT: &str = "a private message that was never bridged";
const DEAD_REASON: &str = "the homeserver refused it for good (M_FORBIDDEN)";

struct Fixture {
    test: TestHost,
    _echo: Echo,
    /// The admin listener's base URL.
    base: String,
    /// The status page's URL.
    url: String,
    /// Why `broken.wasm` was refused.
    load_error: String,
}

/// A host with echo 0.1.0 and two logins: alice, connected, and mallory,
/// whose token the echo service refuses (bad credentials) and whose remote
/// name is markup; `broken.wasm` in the plugins directory; one dead letter.
async fn fixture() -> Fixture {
    let echo = Echo::start().await;
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::write(plugins.join("broken.wasm"), b"not a component").unwrap();
    let test = TestHost::builder()
        .plugin("echo")
        .grant("echo", &echo.grant(50))
        .reuse(dir)
        .start()
        .await;
    let base = format!("http://{}", test.host.admin_addr().unwrap());
    test.login_with("echo", "alice", echo.session("alice").await)
        .await;
    let created = reqwest::Client::new()
        .post(format!("{base}/_weft/admin/v1/logins"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({
            "plugin": "echo",
            "id": "mallory",
            "owner": "@mallory:test",
            "remote_name": HOSTILE_NAME,
            "metadata": { "token": FORGED_TOKEN, "user_id": "u-mallory" },
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);

    let store = &test.host.logins().store;
    let state = |id: &str| {
        store
            .get(&LoginKey::new("echo", id))
            .unwrap()
            .map(|r| r.state.state_event)
    };
    eventually(
        Duration::from_secs(20),
        "alice connected and mallory refused",
        || {
            (state("alice") == Some(StateEvent::Connected)
                && state("mallory") == Some(StateEvent::BadCredentials))
            .then_some(())
        },
    )
    .await;

    // A dead letter, of a login no sink is draining (so it cannot be
    // bridged before it is buried).
    let outbox = test.host.outbox();
    outbox.clear_sink();
    let gone = LoginKey::new("echo", "gone");
    let seq = outbox
        .append(
            &gone,
            RemoteEvent::Message(Message {
                chat_id: "c9".into(),
                message_id: "m9".into(),
                sender: EventSender {
                    user: RemoteUser {
                        id: "u9".into(),
                        display_name: None,
                    },
                    is_from_me: false,
                },
                timestamp_ms: weft_host::logins::now_ms(),
                stream_order: None,
                text: DEAD_TEXT.into(),
                html: None,
                reply_to: None,
            }),
        )
        .unwrap();
    outbox.bury(&gone, seq, DEAD_REASON).unwrap();
    assert_eq!(outbox.dead_letter_count().unwrap(), 1);

    let load_error = test
        .host
        .load_errors()
        .lock()
        .unwrap()
        .iter()
        .find(|(path, _)| path.ends_with("broken.wasm"))
        .map(|(_, error)| error.clone())
        .expect("broken.wasm was refused at start");
    Fixture {
        test,
        _echo: echo,
        url: format!("{base}{PATH}"),
        base,
        load_error,
    }
}

/// A client that shows redirects instead of following them.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn form(token: &str) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("token", token)
        .finish()
}

/// HTML escaping as the page does it.
fn escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#x27;")
}

/// Asserts `text` (a page, or what a browser showed of it) holds none of
/// the host's data.
fn assert_nothing_leaks(fixture: &Fixture, text: &str) {
    for secret in [
        "echo",
        "alice",
        "mallory",
        "Mallory",
        "broken.wasm",
        "0.1.0",
        "@owner:test",
        FORGED_TOKEN,
        DEAD_TEXT,
        DEAD_REASON,
        ADMIN_TOKEN,
        fixture.load_error.as_str(),
    ] {
        assert!(!text.contains(secret), "`{secret}` leaked: {text}");
    }
}

fn assert_hardened(response: &reqwest::Response) {
    let csp = response.headers()[CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(csp.starts_with("default-src 'none';"), "{csp}");
    assert!(!csp.contains("script-src"), "{csp}");
    assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_admin_token_the_status_page_is_only_a_sign_in_form_and_shows_no_host_data() {
    let fixture = fixture().await;
    let client = client();

    // No credentials: 401 and the form, which posts the token in its body.
    let response = client.get(&fixture.url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_hardened(&response);
    assert!(response.headers().get(SET_COOKIE).is_none());
    let html = response.text().await.unwrap();
    assert!(
        html.contains(&format!(
            "<form id=\"sign-in\" method=\"post\" action=\"{PATH}\">"
        )),
        "{html}"
    );
    assert!(html.contains("name=\"token\" type=\"password\""), "{html}");
    assert_nothing_leaks(&fixture, &html);

    // A token in the URL is not a credential.
    let response = client
        .get(format!("{}?token={ADMIN_TOKEN}", fixture.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_nothing_leaks(&fixture, &response.text().await.unwrap());

    // A wrong bearer token: 403, as for the rest of the admin API.
    let response = client
        .get(&fixture.url)
        .bearer_auth("wrong-token-wrong-token")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_nothing_leaks(&fixture, &response.text().await.unwrap());

    // A wrong token in the form: 403, the form again, no session.
    let response = client
        .post(&fixture.url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form("wrong-token-wrong-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(response.headers().get(SET_COOKIE).is_none());
    let html = response.text().await.unwrap();
    assert!(html.contains("That is not the admin token."), "{html}");
    assert_nothing_leaks(&fixture, &html);

    // The right token, but not as a form: no session either.
    let response = client
        .post(&fixture.url)
        .header("content-type", "application/json")
        .body(json!({ "token": ADMIN_TOKEN }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(response.headers().get(SET_COOKIE).is_none());

    // A made-up session: the form, and the cookie is removed.
    let response = client
        .get(&fixture.url)
        .header(
            "cookie",
            "weft_status=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let cleared = response.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    assert!(cleared.starts_with("weft_status=;"), "{cleared}");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert_nothing_leaks(&fixture, &response.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cookie_opens_the_status_page_and_no_other_admin_route_until_signing_out() {
    let fixture = fixture().await;
    let client = client();

    let signed_in = client
        .post(&fixture.url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&format!("{ADMIN_TOKEN}\n")))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    assert_eq!(signed_in.headers()[LOCATION], PATH);
    let set = signed_in.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    let attributes: Vec<&str> = set.split("; ").collect();
    let session = attributes[0]
        .strip_prefix("weft_status=")
        .expect("the session cookie");
    // 256 random bits, base64url.
    assert_eq!(session.len(), 43, "{set}");
    assert!(!set.contains(ADMIN_TOKEN));
    for attribute in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/_weft/admin/v1/status",
        "Max-Age=43200",
    ] {
        assert!(attributes.contains(&attribute), "{set}");
    }
    let cookie = format!("weft_status={session}");

    let page = client
        .get(&fixture.url)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("data-plugin=\"echo\""), "{html}");
    assert!(
        html.contains("action=\"/_weft/admin/v1/status/sign-out\""),
        "{html}"
    );

    // The cookie is no admin token: the rest of the API still refuses it,
    // for reads and for changes.
    for (method, route) in [
        (reqwest::Method::GET, "plugins"),
        (reqwest::Method::GET, "logins"),
        (reqwest::Method::GET, "dead-letters"),
        (reqwest::Method::DELETE, "logins/echo:alice"),
    ] {
        let response = client
            .request(
                method.clone(),
                format!("{}/_weft/admin/v1/{route}", fixture.base),
            )
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {route}"
        );
    }
    assert!(
        fixture
            .test
            .host
            .logins()
            .store
            .get(&LoginKey::new("echo", "alice"))
            .unwrap()
            .is_some()
    );

    // Signing out ends the session on the server, not only in the browser.
    let signed_out = client
        .post(format!("{}/sign-out", fixture.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(signed_out.status(), StatusCode::SEE_OTHER);
    let cleared = signed_out.headers()[SET_COOKIE].to_str().unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let after = client
        .get(&fixture.url)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
    let html = after.text().await.unwrap();
    assert!(html.contains("Your session has ended"), "{html}");
    assert_nothing_leaks(&fixture, &html);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_signs_in_with_the_admin_token_in_chromium_and_sees_plugins_logins_states_and_errors()
 {
    let fixture = fixture().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, ADMIN_TOKEN).unwrap();
    let screenshot = browser::artifact("status-page.png");
    let run = tokio::process::Command::new("node")
        .arg(weft_tests::workspace().join("tests/browser/status.mjs"))
        .arg(&fixture.url)
        .arg(&token_file)
        .arg(&screenshot)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("the browser run finishes within 90 s")
        .expect("node runs (scripts/setup.sh installs it, Chromium and tests/browser)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the browser run failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");

    // Before signing in: the form and nothing else.
    assert_eq!(report["sign_in"]["status"], 401, "{report}");
    assert_eq!(report["sign_in"]["has_form"], true, "{report}");
    assert_nothing_leaks(&fixture, report["sign_in"]["text"].as_str().unwrap());

    // Signed in: the page, at its own URL (no token in any URL).
    assert_eq!(report["status"], 200, "{report}");
    assert_eq!(report["url"], fixture.url.as_str());
    assert!(
        report["requests"]
            .as_array()
            .unwrap()
            .iter()
            .all(|url| !url.as_str().unwrap().contains(ADMIN_TOKEN)),
        "{report}"
    );
    assert!(
        report["csp"]
            .as_str()
            .unwrap()
            .starts_with("default-src 'none';")
    );
    assert_eq!(report["cache_control"], "no-store");
    // The plugin, its version, world and logins.
    let card = |key: &str, value: &str| {
        report["cards"]
            .as_array()
            .unwrap()
            .iter()
            .find(|card| card[key] == value)
            .and_then(|card| card["text"].as_str())
            .unwrap_or_else(|| panic!("no card with {key} {value}: {report}"))
            .to_owned()
    };
    let echo = card("plugin", "echo");
    for shown in ["0.1.0", "connector", "Logins", "echo.wasm"] {
        assert!(echo.contains(shown), "`{shown}` is not on the card: {echo}");
    }
    // The logins, their owners and states.
    let alice = card("state", "CONNECTED");
    for shown in ["echo:alice", "Connected", "@owner:test", "running"] {
        assert!(
            alice.contains(shown),
            "`{shown}` is not on the card: {alice}"
        );
    }
    let mallory = card("state", "BAD_CREDENTIALS");
    for shown in [
        "echo:mallory",
        "Bad credentials",
        "@mallory:test",
        "echo-token-rejected",
        // The remote name as text, not as an image.
        HOSTILE_NAME,
    ] {
        assert!(
            mallory.contains(shown),
            "`{shown}` is not on the card: {mallory}"
        );
    }
    let text = report["text"].as_str().unwrap();
    for shown in [
        // The load error.
        "broken.wasm",
        fixture.load_error.lines().next().unwrap(),
        // The dead letter, without its content.
        "echo:gone",
        DEAD_REASON,
    ] {
        assert!(text.contains(shown), "`{shown}` is not shown: {text}");
    }
    for hidden in [FORGED_TOKEN, DEAD_TEXT, ADMIN_TOKEN] {
        assert!(!text.contains(hidden), "`{hidden}` is shown: {text}");
    }
    assert_eq!(report["images"], 0, "nothing became markup");
    assert_eq!(report["scripts"], 0);
    assert_eq!(report["overflows"], false, "the page fits a phone's width");
    // Chromium logs the two 401s (the form, the other route); nothing else.
    assert!(
        report["console_errors"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e.as_str().unwrap().contains("status of 401")),
        "{report}"
    );
    assert_eq!(report["blocked"], json!([]), "{report}");

    // The session cookie: server-side id, HttpOnly, SameSite=Strict,
    // scoped to the page; it opens no other admin route.
    let cookies = report["cookies"].as_array().unwrap();
    assert_eq!(cookies.len(), 1, "{report}");
    assert_eq!(cookies[0]["name"], "weft_status");
    assert_eq!(cookies[0]["httpOnly"], true);
    assert_eq!(cookies[0]["sameSite"], "Strict");
    assert_eq!(cookies[0]["path"], PATH);
    assert_eq!(report["other_route"]["status"], 401, "{report}");
    assert!(
        !report["other_route"]["text"]
            .as_str()
            .unwrap()
            .contains("alice")
    );

    for shot in [
        "status-page.png",
        "status-page-sign-in.png",
        "status-page-wide.png",
    ] {
        let path = browser::artifact(shot);
        assert!(
            std::fs::metadata(&path).unwrap().len() > 10_000,
            "{}",
            path.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_admin_token_as_a_bearer_curl_gets_the_page_with_everything_escaped() {
    let fixture = fixture().await;
    let response = client()
        .get(&fixture.url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_hardened(&response);
    assert!(
        response.headers().get(SET_COOKIE).is_none(),
        "no session for curl"
    );
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = response.text().await.unwrap();
    for shown in [
        "data-plugin=\"echo\"".to_owned(),
        "<span class=\"badge\">0.1.0</span>".to_owned(),
        "data-state=\"CONNECTED\"><h3><span class=\"name\">echo:alice</span>".to_owned(),
        "data-state=\"BAD_CREDENTIALS\"><h3><span class=\"name\">echo:mallory</span>".to_owned(),
        "<dt>Logins</dt><dd>2</dd>".to_owned(),
        "<code>echo-token-rejected</code>".to_owned(),
        escaped(HOSTILE_NAME),
        escaped(&fixture.load_error),
        escaped(DEAD_REASON),
        "Dead letters <span class=\"count\">(1)</span>".to_owned(),
    ] {
        assert!(html.contains(&shown), "`{shown}` is missing: {html}");
    }
    assert!(!html.contains("<img"), "{html}");
    assert!(!html.contains("<script"), "{html}");
    for hidden in [FORGED_TOKEN, DEAD_TEXT, ADMIN_TOKEN] {
        assert!(!html.contains(hidden), "`{hidden}` is in the page");
    }
    // No sign-out form without a session.
    assert!(!html.contains("sign-out"), "{html}");
}
