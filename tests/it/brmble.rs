//! The Brmble credential provider (`plugins/brmble`) served on the host's
//! public listener, against a real Synapse: per-user accounts through the
//! appservice, tokens that keep working, rooms per channel, concurrency
//! and bad input.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use weft_tests::bridge::{BridgeEnv, BridgeOptions};
use weft_tests::matrix::MatrixUser;
use weft_tests::synapse::DOMAIN;

const ADMIN_TOKEN: &str = "brmble admin token for tests";

/// The provider's grants and its settings: the common ones, then
/// `settings`, then `tables` (e.g. `[plugin.brmble.routes.tls]`).
fn brmble_config(settings: &[String], tables: &[String]) -> Vec<String> {
    let mut config: Vec<String> = [
        "[plugin.brmble]",
        "appservice = true",
        "[plugin.brmble.routes]",
        "prefix = \"/brmble\"",
        "[plugin.brmble.settings]",
        "mumble-host = \"127.0.0.1\"",
        "homeserver-url = \"${HOMESERVER_URL}\"",
    ]
    .map(str::to_owned)
    .to_vec();
    config.extend_from_slice(settings);
    config.extend_from_slice(tables);
    config
}

async fn start(new_users_per_hour: u32) -> BridgeEnv {
    BridgeEnv::start_with(BridgeOptions {
        plugins: vec!["brmble"],
        config: brmble_config(
            &[
                "mumble-port = 64738".into(),
                r#"channels = '{"1": "Lobby", "2": "Music"}'"#.into(),
                format!("admin-token = \"{ADMIN_TOKEN}\""),
                format!("new-users-per-hour = {new_users_per_hour}"),
            ],
            &[],
        ),
        ..Default::default()
    })
    .await
}

fn api(env: &BridgeEnv) -> String {
    format!("{}/brmble", env.appservice_url())
}

fn hash(n: u8) -> String {
    format!("{n:02x}").repeat(20)
}

/// `POST /auth/token` with `body` as JSON: the status and the answer.
async fn auth_token(env: &BridgeEnv, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/auth/token", api(env)))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn credentials(env: &BridgeEnv, cert_hash: &str) -> Value {
    let (status, body) = auth_token(env, json!({ "certHash": cert_hash })).await;
    assert_eq!(status, 200, "{body}");
    body
}

