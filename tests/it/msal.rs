//! The MSAL login provider end to end: its four flows through the
//! provisioning API (run for a connector that uses it, `ms-account`,
//! until the Teams connector lands), the helper page in a real headless
//! Chromium, and token refreshes against a fake Microsoft identity
//! platform that enforces the documented rules.

use reqwest::Method;
use serde_json::{Value, json};
use weft_host::logins::{LoginKey, StateEvent};
use weft_tests::bridge::{BridgeEnv, BridgeOptions, step_path};
use weft_tests::host::{TestHost, ask};
use weft_tests::matrix::MatrixUser;
use weft_tests::ms_identity::{Account, Call, MsIdentity};
use weft_tests::msal_cache::{KeySchema, MsalCache};
use weft_tests::{browser, eventually, now_secs, qr, until, web_session};

async fn bridge(identity: &MsIdentity) -> BridgeEnv {
    BridgeEnv::start_with(BridgeOptions {
        plugins: vec!["msal", "ms-account"],
        config: vec![
            "[plugin.msal]".into(),
            "http = [\"http://127.0.0.1:*\"]".into(),
            "private-networks = true".into(),
            "[plugin.msal.settings]".into(),
            format!("authority-url = \"{}\"", identity.base_url()),
        ],
        ..BridgeOptions::default()
    })
    .await
}

/// The browser cache of a web session signed in as `account`, whose
/// access token has already expired (so the login refreshes at once).
fn expired_web_session(identity: &MsIdentity, account: &Account) -> MsalCache {
    web_session(&identity.issue_spa_tokens(account), now_secs() - 60)
}

