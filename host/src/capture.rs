//! Capture sessions: one-time web pages where a user hands a login process
//! material from elsewhere, e.g. a browser's token cache copied with a
//! console snippet (`weft:plugin/capture`).
//!
//! The host, not the plugin, owns the security rules, so they hold for
//! every plugin:
//! - session ids are 256 random bits, and each belongs to one process;
//! - the first capture wins: a later one gets 409 and changes nothing;
//! - a body that is not JSON, or whose `storage` is not JSON text, gets
//!   400; one over 512 KiB gets 413 without being read whole;
//! - an unknown, closed or expired session gets 404; sessions expire after
//!   30 minutes and end with their process;
//! - the page loads nothing from elsewhere and may send only to its own
//!   capture endpoint (a nonce-based Content-Security-Policy).
//!
//! `GET {public-url}/login/{id}` serves the page and `POST
//! {public-url}/login/{id}/capture` with `{"storage": "..."}` captures.
//! Without JavaScript the page's form posts `storage` form-encoded and
//! gets an HTML answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use rand::RngCore;
use weft_runtime::{CapturePage, CaptureSession};

/// How long a session lives at most (less if login processes time out
/// sooner: a page never outlives its process).
pub const SESSION_TTL: Duration = Duration::from_secs(30 * 60);
/// The largest capture body.
pub const MAX_CAPTURE_BYTES: usize = 512 << 10;
/// The most sessions one login process may hold at once.
const MAX_PER_PROCESS: usize = 4;
/// The most sessions the host holds at once.
const MAX_SESSIONS: usize = 4096;

const PAGE: &str = include_str!("capture/page.html");

enum Capture {
    Waiting,
    Captured(String),
    Taken,
}

struct Session {
    process: String,
    page: CapturePage,
    opened: Instant,
    capture: Capture,
}

/// Every open capture session.
pub struct CaptureSessions {
    /// Where users' browsers reach the listener that serves the pages;
    /// unset until the listener is bound (or without one).
    public_url: RwLock<Option<String>>,
    ttl: Duration,
    sessions: Mutex<HashMap<String, Session>>,
}

impl CaptureSessions {
    /// No sessions yet; `public_url` is the configured one, if any, and
    /// sessions expire after `ttl` (at most [`SESSION_TTL`]).
    pub fn new(public_url: Option<String>, ttl: Duration) -> Arc<Self> {
        Arc::new(Self {
            public_url: RwLock::new(public_url.map(|u| u.trim_end_matches('/').to_owned())),
            ttl: ttl.min(SESSION_TTL),
            sessions: Mutex::new(HashMap::new()),
        })
    }

