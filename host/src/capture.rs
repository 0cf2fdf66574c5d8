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
//!   capture endpoint (a nonce-based Content-Security-Policy naming it);
//! - the page names the Matrix user the login is for, so a link passed to
//!   someone else does not trick them into logging in for its sender;
//! - a capture for an unknown or used session is refused before its body
//!   is read; bodies must arrive within 10 s, and a few captures at most
//!   are read at once.
//!
//! `GET {public-url}/login/{id}` serves the page and `POST
//! {public-url}/login/{id}/capture` with `{"storage": "..."}` captures.
//! Without JavaScript the page's form posts `storage` form-encoded and
//! gets an HTML answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use rand::RngCore;
use tower::limit::GlobalConcurrencyLimitLayer;
use weft_runtime::{CapturePage, CaptureSession};

use crate::template::fill;

/// How long a session lives at most (less if login processes time out
/// sooner: a page never outlives its process).
pub const SESSION_TTL: Duration = Duration::from_secs(30 * 60);
/// The largest capture body.
pub(crate) const MAX_CAPTURE_BYTES: usize = 512 << 10;
/// The most sessions one login process may hold at once.
const MAX_PER_PROCESS: usize = 4;
/// The most sessions the host holds at once.
const MAX_SESSIONS: usize = 4096;
/// The most steps a page lists.
pub(crate) const MAX_STEPS: usize = 20;
/// How long a capture's body may take to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// How many captures are read at once, host-wide.
const CONCURRENT_CAPTURES: usize = 16;

const PAGE: &str = include_str!("capture/page.html");

/// A plugin within a login process: in a flow run by a login provider,
/// the provider and the connector share the process but not its pages.
#[derive(Clone, PartialEq, Eq)]
struct Owner {
    plugin: String,
    process: String,
}

enum Capture {
    Waiting,
    Captured(String),
    Taken,
}

struct Session {
    /// The plugin and the login process that opened it.
    owner: Owner,
    /// The Matrix user the login is for.
    user: String,
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
    /// The login processes in progress, with their Matrix user: only they
    /// may open pages.
    processes: Mutex<HashMap<String, String>>,
}

impl CaptureSessions {
    /// No sessions yet; `public_url` is the configured one, if any, and
    /// sessions expire after `ttl` (at most [`SESSION_TTL`]).
    pub fn new(public_url: Option<String>, ttl: Duration) -> Arc<Self> {
        Arc::new(Self {
            public_url: RwLock::new(public_url.map(|u| u.trim_end_matches('/').to_owned())),
            ttl: ttl.min(SESSION_TTL),
            sessions: Mutex::new(HashMap::new()),
            processes: Mutex::new(HashMap::new()),
        })
    }