async fn start(env: &BridgeEnv, user: &MatrixUser, flow: &str) -> Value {
    let (status, step) = env
        .provision(
            user,
            Method::POST,
            &format!("/login/start/ms-account:{flow}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{step}");
    step
}

/// Waits until login `key` reports `state`, which shows its start ran.
async fn wait_for_state(env: &BridgeEnv, key: &LoginKey, state: StateEvent) {
    eventually(
        std::time::Duration::from_secs(20),
        &format!("login {key} reports {state:?}"),
        || {
            let record = env.host().logins().store.get(key).ok()??;
            (record.state.state_event == state).then_some(())
        },
    )
    .await;
}

/// The tokens login `key` keeps.
fn metadata(env: &BridgeEnv, key: &LoginKey) -> Value {
    let record = env.host().logins().store.get(key).unwrap().unwrap();
    serde_json::from_str(&record.metadata).unwrap()
}

fn login_key(done: &Value) -> LoginKey {
    LoginKey::parse(done["complete"]["user_login_id"].as_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_helper_page_in_a_real_browser_completes_a_login_that_refreshes_with_the_spa_origin() {
    let identity = MsIdentity::start().await;
    let env = bridge(&identity).await;
    let user = env.user("helper").await;
    let account = Account::new("alice@outlook.com", "Alice");
    // Current teams.live.com encrypts its cache: the paste carries the key.
    let cache = expired_web_session(&identity, &account).encrypted();

    // Flows from the provider carry its names and trade-offs.
    let (_, flows) = env
        .provision(&user, Method::GET, "/login/flows", None)
        .await;
    let flows = flows["flows"].as_array().unwrap();
    let ids: Vec<&str> = flows.iter().map(|f| f["id"].as_str().unwrap()).collect();
    assert!(
        ids.starts_with(&["echo:password", "echo:code", "ms-account:device-code"]),
        "{ids:?}"
    );
    // Each of the provider's four says in plain words how long its login
    // lasts.
    let from_msal: Vec<&Value> = flows
        .iter()
        .filter(|f| f["id"].as_str().unwrap().starts_with("ms-account:"))
        .collect();
    let msal_ids: Vec<&str> = from_msal
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        msal_ids,
        [
            "ms-account:device-code",
            "ms-account:msal-helper",
            "ms-account:msal-paste",
            "ms-account:webview-localstorage"
        ]
    );
    for flow in from_msal {
        let description = flow["description"].as_str().unwrap();
        assert!(description.contains("24 hours"), "{flow}");
        if flow["id"] == "ms-account:device-code" {
            assert!(description.contains("months"), "{flow}");
        }
    }

    let step = start(&env, &user, "msal-helper").await;
    assert_eq!(step["type"], "display_and_wait");
    assert_eq!(step["display_and_wait"]["type"], "qr");
    let url = step["display_and_wait"]["data"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        step["instructions"]
            .as_str()
            .unwrap()
            .contains("msal.cache.encryption")
    );

    let report = browser::paste_and_send(&url, &cache.capture(), "msal-helper-page.png").await;
    assert_eq!(report["state"], "success", "{report}");
    let csp = report["csp"].as_str().unwrap();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    // The page sent nothing anywhere but to the bridge, and its policy
    // refused nothing of its own.
    assert_eq!(report["blocked"], json!([]), "{report}");
    assert_eq!(report["console_errors"], json!([]), "{report}");
    let host = url.split("/login/").next().unwrap();
    for request in report["requests"].as_array().unwrap() {
        assert!(request.as_str().unwrap().starts_with(host), "{report}");
    }

    let (status, done) = env
        .provision(
            &user,
            Method::POST,
            &step_path(&step, "display_and_wait"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["type"], "complete");
    let key = login_key(&done);
    assert_eq!(key.plugin, "ms-account");
    assert_eq!(key.id, account.home_account_id);

    // Finishing the login renewed the expired token through MSAL: one SPA
    // refresh, with the Origin the web app's tokens need.
    wait_for_state(&env, &key, StateEvent::Connected).await;
    let refreshes = identity.calls_where(Call::is_spa_refresh);
    assert_eq!(refreshes.len(), 1, "{refreshes:?}");
    assert_eq!(
        refreshes[0].origin.as_deref(),
        Some("https://teams.live.com")
    );
    assert_eq!(refreshes[0].outcome, "ok");
    // The rotated tokens are what the login keeps.
    let metadata = metadata(&env, &key);
    let access = metadata["access_token"].as_str().unwrap();
    assert_eq!(identity.valid_access_token(access).unwrap(), account);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_helper_page_shows_an_error_for_bad_json_and_the_login_keeps_waiting() {
    let identity = MsIdentity::start().await;
    let env = bridge(&identity).await;
    let user = env.user("typo").await;
    let step = start(&env, &user, "msal-helper").await;
    let url = step["display_and_wait"]["data"]
        .as_str()
        .unwrap()
        .to_owned();

    let report =
        browser::paste_and_send(&url, "copy(JSON.stringify(", "msal-helper-page-error.png").await;
    assert_eq!(report["state"], "error", "{report}");
    assert!(
        report["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{report}"
    );
    // Still waiting on the same page: a good paste now completes it.
    let identity_account = Account::new("bob@outlook.com", "Bob");
    let cache = expired_web_session(&identity, &identity_account);
    let report =
        browser::paste_and_send(&url, &cache.capture(), "msal-helper-page-retry.png").await;
    assert_eq!(report["state"], "success", "{report}");
    let (_, done) = env
        .provision(
            &user,
            Method::POST,
            &step_path(&step, "display_and_wait"),
            None,
        )
        .await;
    assert_eq!(done["type"], "complete", "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_management_room_shows_the_helper_link_as_a_qr_code_that_opens_a_working_page() {
    let identity = MsIdentity::start().await;
    let env = bridge(&identity).await;
    let user = env.user("scanner").await;
    let room = env.management_room(&user).await;

    user.send_text(&room, "login ms-account:msal-helper").await;
    let notice = user.wait_for_text(&room, "The QR code below opens").await;
    let picture = until(
        std::time::Duration::from_secs(20),
        "the bot sends the QR code",
        || async {
            user.messages(&room)
                .await
                .into_iter()
                .find(|e| e["content"]["msgtype"] == "m.image" && e["sender"] == env.bot())
        },
    )
    .await;
    assert_eq!(picture["content"]["info"]["mimetype"], "image/png");
    let png = user
        .download(picture["content"]["url"].as_str().unwrap())
        .await;
    let url = qr::scan(&png);
    assert!(url.contains("/login/"), "{url}");
    assert!(notice.contains(&url), "{notice}");

    // The link the code holds is the login's page: a capture sent there
    // finishes the login in the room.
    let cache = expired_web_session(&identity, &Account::new("ivy@outlook.com", "Ivy"));
    let response = reqwest::Client::new()
        .post(format!("{url}/capture"))
        .json(&json!({ "storage": cache.capture() }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    user.wait_for_text(&room, "Logged in: ivy@outlook.com (ms-account:")
        .await;
    // The link was for one login: its picture is removed.
    let picture_id = picture["event_id"].as_str().unwrap();
    until(
        std::time::Duration::from_secs(20),
        "the QR code's picture is redacted",
        || async {
            user.messages(&room)
                .await
                .into_iter()
                .find(|e| e["event_id"] == picture_id && e["content"].get("url").is_none())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_the_management_room_a_refused_paste_is_asked_again_and_every_paste_is_redacted() {
    let identity = MsIdentity::start().await;
    let env = bridge(&identity).await;
    let user = env.user("chatpaster").await;
    let room = env.management_room(&user).await;

    user.send_text(&room, "login ms-account:msal-paste").await;
    user.wait_for_text(&room, "Please send your copied session")
        .await;
    // A paste with no tokens: the bot says why and asks again, the login
    // goes on.
    let garbage = user.send_text(&room, "this is garbage {").await;
    user.wait_for_text(&room, "Try again, or send `cancel`")
        .await;
    user.wait_for_count(&room, "Please send your copied session", 2)
        .await;
    let cache = expired_web_session(&identity, &Account::new("jo@outlook.com", "Jo"));
    let paste = user.send_text(&room, &cache.capture()).await;
    user.wait_for_text(&room, "Logged in: jo@outlook.com (ms-account:")
        .await;
    // A copied session is a secret: neither paste stays in the room.
    for event in [garbage, paste] {
        until(
            std::time::Duration::from_secs(20),
            "the paste is redacted",
            || async {
                user.messages(&room)
                    .await
                    .into_iter()
                    .find(|e| e["event_id"] == event.as_str() && e["content"].get("body").is_none())
            },
        )
        .await;
    }
    assert_eq!(
        user.count_containing(&room, "Login failed").await,
        0,
        "{:?}",
        user.bodies(&room).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporary_failure_after_a_good_paste_is_retried_with_the_same_paste() {
    let identity = MsIdentity::start().await;
    let env = bridge(&identity).await;
    let user = env.user("retrier").await;
    let room = env.management_room(&user).await;

    user.send_text(&room, "login ms-account:msal-paste").await;
    user.wait_for_text(&room, "Please send your copied session")
        .await;
    // The paste is good, but renewing its expired token meets a 503.
    identity.fail_next(1, 503);
    let cache = expired_web_session(&identity, &Account::new("kim@outlook.com", "Kim"));
    user.send_text(&room, &cache.capture()).await;
    user.wait_for_text(&room, "Send `retry` to try again").await;
    user.send_text(&room, "retry").await;
    user.wait_for_text(&room, "Logged in: kim@outlook.com (ms-account:")
        .await;
    // The session was asked for once: the retry used what was sent.
    let asked = user
        .count_containing(&room, "Please send your copied session")
        .await;
    assert_eq!(asked, 1, "{:?}", user.bodies(&room).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_paste_flow_explains_a_missing_cookie_and_takes_every_cache_layout() {
    let identity = MsIdentity::start().await;
    let env = bridge(&identity).await;
    let user = env.user("paster").await;
    let carol = Account::new("carol@outlook.com", "Carol");

    let step = start(&env, &user, "msal-paste").await;
    assert_eq!(step["type"], "user_input");
    assert_eq!(step["user_input"]["fields"][0]["id"], "capture");
    let path = step_path(&step, "user_input");

    // An encrypted cache without its key cookie: told what to capture.
    let encrypted = expired_web_session(&identity, &carol).encrypted();
    let (status, error) = env
        .provision(
            &user,
            Method::POST,
            &path,
            Some(json!({ "capture": encrypted.local_storage_json() })),
        )
        .await;
    assert_eq!(status, 400, "{error}");
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("msal.cache.encryption"),
        "{error}"
    );
    // Every layout MSAL.js has used, pasted as the bare localStorage
    // object; each is a fresh login of another account.
    let mut key = None;
    for (n, schema) in [KeySchema::Unversioned, KeySchema::V1, KeySchema::V2]
        .into_iter()
        .enumerate()
    {
        let account = Account::new(&format!("user{n}@outlook.com"), &format!("User {n}"));
        let cache = expired_web_session(&identity, &account).schema(schema);
        let step = if n == 0 {
            step.clone()
        } else {
            start(&env, &user, "msal-paste").await
        };
        let (status, done) = env
            .provision(
                &user,
                Method::POST,
                &step_path(&step, "user_input"),
                Some(json!({ "capture": cache.local_storage_json() })),
            )
            .await;
        assert_eq!(status, 200, "{schema:?}: {done}");
        assert_eq!(login_key(&done).id, account.home_account_id, "{schema:?}");
        key = Some(login_key(&done));
    }
    let key = key.unwrap();
    wait_for_state(&env, &key, StateEvent::Connected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webview_flow_asks_for_teams_in_a_cookies_step_and_completes_with_its_extract() {
    let identity = MsIdentity::start().await;
    let env = bridge(&identity).await;
    let user = env.user("webview").await;
    let dave = Account::new("dave@outlook.com", "Dave");

    let step = start(&env, &user, "webview-localstorage").await;
    assert_eq!(step["type"], "cookies");
    assert_eq!(step["cookies"]["url"], "https://teams.live.com/v2");
    let js = step["cookies"]["extract_js"].as_str().unwrap();
    assert!(js.contains("msal.cache.encryption"), "{js}");
    let field = &step["cookies"]["fields"][0];
    assert_eq!(field["id"], "capture");

    let cache = expired_web_session(&identity, &dave).encrypted();
    let (status, done) = env
        .provision(
            &user,
            Method::POST,
            &step_path(&step, "cookies"),
            Some(json!({ "capture": cache.capture() })),
        )
        .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(login_key(&done).id, dave.home_account_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_code_flow_outlasts_a_failed_poll_and_a_slow_down_and_refreshes_without_an_origin()
 {
    let identity = MsIdentity::start().await;
    let env = bridge(&identity).await;
    let user = env.user("device").await;
    let erin = Account::new("erin@outlook.com", "Erin");

    let step = start(&env, &user, "device-code").await;
    assert_eq!(step["type"], "display_and_wait");
    assert_eq!(step["display_and_wait"]["type"], "code");
    let code = step["display_and_wait"]["data"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(step["instructions"].as_str().unwrap().contains(&code));
    let path = step_path(&step, "display_and_wait");

    // Pending: the long poll keeps waiting while the user has not approved,
    // through a failed poll and a request to slow down (RFC 8628 §3.5).
    let polled = |outcome: &'static str| {
        let identity = &identity;
        move || {
            identity
                .calls_where(Call::is_device_poll)
                .iter()
                .any(|c| outcome.is_empty() || c.outcome == outcome)
                .then_some(())
        }
    };
    // A client asks again whenever the long poll ends with the login still
    // waiting.
    let until_done = async {
        loop {
            let (status, answer) = env.provision(&user, Method::POST, &path, None).await;
            if status != 200 || answer["type"] != "display_and_wait" {
                return (status, answer);
            }
        }
    };
    let (poll, ()) = tokio::join!(until_done, async {
        let wait = std::time::Duration::from_secs(20);
        eventually(wait, "MSAL polls", polled("")).await;
        identity.fail_next(1, 503);
        eventually(wait, "a poll fails", polled("injected")).await;
        identity.slow_down_next(1);
        eventually(wait, "a poll is told to slow down", polled("slow_down")).await;
        identity.approve(&code, &erin);
    });
    let (status, done) = poll;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["type"], "complete", "{done}");
    let key = login_key(&done);
    assert_eq!(key.id, erin.home_account_id);
    let polls = identity.calls_where(Call::is_device_poll);
    assert!(
        polls.iter().any(|c| c.outcome == "authorization_pending"),
        "{polls:?}"
    );
    assert!(polls.iter().all(|c| !c.had_origin()), "{polls:?}");
    // The device-code token is for the Skype resource; MSAL traded it for
    // the MBI_SSL scope at the device-code client's endpoint, no Origin.
    let refreshes = identity.calls_where(Call::is_device_refresh);
    assert!(!refreshes.is_empty());
    assert!(
        refreshes
            .iter()
            .all(|c| !c.had_origin() && c.outcome == "ok"),
        "{refreshes:?}"
    );
    wait_for_state(&env, &key, StateEvent::Connected).await;
    let metadata = metadata(&env, &key);
    assert!(
        metadata["refresh_token"]
            .as_str()
            .unwrap()
            .starts_with("dc:")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_or_expired_device_code_ends_the_login_process_with_a_plain_message() {
    let identity = MsIdentity::start().await;
    let env = bridge(&identity).await;
    let user = env.user("declined").await;

    for (outcome, expect) in [("decline", "declined"), ("expire", "expired")] {
        let step = start(&env, &user, "device-code").await;
        let code = step["display_and_wait"]["data"]
            .as_str()
            .unwrap()
            .to_owned();
        match outcome {
            "decline" => identity.decline(&code),
            _ => identity.expire_code(&code),
        }
        let path = step_path(&step, "display_and_wait");
        let (status, error) = env.provision(&user, Method::POST, &path, None).await;
        assert_eq!(status, 400, "{error}");
        assert!(
            error["error"].as_str().unwrap().contains(expect),
            "{outcome}: {error}"
        );
        // The process is over: no zombie keeps polling Microsoft or takes
        // one of the user's few process slots.
        let (status, gone) = env.provision(&user, Method::POST, &path, None).await;
        assert_eq!(status, 404, "{outcome}: {gone}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_session_whose_refresh_token_expired_puts_the_login_in_bad_credentials() {
    let identity = MsIdentity::start().await;
    let env = bridge(&identity).await;
    let user = env.user("stale").await;
    let frank = Account::new("frank@outlook.com", "Frank");
    let tokens = identity.issue_spa_tokens(&frank);
    // Past the SPA token's 24 hours: AADSTS700084 on refresh.
    identity.expire_refresh_token(&tokens.refresh_token);
    // An access token good for 320 s: usable when captured (MSAL's
    // five-minute margin leaves 20 s), due for renewal when the login
    // starts.
    let cache = web_session(&tokens, now_secs() + 320);
    let step = start(&env, &user, "msal-paste").await;
    let (status, done) = env
        .provision(
            &user,
            Method::POST,
            &step_path(&step, "user_input"),
            Some(json!({ "capture": cache.capture() })),
        )
        .await;
    assert_eq!(status, 200, "{done}");
    let key = login_key(&done);

    wait_for_state(&env, &key, StateEvent::BadCredentials).await;
    let refused = identity.calls_where(Call::is_spa_refresh);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].outcome, "invalid_grant");
    let record = env.host().logins().store.get(&key).unwrap().unwrap();
    assert!(
        record
            .state
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("700084"),
        "{:?}",
        record.state
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_refreshes_with_the_same_old_token_both_get_the_one_rotation() {
    // The probe connector, routed to MSAL, asks twice with the token it
    // holds; the second must not spend the rotated token or fail.
    let identity = MsIdentity::start().await;
    let grace = Account::new("grace@outlook.com", "Grace");
    let tokens = identity.issue_spa_tokens(&grace);
    let test = TestHost::builder()
        .plugin("probe")
        .plugin("msal")
        .grant(
            "probe",
            "http = [\"http://127.0.0.1:*\"]\nprivate-networks = true\nuses = { tokens = \"msal\" }",
        )
        .grant("msal", "http = [\"http://127.0.0.1:*\"]\nprivate-networks = true")
        .config(&format!(
            "[plugin.msal.settings]\nauthority-url = \"{}\"",
            identity.base_url()
        ))
        .start()
        .await;
    let login = test.login("probe", "grace").await;
    let command = format!("tokens-refresh spa:{}", tokens.refresh_token);
    let (first, second) = tokio::join!(ask(&login, &command), ask(&login, &command));
    assert!(first.starts_with("access=EwA"), "{first}");
    assert_eq!(first, second);
    let refreshes = identity.calls_where(Call::is_spa_refresh);
    assert_eq!(refreshes.len(), 1, "{refreshes:?}");
    assert_eq!(refreshes[0].outcome, "ok");
}
