//! Who may call the provisioning and admin APIs with a token of their
//! own, tried as an attacker would: OAuth tokens introspected at the
//! issuer of a delegated homeserver (oidc-provider standing in for MAS),
//! Matrix tokens checked with `/whoami`, revocation, floods of bad tokens,
//! start-up errors, and where weft puts the tokens it sends.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use weft_host::config::Config;
use weft_host::host::Host;
use weft_tests::bridge::{BridgeEnv, BridgeOptions};
use weft_tests::fault_proxy::FaultProxy;
use weft_tests::mas::{API_SCOPE, WEFT_CLIENT_ID, WEFT_CLIENT_SECRET};
use weft_tests::matrix::MatrixUser;
use weft_tests::synapse::DOMAIN;
use weft_tests::until;

/// `[oauth]` for an issuer at `issuer`.
fn oauth_section(issuer: &str, secret: &str) -> String {
    format!(
        "[oauth]\nissuer = \"{issuer}\"\nclient-id = \"{WEFT_CLIENT_ID}\"\nclient-secret = \"{secret}\"\nrequired-scope = \"{API_SCOPE}\"\nmax-cache-secs = 2\nadmin-scope = \"urn:weft:admin\"\n"
    )
}

/// A bridge on a delegated homeserver whose homeserver traffic goes
/// through a recording proxy, and whose `[oauth]` issuer is reached
/// through another (which also rewrites the discovery document, so the
/// introspection calls pass it too).
async fn delegated_bridge() -> (BridgeEnv, FaultProxy) {
    let mut env = BridgeEnv::start_with(BridgeOptions {
        delegated_auth: true,
        fault_proxy: true,
        ..Default::default()
    })
    .await;
    let issuer = FaultProxy::start_rewriting(env.mas().issuer_url()).await;
    env.reconfigure(&oauth_section(&issuer.url(), WEFT_CLIENT_SECRET))
        .await;
    (env, issuer)
}

fn introspections(issuer: &FaultProxy) -> usize {
    issuer
        .seen()
        .iter()
        .filter(|s| s.path_and_query.starts_with("/oauth2/introspect"))
        .count()
}

