//! The status page: the host at a glance, for an operator's browser. It
//! shows the loaded plugins (version, world, logins), the plugin files
//! that failed to load and why, every login with its owner, remote name
//! and bridge state (with the runtime's view of it), the dead letters
//! (how many, and the latest without their content), the Matrix side's
//! inbound queue if there is one, and the runtime's counters.
//!
//! `GET /_weft/admin/v1/status` on the admin listener, behind the admin
//! token like the rest of the admin API:
//! - with `Authorization: Bearer <token>` (curl; an OAuth token with the
//!   admin scope as well), the page;
//! - without, a sign-in form and 401. Posting the admin token to the same
//!   URL (form-encoded, compared in constant time) opens a browser
//!   session and redirects (303) to the page. The session is a random
//!   256-bit id in an `HttpOnly`, `SameSite=Strict` cookie scoped to this
//!   path, kept server-side (by its SHA-256) for 12 hours at most. The
//!   token never goes in a URL. `POST /_weft/admin/v1/status/sign-out`
//!   ends the session.
//!
//! The cookie opens this page and nothing else: the rest of the admin API
//! still wants the bearer token. The page only reads (its one form signs
//! out); it has no script, a Content-Security-Policy that allows nothing
//! but its own inline style (by hash) and forms posting to itself,
//! `Cache-Control: no-store`, and everything a plugin or a user wrote is
//! HTML-escaped. It refreshes itself every 30 seconds.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use rand::RngCore;
use sha2::{Digest, Sha256};
use weft_runtime::{ActorStatus, MetricsSnapshot, Phase, PluginInfo};

use crate::admin::AdminState;
use crate::api_error::{ApiError, ApiResult, bearer, token_matches};
use crate::bridge::inbound::InboundDeadLetter;
use crate::logins::{BridgeState, StateEvent, now_ms};
use crate::outbox::DeadLetter;
use crate::template::fill;
use crate::token_auth::Freshness;

/// Where the page is, on the admin listener.
pub const PATH: &str = "/_weft/admin/v1/status";
/// Where a browser session ends.
pub const SIGN_OUT_PATH: &str = "/_weft/admin/v1/status/sign-out";
/// The session cookie.
pub const COOKIE: &str = "weft_status";
/// How long a browser session lasts at most.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 60 * 60);
/// The most browser sessions at once; past it the oldest ends.
const MAX_SESSIONS: usize = 32;
/// The largest sign-in form.
const MAX_FORM_BYTES: usize = 4096;
/// How often the page reloads itself.
const REFRESH_SECS: u64 = 30;
/// The most logins the page lists (the most recently changed).
const MAX_LOGINS_SHOWN: usize = 500;
/// How many of the latest dead letters the page lists.
const RECENT: usize = 10;
/// The most dead letters read to find the latest.
const MAX_SCAN: usize = 10_000;

const PAGE: &str = include_str!("status/page.html");
const SIGN_IN: &str = include_str!("status/sign-in.html");
const STYLE: &str = include_str!("status/style.css");

/// The pages' policy: their inline style (by hash), forms to themselves,
/// nothing else.
static CSP: LazyLock<String> = LazyLock::new(|| {
    let hash = STANDARD.encode(Sha256::digest(STYLE.as_bytes()));
    format!(
        "default-src 'none'; style-src 'sha256-{hash}'; form-action 'self'; base-uri 'none'; \
         frame-ancestors 'none'"
    )
});

/// The status routes, to merge into the admin router (outside its bearer
/// check: they do their own).
pub fn router(admin: AdminState) -> Router {
    let state = StatusState {
        admin,
        sessions: Arc::new(Sessions::new(SESSION_TTL)),
    };
    Router::new()
        .route(PATH, get(show).post(sign_in))
        .route(SIGN_OUT_PATH, post(sign_out))
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .with_state(state)
}

#[derive(Clone)]
struct StatusState {
    admin: AdminState,
    sessions: Arc<Sessions>,
}

