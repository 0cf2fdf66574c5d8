//! `join_and_say` against a recording fake homeserver on loopback.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::{MatrixError, join_and_say};
use crate::api::MatrixCredentials;

const TOKEN: &str = "syt_secret_token";

/// One request as the homeserver saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    /// The path as sent, percent-encoding and all.
    path: String,
    query: Option<String>,
    authorization: Option<String>,
    body: Option<serde_json::Value>,
}

#[derive(Clone)]
struct Homeserver {
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Whose token `TOKEN` is.
    owner: &'static str,
}

async fn answer(
    State(hs): State<Homeserver>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let seen = Seen {
        method: method.clone(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        authorization: headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned()),
        body: serde_json::from_slice(&body).ok(),
    };
    hs.seen.lock().unwrap().push(seen.clone());
    if seen.authorization.as_deref() != Some(&format!("Bearer {TOKEN}")) {
        let body =
            serde_json::json!({"errcode": "M_UNKNOWN_TOKEN", "error": "Unknown access token"});
        return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    }
    let path = seen.path.as_str();
    let body = if path == "/_matrix/client/v3/account/whoami" {
        serde_json::json!({ "user_id": hs.owner })
    } else if path.contains("forbidden") {
        let body = serde_json::json!({"errcode": "M_FORBIDDEN", "error": "You are not invited"});
        return (StatusCode::FORBIDDEN, axum::Json(body)).into_response();
    } else if path.starts_with("/_matrix/client/v3/join/") {
        serde_json::json!({ "room_id": "!whatever:hs" })
    } else if path.contains("/send/m.room.message/") {
        let n = hs.seen.lock().unwrap().len();
        serde_json::json!({ "event_id": format!("$event{n}") })
    } else {
        return StatusCode::NOT_FOUND.into_response();
    };
    axum::Json(body).into_response()
}

/// A homeserver for which `TOKEN` is `owner`'s; returns its URL (with a
/// trailing slash, as users paste them) and what it saw.
async fn homeserver(owner: &'static str) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new().fallback(answer).with_state(Homeserver {
        seen: seen.clone(),
        owner,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/"), seen)
}

fn credentials(homeserver_url: String, rooms: &[(&str, &str)]) -> MatrixCredentials {
    MatrixCredentials {
        homeserver_url,
        access_token: TOKEN.into(),
        user_id: "@42:hs".into(),
        room_map: rooms
            .iter()
            .map(|(c, r)| ((*c).to_owned(), (*r).to_owned()))
            .collect::<BTreeMap<_, _>>(),
    }
}

#[tokio::test]
async fn it_checks_the_user_joins_each_room_once_and_sends_to_the_channels_room() {
    let (url, seen) = homeserver("@42:hs").await;
    // Channels 1 and 3 share a room.
    let creds = credentials(url, &[("1", "!a:hs"), ("2", "!b:hs"), ("3", "!a:hs")]);
    let event_id = join_and_say(&creds, "2", "hello from Mumble")
        .await
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    let calls: Vec<(Method, &str)> = seen
        .iter()
        .map(|s| (s.method.clone(), s.path.as_str()))
        .collect();
    // whoami first, then one join per distinct room, then the send, to
    // channel 2's room, with room ids percent-encoded as one segment.
    assert_eq!(
        calls[..3],
        [
            (Method::GET, "/_matrix/client/v3/account/whoami"),
            (Method::POST, "/_matrix/client/v3/join/%21a%3Ahs"),
            (Method::POST, "/_matrix/client/v3/join/%21b%3Ahs"),
        ]
    );
    assert_eq!(calls.len(), 4, "{calls:?}");
    assert_eq!(calls[3].0, Method::PUT);
    assert!(
        calls[3]
            .1
            .starts_with("/_matrix/client/v3/rooms/%21b%3Ahs/send/m.room.message/brmble-"),
        "{calls:?}"
    );
    // The message is plain text.
    assert_eq!(
        seen[3].body,
        Some(serde_json::json!({"msgtype": "m.text", "body": "hello from Mumble"}))
    );
    // The homeserver's event id is returned.
    assert_eq!(event_id, "$event4");
    for request in &seen {
        // Every request carries the token in the header, and none in a
        // query string.
        assert_eq!(
            request.authorization.as_deref(),
            Some("Bearer syt_secret_token")
        );
        assert_eq!(request.query, None, "{request:?}");
    }
}