    /// Sets the public URL to the listener's bound address, unless the
    /// operator configured one.
    pub fn default_public_url(&self, url: String) {
        let mut public = self.public_url.write().expect("capture lock poisoned");
        if public.is_none() {
            *public = Some(url);
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        let mut sessions = self.sessions.lock().expect("capture lock poisoned");
        sessions.retain(|_, s| s.opened.elapsed() < self.ttl);
        sessions
    }

    /// Opens a session for login process `process`.
    pub fn open(&self, process: &str, page: CapturePage) -> Result<CaptureSession, String> {
        let Some(base) = self
            .public_url
            .read()
            .expect("capture lock poisoned")
            .clone()
        else {
            return Err(
                "this host serves no capture pages: it has no [appservice] listener".into(),
            );
        };
        let mut sessions = self.sessions();
        let mine = sessions.values().filter(|s| s.process == process).count();
        if mine >= MAX_PER_PROCESS {
            return Err(format!(
                "a login process may hold at most {MAX_PER_PROCESS} capture pages; close one first"
            ));
        }
        if sessions.len() >= MAX_SESSIONS {
            return Err("the bridge has too many capture pages open; try again later".into());
        }
        let mut id = [0u8; 32];
        rand::rng().fill_bytes(&mut id);
        let id = URL_SAFE_NO_PAD.encode(id);
        sessions.insert(
            id.clone(),
            Session {
                process: process.to_owned(),
                page,
                opened: Instant::now(),
                capture: Capture::Waiting,
            },
        );
        Ok(CaptureSession {
            url: format!("{base}/login/{id}"),
            id,
        })
    }

    /// What was captured in session `id` of `process`, once.
    pub fn take(&self, process: &str, id: &str) -> Result<Option<String>, String> {
        let mut sessions = self.sessions();
        let session = sessions
            .get_mut(id)
            .filter(|s| s.process == process)
            .ok_or_else(|| "no such capture session (it may have expired)".to_owned())?;
        Ok(
            match std::mem::replace(&mut session.capture, Capture::Taken) {
                Capture::Captured(material) => Some(material),
                Capture::Waiting => {
                    session.capture = Capture::Waiting;
                    None
                }
                Capture::Taken => None,
            },
        )
    }

    /// Closes session `id` of `process`.
    pub fn close(&self, process: &str, id: &str) {
        let mut sessions = self.sessions();
        if sessions.get(id).is_some_and(|s| s.process == process) {
            sessions.remove(id);
        }
    }

    /// Closes every session of `process` (it ended).
    pub fn close_all(&self, process: &str) {
        self.sessions().retain(|_, s| s.process != process);
    }

    /// How many sessions are open (for tests and the admin API).
    pub fn len(&self) -> usize {
        self.sessions().len()
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stores a capture: the first wins.
    fn capture(&self, id: &str, material: String) -> Result<(), Refusal> {
        let mut sessions = self.sessions();
        let session = sessions.get_mut(id).ok_or(Refusal::Unknown)?;
        match session.capture {
            Capture::Waiting => {
                session.capture = Capture::Captured(material);
                Ok(())
            }
            Capture::Captured(_) | Capture::Taken => Err(Refusal::AlreadyCaptured),
        }
    }

    fn page(&self, id: &str) -> Option<(CapturePage, bool)> {
        self.sessions()
            .get(id)
            .map(|s| (s.page.clone(), !matches!(s.capture, Capture::Waiting)))
    }
}

/// Why a capture was refused.
#[derive(Debug)]
enum Refusal {
    Unknown,
    AlreadyCaptured,
    NotJson(String),
    TooLarge,
    Unreadable,
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Self::Unknown => StatusCode::NOT_FOUND,
            Self::AlreadyCaptured => StatusCode::CONFLICT,
            Self::NotJson(_) | Self::Unreadable => StatusCode::BAD_REQUEST,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    fn message(&self) -> String {
        match self {
            Self::Unknown => "This login link is unknown or has expired. Start the login again in your Matrix client.".into(),
            Self::AlreadyCaptured => "This link was already used; what was sent first stands. Start a new login to send something else.".into(),
            Self::NotJson(error) => format!("That is not the copied text: it is not valid JSON ({error}). Copy it again and paste all of it."),
            Self::TooLarge => format!("That is too large: a capture holds at most {} KiB.", MAX_CAPTURE_BYTES >> 10),
            Self::Unreadable => "The request could not be read.".into(),
        }
    }
}

/// The capture routes, to merge into the public listener's router.
pub fn router(sessions: Arc<CaptureSessions>) -> Router {
    Router::new()
        .route("/login/{id}", get(page))
        .route(
            "/login/{id}/capture",
            axum::routing::post(capture).layer(DefaultBodyLimit::max(MAX_CAPTURE_BYTES)),
        )
        .with_state(sessions)
}

/// Headers every answer carries: nothing cached, no referrer, no framing.
fn hardened(mut response: Response, nonce: Option<&str>) -> Response {
    let csp = match nonce {
        Some(nonce) => format!(
            "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; \
             connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
        ),
        None => "default-src 'none'; frame-ancestors 'none'".to_owned(),
    };
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, csp.as_str()),
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
    response
}

fn render(id: &str, page: &CapturePage, state: &str, message: &str) -> (String, String) {
    let mut nonce = [0u8; 16];
    rand::rng().fill_bytes(&mut nonce);
    let nonce = URL_SAFE_NO_PAD.encode(nonce);
    let text = |s: &str| html_escape::encode_double_quoted_attribute(s).into_owned();
    let steps: String = page
        .steps
        .iter()
        .map(|s| format!("<li>{}</li>", text(s)))
        .collect();
    let snippet = page.snippet.as_ref().map_or_else(String::new, |s| {
        format!(
            "<div class=\"snippet\"><pre><code id=\"snippet\">{}</code></pre>\
             <button id=\"copy\" class=\"secondary\" type=\"button\">Copy</button></div>",
            text(s)
        )
    });
    let html = PAGE
        .replace("{{nonce}}", &nonce)
        .replace("{{title}}", &text(&page.title))
        .replace("{{steps}}", &steps)
        .replace("{{snippet}}", &snippet)
        .replace("{{label}}", &text(&page.field_label))
        // Relative to /login/{id}, so a reverse proxy's path prefix holds.
        .replace("{{action}}", &format!("{}/capture", text(id)))
        .replace("{{state}}", state)
        .replace("{{message}}", &text(message));
    (html, nonce)
}

async fn page(State(sessions): State<Arc<CaptureSessions>>, Path(id): Path<String>) -> Response {
    match sessions.page(&id) {
        Some((page, used)) => {
            let (state, message) = if used {
                ("success", "Received already. Go back to your Matrix client.")
            } else {
                ("idle", "")
            };
            let (html, nonce) = render(&id, &page, state, message);
            hardened(Html(html).into_response(), Some(&nonce))
        }
        None => hardened(
            (
                StatusCode::NOT_FOUND,
                Html(format!(
                    "<!doctype html><meta charset=utf-8><meta name=viewport content=\"width=device-width\">\
                     <title>Link expired</title><p>{}</p>",
                    Refusal::Unknown.message()
                )),
            )
                .into_response(),
            None,
        ),
    }
}

#[derive(serde::Deserialize)]
struct CaptureBody {
    storage: String,
}

async fn capture(
    State(sessions): State<Arc<CaptureSessions>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let outcome = body
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Refusal::TooLarge
            } else {
                Refusal::Unreadable
            }
        })
        .and_then(|body| storage(&body, form))
        .and_then(|material| sessions.capture(&id, material));
    if let Err(refusal) = &outcome {
        tracing::info!(status = %refusal.status(), "a capture was refused");
    }
    let message = match &outcome {
        Ok(()) => "Received. Go back to your Matrix client: the login goes on there.".to_owned(),
        Err(refusal) => refusal.message(),
    };
    let status = outcome
        .as_ref()
        .map_or_else(Refusal::status, |()| StatusCode::OK);
    if form {
        // The no-JavaScript path: the page again, showing the outcome.
        let state = if outcome.is_ok() { "success" } else { "error" };
        return match sessions.page(&id) {
            Some((page, _)) => {
                let (html, nonce) = render(&id, &page, state, &message);
                hardened((status, Html(html)).into_response(), Some(&nonce))
            }
            None => hardened((status, message).into_response(), None),
        };
    }
    let body = if outcome.is_ok() {
        serde_json::json!({ "message": message })
    } else {
        serde_json::json!({ "error": message })
    };
    hardened((status, Json(body)).into_response(), None)
}