    /// Sets the public URL to the listener's bound address, unless the
    /// operator configured one.
    pub(crate) fn default_public_url(&self, url: String) {
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

    /// Login process `process` of Matrix user `user` began: it may open
    /// pages until [`Self::close_all`].
    pub fn register(&self, process: &str, user: &str) {
        self.processes
            .lock()
            .expect("capture lock poisoned")
            .insert(process.to_owned(), user.to_owned());
    }

    /// Opens a session for `plugin` in login process `process`.
    pub fn open(
        &self,
        plugin: &str,
        process: &str,
        page: CapturePage,
    ) -> Result<CaptureSession, String> {
        let Some(base) = self
            .public_url
            .read()
            .expect("capture lock poisoned")
            .clone()
        else {
            return Err(
                "this host serves no login pages: it has no [appservice] listener, or it listens on all addresses and [appservice] public-url is not set".into(),
            );
        };
        let Some(user) = self
            .processes
            .lock()
            .expect("capture lock poisoned")
            .get(process)
            .cloned()
        else {
            return Err("no such login process".into());
        };
        if page.steps.len() > MAX_STEPS {
            return Err(format!("a login page lists at most {MAX_STEPS} steps"));
        }
        let owner = Owner {
            plugin: plugin.to_owned(),
            process: process.to_owned(),
        };
        let mut sessions = self.sessions();
        let mine = sessions
            .values()
            .filter(|s| s.owner.process == process)
            .count();
        if mine >= MAX_PER_PROCESS {
            return Err(format!(
                "a login process may hold at most {MAX_PER_PROCESS} login pages; close one first"
            ));
        }
        if sessions.len() >= MAX_SESSIONS {
            return Err("the bridge has too many login pages open; try again later".into());
        }
        let mut id = [0u8; 32];
        rand::rng().fill_bytes(&mut id);
        let id = URL_SAFE_NO_PAD.encode(id);
        sessions.insert(
            id.clone(),
            Session {
                owner,
                user,
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

    /// What was captured in session `id` of `plugin` in `process`, once.
    pub fn take(&self, plugin: &str, process: &str, id: &str) -> Result<Option<String>, String> {
        let mut sessions = self.sessions();
        let session = sessions
            .get_mut(id)
            .filter(|s| s.owner.plugin == plugin && s.owner.process == process)
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

    /// Closes session `id` of `plugin` in `process`.
    pub fn close(&self, plugin: &str, process: &str, id: &str) {
        let mut sessions = self.sessions();
        if sessions
            .get(id)
            .is_some_and(|s| s.owner.plugin == plugin && s.owner.process == process)
        {
            sessions.remove(id);
        }
    }

    /// Login process `process` ended: its sessions close, and it may open
    /// no more.
    pub fn close_all(&self, process: &str) {
        self.processes
            .lock()
            .expect("capture lock poisoned")
            .remove(process);
        self.sessions().retain(|_, s| s.owner.process != process);
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

    /// What the page of session `id` shows: its text, its user, and
    /// whether it was used.
    fn page(&self, id: &str) -> Option<PageView> {
        self.sessions().get(id).map(|s| PageView {
            page: s.page.clone(),
            user: s.user.clone(),
            used: !matches!(s.capture, Capture::Waiting),
            minutes_left: (self.ttl.saturating_sub(s.opened.elapsed()).as_secs() / 60).max(1),
        })
    }

    /// Whether session `id` would take a capture now.
    fn waiting(&self, id: &str) -> Result<(), Refusal> {
        match self.sessions().get(id) {
            None => Err(Refusal::Unknown),
            Some(s) if matches!(s.capture, Capture::Waiting) => Ok(()),
            Some(_) => Err(Refusal::AlreadyCaptured),
        }
    }

    fn public_url(&self) -> String {
        self.public_url
            .read()
            .expect("capture lock poisoned")
            .clone()
            .unwrap_or_default()
    }
}

/// A page to render.
struct PageView {
    page: CapturePage,
    user: String,
    used: bool,
    minutes_left: u64,
}

/// Why a capture was refused.
#[derive(Debug)]
enum Refusal {
    Unknown,
    AlreadyCaptured,
    NotJson(String),
    TooLarge,
    TooSlow,
    Unreadable,
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Self::Unknown => StatusCode::NOT_FOUND,
            Self::AlreadyCaptured => StatusCode::CONFLICT,
            Self::NotJson(_) | Self::Unreadable => StatusCode::BAD_REQUEST,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooSlow => StatusCode::REQUEST_TIMEOUT,
        }
    }

    fn message(&self) -> String {
        match self {
            Self::Unknown => "This login link was used or has expired. Go back to your Matrix client: if your login is still going on, it shows the current link; if not, start the login again there.".into(),
            Self::AlreadyCaptured => "This link was already used; what was sent first stands. Start a new login to send something else.".into(),
            Self::NotJson(error) => format!("That is not the copied text: it is not valid JSON ({error}). Copy it again and paste all of it."),
            Self::TooLarge => format!("That is too large: a capture holds at most {} KiB.", MAX_CAPTURE_BYTES >> 10),
            Self::TooSlow => "The text took too long to arrive; press send again.".into(),
            Self::Unreadable => "The request could not be read.".into(),
        }
    }
}

/// The capture routes, to merge into the public listener's router.
pub(crate) fn router(sessions: Arc<CaptureSessions>) -> Router {
    Router::new()
        .route("/login/{id}", get(page))
        .route(
            "/login/{id}/capture",
            axum::routing::post(capture)
                .layer(GlobalConcurrencyLimitLayer::new(CONCURRENT_CAPTURES)),
        )
        .with_state(sessions)
}

/// Headers every answer carries: nothing cached, no referrer, no framing.
/// A page (with its script's `nonce`) may send only to `capture_url`.
fn hardened(mut response: Response, page: Option<(&str, &str)>) -> Response {
    let csp = match page {
        Some((nonce, capture_url)) => format!(
            "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; \
             connect-src {capture_url}; form-action {capture_url}; base-uri 'none'; \
             frame-ancestors 'none'"
        ),
        None => "default-src 'none'; frame-ancestors 'none'".to_owned(),
    };
    crate::template::harden(response.headers_mut(), &csp);
    response
}

/// The page of session `id`, and its script's nonce.
fn render(id: &str, view: &PageView, state: &str, message: &str) -> (String, String) {
    let mut nonce = [0u8; 16];
    rand::rng().fill_bytes(&mut nonce);
    let nonce = URL_SAFE_NO_PAD.encode(nonce);
    let text = |s: &str| html_escape::encode_double_quoted_attribute(s).into_owned();
    let page = &view.page;
    let html = fill(PAGE, |name| match name {
        "nonce" => nonce.clone(),
        "title" => text(&page.title),
        "user" => text(&view.user),
        "minutes" => view.minutes_left.to_string(),
        "steps" => page
            .steps
            .iter()
            .map(|s| format!("<li>{}</li>", text(s)))
            .collect(),
        "snippet" => page.snippet.as_ref().map_or_else(String::new, |s| {
            format!(
                "<div class=\"snippet\"><pre><code id=\"snippet\">{}</code></pre>\
                 <button id=\"copy\" class=\"secondary\" type=\"button\">Copy</button></div>",
                text(s)
            )
        }),
        "label" => text(&page.field_label),
        // Relative to /login/{id}, so a reverse proxy's path prefix holds.
        "action" => format!("{}/capture", text(id)),
        "state" => state.to_owned(),
        "message" => text(message),
        _ => String::new(),
    });
    (html, nonce)
}

async fn page(State(sessions): State<Arc<CaptureSessions>>, Path(id): Path<String>) -> Response {
    match sessions.page(&id) {
        Some(view) => {
            let (state, message) = if view.used {
                ("success", "Sent already. Go back to your Matrix client.")
            } else {
                ("idle", "")
            };
            let (html, nonce) = render(&id, &view, state, message);
            let capture_url = format!("{}/login/{id}/capture", sessions.public_url());
            hardened(Html(html).into_response(), Some((&nonce, &capture_url)))
        }
        None => hardened(
            (
                StatusCode::NOT_FOUND,
                Html(format!(
                    "<!doctype html><meta charset=utf-8><meta name=viewport content=\"width=device-width\">\
                     <title>Link expired</title><h1>This link no longer works</h1><p>{}</p>",
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
    request: Request,
) -> Response {
    let form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    // The session is checked before a byte of the body is read.
    let outcome = match sessions.waiting(&id) {
        Ok(()) => read_body(request)
            .await
            .and_then(|body| storage(&body, form))
            .and_then(|material| sessions.capture(&id, material)),
        Err(refusal) => Err(refusal),
    };
    if let Err(refusal) = &outcome {
        tracing::info!(status = %refusal.status(), "a capture was refused");
    }
    let message = match &outcome {
        Ok(()) => {
            "Sent. Go back to your Matrix client: it tells you whether the login worked.".to_owned()
        }
        Err(refusal) => refusal.message(),
    };
    let status = outcome
        .as_ref()
        .map_or_else(Refusal::status, |()| StatusCode::OK);
    if form {
        // The no-JavaScript path: the page again, showing the outcome.
        let state = if outcome.is_ok() { "success" } else { "error" };
        return match sessions.page(&id) {
            Some(view) => {
                let (html, nonce) = render(&id, &view, state, &message);
                let capture_url = format!("{}/login/{id}/capture", sessions.public_url());
                hardened(
                    (status, Html(html)).into_response(),
                    Some((&nonce, &capture_url)),
                )
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

/// Reads a capture's body: at most [`MAX_CAPTURE_BYTES`] (refused as soon
/// as it says or shows it is larger), within [`BODY_TIMEOUT`].
async fn read_body(request: Request) -> Result<Bytes, Refusal> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > MAX_CAPTURE_BYTES) {
        return Err(Refusal::TooLarge);
    }
    let body = Limited::new(request.into_body(), MAX_CAPTURE_BYTES);
    match tokio::time::timeout(BODY_TIMEOUT, body.collect()).await {
        Err(_) => Err(Refusal::TooSlow),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.is::<LengthLimitError>() => Err(Refusal::TooLarge),
        Ok(Err(_)) => Err(Refusal::Unreadable),
    }
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
            snippet: Some("copy(\"{{user}}\")".into()),
            field_label: "Paste".into(),
        }
    }

    fn sessions(ttl: Duration) -> Arc<CaptureSessions> {
        let sessions = CaptureSessions::new(Some("https://bridge.example/".into()), ttl);
        sessions.register("lp_a", "@alice:example.org");
        sessions.register("lp_b", "@bob:example.org");
        sessions
    }

    #[test]
    fn session_ids_carry_256_random_bits_and_belong_to_their_plugin_and_process() {
        let sessions = sessions(SESSION_TTL);
        let a = sessions.open("msal", "lp_a", page()).unwrap();
        let b = sessions.open("msal", "lp_b", page()).unwrap();
        assert_ne!(a.id, b.id);
        assert_eq!(URL_SAFE_NO_PAD.decode(&a.id).unwrap().len(), 32);
        assert_eq!(a.url, format!("https://bridge.example/login/{}", a.id));
        // Another process, or another plugin in the same process, cannot
        // take or close it.
        assert!(sessions.take("msal", "lp_b", &a.id).is_err());
        assert!(sessions.take("teams", "lp_a", &a.id).is_err());
        sessions.close("msal", "lp_b", &a.id);
        sessions.close("teams", "lp_a", &a.id);
        assert_eq!(sessions.take("msal", "lp_a", &a.id).unwrap(), None);
    }

    #[test]
    fn only_a_registered_login_process_opens_pages() {
        let sessions = sessions(SESSION_TTL);
        assert!(sessions.open("msal", "lp_unknown", page()).is_err());
        sessions.close_all("lp_a");
        assert!(sessions.open("msal", "lp_a", page()).is_err());
    }

    #[test]
    fn the_first_capture_wins_and_is_taken_once() {
        let sessions = sessions(SESSION_TTL);
        let s = sessions.open("msal", "lp_a", page()).unwrap();
        sessions.capture(&s.id, "{\"a\":1}".into()).unwrap();
        assert!(matches!(
            sessions.capture(&s.id, "{\"b\":2}".into()),
            Err(Refusal::AlreadyCaptured)
        ));
        assert!(matches!(
            sessions.waiting(&s.id),
            Err(Refusal::AlreadyCaptured)
        ));
        assert_eq!(
            sessions.take("msal", "lp_a", &s.id).unwrap().as_deref(),
            Some("{\"a\":1}")
        );
        assert_eq!(sessions.take("msal", "lp_a", &s.id).unwrap(), None);
        assert!(matches!(
            sessions.capture(&s.id, "{}".into()),
            Err(Refusal::AlreadyCaptured)
        ));
    }

    #[test]
    fn a_process_holds_a_bounded_number_of_sessions_and_loses_them_when_it_ends() {
        let sessions = sessions(SESSION_TTL);
        for _ in 0..MAX_PER_PROCESS {
            sessions.open("msal", "lp_a", page()).unwrap();
        }
        assert!(sessions.open("msal", "lp_a", page()).is_err());
        let many = CapturePage {
            steps: vec![String::new(); MAX_STEPS + 1],
            ..page()
        };
        assert!(sessions.open("msal", "lp_b", many).is_err());
        sessions.close_all("lp_a");
        assert!(sessions.sessions().is_empty());
    }

    #[test]
    fn a_session_past_its_lifetime_is_gone() {
        let sessions = sessions(Duration::from_millis(30));
        let s = sessions.open("msal", "lp_a", page()).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        assert!(sessions.take("msal", "lp_a", &s.id).is_err());
        assert!(matches!(
            sessions.capture(&s.id, "{}".into()),
            Err(Refusal::Unknown)
        ));
    }

    #[test]
    fn without_a_public_url_no_page_opens() {
        let sessions = CaptureSessions::new(None, SESSION_TTL);
        sessions.register("lp", "@alice:example.org");
        let error = sessions.open("msal", "lp", page()).unwrap_err();
        assert!(error.contains("public-url"), "{error}");
    }

    #[test]
    fn the_page_names_its_user_escapes_what_the_plugin_wrote_and_carries_a_fresh_nonce() {
        let view = PageView {
            page: page(),
            user: "@alice:example.org".into(),
            used: false,
            minutes_left: 29,
        };
        let (html, nonce) = render("abc", &view, "idle", "");
        assert!(html.contains("Log in &lt;now&gt;"));
        assert!(html.contains("<li>Open &lt;b&gt;this&lt;/b&gt;</li>"));
        assert!(html.contains("This login is for <strong>@alice:example.org</strong>"));
        assert!(html.contains("expires in 29 minutes"));
        // A placeholder in the plugin's text stays text.
        assert!(html.contains("copy(&quot;{{user}}&quot;)"));
        assert!(html.contains(&format!("<script nonce=\"{nonce}\">")));
        assert!(html.contains("action=\"abc/capture\""));
        let (_, other) = render("abc", &view, "idle", "");
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

/// Fuzz target (`WEFT_FUZZ_CASES`, see `weft-fuzz`): the capture
/// endpoint's body handling, JSON and form, on any bytes a client sends.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::storage;

    const PIECES: &[&str] = &[
        "{",
        "}",
        "\"storage\"",
        ":",
        "\"",
        "{\\\"a\\\":1}",
        "storage=",
        "%7B%7D",
        "%",
        "&",
        "=",
        "+",
        "\\u0000",
        "[",
        "]",
        "null",
        "1e999",
    ];

    proptest! {
        #![proptest_config(weft_fuzz::config())]

        #[test]
        fn any_capture_body_is_taken_or_refused_never_a_panic(
            body in weft_fuzz::spliced(PIECES),
            bytes in proptest::collection::vec(any::<u8>(), 0..256),
            form in any::<bool>(),
        ) {
            // What is taken is JSON itself.
            if let Ok(taken) = storage(body.as_bytes(), form) {
                prop_assert!(serde_json::from_str::<serde::de::IgnoredAny>(&taken).is_ok());
            }
            let _ = storage(&bytes, form);
        }
    }
}