/// Browser sessions, by the SHA-256 of their id (the id itself is kept
/// only by the browser), with when each opened.
struct Sessions {
    ttl: Duration,
    open: Mutex<HashMap<[u8; 32], Instant>>,
}

impl Sessions {
    fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            open: Mutex::new(HashMap::new()),
        }
    }

    fn digest(id: &str) -> [u8; 32] {
        Sha256::digest(id.as_bytes()).into()
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<[u8; 32], Instant>> {
        let mut open = self.open.lock().expect("status sessions poisoned");
        open.retain(|_, opened| opened.elapsed() < self.ttl);
        open
    }

    /// Opens a session; returns its id, for the cookie.
    fn open(&self) -> String {
        let mut id = [0u8; 32];
        rand::rng().fill_bytes(&mut id);
        let id = URL_SAFE_NO_PAD.encode(id);
        let mut open = self.sessions();
        if open.len() >= MAX_SESSIONS
            && let Some(oldest) = open.iter().min_by_key(|(_, at)| **at).map(|(k, _)| *k)
        {
            open.remove(&oldest);
        }
        open.insert(Self::digest(&id), Instant::now());
        id
    }

    fn is_open(&self, id: &str) -> bool {
        self.sessions().contains_key(&Self::digest(id))
    }

    fn close(&self, id: &str) {
        self.sessions().remove(&Self::digest(id));
    }
}

/// The session id a request's cookies carry, if any.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
}

/// A `Set-Cookie` value for session `id`, or one that removes the cookie
/// (`id` empty, `max_age` 0).
fn cookie(id: &str, max_age: Duration) -> String {
    format!(
        "{COOKIE}={id}; Path={PATH}; Max-Age={}; HttpOnly; SameSite=Strict",
        max_age.as_secs()
    )
}

/// Headers every answer carries: the policy, nothing cached, no referrer,
/// no framing.
fn hardened(mut response: Response) -> Response {
    crate::template::harden(response.headers_mut(), &CSP);
    response
}

fn with_cookie(mut response: Response, value: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// Whether a bearer token opens the admin API: the admin token, or an
/// OAuth token with the admin scope (as the admin API's own check).
async fn authorize_bearer(admin: &AdminState, token: &str, peer: SocketAddr) -> ApiResult<()> {
    if token_matches(token, &admin.token) {
        return Ok(());
    }
    if let Some(oauth) = &admin.oauth {
        // The page reveals the whole host: no cached verdicts.
        let owner = oauth.owner(token, peer.ip(), Freshness::Fresh).await?;
        if oauth.grants_admin(&owner) {
            tracing::info!(user = %owner.user, "status page with an OAuth token");
            return Ok(());
        }
        return Err(ApiError::forbidden("the token lacks the admin scope"));
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "M_UNKNOWN_TOKEN",
        "wrong admin token",
    ))
}

/// # `GET /_weft/admin/v1/status`
async fn show(
    State(state): State<StatusState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let signed_in = if let Some(token) = bearer(&headers) {
        if let Err(error) = authorize_bearer(&state.admin, token, peer).await {
            return hardened(error.into_response());
        }
        false
    } else {
        match session_cookie(&headers) {
            Some(id) if state.sessions.is_open(id) => true,
            Some(_) => {
                return sign_in_page(
                    StatusCode::UNAUTHORIZED,
                    Some("Your session has ended: enter the admin token again."),
                    true,
                );
            }
            None => return sign_in_page(StatusCode::UNAUTHORIZED, None, false),
        }
    };
    match Snapshot::take(&state.admin) {
        Ok(snapshot) => hardened(Html(render(&snapshot, signed_in)).into_response()),
        Err(error) => hardened(error.into_response()),
    }
}

