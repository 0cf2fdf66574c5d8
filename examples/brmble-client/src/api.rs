//! The Brmble server's HTTP API as a client sees it: `GET /server-info`
//! (where the Mumble server is, for flow B) and `POST /auth/token` (the
//! Matrix credentials of the user a certificate hash belongs to), and the
//! `server.credentials` message the client hands its frontend.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::http::{self, RequestError};

/// `GET {apiUrl}/server-info`: where the server's Mumble and Matrix are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerInfo {
    /// The Mumble server's host name or address.
    pub mumble_host: String,
    /// The Mumble server's TCP port.
    pub mumble_port: u16,
    /// The Matrix homeserver's client-server API base URL.
    #[serde(default)]
    pub matrix_homeserver_url: Option<String>,
}

/// `POST {apiUrl}/auth/token`: the credentials of every service the
/// server offers, and the `data` of the `server.credentials` message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    /// The user's Matrix account.
    pub matrix: MatrixCredentials,
    /// LiveKit credentials: `null` until the server issues them, and
    /// passed through untouched when it does.
    #[serde(default)]
    pub livekit: Option<serde_json::Value>,
}

/// A Matrix account the Brmble server provisioned for a certificate.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MatrixCredentials {
    /// The homeserver's client-server API base URL.
    pub homeserver_url: String,
    /// The user's access token: a secret.
    pub access_token: String,
    /// The user's Matrix ID, e.g. `@42:example.org`.
    pub user_id: String,
    /// The Matrix room of each Mumble channel, by channel id.
    pub room_map: BTreeMap<String, String>,
}

impl fmt::Debug for MatrixCredentials {
    // The token stays out of logs and panic messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MatrixCredentials")
            .field("homeserver_url", &self.homeserver_url)
            .field("access_token", &"<redacted>")
            .field("user_id", &self.user_id)
            .field("room_map", &self.room_map)
            .finish()
    }
}

/// The bridge message a Brmble client sends its frontend once it has the
/// credentials: `{"type":"server.credentials","data":{…}}`. It contains
/// the access token.
pub fn server_credentials_message(credentials: &Credentials) -> serde_json::Value {
    serde_json::json!({
        "type": "server.credentials",
        "data": credentials,
    })
}

/// # `GET {apiUrl}/server-info`
///
/// Public: no authentication.
pub async fn get_server_info(api_url: &str) -> Result<ServerInfo, RequestError> {
    let url = http::endpoint(api_url, "/server-info")?;
    http::send_json(http::client()?.get(url)).await
}