fn user_of(env: &BridgeEnv, credentials: &Value) -> MatrixUser {
    let matrix = &credentials["matrix"];
    MatrixUser::from_token(
        &env.synapse.url,
        matrix["userId"].as_str().unwrap(),
        matrix["accessToken"].as_str().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_cert_hash_gets_a_working_account_and_the_same_hash_gets_it_again() {
    let env = start(20).await;

    let info: Value = reqwest::get(format!("{}/server-info", api(&env)))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        info,
        json!({ "mumbleHost": "127.0.0.1", "mumblePort": 64738, "matrixHomeserverUrl": env.synapse.url })
    );

    let first = credentials(&env, &hash(1)).await;
    assert_eq!(first["matrix"]["userId"], format!("@1:{DOMAIN}"));
    assert_eq!(first["matrix"]["homeserverUrl"], env.synapse.url);
    assert_eq!(first["livekit"], Value::Null);
    let user = user_of(&env, &first);
    assert_eq!(user.whoami().await, Ok(format!("@1:{DOMAIN}")));

    // Upper-case hex is the same certificate.
    let again = credentials(&env, &hash(1).to_uppercase()).await;
    assert_eq!(again["matrix"]["userId"], first["matrix"]["userId"]);
    assert_eq!(
        again["matrix"]["accessToken"],
        first["matrix"]["accessToken"]
    );
    assert_eq!(again["matrix"]["roomMap"], first["matrix"]["roomMap"]);

    let second = credentials(&env, &hash(2)).await;
    assert_eq!(second["matrix"]["userId"], format!("@2:{DOMAIN}"));

    // The registration claims the provider's users for the appservice.
    let registration = std::fs::read_to_string(env.registration()).unwrap();
    assert!(
        registration.contains(&format!("^@(?:[0-9]+):{DOMAIN}$")),
        "{registration}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_logged_out_on_the_homeserver_is_replaced_by_a_working_one() {
    let env = start(20).await;
    let first = credentials(&env, &hash(7)).await;
    let user = user_of(&env, &first);
    user.logout().await;
    assert_eq!(user.whoami().await, Err(401));

    let renewed = credentials(&env, &hash(7)).await;
    assert_eq!(renewed["matrix"]["userId"], first["matrix"]["userId"]);
    assert_ne!(
        renewed["matrix"]["accessToken"],
        first["matrix"]["accessToken"]
    );
    assert_eq!(
        user_of(&env, &renewed).whoami().await,
        Ok(format!("@1:{DOMAIN}"))
    );
    // And it is the one handed out from now on.
    let again = credentials(&env, &hash(7)).await;
    assert_eq!(
        again["matrix"]["accessToken"],
        renewed["matrix"]["accessToken"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_can_read_and_send_in_every_room_of_their_room_map() {
    let env = start(20).await;
    let alice = credentials(&env, &hash(10)).await;
    let bob = credentials(&env, &hash(11)).await;
    let room_map: BTreeMap<String, String> =
        serde_json::from_value(alice["matrix"]["roomMap"].clone()).unwrap();
    assert_eq!(room_map.keys().collect::<Vec<_>>(), ["1", "2"]);
    assert_eq!(alice["matrix"]["roomMap"], bob["matrix"]["roomMap"]);

    let (alice, bob) = (user_of(&env, &alice), user_of(&env, &bob));
    let joined: BTreeSet<String> = alice.joined_rooms().await.into_iter().collect();
    for (channel, room) in &room_map {
        assert!(
            joined.contains(room),
            "alice has not joined channel {channel}'s room"
        );
        alice.send_text(room, &format!("hello {channel}")).await;
        bob.wait_for_body(room, &format!("hello {channel}")).await;
    }
    assert_eq!(
        alice.room_name(&room_map["1"]).await.as_deref(),
        Some("Lobby")
    );

    // A channel the operator adds later gets a room too, for everyone.
    let response = reqwest::Client::new()
        .put(format!("{}/admin/channels/3", api(&env)))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "name": "Games" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let refreshed = credentials(&env, &hash(10)).await;
    let room = refreshed["matrix"]["roomMap"]["3"]
        .as_str()
        .unwrap()
        .to_owned();
    alice.send_text(&room, "anyone for a game").await;
    assert_eq!(alice.room_name(&room).await.as_deref(), Some("Games"));

    // Without the admin token, the route refuses.
    let response = reqwest::Client::new()
        .put(format!("{}/admin/channels/4", api(&env)))
        .bearer_auth("not the admin token at all")
        .json(&json!({ "name": "Nope" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_parallel_first_requests_for_ten_hashes_create_exactly_ten_users() {
    let env = start(20).await;
    let requests = (0..40u8).map(|i| {
        let env = &env;
        async move {
            let cert = hash(100 + i % 10);
            let body = credentials(env, &cert).await;
            (cert, body["matrix"]["userId"].as_str().unwrap().to_owned())
        }
    });
    let answers = futures::future::join_all(requests).await;
    let mut by_hash: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (cert, user) in answers {
        by_hash.entry(cert).or_default().insert(user);
    }
    assert_eq!(by_hash.len(), 10);
    assert!(
        by_hash.values().all(|users| users.len() == 1),
        "a hash got two users: {by_hash:?}"
    );
    let users: BTreeSet<String> = by_hash.into_values().flatten().collect();
    let expected: BTreeSet<String> = (1..=10).map(|id| format!("@{id}:{DOMAIN}")).collect();
    assert_eq!(users, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_json_error_and_stores_nothing() {
    let env = start(3).await;
    let url = format!("{}/auth/token", api(&env));
    let http = reqwest::Client::new();

    for (body, what) in [
        (json!({ "certHash": "abc" }), "a short hash"),
        (
            json!({ "certHash": "z".repeat(40) }),
            "a hash that is not hex",
        ),
        (json!({ "certHash": 42 }), "a hash that is not a string"),
        (json!({ "hash": hash(1) }), "a missing certHash"),
        (json!([]), "not an object"),
    ] {
        let (status, answer) = auth_token(&env, body).await;
        assert_eq!(status, 400, "{what}: {answer}");
        assert_eq!(answer["errcode"], "M_BAD_JSON", "{what}");
        assert!(
            answer["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}"
        );
    }
    let form = http
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("certHash={}", hash(1)))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 400);
    let error: Value = form.json().await.unwrap();
    assert!(error["error"].as_str().unwrap().contains("JSON"), "{error}");

    let oversized = http
        .post(&url)
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"certHash":"{}","pad":"{}"}}"#,
            hash(1),
            "x".repeat(70_000)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(oversized.status(), 413);
    assert_eq!(
        oversized.json::<Value>().await.unwrap()["errcode"],
        "M_TOO_LARGE"
    );

    // Nothing was stored: the first real user still gets the first id.
    let first = credentials(&env, &hash(1)).await;
    assert_eq!(first["matrix"]["userId"], format!("@1:{DOMAIN}"));

    // New users are rate-limited per address (3 per hour here); known
    // users are not.
    credentials(&env, &hash(2)).await;
    credentials(&env, &hash(3)).await;
    let (status, answer) = auth_token(&env, json!({ "certHash": hash(4) })).await;
    assert_eq!(status, 429, "{answer}");
    assert_eq!(answer["errcode"], "M_LIMIT_EXCEEDED");
    let known = credentials(&env, &hash(1)).await;
    assert_eq!(known["matrix"]["userId"], format!("@1:{DOMAIN}"));

    // Unknown routes and methods get JSON errors too.
    let missing = http
        .get(format!("{}/nope", api(&env)))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.json::<Value>().await.unwrap()["errcode"],
        "M_NOT_FOUND"
    );
    let wrong_method = http.get(&url).send().await.unwrap();
    assert_eq!(wrong_method.status(), 405);
}

/// A certificate and its key, PEM.
struct Pem {
    cert: String,
    key: String,
    sha1: String,
}

fn certificate(name: &str) -> Pem {
    use sha1::Digest;
    let generated = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
    Pem {
        cert: generated.cert.pem(),
        key: generated.signing_key.serialize_pem(),
        sha1: hex::encode(sha1::Sha1::digest(generated.cert.der())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_client_certificates_the_hash_must_be_the_presented_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let server = certificate("localhost");
    std::fs::write(dir.path().join("cert.pem"), &server.cert).unwrap();
    std::fs::write(dir.path().join("key.pem"), &server.key).unwrap();
    let port = weft_tests::synapse::free_port();
    let env = BridgeEnv::start_with(BridgeOptions {
        plugins: vec!["brmble"],
        config: brmble_config(
            &["require-client-certificate = true".into()],
            &[
                "[plugin.brmble.routes.tls]".into(),
                format!("listen = \"127.0.0.1:{port}\""),
                format!(
                    "certificate = \"{}\"",
                    dir.path().join("cert.pem").display()
                ),
                format!("key = \"{}\"", dir.path().join("key.pem").display()),
            ],
        ),
        ..Default::default()
    })
    .await;
    let url = format!("https://localhost:{port}/brmble/auth/token");
    let client = |identity: Option<&Pem>| {
        let mut builder = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(server.cert.as_bytes()).unwrap());
        if let Some(pem) = identity {
            let both = format!("{}{}", pem.cert, pem.key);
            builder = builder.identity(reqwest::Identity::from_pem(both.as_bytes()).unwrap());
        }
        builder.build().unwrap()
    };

    // The presented certificate's own hash works.
    let alice = certificate("alice");
    let response = client(Some(&alice))
        .post(&url)
        .json(&json!({ "certHash": alice.sha1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["matrix"]["userId"], format!("@1:{DOMAIN}"));

    // Someone else's hash, from a connection that presented alice's, is
    // refused: knowing a hash is not enough.
    let mallory = certificate("mallory");
    let response = client(Some(&mallory))
        .post(&url)
        .json(&json!({ "certHash": alice.sha1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(
        response.json::<Value>().await.unwrap()["errcode"],
        "M_FORBIDDEN"
    );

    // Without a certificate the handshake itself fails.
    let refused = client(None)
        .post(&url)
        .json(&json!({ "certHash": alice.sha1 }))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "a connection without a certificate was served"
    );

    // The routes are not on the plain listener, which would skip the check.
    let plain = reqwest::Client::new()
        .post(format!("{}/auth/token", api(&env)))
        .json(&json!({ "certHash": alice.sha1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brmble_clients_find_the_server_both_ways_and_talk_in_a_channel_room() {
    let mumble_port = weft_tests::synapse::free_port();
    let env = BridgeEnv::start_with(BridgeOptions {
        plugins: vec!["brmble"],
        config: brmble_config(
            &[
                format!("mumble-port = {mumble_port}"),
                r#"channels = '{"1": "Lobby"}'"#.into(),
            ],
            &[],
        ),
        ..Default::default()
    })
    .await;
    let welcome = format!(
        "Welcome to our server!<br/><!--brmble:{{\"apiUrl\":\"{}\"}}-->",
        api(&env)
    );
    let murmur = weft_tests::mumble::Murmur::start_on(mumble_port, &welcome).await;

    // Flow A: Mumble first; the welcome text leads to the API.
    let alice_identity = brmble_client::Identity::generate("alice").unwrap();
    let alice = brmble_client::flow_a(murmur.host(), murmur.port(), &alice_identity, "alice")
        .await
        .unwrap();
    assert_eq!(alice.api_url, api(&env));
    assert_eq!(alice.credentials.matrix.user_id, format!("@1:{DOMAIN}"));
    // The hash Brmble knows the user by is the one Mumble does.
    assert_eq!(
        alice.server_sync.client_cert_hash.as_deref(),
        Some(alice_identity.cert_hash().as_str())
    );
    let message = brmble_client::server_credentials_message(&alice.credentials);
    assert_eq!(message["type"], "server.credentials");
    assert_eq!(message["data"]["matrix"]["userId"], format!("@1:{DOMAIN}"));

    // Flow B: the API first; /server-info leads to Mumble.
    let bob_identity = brmble_client::Identity::generate("bob").unwrap();
    let bob = brmble_client::flow_b(&api(&env), &bob_identity, "bob")
        .await
        .unwrap();
    assert_eq!(
        (bob.mumble_host.as_str(), bob.mumble_port),
        ("127.0.0.1", mumble_port)
    );
    assert_eq!(bob.credentials.matrix.user_id, format!("@2:{DOMAIN}"));

    // Both talk in the Lobby's room, as the client does it.
    brmble_client::join_and_say(&alice.credentials.matrix, "1", "hello from flow A")
        .await
        .unwrap();
    brmble_client::join_and_say(&bob.credentials.matrix, "1", "hello from flow B")
        .await
        .unwrap();
    let room = alice.credentials.matrix.room_map["1"].clone();
    assert_eq!(bob.credentials.matrix.room_map["1"], room);
    let bob_reads = MatrixUser::from_token(
        &env.synapse.url,
        &bob.credentials.matrix.user_id,
        &bob.credentials.matrix.access_token,
    );
    bob_reads.wait_for_body(&room, "hello from flow A").await;
    bob_reads.wait_for_body(&room, "hello from flow B").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_homeserver_that_delegates_auth_the_provider_says_so_at_start_and_registers_no_one() {
    let env = BridgeEnv::start_with(BridgeOptions {
        plugins: vec!["brmble"],
        delegated_auth: true,
        process: true,
        fault_proxy: true,
        config: brmble_config(&[], &[]),
        ..Default::default()
    })
    .await;
    // Said once, at load, naming the setting.
    let log = env.host_log();
    assert!(
        log.contains("delegates authentication") && log.contains("[plugin.brmble] appservice"),
        "{log}"
    );
    // A request gets the same explanation at once, and nothing reaches
    // the homeserver's registration.
    let (status, answer) = auth_token(&env, json!({ "certHash": hash(1) })).await;
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("MSC3861"),
        "{answer}"
    );
    let seen = env.fault_proxy.as_ref().unwrap().seen();
    assert!(
        !seen.iter().any(|s| s.path_and_query.contains("/login")),
        "{seen:?}"
    );
    assert_eq!(
        seen.iter()
            .filter(|s| s.path_and_query.contains("/register"))
            .count(),
        1,
        "only the bot registers: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_that_exists_already_is_skipped_never_handed_out() {
    let env = start(20).await;
    // Someone registered @1 through the appservice before the provider
    // ever ran (or the provider's state was lost).
    let as_token = weft_host::matrix::registration::read(&env.registration())
        .unwrap()
        .as_token;
    let registered = reqwest::Client::new()
        .post(format!("{}/_matrix/client/v3/register", env.synapse.url))
        .bearer_auth(&as_token)
        .json(&json!({ "type": "m.login.application_service", "username": "1", "inhibit_login": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 200);

    let first = credentials(&env, &hash(1)).await;
    assert_eq!(first["matrix"]["userId"], format!("@2:{DOMAIN}"));
    assert_eq!(
        user_of(&env, &first).whoami().await,
        Ok(format!("@2:{DOMAIN}"))
    );
    let second = credentials(&env, &hash(2)).await;
    assert_eq!(second["matrix"]["userId"], format!("@3:{DOMAIN}"));
}