/// # `POST /_weft/admin/v1/status` (form: `token`)
async fn sign_in(
    State(state): State<StatusState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let token = form
        .then(|| {
            url::form_urlencoded::parse(&body)
                .find(|(name, _)| name == "token")
                .map(|(_, value)| value.into_owned())
        })
        .flatten();
    match token {
        Some(token) if token_matches(token.trim(), &state.admin.token) => {
            let id = state.sessions.open();
            tracing::info!(%peer, "an operator signed in to the status page");
            let response = (StatusCode::SEE_OTHER, [(header::LOCATION, PATH)]).into_response();
            hardened(with_cookie(response, &cookie(&id, SESSION_TTL)))
        }
        _ => {
            tracing::warn!(%peer, "the status page was given a wrong admin token");
            sign_in_page(
                StatusCode::FORBIDDEN,
                Some("That is not the admin token."),
                false,
            )
        }
    }
}

/// # `POST /_weft/admin/v1/status/sign-out`
async fn sign_out(State(state): State<StatusState>, headers: HeaderMap) -> Response {
    if let Some(id) = session_cookie(&headers) {
        state.sessions.close(id);
    }
    let response = (StatusCode::SEE_OTHER, [(header::LOCATION, PATH)]).into_response();
    hardened(with_cookie(response, &cookie("", Duration::ZERO)))
}

/// The sign-in form, with `message` if there is one; `clear` removes a
/// stale session cookie.
fn sign_in_page(status: StatusCode, message: Option<&str>, clear: bool) -> Response {
    let html = fill(SIGN_IN, |name| match name {
        "style" => STYLE.to_owned(),
        "action" => PATH.to_owned(),
        "hours" => (SESSION_TTL.as_secs() / 3600).to_string(),
        "message" => message.map_or_else(String::new, |m| {
            format!("<p class=\"error\" role=\"alert\">{}</p>", esc(m))
        }),
        _ => String::new(),
    });
    let mut response = (status, Html(html)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"weft admin\""),
        );
    }
    if clear {
        response = with_cookie(response, &cookie("", Duration::ZERO));
    }
    hardened(response)
}

/// What the page shows, read at once from the admin API's sources.
struct Snapshot {
    now_ms: u64,
    plugins: Vec<PluginInfo>,
    /// File, why.
    load_errors: Vec<(String, String)>,
    /// Most recently changed first.
    logins: Vec<LoginRow>,
    dead_letter_count: usize,
    /// The latest first, without their content.
    dead_letters: Vec<DeadLetter>,
    inbound: Option<InboundSummary>,
    runtime: MetricsSnapshot,
    live_logins: usize,
    scheduled_wakeups: usize,
}

/// A login as the page shows it: never its metadata.
struct LoginRow {
    key: String,
    owner: String,
    remote_name: String,
    state: BridgeState,
    actor: Option<ActorStatus>,
}

struct InboundSummary {
    /// Events waiting, by room.
    pending: BTreeMap<String, usize>,
    failed_count: usize,
    /// The latest first.
    failed: Vec<InboundDeadLetter>,
}

impl Snapshot {
    fn take(admin: &AdminState) -> ApiResult<Self> {
        let registry = &admin.registry;
        let load_errors = admin
            .load_errors
            .lock()
            .expect("load error map poisoned")
            .iter()
            .map(|(path, error)| (path.display().to_string(), error.clone()))
            .collect();
        let mut logins: Vec<LoginRow> = admin
            .logins
            .store
            .all()?
            .into_iter()
            .map(|record| LoginRow {
                actor: registry.login(&record.key).map(|h| h.status()),
                key: record.key.to_string(),
                owner: record.owner,
                remote_name: record.remote_name,
                state: record.state,
            })
            .collect();
        logins.sort_by(|a, b| {
            b.state
                .timestamp_ms
                .cmp(&a.state.timestamp_ms)
                .then_with(|| a.key.cmp(&b.key))
        });
        let mut dead_letters = admin.outbox.dead_letters(MAX_SCAN, false)?;
        dead_letters.sort_by_key(|letter| std::cmp::Reverse(letter.at_ms));
        dead_letters.truncate(RECENT);
        let inbound = match &admin.bridge {
            Some(bridge) => {
                let mut failed = bridge.inbound_dead_letters(MAX_SCAN)?;
                failed.sort_by_key(|letter| std::cmp::Reverse(letter.at_ms));
                let failed_count = failed.len();
                failed.truncate(RECENT);
                Some(InboundSummary {
                    pending: bridge.inbound_pending()?,
                    failed_count,
                    failed,
                })
            }
            None => None,
        };
        Ok(Self {
            now_ms: now_ms(),
            plugins: registry.plugins(),
            load_errors,
            logins,
            dead_letter_count: admin.outbox.dead_letter_count()?,
            dead_letters,
            inbound,
            runtime: registry.metrics(),
            live_logins: registry.live_logins(),
            scheduled_wakeups: registry.scheduled_wakeups(),
        })
    }
}

