//! The Brmble client against a real Mumble server (murmurd 1.3.4), no weft
//! involved: what murmur really sends in `ServerSync`, flow A and flow B
//! with a stand-in Brmble API on loopback, the legacy outcome, rejects and
//! certificate pinning.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::{get, post};
use brmble_client::{FlowError, Identity, MumbleError, MumbleOptions, RejectKind};
use weft_tests::mumble::Murmur;
use weft_tests::servers::serve;

/// The welcome text of a Brmble server whose API is at `api_url`, amid
/// ordinary HTML, written the way the design document shows it.
fn brmble_welcome(api_url: &str) -> String {
    format!(
        "Welcome to <b>Brmble</b>!<br/><!-- rules: be kind --><!--brmble:{{\"apiUrl\":\"{api_url}\"}}--><p>Have fun</p>"
    )
}

/// A stand-in Brmble API under `/brmble`: `/server-info` points at
/// `mumble` (host, port), `/auth/token` records each certificate hash it is
/// asked about and hands out credentials. Returns the API URL and the
/// hashes.
async fn brmble_api(mumble: (String, u16)) -> (String, Arc<Mutex<Vec<String>>>) {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let api = Router::new()
        .route(
            "/server-info",
            get(move || {
                let (host, port) = mumble.clone();
                async move {
                    axum::Json(serde_json::json!({
                        "mumbleHost": host,
                        "mumblePort": port,
                        "matrixHomeserverUrl": "http://127.0.0.1:1",
                    }))
                }
            }),
        )
        .route(
            "/auth/token",
            post({
                let asked = asked.clone();
                move |axum::Json(body): axum::Json<serde_json::Value>| async move {
                    let hash = body["certHash"].as_str().unwrap_or_default().to_owned();
                    asked.lock().unwrap().push(hash);
                    axum::Json(serde_json::json!({
                        "matrix": {
                            "homeserverUrl": "http://127.0.0.1:1",
                            "accessToken": "syt_test",
                            "userId": "@42:localhost",
                            "roomMap": { "0": "!root:localhost" },
                        },
                        "livekit": null,
                    }))
                }
            }),
        );
    let addr = serve(Router::new().nest("/brmble", api)).await;
    (format!("http://{addr}/brmble"), asked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_reads_the_brmble_marker_back_from_a_real_murmur() {
    let welcome = brmble_welcome("http://127.0.0.1:29300/brmble");
    let murmur = Murmur::start(&welcome).await;
    let identity = Identity::generate("alice").unwrap();
    let sync = brmble_client::mumble_welcome(murmur.host(), murmur.port(), &identity, "alice")
        .await
        .unwrap_or_else(|e| panic!("{e:?}\nmurmur log:\n{}", murmur.log()));
    // murmur sends the welcome text verbatim: the ini's escaped quotes
    // arrive as plain quotes, the HTML comment untouched.
    assert_eq!(sync.welcome_text, welcome);
    // The marker reads back as the API URL.
    assert_eq!(
        brmble_client::parse_welcome(&sync.welcome_text).map(|m| m.api_url),
        Some("http://127.0.0.1:29300/brmble".to_owned())
    );
    // murmur gave the connection a session, and it knows the user by the
    // hash the client computes: the Brmble certHash is Mumble's.
    assert!(sync.session > 0);
    assert_eq!(sync.client_cert_hash, Some(identity.cert_hash()));
    // Its own (generated, self-signed) certificate is reported for pinning.
    assert_eq!(sync.server_cert_hash.len(), 40);
    // And murmur logged the user in under the name sent.
    assert!(
        murmur.log().contains(":alice(-1)> Authenticated"),
        "{}",
        murmur.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotes_backslashes_line_breaks_and_non_ascii_survive_the_ini_and_the_wire() {
    let welcome = "Line one\nLine \"two\" with a \\ backslash, Välkommen 🎧\t<!--brmble:{\"apiUrl\":\"https://example.org\"}-->";
    let murmur = Murmur::start(welcome).await;
    let identity = Identity::generate("bob").unwrap();
    let sync = brmble_client::mumble_welcome(murmur.host(), murmur.port(), &identity, "bob")
        .await
        .unwrap();
    // Byte for byte what the ini said, decoded.
    assert_eq!(sync.welcome_text, welcome);
    assert_eq!(
        brmble_client::parse_welcome(&sync.welcome_text).map(|m| m.api_url),
        Some("https://example.org".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_a_posts_the_certificate_hash_to_the_api_named_in_murmurs_welcome_text() {
    let (api_url, asked) = brmble_api(("unused".into(), 1)).await;
    let murmur = Murmur::start(&brmble_welcome(&api_url)).await;
    let identity = Identity::generate("alice").unwrap();
    let session = brmble_client::flow_a(murmur.host(), murmur.port(), &identity, "alice")
        .await
        .unwrap();
    // The API was asked once, about this certificate.
    assert_eq!(*asked.lock().unwrap(), [identity.cert_hash()]);
    // The session records where everything is, to persist for next time.
    assert_eq!(session.api_url, api_url);
    assert_eq!(session.mumble_host, murmur.host());
    assert_eq!(session.mumble_port, murmur.port());
    // The credentials are the API's answer.
    assert_eq!(session.credentials.matrix.user_id, "@42:localhost");
    assert_eq!(session.credentials.matrix.room_map["0"], "!root:localhost");
    // The hash sent to the API is the one murmur knows the user by.
    assert_eq!(
        session.server_sync.client_cert_hash,
        Some(identity.cert_hash())
    );
    // The bridge message carries them under its type.
    let message = brmble_client::server_credentials_message(&session.credentials);
    assert_eq!(message["type"], "server.credentials");
    assert_eq!(message["data"]["matrix"]["accessToken"], "syt_test");
    assert_eq!(message["data"]["livekit"], serde_json::Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_b_finds_murmur_through_server_info_before_asking_for_the_token() {
    // A plain welcome text: flow B does not need the marker.
    let murmur = Murmur::start("Welcome!").await;
    let (api_url, asked) = brmble_api((murmur.host().to_owned(), murmur.port())).await;
    let identity = Identity::generate("carol").unwrap();
    let session = brmble_client::flow_b(&api_url, &identity, "carol")
        .await
        .unwrap();
    // It connected to the murmur that /server-info named…
    assert_eq!(session.mumble_port, murmur.port());
    assert_eq!(session.server_sync.welcome_text, "Welcome!");
    assert!(
        murmur.log().contains(":carol(-1)> Authenticated"),
        "{}",
        murmur.log()
    );
    // …as the certificate it then asked the token for.
    assert_eq!(*asked.lock().unwrap(), [identity.cert_hash()]);
    assert_eq!(
        session.server_sync.client_cert_hash,
        Some(identity.cert_hash())
    );
    assert_eq!(session.api_url, api_url);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_murmur_without_the_marker_is_a_legacy_server_not_a_failure() {
    let welcome = "<br />Welcome to this server running <b>Murmur</b>.<!-- no brmble here -->";
    let murmur = Murmur::start(welcome).await;
    let identity = Identity::generate("dave").unwrap();
    let error = brmble_client::flow_a(murmur.host(), murmur.port(), &identity, "dave")
        .await
        .unwrap_err();
    // The legacy outcome, with what the server sent.
    assert!(error.is_legacy(), "{error:?}");
    let FlowError::Legacy { server_sync } = error else {
        unreachable!()
    };
    assert_eq!(server_sync.welcome_text, welcome);
    // The Mumble connection itself went through.
    assert!(server_sync.session > 0);
    assert_eq!(server_sync.client_cert_hash, Some(identity.cert_hash()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn murmur_rejects_an_invalid_username_with_a_typed_reason() {
    let murmur = Murmur::start("Welcome!").await;
    let identity = Identity::generate("eve").unwrap();
    // murmur's default username pattern allows no spaces or `!`.
    let error =
        brmble_client::mumble_welcome(murmur.host(), murmur.port(), &identity, "not valid!")
            .await
            .unwrap_err();
    match error {
        MumbleError::Rejected { kind, reason } => {
            assert_eq!(kind, RejectKind::InvalidUsername);
            // murmur explains itself.
            assert!(!reason.is_empty());
        }
        other => panic!("expected a reject, got {other:?}"),
    }
    // Through flow A the same reject is a Mumble error, not legacy.
    let error = brmble_client::flow_a(murmur.host(), murmur.port(), &identity, "not valid!")
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            FlowError::Mumble(MumbleError::Rejected {
                kind: RejectKind::InvalidUsername,
                ..
            })
        ),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinning_murmurs_certificate_connects_and_another_pin_is_refused() {
    let murmur = Murmur::start("Welcome!").await;
    let identity = Identity::generate("frank").unwrap();
    let first = brmble_client::mumble_welcome(murmur.host(), murmur.port(), &identity, "frank")
        .await
        .unwrap();
    // Pinned to the certificate seen the first time: it connects.
    let pinned = MumbleOptions::default().pin_server_cert(first.server_cert_hash.clone());
    let again = brmble_client::mumble_welcome_with(
        murmur.host(),
        murmur.port(),
        &identity,
        "frank",
        &pinned,
    )
    .await
    .unwrap();
    assert_eq!(again.server_cert_hash, first.server_cert_hash);
    // Pinned to another certificate: refused, naming both.
    let wrong = MumbleOptions::default().pin_server_cert("0".repeat(40));
    let error = brmble_client::mumble_welcome_with(
        murmur.host(),
        murmur.port(),
        &identity,
        "frank",
        &wrong,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&error, MumbleError::ServerCertificateMismatch { actual, .. } if *actual == first.server_cert_hash),
        "{error:?}"
    );
}
