//! Real HTTP servers on loopback for plugins to call.

use std::net::SocketAddr;

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::get;

/// A server with a few fixed routes: `/ok`, `/big` (2 MiB), `/slow`
/// (answers after 30 s), `/set-cookie` and `/echo-cookie`.
pub async fn fixture_server() -> SocketAddr {
    let app = Router::new()
        .route("/ok", get(|| async { "hello from the test server" }))
        .route("/big", get(|| async { vec![b'x'; 2 << 20] }))
        .route(
            "/redirect",
            get(|| async {
                (
                    axum::http::StatusCode::FOUND,
                    [("location", "/ok")],
                    "moved",
                )
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                "late"
            }),
        )
        .route(
            "/set-cookie",
            get(|headers: axum::http::HeaderMap| async move {
                let value = headers
                    .get("x-probe")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("none")
                    .to_owned();
                ([("set-cookie", format!("session={value}; Path=/"))], "set").into_response()
            }),
        )
        .route(
            "/echo-cookie",
            get(|headers: axum::http::HeaderMap| async move {
                headers
                    .get("cookie")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("no-cookie")
                    .to_owned()
            }),
        );
    serve(app).await
}

/// Serves `app` on a free loopback port for the rest of the test.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("test server") });
    addr
}