/// Text (from a plugin, a user, a file name, an error) made safe in HTML
/// text and in quoted attributes.
fn esc(text: &str) -> String {
    html_escape::encode_quoted_attribute(text).into_owned()
}

/// How a state looks: its label, its colour class and its bridgev2 name.
fn state_look(state: StateEvent) -> (&'static str, &'static str, &'static str) {
    match state {
        StateEvent::Connected => ("Connected", "ok", "CONNECTED"),
        StateEvent::Connecting => ("Connecting", "warn", "CONNECTING"),
        StateEvent::TransientDisconnect => ("Transient disconnect", "warn", "TRANSIENT_DISCONNECT"),
        StateEvent::BadCredentials => ("Bad credentials", "bad", "BAD_CREDENTIALS"),
        StateEvent::UnknownError => ("Unknown error", "bad", "UNKNOWN_ERROR"),
        StateEvent::LoggedOut => ("Logged out", "bad", "LOGGED_OUT"),
    }
}

fn phase_label(phase: Phase) -> &'static str {
    match phase {
        Phase::Starting => "starting",
        Phase::Running => "running",
        Phase::Restarting => "restarting after a failure",
        Phase::Waiting => "waiting for room for an instance",
        Phase::Failed => "stopped after failing repeatedly (weft login restart)",
        Phase::Hibernating => "hibernating",
        Phase::Stopped => "stopped",
    }
}

impl LoginRow {
    /// Its colour: the state's, or bad when the runtime gave up on it.
    fn class(&self) -> &'static str {
        if self
            .actor
            .as_ref()
            .is_some_and(|a| a.phase == Phase::Failed)
        {
            "bad"
        } else {
            state_look(self.state.state_event).1
        }
    }
}

/// The page.
fn render(s: &Snapshot, signed_in: bool) -> String {
    fill(PAGE, |name| match name {
        "refresh" => REFRESH_SECS.to_string(),
        "style" => STYLE.to_owned(),
        "version" => esc(env!("CARGO_PKG_VERSION")),
        "now" => utc(s.now_ms),
        "sign_out" if signed_in => format!(
            "<form method=\"post\" action=\"{SIGN_OUT_PATH}\">\
             <button class=\"quiet\" type=\"submit\">Sign out</button></form>"
        ),
        "summary" => summary(s),
        "plugin_count" => s.plugins.len().to_string(),
        "plugins" => plugins(s),
        "load_error_count" => s.load_errors.len().to_string(),
        "load_errors" => load_errors(s),
        "login_count" => s.logins.len().to_string(),
        "logins" => logins(s),
        "dead_letter_count" => s.dead_letter_count.to_string(),
        "dead_letters" => dead_letters(s),
        "inbound" => s
            .inbound
            .as_ref()
            .map_or_else(String::new, |i| inbound(s, i)),
        "counters" => counters(s),
        _ => String::new(),
    })
}