async fn provision_with(env: &BridgeEnv, token: &str, method: Method, path: &str) -> u16 {
    let url = format!("{}/_matrix/provision/v3{path}", env.appservice_url());
    reqwest::Client::new()
        .request(method, url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oauth_token_is_introspected_and_once_revoked_is_refused_at_once_for_changes_and_soon_for_reads()
 {
    let (env, issuer) = delegated_bridge().await;
    env.mas().provision_user("alice").await;
    let token = env.mas().token_for("alice").await;
    let alice = MatrixUser::from_token(&env.synapse.url, &format!("@alice:{DOMAIN}"), &token);

    let (status, whoami) = env.provision(&alice, Method::GET, "/whoami", None).await;
    assert_eq!(status, 200, "{whoami}");
    // The token is alice's (the `username` claim), not anyone's.
    let path = format!("/whoami?user_id=@bob:{DOMAIN}");
    let (status, _) = env.provision(&alice, Method::GET, &path, None).await;
    assert_eq!(status, 403);
    let checked = introspections(&issuer);
    assert!(checked >= 1, "the token was not introspected");
    // A second read within the cache's bound needs no call.
    let (status, _) = env.provision(&alice, Method::GET, "/logins", None).await;
    assert_eq!(status, 200);
    assert_eq!(introspections(&issuer), checked);

    env.mas().revoke(&token).await;
    // A change is checked afresh: refused at once.
    let status = provision_with(&env, &token, Method::POST, "/login/start/echo:password").await;
    assert_eq!(status, 401);
    // A read may ride on the cached answer, but not past max-cache-secs.
    until(
        Duration::from_secs(10),
        "reads refused after revocation",
        || async {
            (provision_with(&env, &token, Method::GET, "/whoami").await == 401).then_some(())
        },
    )
    .await;

    // The token has no admin scope: the admin API refuses it, and still
    // takes its own token.
    let admin = format!(
        "http://{}/_weft/admin/v1/plugins",
        env.host().admin_addr().unwrap()
    );
    let fresh = env.mas().token_for("alice").await;
    let refused = reqwest::Client::new()
        .get(&admin)
        .bearer_auth(&fresh)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let (status, _) = env.admin(Method::GET, "/plugins").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_bad_tokens_cost_a_bounded_number_of_checks() {
    let (env, issuer) = delegated_bridge().await;
    let homeserver = env.fault_proxy.as_ref().unwrap();
    let whoami_calls = || {
        homeserver
            .seen()
            .iter()
            .filter(|s| s.path_and_query.contains("/account/whoami"))
            .count()
    };
    let (introspected, asked) = (introspections(&issuer), whoami_calls());

    // Fifty requests with the same bogus token, at once: one check.
    let statuses = futures::future::join_all(
        (0..50).map(|_| provision_with(&env, "bogus-token", Method::GET, "/whoami")),
    )
    .await;
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    assert_eq!(introspections(&issuer) - introspected, 1);
    assert_eq!(whoami_calls() - asked, 1);

    // Two hundred random tokens from one address: after the failure
    // budget (30 a minute) the address gets 429 without any check.
    let before = (introspections(&issuer), whoami_calls());
    let mut refused_early = 0;
    for n in 0..200 {
        let status = provision_with(&env, &format!("random-{n}"), Method::GET, "/whoami").await;
        assert!(status == 401 || status == 429, "{status}");
        refused_early += usize::from(status == 429);
    }
    let checks = introspections(&issuer) - before.0;
    assert!(
        checks <= 30,
        "{checks} introspection calls for 200 bad tokens"
    );
    assert!(whoami_calls() - before.1 <= 30);
    assert!(
        refused_early >= 150,
        "only {refused_early} refused without a check"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_random_tokens_at_once_cost_a_bounded_number_of_checks() {
    let env = BridgeEnv::start_with(BridgeOptions {
        fault_proxy: true,
        ..Default::default()
    })
    .await;
    let homeserver = env.fault_proxy.as_ref().unwrap();
    let statuses = futures::future::join_all((0..200).map(|n| {
        let env = &env;
        async move { provision_with(env, &format!("random-{n}"), Method::GET, "/whoami").await }
    }))
    .await;
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    let checks = homeserver
        .seen()
        .iter()
        .filter(|s| s.path_and_query.contains("/account/whoami"))
        .count();
    // The failure budget (30) plus the checks already running when it ran
    // out (4 at once per address).
    assert!(
        checks <= 34,
        "{checks} /whoami calls for 200 tokens at once"
    );
    assert!(statuses.iter().filter(|s| **s == 429).count() >= 150);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matrix_token_logged_out_is_refused_at_once_for_changes() {
    let env = BridgeEnv::start().await;
    let user = env.user("user").await;
    let (status, _) = env.provision(&user, Method::GET, "/whoami", None).await;
    assert_eq!(status, 200);
    user.logout().await;
    let status = provision_with(
        &env,
        &user.token,
        Method::POST,
        "/login/start/echo:password",
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_weft_makes_carries_a_token_in_its_query_string() {
    let (env, issuer) = delegated_bridge().await;
    // The whole bridge flow, on the delegated homeserver.
    let user = env.user("user").await;
    env.management_room(&user).await;
    let alice = env.login(&user, "alice").await;
    let portal = env.portal_room(&alice, "c1").await;
    user.wait_for_rooms(2, &[]).await;
    user.send_text(&portal, "hello").await;
    user.wait_for_body(&portal, "echo: hello").await;
    env.echo.service.say("c1", "echo", "from echo");
    user.wait_for_body(&portal, "from echo").await;

    let homeserver = env.fault_proxy.as_ref().unwrap().seen();
    let oauth = issuer.seen();
    for call in [
        "/register",
        "/createRoom",
        "/send/m.room.message/",
        "/invite",
    ] {
        assert!(
            homeserver.iter().any(|s| s.path_and_query.contains(call)),
            "the proxy did not see {call}: {homeserver:?}"
        );
    }
    for seen in homeserver.iter().chain(&oauth) {
        assert!(
            !seen.path_and_query.contains("access_token"),
            "a token in a query string: {} {}",
            seen.method,
            seen.path_and_query
        );
    }
    // Every homeserver call but the unauthenticated discovery ones has
    // its token in the header.
    for seen in &homeserver {
        let public = seen.path_and_query.starts_with("/_matrix/client/versions")
            || seen.path_and_query.contains("auth_metadata");
        assert!(
            public || seen.authorization,
            "no Authorization header: {} {}",
            seen.method,
            seen.path_and_query
        );
    }
    // The introspections authenticate weft in the header; the token goes
    // in the body.
    assert!(
        oauth
            .iter()
            .filter(|s| s.path_and_query.starts_with("/oauth2/introspect"))
            .all(|s| s.method == "POST" && s.authorization)
    );
}

/// A config whose `[oauth]` is `oauth`, for a host that never gets past
/// checking it.
fn config_with(oauth: &str) -> Config {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "data-dir = \"{}\"\n[homeserver]\nurl = \"http://127.0.0.1:1\"\ndomain = \"{DOMAIN}\"\n[appservice]\nlisten = \"127.0.0.1:0\"\naddress = \"http://127.0.0.1:1\"\n{oauth}",
        dir.path().join("data").display()
    );
    let config = Config::from_toml(&text, dir.path()).unwrap();
    std::mem::forget(dir);
    config
}

async fn start_error(oauth: &str) -> String {
    match Host::start(config_with(oauth)).await {
        Ok(_) => panic!("the host started with {oauth}"),
        Err(error) => format!("{error:#}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_configuration_errors_stop_the_start_naming_the_setting() {
    let port = weft_tests::synapse::free_port();
    let unreachable = start_error(&oauth_section(&format!("http://127.0.0.1:{port}"), "x")).await;
    assert!(
        unreachable.contains("[oauth] issuer") && unreachable.contains("discovery"),
        "{unreachable}"
    );

    // A discovery document without an introspection endpoint.
    let app = axum::Router::new().route(
        "/.well-known/openid-configuration",
        axum::routing::get(|| async {
            axum::Json(json!({ "issuer": "x", "token_endpoint": "http://127.0.0.1:1/token" }))
        }),
    );
    let addr = weft_tests::servers::serve(app).await;
    let without = start_error(&oauth_section(&format!("http://{addr}"), "x")).await;
    assert!(
        without.contains("[oauth] issuer") && without.contains("introspection_endpoint"),
        "{without}"
    );

    // The real issuer, with a wrong client secret.
    let homeserver = weft_tests::mas::DelegatedHomeserver::start(&[]).await;
    let wrong = start_error(&oauth_section(homeserver.issuer_url(), "not the secret")).await;
    assert!(
        wrong.contains("[oauth] client-id / client-secret"),
        "{wrong}"
    );
    let introspected: Value = homeserver.introspect("anything").await;
    assert_eq!(introspected["active"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bot_as_an_oauth_client_sends_with_its_own_token_and_renews_it() {
    let mut env = BridgeEnv::start_with(BridgeOptions {
        delegated_auth: true,
        fault_proxy: true,
        ..Default::default()
    })
    .await;
    env.mas().upsert_device("weftbot", "WEFTBOT").await;
    let issuer = FaultProxy::start_rewriting(env.mas().issuer_url()).await;
    let oauth = oauth_section(&issuer.url(), WEFT_CLIENT_SECRET);
    env.reconfigure(&format!("{oauth}bot-device = \"WEFTBOT\"\n"))
        .await;
    let as_token = weft_host::matrix::registration::read(&env.registration())
        .unwrap()
        .as_token;
    let token_requests = || {
        issuer
            .seen()
            .iter()
            .filter(|s| s.path_and_query.starts_with("/oauth2/token"))
            .count()
    };

    // The bot greets a new management room: its join and its notice go
    // with its OAuth token.
    let user = env.user("user").await;
    let room = env.management_room(&user).await;
    let bot_tokens = || -> Vec<String> {
        env.fault_proxy
            .as_ref()
            .unwrap()
            .seen()
            .into_iter()
            .filter(|s| {
                s.path_and_query.contains("/send/") && !s.path_and_query.contains("user_id=")
            })
            .filter_map(|s| s.bearer)
            .collect()
    };
    let first = bot_tokens();
    assert!(!first.is_empty());
    assert!(
        first.iter().all(|t| *t != as_token),
        "the bot sent with the appservice token"
    );
    let introspected = env.mas().introspect(&first[0]).await;
    assert_eq!(introspected["username"], "weftbot", "{introspected}");
    assert!(token_requests() >= 1);

    // Past the token's renewal point, the bot's next message comes with a
    // new token.
    tokio::time::sleep(Duration::from_secs(weft_tests::mas::BOT_TOKEN_TTL_SECS)).await;
    user.send_text(&room, "help").await;
    user.wait_for_text(&room, "login").await;
    let later = bot_tokens();
    let last = later.last().unwrap();
    assert_ne!(*last, first[0], "the bot kept an expired token");
    assert_ne!(*last, as_token);
    assert!(token_requests() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_token_the_homeserver_refuses_is_renewed_and_the_call_tried_once_more() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::{get, post};
    use weft_host::matrix::bot_token::BotToken;
    use weft_host::matrix::client::HomeserverClient;

    weft_host::init_tls();
    // A token endpoint handing out token-1, token-2, ...
    let issued = Arc::new(AtomicUsize::new(0));
    let counter = issued.clone();
    let tokens = axum::Router::new().route(
        "/token",
        post(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            async move { axum::Json(json!({ "access_token": format!("token-{n}"), "token_type": "Bearer", "expires_in": 3600 })) }
        }),
    );
    let token_addr = weft_tests::servers::serve(tokens).await;
    // A homeserver that no longer takes token-1.
    let presented = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = presented.clone();
    let homeserver = axum::Router::new().route(
        "/_matrix/client/v3/account/whoami",
        get(move |headers: HeaderMap| {
            let token = headers["authorization"].to_str().unwrap().to_owned();
            seen.lock().unwrap().push(token.clone());
            async move {
                match token.as_str() {
                    "Bearer token-1" => (
                        StatusCode::UNAUTHORIZED,
                        axum::Json(json!({ "errcode": "M_UNKNOWN_TOKEN", "error": "gone" })),
                    ),
                    _ => (
                        StatusCode::OK,
                        axum::Json(json!({ "user_id": "@weftbot:localhost" })),
                    ),
                }
            }
        }),
    );
    let hs_addr = weft_tests::servers::serve(homeserver).await;

    let client = HomeserverClient::new(&format!("http://{hs_addr}"), "the-as-token")
        .unwrap()
        .with_bot_token(BotToken::new(
            &format!("http://{token_addr}/token"),
            "weft",
            "secret",
            "WEFTBOT",
        ));
    let answer = client
        .send(ruma::api::client::account::whoami::v3::Request::new(), None)
        .await
        .unwrap();
    assert_eq!(answer.user_id, "@weftbot:localhost");
    assert_eq!(issued.load(Ordering::SeqCst), 2);
    assert_eq!(
        *presented.lock().unwrap(),
        ["Bearer token-1", "Bearer token-2"],
        "the appservice token was never the bot's"
    );
}