#[tokio::test]
async fn each_send_has_its_own_transaction_id() {
    let (url, seen) = homeserver("@42:hs").await;
    let creds = credentials(url, &[("1", "!a:hs")]);
    join_and_say(&creds, "1", "one").await.unwrap();
    join_and_say(&creds, "1", "two").await.unwrap();
    let sends: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.method == Method::PUT)
        .map(|s| s.path.clone())
        .collect();
    // Two messages, two ids: the homeserver would drop a repeated one as
    // a retry.
    assert_eq!(sends.len(), 2);
    assert_ne!(sends[0], sends[1]);
}

#[tokio::test]
async fn a_token_of_another_user_stops_before_joining() {
    let (url, seen) = homeserver("@7:hs").await;
    let creds = credentials(url, &[("1", "!a:hs")]);
    let error = join_and_say(&creds, "1", "hi").await.unwrap_err();
    // Both users are named.
    assert!(
        matches!(&error, MatrixError::WrongUser { expected, actual } if expected == "@42:hs" && actual == "@7:hs"),
        "{error:?}"
    );
    // Nothing was joined or sent.
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn an_unknown_channel_makes_no_request_and_lists_the_known_ones() {
    let (url, seen) = homeserver("@42:hs").await;
    let creds = credentials(url, &[("1", "!a:hs"), ("2", "!b:hs")]);
    let error = join_and_say(&creds, "9", "hi").await.unwrap_err();
    assert!(
        matches!(&error, MatrixError::UnknownChannel { channel_id, known } if channel_id == "9" && known == &["1", "2"]),
        "{error:?}"
    );
    // The homeserver saw nothing.
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn homeserver_errors_keep_their_status_and_errcode() {
    let (url, _) = homeserver("@42:hs").await;
    // A bad token.
    let mut creds = credentials(url.clone(), &[("1", "!a:hs")]);
    creds.access_token = "wrong".into();
    let error = join_and_say(&creds, "1", "hi").await.unwrap_err();
    let MatrixError::Request(request) = &error else {
        panic!("expected a request error, got {error:?}");
    };
    assert_eq!(request.status(), Some(StatusCode::UNAUTHORIZED));
    assert_eq!(request.errcode(), Some("M_UNKNOWN_TOKEN"));
    // A 401 will not heal by retrying.
    assert!(!request.is_transient());
    // The message says what was called and what came back, without the
    // token.
    let message = error.to_string();
    assert!(message.contains("GET http://"), "{message}");
    assert!(message.contains("401"), "{message}");
    assert!(
        message.contains("M_UNKNOWN_TOKEN: Unknown access token"),
        "{message}"
    );
    assert!(!message.contains("wrong"), "{message}");

    // A room the user may not join.
    let creds = credentials(url, &[("1", "!forbidden:hs")]);
    let error = join_and_say(&creds, "1", "hi").await.unwrap_err();
    assert!(
        matches!(&error, MatrixError::Request(r) if r.errcode() == Some("M_FORBIDDEN")),
        "{error:?}"
    );
}

#[tokio::test]
async fn an_unreachable_homeserver_is_a_transient_network_error() {
    let port = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let creds = credentials(format!("http://127.0.0.1:{port}"), &[("1", "!a:hs")]);
    let error = join_and_say(&creds, "1", "hi").await.unwrap_err();
    assert!(
        matches!(&error, MatrixError::Request(r @ crate::RequestError::Network { .. }) if r.is_transient()),
        "{error:?}"
    );
}