fn summary(s: &Snapshot) -> String {
    let attention = s.logins.iter().filter(|l| l.class() == "bad").count();
    let mut tiles = vec![
        ("", s.plugins.len(), "plugins loaded".to_owned(), "plugins"),
        (
            if attention > 0 { "bad" } else { "" },
            s.logins.len(),
            if attention > 0 {
                format!("logins, {attention} failing")
            } else {
                "logins".to_owned()
            },
            "logins",
        ),
        (
            if s.load_errors.is_empty() { "" } else { "bad" },
            s.load_errors.len(),
            "plugin files refused".to_owned(),
            "load-errors",
        ),
        (
            if s.dead_letter_count == 0 { "" } else { "bad" },
            s.dead_letter_count,
            "dead letters".to_owned(),
            "dead-letters",
        ),
    ];
    if let Some(inbound) = &s.inbound {
        let waiting: usize = inbound.pending.values().sum();
        tiles.push((
            if inbound.failed_count == 0 {
                ""
            } else {
                "warn"
            },
            waiting,
            "Matrix events waiting".to_owned(),
            "inbound",
        ));
    }
    tiles
        .into_iter()
        .map(|(class, n, label, anchor)| {
            format!(
                "<li class=\"{class}\"><a href=\"#{anchor}\"><span class=\"n\">{n}</span>\
                 <span class=\"label\">{label}</span></a></li>"
            )
        })
        .collect()
}

/// A definition list of (label, HTML) rows.
fn facts(rows: &[(&str, String)]) -> String {
    let mut out = String::from("<dl class=\"facts\">");
    for (label, value) in rows {
        let _ = write!(out, "<dt>{label}</dt><dd>{value}</dd>");
    }
    out.push_str("</dl>");
    out
}

fn empty(text: &str) -> String {
    format!("<p class=\"empty\">{text}</p>")
}

fn plugins(s: &Snapshot) -> String {
    if s.plugins.is_empty() {
        return empty("No plugins are loaded.");
    }
    let mut out = String::from("<ul class=\"cards\">");
    for plugin in &s.plugins {
        let mut rows = vec![
            ("Network", esc(&plugin.name)),
            ("World", esc(plugin.world.wit_name())),
            ("Logins", plugin.logins.to_string()),
        ];
        if let Some(source) = &plugin.source {
            rows.push(("File", format!("<code>{}</code>", esc(source))));
        }
        let digest: String = plugin.digest.chars().take(16).collect();
        rows.push(("Digest", format!("<code>{}</code>", esc(&digest))));
        let _ = write!(
            out,
            "<li class=\"card\" data-plugin=\"{id}\"><h3><span class=\"name\">{id}</span>\
             <span class=\"badge\">{version}</span></h3>{facts}</li>",
            id = esc(&plugin.id),
            version = esc(&plugin.version),
            facts = facts(&rows),
        );
    }
    out.push_str("</ul>");
    out
}

fn load_errors(s: &Snapshot) -> String {
    if s.load_errors.is_empty() {
        return empty("None: every file in the plugins directory loaded.");
    }
    let mut out = String::from("<ul class=\"cards\">");
    for (path, error) in &s.load_errors {
        let file = std::path::Path::new(path)
            .file_name()
            .map_or_else(|| path.clone(), |f| f.to_string_lossy().into_owned());
        let _ = write!(
            out,
            "<li class=\"card bad\"><h3><span class=\"name mono\">{file}</span>\
             <span class=\"badge bad\">refused</span></h3>{facts}<pre>{error}</pre></li>",
            file = esc(&file),
            facts = facts(&[("Path", format!("<code>{}</code>", esc(path)))]),
            error = esc(error),
        );
    }
    out.push_str("</ul>");
    out
}