/// The captured text from a JSON or form body; it must itself be JSON.
fn storage(body: &[u8], form: bool) -> Result<String, Refusal> {
    let storage = if form {
        url::form_urlencoded::parse(body)
            .find(|(k, _)| k == "storage")
            .map(|(_, v)| v.into_owned())
            .ok_or_else(|| Refusal::NotJson("the form has no `storage` field".into()))?
    } else {
        serde_json::from_slice::<CaptureBody>(body)
            .map_err(|e| Refusal::NotJson(format!("the request: {e}")))?
            .storage
    };
    serde_json::from_str::<serde::de::IgnoredAny>(&storage)
        .map_err(|e| Refusal::NotJson(e.to_string()))?;
    Ok(storage)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> CapturePage {
        CapturePage {
            title: "Log in <now>".into(),
            steps: vec!["Open <b>this</b>".into()],
            snippet: Some("copy(\"x\")".into()),
            field_label: "Paste".into(),
        }
    }

    #[test]
    fn session_ids_carry_256_random_bits_and_belong_to_their_process() {
        let sessions = CaptureSessions::new(Some("https://bridge.example/".into()), SESSION_TTL);
        let a = sessions.open("lp_a", page()).unwrap();
        let b = sessions.open("lp_b", page()).unwrap();
        assert_ne!(a.id, b.id);
        assert_eq!(URL_SAFE_NO_PAD.decode(&a.id).unwrap().len(), 32);
        assert_eq!(a.url, format!("https://bridge.example/login/{}", a.id));
        // Another process cannot take or close it.
        assert!(sessions.take("lp_b", &a.id).is_err());
        sessions.close("lp_b", &a.id);
        assert_eq!(sessions.take("lp_a", &a.id).unwrap(), None);
    }

    #[test]
    fn the_first_capture_wins_and_is_taken_once() {
        let sessions = CaptureSessions::new(Some("http://h".into()), SESSION_TTL);
        let s = sessions.open("lp", page()).unwrap();
        sessions.capture(&s.id, "{\"a\":1}".into()).unwrap();
        assert!(matches!(
            sessions.capture(&s.id, "{\"b\":2}".into()),
            Err(Refusal::AlreadyCaptured)
        ));
        assert_eq!(
            sessions.take("lp", &s.id).unwrap().as_deref(),
            Some("{\"a\":1}")
        );
        assert_eq!(sessions.take("lp", &s.id).unwrap(), None);
        assert!(matches!(
            sessions.capture(&s.id, "{}".into()),
            Err(Refusal::AlreadyCaptured)
        ));
    }

    #[test]
    fn a_process_holds_a_bounded_number_of_sessions_and_loses_them_when_it_ends() {
        let sessions = CaptureSessions::new(Some("http://h".into()), SESSION_TTL);
        for _ in 0..MAX_PER_PROCESS {
            sessions.open("lp", page()).unwrap();
        }
        assert!(sessions.open("lp", page()).is_err());
        sessions.close_all("lp");
        assert!(sessions.is_empty());
    }

    #[test]
    fn a_session_past_its_lifetime_is_gone() {
        let sessions = CaptureSessions::new(Some("http://h".into()), Duration::from_millis(30));
        let s = sessions.open("lp", page()).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        assert!(sessions.take("lp", &s.id).is_err());
        assert!(matches!(
            sessions.capture(&s.id, "{}".into()),
            Err(Refusal::Unknown)
        ));
    }

    #[test]
    fn without_a_public_listener_no_page_opens() {
        let sessions = CaptureSessions::new(None, SESSION_TTL);
        let error = sessions.open("lp", page()).unwrap_err();
        assert!(error.contains("[appservice]"), "{error}");
    }

    #[test]
    fn the_page_escapes_what_the_plugin_wrote_and_carries_a_fresh_nonce() {
        let (html, nonce) = render("abc", &page(), "idle", "");
        assert!(html.contains("Log in &lt;now&gt;"));
        assert!(html.contains("<li>Open &lt;b&gt;this&lt;/b&gt;</li>"));
        assert!(!html.contains("<b>"));
        assert!(html.contains(&format!("<script nonce=\"{nonce}\">")));
        assert!(html.contains("action=\"abc/capture\""));
        let (_, other) = render("abc", &page(), "idle", "");
        assert_ne!(nonce, other);
    }

    #[test]
    fn storage_must_be_json_text_in_either_body_form() {
        assert_eq!(
            storage(br#"{"storage":"{\"k\":\"v\"}"}"#, false).unwrap(),
            "{\"k\":\"v\"}"
        );
        assert!(matches!(
            storage(br#"{"storage":"not json"}"#, false),
            Err(Refusal::NotJson(_))
        ));
        assert!(matches!(storage(b"{", false), Err(Refusal::NotJson(_))));
        assert_eq!(
            storage(b"storage=%7B%22k%22%3A1%7D", true).unwrap(),
            "{\"k\":1}"
        );
    }
}