/// # `POST {apiUrl}/auth/token`
///
/// The credentials of the user whose certificate has SHA-1 `cert_hash`
/// (see [`Identity::cert_hash`](crate::Identity::cert_hash)).
pub async fn request_credentials(
    api_url: &str,
    cert_hash: &str,
) -> Result<Credentials, RequestError> {
    let url = http::endpoint(api_url, "/auth/token")?;
    let body = serde_json::json!({ "certHash": cert_hash });
    http::send_json(http::client()?.post(url).json(&body)).await
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::{get, post};

    use super::{
        Credentials, ServerInfo, get_server_info, request_credentials, server_credentials_message,
    };
    use crate::http::RequestError;

    /// Serves `app` under `/brmble` on loopback; returns the API URL.
    async fn api(app: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().nest("/brmble", app);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}/brmble")
    }

    const TOKEN_RESPONSE: &str = r#"{
        "matrix": {
            "homeserverUrl": "https://noscope.it:1912",
            "accessToken": "syt_secret",
            "userId": "@42:noscope.it",
            "roomMap": { "1": "!abc:noscope.it", "2": "!def:noscope.it" }
        },
        "livekit": null
    }"#;

    #[test]
    fn the_token_response_of_the_design_document_reads_and_becomes_the_bridge_message() {
        let credentials: Credentials = serde_json::from_str(TOKEN_RESPONSE).unwrap();
        // The fields are camelCase on the wire.
        assert_eq!(credentials.matrix.user_id, "@42:noscope.it");
        assert_eq!(credentials.matrix.room_map["2"], "!def:noscope.it");
        assert_eq!(credentials.livekit, None);
        // The bridge message wraps them unchanged, livekit as null.
        let message = server_credentials_message(&credentials);
        assert_eq!(
            message,
            serde_json::json!({
                "type": "server.credentials",
                "data": serde_json::from_str::<serde_json::Value>(TOKEN_RESPONSE).unwrap(),
            })
        );
    }

    #[test]
    fn livekit_credentials_pass_through_untouched() {
        let mut response: serde_json::Value = serde_json::from_str(TOKEN_RESPONSE).unwrap();
        response["livekit"] = serde_json::json!({"url": "wss://lk", "token": "t"});
        let credentials: Credentials = serde_json::from_value(response.clone()).unwrap();
        // Whatever the server sends for LiveKit reaches the frontend as is.
        assert_eq!(server_credentials_message(&credentials)["data"], response);
        // A response without the field reads as null.
        response.as_object_mut().unwrap().remove("livekit");
        let credentials: Credentials = serde_json::from_value(response).unwrap();
        assert_eq!(credentials.livekit, None);
    }

    #[test]
    fn the_access_token_is_not_in_debug_output() {
        let credentials: Credentials = serde_json::from_str(TOKEN_RESPONSE).unwrap();
        let debug = format!("{credentials:?}");
        // Logs and panics do not leak the token.
        assert!(!debug.contains("syt_secret"), "{debug}");
        // But the rest is there to debug with.
        assert!(debug.contains("@42:noscope.it"), "{debug}");
    }

    #[test]
    fn server_info_reads_the_design_document_example() {
        let info: ServerInfo = serde_json::from_str(
            r#"{"mumbleHost":"mumble.noscope.it","mumblePort":64738,"matrixHomeserverUrl":"https://noscope.it:1912"}"#,
        )
        .unwrap();
        // Each camelCase field lands in its place.
        assert_eq!(
            info,
            ServerInfo {
                mumble_host: "mumble.noscope.it".into(),
                mumble_port: 64738,
                matrix_homeserver_url: Some("https://noscope.it:1912".into()),
            }
        );
        // A port outside u16 is an error, not a wrapped number.
        assert!(
            serde_json::from_str::<ServerInfo>(r#"{"mumbleHost":"h","mumblePort":70000}"#).is_err()
        );
    }

    #[tokio::test]
    async fn the_token_request_posts_the_cert_hash_as_json() {
        let posted = Arc::new(Mutex::new(None));
        let app = Router::new().route(
            "/auth/token",
            post({
                let posted = posted.clone();
                move |axum::Json(body): axum::Json<serde_json::Value>| async move {
                    *posted.lock().unwrap() = Some(body);
                    ([("content-type", "application/json")], TOKEN_RESPONSE)
                }
            }),
        );
        let url = api(app).await;
        // A trailing slash on the API URL does not double the slash.
        let credentials = request_credentials(&format!("{url}/"), &"ab".repeat(20))
            .await
            .unwrap();
        // The body is exactly `{"certHash": …}`.
        assert_eq!(
            posted.lock().unwrap().clone(),
            Some(serde_json::json!({ "certHash": "ab".repeat(20) }))
        );
        // The answer is read as credentials.
        assert_eq!(credentials.matrix.access_token, "syt_secret");
    }

    #[tokio::test]
    async fn server_info_is_fetched_from_the_api() {
        let app = Router::new().route(
            "/server-info",
            get(|| async {
                axum::Json(serde_json::json!({"mumbleHost": "127.0.0.1", "mumblePort": 29301, "matrixHomeserverUrl": "http://hs"}))
            }),
        );
        let info = get_server_info(&api(app).await).await.unwrap();
        assert_eq!(info.mumble_host, "127.0.0.1");
        assert_eq!(info.mumble_port, 29301);
    }

    #[tokio::test]
    async fn api_errors_keep_the_errcode_and_a_proxy_page_gives_an_excerpt() {
        let app = Router::new()
            .route(
                "/auth/token",
                post(|| async {
                    (
                        StatusCode::FORBIDDEN,
                        axum::Json(serde_json::json!({"errcode": "M_FORBIDDEN", "error": "unknown certificate"})),
                    )
                }),
            )
            .route(
                "/server-info",
                get(|| async { (StatusCode::BAD_GATEWAY, "<html>Bad Gateway</html>") }),
            );
        let url = api(app).await;
        let error = request_credentials(&url, "00").await.unwrap_err();
        // The Matrix-style error body is kept for the caller to branch on.
        assert_eq!(error.status(), Some(StatusCode::FORBIDDEN));
        assert_eq!(error.errcode(), Some("M_FORBIDDEN"));
        assert!(
            error
                .to_string()
                .ends_with("403 Forbidden: M_FORBIDDEN: unknown certificate"),
            "{error}"
        );
        assert!(!error.is_transient());
        // A non-JSON error page is quoted, and a 502 may heal.
        let error = get_server_info(&url).await.unwrap_err();
        assert!(
            error.to_string().contains("<html>Bad Gateway</html>"),
            "{error}"
        );
        assert!(error.is_transient());
    }

    #[tokio::test]
    async fn a_success_with_the_wrong_body_is_a_body_error() {
        let app = Router::new().route(
            "/server-info",
            get(|| async { axum::Json(serde_json::json!({"mumble": 1})) }),
        );
        let error = get_server_info(&api(app).await).await.unwrap_err();
        assert!(matches!(error, RequestError::Body { .. }), "{error:?}");
    }

    #[tokio::test]
    async fn api_urls_that_are_not_http_are_refused_before_any_request() {
        for url in ["not a url", "ftp://example.org", "file:///etc", ""] {
            let error = get_server_info(url).await.unwrap_err();
            assert!(
                matches!(&error, RequestError::InvalidUrl(u) if u == url),
                "{error:?}"
            );
        }
    }
}