fn logins(s: &Snapshot) -> String {
    if s.logins.is_empty() {
        return empty("No logins yet.");
    }
    // How many are in each state, in the states' order.
    let mut counts: BTreeMap<u8, (StateEvent, usize)> = BTreeMap::new();
    for login in &s.logins {
        let event = login.state.state_event;
        counts.entry(event as u8).or_insert((event, 0)).1 += 1;
    }
    let mut out = String::from("<ul class=\"chips\">");
    for (event, n) in counts.into_values() {
        let (label, class, _) = state_look(event);
        let _ = write!(
            out,
            "<li class=\"badge {class}\">{n} {}</li>",
            label.to_lowercase()
        );
    }
    out.push_str("</ul><ul class=\"cards\">");
    for login in s.logins.iter().take(MAX_LOGINS_SHOWN) {
        let (label, _, code) = state_look(login.state.state_event);
        let class = login.class();
        let mut rows = vec![
            ("Owner", esc(&login.owner)),
            ("Remote name", esc(&login.remote_name)),
            ("Since", when(s.now_ms, login.state.timestamp_ms)),
        ];
        if let Some(error) = &login.state.error {
            rows.push(("Error", format!("<code>{}</code>", esc(error))));
        }
        if let Some(message) = &login.state.message {
            rows.push(("Message", esc(message)));
        }
        match &login.actor {
            Some(actor) => {
                let mut runtime = format!(
                    "{}, version {}",
                    phase_label(actor.phase),
                    esc(&actor.plugin_version)
                );
                if actor.strikes > 0 {
                    let _ = write!(runtime, ", {} failures in a row", actor.strikes);
                }
                if actor.timers_paused {
                    runtime.push_str(", timers paused until the user logs in again");
                }
                rows.push(("Runtime", runtime));
                if let Some(error) = &actor.last_error {
                    rows.push((
                        "Last failure",
                        format!("<span class=\"error\">{}</span>", esc(error)),
                    ));
                }
            }
            None => rows.push(("Runtime", "not running (is its plugin loaded?)".into())),
        }
        let _ = write!(
            out,
            "<li class=\"card {class}\" data-state=\"{code}\"><h3><span class=\"name\">{key}</span>\
             <span class=\"badge {class}\">{label}</span></h3>{facts}</li>",
            key = esc(&login.key),
            facts = facts(&rows),
        );
    }
    out.push_str("</ul>");
    if s.logins.len() > MAX_LOGINS_SHOWN {
        let _ = write!(
            out,
            "<p class=\"note\">The {MAX_LOGINS_SHOWN} most recently changed are shown; \
             <code>weft login list</code> lists all {}.</p>",
            s.logins.len()
        );
    }
    out
}

fn dead_letters(s: &Snapshot) -> String {
    if s.dead_letter_count == 0 {
        return empty("None: every remote event was bridged.");
    }
    let mut out = format!(
        "<p class=\"note\">The latest {} of {}, without their content \
         (<code>weft dead-letters --content</code> shows it).</p><ul class=\"cards\">",
        s.dead_letters.len(),
        s.dead_letter_count
    );
    for letter in &s.dead_letters {
        let _ = write!(
            out,
            "<li class=\"card bad\"><h3><span class=\"name\">{login}</span>\
             <span class=\"badge\">{kind}</span></h3>{facts}<pre>{reason}</pre></li>",
            login = esc(&letter.login.to_string()),
            kind = esc(&letter.kind),
            facts = facts(&[("When", when(s.now_ms, letter.at_ms))]),
            reason = esc(&letter.reason),
        );
    }
    out.push_str("</ul>");
    out
}

fn inbound(s: &Snapshot, inbound: &InboundSummary) -> String {
    let waiting: usize = inbound.pending.values().sum();
    let mut out = format!(
        "<section id=\"inbound\"><h2>Matrix events waiting <span class=\"count\">({waiting})</span></h2>"
    );
    if inbound.pending.is_empty() {
        out.push_str(&empty("None: every Matrix event was handled."));
    } else {
        let mut rooms: Vec<(&String, &usize)> = inbound.pending.iter().collect();
        rooms.sort_by(|a, b| b.1.cmp(a.1));
        let _ = write!(
            out,
            "<p class=\"note\">In {} rooms; the fullest:</p><dl class=\"facts\">",
            rooms.len()
        );
        for (room, n) in rooms.iter().take(RECENT) {
            let _ = write!(out, "<dt><code>{}</code></dt><dd>{n}</dd>", esc(room));
        }
        out.push_str("</dl>");
    }
    if inbound.failed_count > 0 {
        let _ = write!(
            out,
            "<h2>Matrix events that could not be handled <span class=\"count\">({})</span></h2>\
             <ul class=\"cards\">",
            inbound.failed_count
        );
        for letter in &inbound.failed {
            let _ = write!(
                out,
                "<li class=\"card bad\"><h3><span class=\"name mono\">{event}</span>\
                 <span class=\"badge\">{kind}</span></h3>{facts}<pre>{reason}</pre></li>",
                event = esc(&letter.event_id),
                kind = esc(&letter.kind),
                facts = facts(&[
                    ("Room", format!("<code>{}</code>", esc(&letter.room_id))),
                    ("When", when(s.now_ms, letter.at_ms)),
                ]),
                reason = esc(&letter.reason),
            );
        }
        out.push_str("</ul>");
    }
    out.push_str("</section>");
    out
}

fn counters(s: &Snapshot) -> String {
    let m = &s.runtime;
    let rows = [
        ("Live logins", s.live_logins as u64),
        ("Scheduled wake-ups", s.scheduled_wakeups as u64),
        ("Instances created", m.instances_created),
        ("Calls into plugins", m.calls),
        ("Traps", m.traps),
        ("Hibernations", m.hibernations),
        ("Wakes", m.wakes),
        ("Timers fired", m.timers_fired),
    ];
    let mut out = String::from("<dl class=\"counters\">");
    for (label, n) in rows {
        let _ = write!(out, "<div><dt>{label}</dt><dd>{n}</dd></div>");
    }
    out.push_str("</dl><p class=\"note\">Totals since the host started.</p>");
    out
}

/// A moment: its UTC time and how long ago it was.
fn when(now_ms: u64, at_ms: u64) -> String {
    format!(
        "<time datetime=\"{}\">{}</time> <span class=\"ago\">({})</span>",
        iso(at_ms),
        utc(at_ms),
        ago(now_ms, at_ms)
    )
}

/// Unix milliseconds as (year, month, day, hour, minute, second), UTC.
fn civil(ms: u64) -> (i64, u64, u64, u64, u64, u64) {
    let secs = ms / 1000;
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's days-to-civil, for the proleptic Gregorian calendar.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u64;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, rest / 3600, rest / 60 % 60, rest % 60)
}

fn utc(ms: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(ms);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC")
}

fn iso(ms: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(ms);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

fn ago(now_ms: u64, at_ms: u64) -> String {
    let secs = now_ms.saturating_sub(at_ms) / 1000;
    match secs {
        0..5 => "just now".into(),
        5..60 => format!("{secs} s ago"),
        60..3_600 => format!("{} min ago", secs / 60),
        3_600..86_400 => format!("{} h ago", secs / 3_600),
        _ => format!("{} d ago", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_runtime::LoginKey;
    use weft_runtime::manifest::World;

    const HOSTILE: &str = "<img src=x onerror=alert(1)>\"'&{{style}}";

    fn snapshot() -> Snapshot {
        Snapshot {
            now_ms: 1_700_000_090_000,
            plugins: vec![PluginInfo {
                id: "echo".into(),
                version: "0.1.0".into(),
                world: World::Connector,
                name: HOSTILE.into(),
                source: Some("/plugins/echo.wasm".into()),
                digest: "ab".repeat(32),
                logins: 1,
            }],
            load_errors: vec![("/plugins/<b>.wasm".into(), HOSTILE.into())],
            logins: vec![LoginRow {
                key: "echo:alice".into(),
                owner: "@alice:example.org".into(),
                remote_name: HOSTILE.into(),
                state: BridgeState {
                    state_event: StateEvent::BadCredentials,
                    timestamp_ms: 1_700_000_000_000,
                    error: Some("echo-token-rejected".into()),
                    message: Some(HOSTILE.into()),
                },
                actor: None,
            }],
            dead_letter_count: 1,
            dead_letters: vec![DeadLetter {
                login: LoginKey::new("echo", "alice"),
                seq: 7,
                at_ms: 1_700_000_080_000,
                reason: HOSTILE.into(),
                kind: "message".into(),
                stored: None,
            }],
            inbound: Some(InboundSummary {
                pending: BTreeMap::from([("!room:<x>".to_owned(), 3)]),
                failed_count: 0,
                failed: Vec::new(),
            }),
            runtime: MetricsSnapshot::default(),
            live_logins: 1,
            scheduled_wakeups: 2,
        }
    }

    #[test]
    fn everything_a_plugin_or_a_user_wrote_is_escaped_and_no_placeholder_is_read_twice() {
        let html = render(&snapshot(), true);
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("<b>"), "{html}");
        let escaped = "&lt;img src=x onerror=alert(1)&gt;&quot;&#x27;&amp;{{style}}";
        // Network name, load error, remote name, state message, reason.
        assert_eq!(html.matches(escaped).count(), 5, "{html}");
        assert!(html.contains("!room:&lt;x&gt;"), "{html}");
        assert!(html.contains("<span class=\"badge bad\">Bad credentials</span>"));
        assert!(html.contains("<code>echo-token-rejected</code>"));
        assert!(html.contains("(1 min ago)"), "{html}");
        assert!(html.contains(SIGN_OUT_PATH));
        assert!(!render(&snapshot(), false).contains(SIGN_OUT_PATH));
        assert!(!html.contains("<script"));
    }

    #[test]
    fn the_policy_allows_exactly_the_inline_style_and_nothing_else() {
        let html = render(&snapshot(), false);
        let style = html
            .split_once("<style>")
            .and_then(|(_, rest)| rest.split_once("</style>"))
            .map(|(style, _)| style)
            .unwrap();
        let hash = STANDARD.encode(Sha256::digest(style.as_bytes()));
        assert!(
            CSP.contains(&format!("style-src 'sha256-{hash}'")),
            "{}",
            *CSP
        );
        assert!(CSP.starts_with("default-src 'none';"));
        assert!(!CSP.contains("script-src"));
    }

    #[test]
    fn sessions_are_random_expire_and_end_when_signed_out() {
        let sessions = Sessions::new(SESSION_TTL);
        let a = sessions.open();
        let b = sessions.open();
        assert_ne!(a, b);
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), 32);
        assert!(sessions.is_open(&a) && sessions.is_open(&b));
        assert!(!sessions.is_open("forged"));
        sessions.close(&a);
        assert!(!sessions.is_open(&a));
        assert!(sessions.is_open(&b));

        let short = Sessions::new(Duration::ZERO);
        let c = short.open();
        assert!(!short.is_open(&c), "a session past its lifetime is gone");
    }

    #[test]
    fn past_the_session_limit_the_oldest_ends() {
        let sessions = Sessions::new(SESSION_TTL);
        let first = sessions.open();
        let rest: Vec<String> = (1..=MAX_SESSIONS).map(|_| sessions.open()).collect();
        assert!(!sessions.is_open(&first));
        assert!(rest.iter().all(|id| sessions.is_open(id)));
    }

    #[test]
    fn the_session_cookie_is_found_among_others_and_scoped_to_the_page() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; weft_status=abc ; b=2"),
        );
        assert_eq!(session_cookie(&headers), Some("abc"));
        headers.insert(header::COOKIE, HeaderValue::from_static("weft_statusx=1"));
        assert_eq!(session_cookie(&headers), None);
        let set = cookie("abc", SESSION_TTL);
        assert_eq!(
            set,
            "weft_status=abc; Path=/_weft/admin/v1/status; Max-Age=43200; HttpOnly; SameSite=Strict"
        );
    }

    #[test]
    fn times_are_shown_in_utc_from_the_civil_calendar() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(iso(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_700_000_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(utc(4_107_542_399_000), "2100-02-28 23:59:59 UTC");
        assert_eq!(ago(10_000, 9_000), "just now");
        assert_eq!(ago(100_000, 10_000), "1 min ago");
        assert_eq!(ago(1_000, 5_000), "just now");
        assert_eq!(ago(200_000_000, 0), "2 d ago");
    }
}
