//! A fake Microsoft identity platform (`login.microsoftonline.com`) on
//! loopback, faithful to the wire formats of the Teams reference (§2 and
//! its field reports), for testing the consumer-Teams login plugins
//! without a Microsoft account.
//!
//! It serves the four endpoints those plugins call, all `POST` with
//! `application/x-www-form-urlencoded` bodies:
//!
//! - `/consumers/oauth2/v2.0/token`: refreshing the web app's (SPA)
//!   refresh token. It demands `Origin: https://teams.live.com`, as Azure AD
//!   does for tokens issued to a single-page app, and refuses device-code
//!   tokens.
//! - `/9188040d-6c67-4c5b-b112-36a304b66dad/oauth2/v2.0/token`: refreshing
//!   a device-code refresh token. It refuses any `Origin` header and
//!   refuses SPA tokens.
//! - `/common/oauth2/devicecode` (v1): starting the device-code flow.
//! - `/common/oauth2/token` (v1): polling for the device code's tokens.
//!
//! [`MsIdentity::start`] serves them alone, on their own port; the fake
//! Teams ([`crate::FakeTeams`]) serves them at the root of its own server,
//! sharing the tokens with its skypetoken exchange, and keeps the issued
//! tokens in its state file.
//!
//! Anything else is a 404. Errors come in the identity platform's envelope
//! (`error`, `error_description` starting `AADSTSnnnn: `, `error_codes`,
//! `timestamp`, `trace_id`, `correlation_id`, `error_uri`), OAuth errors
//! with status 400. Every refresh rotates: the old refresh token stops
//! working, and a new SPA token keeps the old one's fixed 24 h deadline.
//!
//! Which AADSTS code answers what (the real platform is not always
//! consistent, so the fake picks one and keeps to it):
//!
//! | case | `error` | code |
//! |---|---|---|
//! | SPA token refreshed without (or with another) `Origin` | `invalid_request` | 9002327 |
//! | `Origin` sent to the device-code refresh endpoint | `invalid_request` | 9002326 |
//! | a required form field missing or empty, or a non-form body | `invalid_request` | 900144 |
//! | a form field given twice | `invalid_request` | 9002313 |
//! | `grant_type` the endpoint doesn't take | `unsupported_grant_type` | 70003 |
//! | unknown, already rotated, wrong-kind or other-client refresh token | `invalid_grant` | 70000 |
//! | revoked refresh token | `invalid_grant` | 50173 |
//! | expired SPA refresh token (`suberror: bad_token`) | `invalid_grant` | 700084 |
//! | expired device-code refresh token | `invalid_grant` | 70008 |
//! | a `…/.default` scope (what the consumer client can't ask for) | `invalid_scope` | 70011 |
//! | device code not yet approved | `authorization_pending` | 70016 |
//! | [`MsIdentity::slow_down_next`] armed | `slow_down` | 70016 |
//! | device code declined by the user | `authorization_declined` | 70000 |
//! | device code expired | `expired_token` | 70020 |
//! | device code redeemed a second time, or by another client | `invalid_grant` | 70000 |
//! | device code never issued | `bad_verification_code` | 70000 |
//! | [`MsIdentity::fail_next`] armed, 503/504/429 | `temporarily_unavailable` | 90033 |
//! | [`MsIdentity::fail_next`] armed, other statuses | `server_error` | 90033 |
//!
//! As on the real platform, `error_description` goes on after the message
//! with `\r\n`-separated `Trace ID`, `Correlation ID` and `Timestamp`
//! lines, so a plugin that shows it should cut it at the first line.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The consumer (MSA) tenant: the `<utid>` half of every consumer
/// `homeAccountId`, and the tenant path of the device-code refresh.
pub const CONSUMER_TENANT: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";

/// The teams.live.com web app's client id, which SPA tokens are issued to.
pub const TEAMS_WEB_CLIENT_ID: &str = "4b3e8f46-56d3-427f-b1e2-d239b2ea6bca";

/// The "Teams personal" client the device-code flow uses (field reports).
pub const TEAMS_DEVICE_CLIENT_ID: &str = "8ec6bc83-69c8-4392-8f08-b3c986009232";

/// The scope whose access token is exchanged for a skypetoken.
pub const MBI_SCOPE: &str = "service::api.fl.spaces.skype.com::MBI_SSL";

/// The scopes the web app and the bridges ask for on refresh.
pub const TEAMS_SCOPES: &str =
    "service::api.fl.spaces.skype.com::MBI_SSL openid profile offline_access";

/// The resource the v1 device-code flow asks for.
pub const SPACES_RESOURCE: &str = "https://api.spaces.skype.com";

/// The origin SPA refresh tokens must be redeemed from, by default.
pub const TEAMS_ORIGIN: &str = "https://teams.live.com";

/// The v1 device-code grant type.
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// SPA refresh tokens live a fixed 24 h that rotation never extends
/// (Entra's "refresh tokens" doc; the field reports saw it for consumer
/// accounts too).
pub const SPA_REFRESH_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Device-code refresh tokens live about 90 days, sliding: each rotation
/// starts a new 90 days (reference §2, second-hand).
pub const DEVICE_REFRESH_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);

/// How long an access token from a v2 refresh lives, in seconds.
pub const ACCESS_TOKEN_LIFETIME_SECS: u64 = 3600;

/// How long a device code can be approved, in seconds.
pub const DEVICE_CODE_LIFETIME_SECS: u64 = 900;

const PATH_SPA_TOKEN: &str = "/consumers/oauth2/v2.0/token";
const PATH_DEVICE_REFRESH: &str = "/9188040d-6c67-4c5b-b112-36a304b66dad/oauth2/v2.0/token";
const PATH_DEVICE_CODE: &str = "/common/oauth2/devicecode";
const PATH_DEVICE_TOKEN: &str = "/common/oauth2/token";

/// Scopes that only ask for identity, which the platform leaves out of the
/// `scope` it grants (MSAL's `OIDC_DEFAULT_SCOPES`).
const OIDC_SCOPES: [&str; 3] = ["openid", "profile", "offline_access"];

/// A consumer Microsoft account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// `<uid>.<utid>`, as MSAL keys its cache: for a consumer account the
    /// uid looks like `00000000-0000-0000-xxxx-xxxxxxxxxxxx` and the utid is
    /// [`CONSUMER_TENANT`].
    pub home_account_id: String,
    /// The sign-in name (`preferred_username`).
    pub username: String,
    /// The display name.
    pub name: String,
}

impl Account {
    /// A new consumer account with a random uid, as MSA gives them (the
    /// PUID in the last 16 hex digits).
    pub fn new(username: &str, name: &str) -> Self {
        let mut rng = rand::rng();
        let puid: u64 = rng.random();
        let hex = format!("{puid:016x}");
        Self {
            home_account_id: format!(
                "00000000-0000-0000-{}-{}.{CONSUMER_TENANT}",
                &hex[..4],
                &hex[4..]
            ),
            username: username.to_owned(),
            name: name.to_owned(),
        }
    }

    /// The uid half of `home_account_id` (the id token's `oid`).
    pub fn uid(&self) -> &str {
        self.home_account_id
            .split_once('.')
            .map_or(self.home_account_id.as_str(), |(uid, _)| uid)
    }

    /// The tenant half of `home_account_id`.
    pub fn tenant_id(&self) -> &str {
        self.home_account_id
            .split_once('.')
            .map_or(CONSUMER_TENANT, |(_, utid)| utid)
    }
}

/// Which flow a refresh token came from: it decides which endpoint takes
/// it and whether it needs an `Origin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenKind {
    /// Issued to the teams.live.com web app (a single-page app): redeemable
    /// only cross-origin, at `/consumers`, for a fixed 24 h.
    Spa,
    /// Issued by the device-code flow: redeemable only without an
    /// `Origin`, at the consumer tenant's GUID path, sliding 90 days.
    DeviceCode,
}

/// Tokens the fake minted, as a test needs them to build fixtures.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// Whose tokens they are.
    pub account: Account,
    /// Which flow the refresh token belongs to.
    pub kind: TokenKind,
    /// The client they were issued to.
    pub client_id: String,
    /// The scope the access token was granted (without OIDC scopes).
    pub scope: String,
    /// An opaque MSA access token (`EwA…`).
    pub access_token: String,
    /// When the access token expires, in Unix seconds.
    pub access_expires_on: u64,
    /// The refresh token (`M.C5…`).
    pub refresh_token: String,
    /// When the refresh token expires, in Unix seconds.
    pub refresh_expires_on: u64,
    /// An unsigned JWT-shaped id token with `oid`, `preferred_username`
    /// and `name`.
    pub id_token: String,
}

/// What the fake knows of a live access token, for a fake Teams to check
/// bearer tokens against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTokenInfo {
    /// Whose token it is.
    pub account: Account,
    /// The client it was issued to.
    pub client_id: String,
    /// The scope it was granted.
    pub scope: String,
    /// When it expires, in Unix seconds.
    pub expires_on: u64,
}

/// One request the fake answered, so tests can assert what a plugin sent
/// (e.g. "exactly one SPA refresh, with Origin").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The request path.
    pub path: String,
    /// The form's `grant_type`.
    pub grant_type: Option<String>,
    /// The form's `client_id`.
    pub client_id: Option<String>,
    /// The `Origin` header, if one came.
    pub origin: Option<String>,
    /// The form's `refresh_token`.
    pub refresh_token: Option<String>,
    /// The form's `scope`.
    pub scope: Option<String>,
    /// The status answered.
    pub status: u16,
    /// `"ok"`, the OAuth `error` answered (`"invalid_grant"`,
    /// `"authorization_pending"`, …), `"injected"` for a
    /// [`MsIdentity::fail_next`] failure, or `"not_found"`.
    pub outcome: String,
}

impl Call {
    /// Whether the request came with an `Origin` header.
    pub fn had_origin(&self) -> bool {
        self.origin.is_some()
    }

    /// Whether it was a refresh at the SPA endpoint.
    pub fn is_spa_refresh(&self) -> bool {
        self.path == PATH_SPA_TOKEN
    }

    /// Whether it was a refresh at the device-code refresh endpoint.
    pub fn is_device_refresh(&self) -> bool {
        self.path == PATH_DEVICE_REFRESH
    }

    /// Whether it was a device-code poll.
    pub fn is_device_poll(&self) -> bool {
        self.path == PATH_DEVICE_TOKEN
    }
}

/// The running fake.
#[derive(Clone)]
pub struct MsIdentity {
    addr: SocketAddr,
    state: Arc<Mutex<IdentityState>>,
}

struct IdentityState {
    spa_origin: String,
    /// Where the device-code answer sends the user.
    verification_url: String,
    interval_secs: u64,
    delay: Duration,
    /// Requests left to fail, and with which status.
    failures: Option<(usize, StatusCode)>,
    slow_downs: usize,
    refresh_tokens: BTreeMap<String, RefreshToken>,
    access_tokens: BTreeMap<String, AccessTokenInfo>,
    device_codes: Vec<DeviceCode>,
    calls: Vec<Call>,
    /// Orders refresh tokens by issue, to tell the newest.
    issued: u64,
}

#[derive(Clone, Serialize, Deserialize)]
struct RefreshToken {
    kind: TokenKind,
    account: Account,
    client_id: String,
    /// The scope asked for when it was issued, OIDC scopes included.
    scope: String,
    issued_at: u64,
    expires_at: u64,
    status: RefreshStatus,
    seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum RefreshStatus {
    Live,
    /// Used once; its successor is the live one.
    Rotated,
    Revoked,
}

struct DeviceCode {
    device_code: String,
    user_code: String,
    client_id: String,
    resource: String,
    expires_at: u64,
    status: CodeStatus,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum CodeStatus {
    Pending,
    Approved(Account),
    Declined,
    Redeemed,
}

/// The tokens the fake issued, as a state file keeps them so that logins
/// survive a restart of the fake (device codes and test switches don't).
#[derive(Default, Serialize, Deserialize)]
pub(crate) struct IdentitySnapshot {
    refresh_tokens: BTreeMap<String, RefreshToken>,
    access_tokens: BTreeMap<String, AccessTokenInfo>,
    issued: u64,
}

/// The verification URL of the real device-code answer.
pub const MICROSOFT_DEVICE_LOGIN: &str = "https://microsoft.com/devicelogin";

/// The largest request body the endpoints read: a token request is a few
/// kilobytes.
const MAX_FORM_BYTES: usize = 64 << 10;

impl MsIdentity {
    /// Starts the fake on a free loopback port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let identity = Self::unserved(listener.local_addr().expect("a bound address"));
        let app = Router::new()
            .fallback(answer)
            .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
            .with_state(identity.state.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(%e, "the fake identity platform stopped");
            }
        });
        identity
    }

    /// The fake's state, for a server on `addr` that the caller runs with
    /// [`Self::routes`] (the fake Teams serves both on one listener).
    pub(crate) fn unserved(addr: SocketAddr) -> Self {
        let state = Arc::new(Mutex::new(IdentityState {
            spa_origin: TEAMS_ORIGIN.to_owned(),
            verification_url: MICROSOFT_DEVICE_LOGIN.to_owned(),
            interval_secs: 1,
            delay: Duration::ZERO,
            failures: None,
            slow_downs: 0,
            refresh_tokens: BTreeMap::new(),
            access_tokens: BTreeMap::new(),
            device_codes: Vec::new(),
            calls: Vec::new(),
            issued: 0,
        }));
        Self { addr, state }
    }

    /// The four endpoints at their paths, to merge into a bigger server:
    /// unlike [`Self::start`]'s, other paths are left to that server.
    pub(crate) fn routes<S>(&self) -> Router<S> {
        let mut router = Router::new();
        for path in [
            PATH_SPA_TOKEN,
            PATH_DEVICE_REFRESH,
            PATH_DEVICE_CODE,
            PATH_DEVICE_TOKEN,
        ] {
            router = router.route(path, axum::routing::any(answer));
        }
        router
            .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
            .with_state(self.state.clone())
    }

    /// The issued tokens, for a state file.
    pub(crate) fn snapshot(&self) -> IdentitySnapshot {
        let state = self.state();
        IdentitySnapshot {
            refresh_tokens: state.refresh_tokens.clone(),
            access_tokens: state.access_tokens.clone(),
            issued: state.issued,
        }
    }

    /// Takes back the tokens of a state file (replacing any issued since).
    pub(crate) fn restore(&self, snapshot: IdentitySnapshot) {
        let mut state = self.state();
        state.refresh_tokens = snapshot.refresh_tokens;
        state.access_tokens = snapshot.access_tokens;
        state.issued = snapshot.issued;
    }

    /// The base URL to use in place of `https://login.microsoftonline.com`
    /// (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn state(&self) -> MutexGuard<'_, IdentityState> {
        self.state.lock().expect("identity state lock")
    }

    /// Sets the `Origin` SPA refreshes must carry (default
    /// [`TEAMS_ORIGIN`]), for a plugin configured with another web app.
    pub fn set_spa_origin(&self, origin: &str) {
        self.state().spa_origin = origin.to_owned();
    }

    /// Sets the page the device-code answer tells the user to open
    /// (default [`MICROSOFT_DEVICE_LOGIN`]; the demo's fake points it at
    /// its own approval page).
    pub fn set_verification_url(&self, url: &str) {
        self.state().verification_url = url.to_owned();
    }

    /// Sets the polling interval the device-code start announces (default
    /// 1 s, so tests don't wait; Azure AD says 5).
    pub fn set_interval(&self, secs: u64) {
        self.state().interval_secs = secs;
    }

    /// Makes every request wait `delay` before it is answered, so two
    /// concurrent refreshes of one token overlap (the second then finds
    /// the token rotated away).
    pub fn set_delay(&self, delay: Duration) {
        self.state().delay = delay;
    }

    /// Fails the next `n` requests to any of the four endpoints with
    /// `status` (a 5xx or 429: a transient outage), before looking at
    /// them, so nothing is consumed or rotated. 429 and 503 carry
    /// `Retry-After: 1`.
    pub fn fail_next(&self, n: usize, status: u16) {
        let status = StatusCode::from_u16(status).expect("a valid HTTP status");
        self.state().failures = (n > 0).then_some((n, status));
    }

    /// Answers the next `n` polls of a pending device code with
    /// `slow_down` (RFC 8628 §3.5, which Azure AD lists but rarely sends),
    /// to test that the plugin backs off rather than fails.
    pub fn slow_down_next(&self, n: usize) {
        self.state().slow_downs = n;
    }

    /// Mints SPA tokens for `account` as if it had just signed in to
    /// teams.live.com: an `MBI_SSL` access token, a refresh token good
    /// for 24 h and an id token. For building MSAL cache fixtures.
    pub fn issue_spa_tokens(&self, account: &Account) -> Tokens {
        self.state().issue(
            TokenKind::Spa,
            account,
            TEAMS_WEB_CLIENT_ID,
            TEAMS_SCOPES,
            None,
        )
    }

    /// Mints device-code tokens for `account` as if it had just approved
    /// a device code: an `MBI_SSL` access token, a refresh token good for
    /// 90 days and an id token. For stored-credential fixtures.
    pub fn issue_device_tokens(&self, account: &Account) -> Tokens {
        self.state().issue(
            TokenKind::DeviceCode,
            account,
            TEAMS_DEVICE_CLIENT_ID,
            TEAMS_SCOPES,
            None,
        )
    }

    /// Mints a lone access token for `scope` (e.g. a Graph token to sit
    /// beside the `MBI_SSL` one in a cache fixture). Returns it and its
    /// expiry in Unix seconds.
    pub fn issue_access_token(
        &self,
        account: &Account,
        client_id: &str,
        scope: &str,
    ) -> (String, u64) {
        let mut state = self.state();
        let expires_on = now() + ACCESS_TOKEN_LIFETIME_SECS;
        let token = state.mint_access_token(account, client_id, scope, expires_on);
        (token, expires_on)
    }

    /// Makes a refresh token expired from now on (an SPA token then gets
    /// AADSTS700084, a device-code one AADSTS70008).
    pub fn expire_refresh_token(&self, refresh_token: &str) {
        let mut state = self.state();
        let token = state
            .refresh_tokens
            .get_mut(refresh_token)
            .expect("expire_refresh_token: the fake never issued this refresh token");
        token.expires_at = now().saturating_sub(1);
    }

    /// Revokes a refresh token (as a password change or "sign out
    /// everywhere" does): it gets AADSTS50173 from now on.
    pub fn revoke(&self, refresh_token: &str) {
        let mut state = self.state();
        let token = state
            .refresh_tokens
            .get_mut(refresh_token)
            .expect("revoke: the fake never issued this refresh token");
        token.status = RefreshStatus::Revoked;
    }

    /// Makes an access token expired from now on.
    pub fn expire_access_token(&self, access_token: &str) {
        let mut state = self.state();
        let token = state
            .access_tokens
            .get_mut(access_token)
            .expect("expire_access_token: the fake never issued this access token");
        token.expires_on = now().saturating_sub(1);
    }

    /// Whose access token this is, if the fake issued it and it hasn't
    /// expired: for a fake Teams checking `Authorization: Bearer`.
    pub fn valid_access_token(&self, access_token: &str) -> Option<Account> {
        self.access_token(access_token)
            .filter(|info| info.expires_on > now())
            .map(|info| info.account)
    }

    /// Everything the fake knows of an access token it issued, expired or
    /// not (a fake Teams may insist on the `MBI_SSL` scope).
    pub fn access_token(&self, access_token: &str) -> Option<AccessTokenInfo> {
        self.state().access_tokens.get(access_token).cloned()
    }

    /// Every access and refresh token issued so far (for tests that check
    /// no token reaches a log).
    pub fn issued_tokens(&self) -> Vec<String> {
        let state = self.state();
        state
            .access_tokens
            .keys()
            .chain(state.refresh_tokens.keys())
            .cloned()
            .collect()
    }

    /// The newest live refresh token of `kind` for `account`: what a
    /// plugin that stores every rotation should now hold.
    pub fn latest_refresh_token(&self, account: &Account, kind: TokenKind) -> Option<String> {
        self.state()
            .refresh_tokens
            .iter()
            .filter(|(_, t)| {
                t.kind == kind && t.account == *account && t.status == RefreshStatus::Live
            })
            .max_by_key(|(_, t)| t.seq)
            .map(|(secret, _)| secret.clone())
    }

    /// Approves a pending device code as `account` (what the user does at
    /// microsoft.com/devicelogin): the next poll gets the tokens. Panics if
    /// no such code is pending (a bug in the test).
    pub fn approve(&self, user_code: &str, account: &Account) {
        self.state().pending_code(user_code).status = CodeStatus::Approved(account.clone());
    }

    /// Approves a device code as `account` if it is pending and not
    /// expired, for a page where a person types the code (who may mistype
    /// it); says why not otherwise.
    pub fn try_approve(&self, user_code: &str, account: &Account) -> Result<(), &'static str> {
        let now = now();
        let wanted = user_code.trim().to_ascii_uppercase();
        let mut state = self.state();
        let code = state
            .device_codes
            .iter_mut()
            .find(|c| c.user_code == wanted)
            .ok_or("no such code")?;
        if code.expires_at <= now {
            return Err("this code has expired");
        }
        if code.status != CodeStatus::Pending {
            return Err("this code was already used");
        }
        code.status = CodeStatus::Approved(account.clone());
        Ok(())
    }

    /// Declines a pending device code: polls get `authorization_declined`.
    /// Panics if no such code is pending.
    pub fn decline(&self, user_code: &str) {
        self.state().pending_code(user_code).status = CodeStatus::Declined;
    }

    /// Makes a device code expired: polls get `expired_token`.
    pub fn expire_code(&self, user_code: &str) {
        let mut state = self.state();
        let code = state
            .device_codes
            .iter_mut()
            .find(|c| c.user_code == user_code)
            .unwrap_or_else(|| panic!("expire_code: no device code with user code {user_code}"));
        code.expires_at = now().saturating_sub(1);
    }

    /// The user codes waiting for approval, oldest first.
    pub fn pending_user_codes(&self) -> Vec<String> {
        let now = now();
        self.state()
            .device_codes
            .iter()
            .filter(|c| c.status == CodeStatus::Pending && c.expires_at > now)
            .map(|c| c.user_code.clone())
            .collect()
    }

    /// Waits (up to 20 s) for a device code to be pending and returns the
    /// newest one's user code.
    pub async fn wait_for_user_code(&self) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(code) = self.pending_user_codes().pop() {
                return code;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out after 20s waiting for a pending device code"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every request answered so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// The calls for which `which` holds, e.g. [`Call::is_spa_refresh`].
    pub fn calls_where(&self, which: impl Fn(&Call) -> bool) -> Vec<Call> {
        self.calls().into_iter().filter(|c| which(c)).collect()
    }
}

impl IdentityState {
    fn issue(
        &mut self,
        kind: TokenKind,
        account: &Account,
        client_id: &str,
        scope: &str,
        expires_at: Option<u64>,
    ) -> Tokens {
        let now = now();
        let granted = granted_scope(scope);
        let access_expires_on = now + ACCESS_TOKEN_LIFETIME_SECS;
        let access_token = self.mint_access_token(account, client_id, &granted, access_expires_on);
        let refresh_expires_on = expires_at.unwrap_or_else(|| {
            now + match kind {
                TokenKind::Spa => SPA_REFRESH_LIFETIME,
                TokenKind::DeviceCode => DEVICE_REFRESH_LIFETIME,
            }
            .as_secs()
        });
        let refresh_token = random_refresh_token();
        self.issued += 1;
        self.refresh_tokens.insert(
            refresh_token.clone(),
            RefreshToken {
                kind,
                account: account.clone(),
                client_id: client_id.to_owned(),
                scope: scope.to_owned(),
                issued_at: now,
                expires_at: refresh_expires_on,
                status: RefreshStatus::Live,
                seq: self.issued,
            },
        );
        Tokens {
            account: account.clone(),
            kind,
            client_id: client_id.to_owned(),
            scope: granted,
            access_token,
            access_expires_on,
            refresh_token,
            refresh_expires_on,
            id_token: id_token(account, client_id, now),
        }
    }

    fn mint_access_token(
        &mut self,
        account: &Account,
        client_id: &str,
        scope: &str,
        expires_on: u64,
    ) -> String {
        let token = random_access_token();
        self.access_tokens.insert(
            token.clone(),
            AccessTokenInfo {
                account: account.clone(),
                client_id: client_id.to_owned(),
                scope: scope.to_owned(),
                expires_on,
            },
        );
        token
    }

    fn pending_code(&mut self, user_code: &str) -> &mut DeviceCode {
        let code = self
            .device_codes
            .iter_mut()
            .find(|c| c.user_code == user_code)
            .unwrap_or_else(|| panic!("no device code with user code {user_code}"));
        assert_eq!(
            code.status,
            CodeStatus::Pending,
            "device code {user_code} is no longer pending"
        );
        code
    }

    fn take_failure(&mut self) -> Option<StatusCode> {
        let (left, status) = self.failures?;
        self.failures = (left > 1).then_some((left - 1, status));
        Some(status)
    }
}

/// The four endpoints.
#[derive(Debug, Clone, Copy)]
enum Endpoint {
    SpaRefresh,
    DeviceRefresh,
    DeviceCodeStart,
    DeviceCodePoll,
}

/// An answer, before it becomes an HTTP response.
struct Reply {
    status: StatusCode,
    body: Value,
    outcome: String,
    retry_after: bool,
}

impl Reply {
    fn ok(body: Value) -> Self {
        Self {
            status: StatusCode::OK,
            body,
            outcome: "ok".to_owned(),
            retry_after: false,
        }
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            [
                (header::CONTENT_TYPE, "application/json; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store, no-cache"),
                (header::PRAGMA, "no-cache"),
            ],
            self.body.to_string(),
        )
            .into_response();
        if self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response
    }
}

/// An OAuth error in the identity platform's envelope.
struct OAuthError {
    status: StatusCode,
    error: &'static str,
    code: u32,
    message: String,
    suberror: Option<&'static str>,
}

impl OAuthError {
    fn new(error: &'static str, code: u32, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error,
            code,
            message: message.into(),
            suberror: None,
        }
    }

    fn missing(parameter: &str) -> Self {
        Self::new(
            "invalid_request",
            900144,
            format!("The request body must contain the following parameter: '{parameter}'."),
        )
    }

    fn invalid_grant() -> Self {
        Self::new(
            "invalid_grant",
            70000,
            "Provided grant is invalid or malformed.",
        )
    }

    fn into_reply(self) -> Reply {
        let trace_id = guid();
        let correlation_id = guid();
        let timestamp = aad_timestamp(now());
        let code = self.code;
        let mut body = json!({
            "error": self.error,
            "error_description": format!(
                "AADSTS{code}: {}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}",
                self.message
            ),
            "error_codes": [code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        });
        if let Some(suberror) = self.suberror {
            body["suberror"] = json!(suberror);
        }
        let retry_after = matches!(
            self.status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        );
        Reply {
            status: self.status,
            body,
            outcome: self.error.to_owned(),
            retry_after,
        }
    }
}

/// A request's form fields; a field given twice is kept to be refused.
struct Form {
    fields: BTreeMap<String, String>,
    duplicated: Option<String>,
}

impl Form {
    /// Parses a form body; a body of another content type parses as empty,
    /// as the platform reads nothing from it.
    fn parse(headers: &HeaderMap, body: &[u8]) -> Self {
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim()
                    .to_ascii_lowercase()
                    .starts_with("application/x-www-form-urlencoded")
            });
        let mut form = Self {
            fields: BTreeMap::new(),
            duplicated: None,
        };
        if !is_form {
            return form;
        }
        for (name, value) in url::form_urlencoded::parse(body) {
            if form
                .fields
                .insert(name.to_string(), value.into_owned())
                .is_some()
            {
                form.duplicated.get_or_insert_with(|| name.into_owned());
            }
        }
        form
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name).ok_or_else(|| OAuthError::missing(name))
    }

    fn refuse_duplicates(&self) -> Result<(), OAuthError> {
        match &self.duplicated {
            Some(_) => Err(OAuthError::new(
                "invalid_request",
                9002313,
                "Invalid request. Request is malformed or invalid.",
            )),
            None => Ok(()),
        }
    }
}

/// # `POST` any of the four endpoints
///
/// Waits the configured delay outside the lock, then answers under it, so
/// two overlapping refreshes of one token are decided one after the other
/// (the first rotates, the second finds the token gone).
async fn answer(
    State(state): State<Arc<Mutex<IdentityState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let endpoint = match path.as_str() {
        _ if method != Method::POST => None,
        PATH_SPA_TOKEN => Some(Endpoint::SpaRefresh),
        PATH_DEVICE_REFRESH => Some(Endpoint::DeviceRefresh),
        PATH_DEVICE_CODE => Some(Endpoint::DeviceCodeStart),
        PATH_DEVICE_TOKEN => Some(Endpoint::DeviceCodePoll),
        _ => None,
    };
    let form = Form::parse(&headers, &body);
    let origin = headers
        .get(header::ORIGIN)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let mut call = Call {
        path,
        grant_type: form.get("grant_type").map(str::to_owned),
        client_id: form.get("client_id").map(str::to_owned),
        origin,
        refresh_token: form.get("refresh_token").map(str::to_owned),
        scope: form.get("scope").map(str::to_owned),
        status: 404,
        outcome: "not_found".to_owned(),
    };
    let Some(endpoint) = endpoint else {
        state.lock().expect("identity state lock").calls.push(call);
        return (StatusCode::NOT_FOUND, "Not Found").into_response();
    };

    let delay = state.lock().expect("identity state lock").delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }

    let mut state = state.lock().expect("identity state lock");
    let reply = if let Some(status) = state.take_failure() {
        let error = if matches!(
            status,
            StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::GATEWAY_TIMEOUT
                | StatusCode::TOO_MANY_REQUESTS
        ) {
            "temporarily_unavailable"
        } else {
            "server_error"
        };
        let mut reply = OAuthError {
            status,
            ..OAuthError::new(
                error,
                90033,
                "A transient error has occurred. Please try again.",
            )
        }
        .into_reply();
        reply.outcome = "injected".to_owned();
        reply
    } else {
        let origin = call.origin.as_deref();
        let result = form.refuse_duplicates().and_then(|()| match endpoint {
            Endpoint::SpaRefresh => spa_refresh(&mut state, &form, origin),
            Endpoint::DeviceRefresh => device_refresh(&mut state, &form, origin),
            Endpoint::DeviceCodeStart => device_code_start(&mut state, &form),
            Endpoint::DeviceCodePoll => device_code_poll(&mut state, &form),
        });
        result.unwrap_or_else(OAuthError::into_reply)
    };
    call.status = reply.status.as_u16();
    call.outcome.clone_from(&reply.outcome);
    state.calls.push(call);
    reply.into_response()
}

/// # `POST /consumers/oauth2/v2.0/token`
///
/// The web app's refresh: SPA tokens only, and only cross-origin from the
/// web app's origin.
fn spa_refresh(
    state: &mut IdentityState,
    form: &Form,
    origin: Option<&str>,
) -> Result<Reply, OAuthError> {
    refresh_grant(form)?;
    let client_id = form.require("client_id")?;
    let secret = form.require("refresh_token")?;
    let token = live_refresh_token(state, secret, client_id, TokenKind::Spa)?;
    if origin != Some(state.spa_origin.as_str()) {
        return Err(OAuthError::new(
            "invalid_request",
            9002327,
            "Tokens issued for the 'Single-Page Application' client-type may only be redeemed via cross-origin requests.",
        ));
    }
    if token.expires_at <= now() {
        return Err(OAuthError {
            suberror: Some("bad_token"),
            ..OAuthError::new(
                "invalid_grant",
                700084,
                format!(
                    "The refresh token was issued to a single page app (SPA), and therefore has a fixed, limited lifetime of 1.00:00:00, which cannot be extended. It is now expired and a new sign in request must be sent by the SPA to the sign in page. The token was issued on {}.",
                    iso_timestamp(token.issued_at)
                ),
            )
        });
    }
    rotate(state, secret, form.get("scope"))
}

/// # `POST /9188040d-6c67-4c5b-b112-36a304b66dad/oauth2/v2.0/token`
///
/// The device-code refresh: device-code tokens only, and never
/// cross-origin (the device client is not a single-page app).
fn device_refresh(
    state: &mut IdentityState,
    form: &Form,
    origin: Option<&str>,
) -> Result<Reply, OAuthError> {
    if let Some(origin) = origin {
        return Err(OAuthError::new(
            "invalid_request",
            9002326,
            format!(
                "Cross-origin token redemption is permitted only for the 'Single-Page Application' client-type. Request origin: '{origin}'."
            ),
        ));
    }
    refresh_grant(form)?;
    let client_id = form.require("client_id")?;
    let secret = form.require("refresh_token")?;
    let token = live_refresh_token(state, secret, client_id, TokenKind::DeviceCode)?;
    if token.expires_at <= now() {
        return Err(OAuthError::new(
            "invalid_grant",
            70008,
            "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.",
        ));
    }
    rotate(state, secret, form.get("scope"))
}

fn refresh_grant(form: &Form) -> Result<(), OAuthError> {
    match form.require("grant_type")? {
        "refresh_token" => Ok(()),
        other => Err(unsupported_grant(other)),
    }
}

fn unsupported_grant(grant_type: &str) -> OAuthError {
    OAuthError::new(
        "unsupported_grant_type",
        70003,
        format!("The app requested an unsupported grant type '{grant_type}'."),
    )
}

/// The refresh token `secret`, if it is live, of `kind` and `client_id`'s;
/// expiry is left to the caller, whose error differs by kind.
fn live_refresh_token<'s>(
    state: &'s IdentityState,
    secret: &str,
    client_id: &str,
    kind: TokenKind,
) -> Result<&'s RefreshToken, OAuthError> {
    let token = state
        .refresh_tokens
        .get(secret)
        .ok_or_else(OAuthError::invalid_grant)?;
    match token.status {
        RefreshStatus::Live => {}
        RefreshStatus::Rotated => return Err(OAuthError::invalid_grant()),
        RefreshStatus::Revoked => {
            return Err(OAuthError::new(
                "invalid_grant",
                50173,
                format!(
                    "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password. The grant was issued on '{}' and the TokensValidFrom date (before which tokens are not valid) for this user is '{}'.",
                    iso_timestamp(token.issued_at),
                    iso_timestamp(now())
                ),
            ));
        }
    }
    if token.kind != kind || token.client_id != client_id {
        return Err(OAuthError::invalid_grant());
    }
    Ok(token)
}

/// Redeems `secret` for new tokens: the old refresh token is spent, the
/// new one keeps an SPA token's deadline or starts a device token's new
/// 90 days.
fn rotate(
    state: &mut IdentityState,
    secret: &str,
    scope: Option<&str>,
) -> Result<Reply, OAuthError> {
    if let Some(bad) = scope
        .into_iter()
        .flat_map(str::split_whitespace)
        .find(|s| s.ends_with("/.default"))
    {
        return Err(OAuthError::new(
            "invalid_scope",
            70011,
            format!(
                "The provided value for the input parameter 'scope' is not valid. The scope {bad} is not valid."
            ),
        ));
    }
    let old = state
        .refresh_tokens
        .get_mut(secret)
        .expect("checked by live_refresh_token");
    old.status = RefreshStatus::Rotated;
    let (kind, account, client_id) = (old.kind, old.account.clone(), old.client_id.clone());
    let asked = scope.map_or_else(|| old.scope.clone(), str::to_owned);
    let keep_deadline = (kind == TokenKind::Spa).then_some(old.expires_at);
    let tokens = state.issue(kind, &account, &client_id, &asked, keep_deadline);
    let mut body = json!({
        "token_type": "Bearer",
        "scope": tokens.scope,
        "expires_in": ACCESS_TOKEN_LIFETIME_SECS,
        "ext_expires_in": ACCESS_TOKEN_LIFETIME_SECS,
        "access_token": tokens.access_token,
        "refresh_token": tokens.refresh_token,
    });
    if has_scope(&asked, "openid") {
        body["id_token"] = json!(tokens.id_token);
    }
    Ok(Reply::ok(body))
}

/// # `POST /common/oauth2/devicecode`
///
/// Starts the v1 device-code flow. Like v1, it gives the numbers as
/// strings.
fn device_code_start(state: &mut IdentityState, form: &Form) -> Result<Reply, OAuthError> {
    let client_id = form.require("client_id")?.to_owned();
    let resource = form.require("resource")?.to_owned();
    let user_code = loop {
        let code = random_string(9, b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789");
        if !state.device_codes.iter().any(|c| c.user_code == code) {
            break code;
        }
    };
    let device_code = format!(
        "DAQABAAEAAAD{}",
        random_string(
            160,
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        )
    );
    state.device_codes.push(DeviceCode {
        device_code: device_code.clone(),
        user_code: user_code.clone(),
        client_id,
        resource,
        expires_at: now() + DEVICE_CODE_LIFETIME_SECS,
        status: CodeStatus::Pending,
    });
    let url = &state.verification_url;
    Ok(Reply::ok(json!({
        "user_code": user_code,
        "device_code": device_code,
        "verification_url": url,
        "expires_in": DEVICE_CODE_LIFETIME_SECS.to_string(),
        "interval": state.interval_secs.to_string(),
        "message": format!(
            "To sign in, use a web browser to open the page {url} and enter the code {user_code} to authenticate."
        ),
    })))
}

/// # `POST /common/oauth2/token`
///
/// Polls for a device code's tokens (v1: the code comes as `code`). An
/// approved code is redeemed once; the answer is v1-shaped, numbers as
/// strings, with a device-code refresh token.
fn device_code_poll(state: &mut IdentityState, form: &Form) -> Result<Reply, OAuthError> {
    match form.require("grant_type")? {
        DEVICE_CODE_GRANT => {}
        other => return Err(unsupported_grant(other)),
    }
    let client_id = form.require("client_id")?;
    let device_code = form.require("code")?;
    let now = now();
    let Some(index) = state
        .device_codes
        .iter()
        .position(|c| c.device_code == device_code)
    else {
        return Err(OAuthError::new(
            "bad_verification_code",
            70000,
            "The provided value for the input parameter 'device_code' is not valid.",
        ));
    };
    let code = &state.device_codes[index];
    if code.client_id != client_id {
        return Err(OAuthError::invalid_grant());
    }
    if code.expires_at <= now {
        return Err(OAuthError::new(
            "expired_token",
            70020,
            "The provided value for the input parameter 'device_code' is not valid. This device code has expired.",
        ));
    }
    let account = match code.status.clone() {
        CodeStatus::Pending if state.slow_downs > 0 => {
            state.slow_downs -= 1;
            return Err(OAuthError::new(
                "slow_down",
                70016,
                "OAuth 2.0 device flow error. Polling too frequently; slow down.",
            ));
        }
        CodeStatus::Pending => {
            return Err(OAuthError::new(
                "authorization_pending",
                70016,
                "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
            ));
        }
        CodeStatus::Declined => {
            return Err(OAuthError::new(
                "authorization_declined",
                70000,
                "The user declined the authorization request.",
            ));
        }
        CodeStatus::Redeemed => return Err(OAuthError::invalid_grant()),
        CodeStatus::Approved(account) => account,
    };
    let code = &mut state.device_codes[index];
    code.status = CodeStatus::Redeemed;
    let (client_id, resource) = (code.client_id.clone(), code.resource.clone());
    let scope = format!("{}/user_impersonation", resource.trim_end_matches('/'));
    let mut tokens = state.issue(TokenKind::DeviceCode, &account, &client_id, &scope, None);
    // v1 access tokens live 3599 s.
    let expires_on = now + 3599;
    if let Some(info) = state.access_tokens.get_mut(&tokens.access_token) {
        info.expires_on = expires_on;
    }
    tokens.access_expires_on = expires_on;
    Ok(Reply::ok(json!({
        "token_type": "Bearer",
        "scope": "user_impersonation",
        "expires_in": "3599",
        "ext_expires_in": "3599",
        "expires_on": expires_on.to_string(),
        "not_before": now.to_string(),
        "resource": resource,
        "access_token": tokens.access_token,
        "refresh_token": tokens.refresh_token,
        "id_token": tokens.id_token,
    })))
}

/// `scope` as the platform grants it: without the OIDC scopes (all of
/// `scope` if that would leave nothing).
fn granted_scope(scope: &str) -> String {
    let kept: Vec<&str> = scope
        .split_whitespace()
        .filter(|s| !OIDC_SCOPES.iter().any(|o| o.eq_ignore_ascii_case(s)))
        .collect();
    if kept.is_empty() {
        scope.split_whitespace().collect::<Vec<_>>().join(" ")
    } else {
        kept.join(" ")
    }
}

fn has_scope(scope: &str, wanted: &str) -> bool {
    scope
        .split_whitespace()
        .any(|s| s.eq_ignore_ascii_case(wanted))
}

/// An unsigned JWT-shaped id token (`alg: none`, empty signature): the
/// claims plugins read, without a key to verify against.
fn id_token(account: &Account, client_id: &str, now: u64) -> String {
    let header = json!({"typ": "JWT", "alg": "none"});
    let claims = json!({
        "ver": "2.0",
        "iss": format!("https://login.microsoftonline.com/{}/v2.0", account.tenant_id()),
        "sub": random_string(43, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
        "aud": client_id,
        "exp": now + 3600,
        "iat": now,
        "nbf": now,
        "name": account.name,
        "preferred_username": account.username,
        "oid": account.uid(),
        "tid": account.tenant_id(),
    });
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// An opaque MSA access token: `EwA` then base64 (so `+`, `/` and `=` can
/// occur, which a plugin must not mangle in a header).
fn random_access_token() -> String {
    format!(
        "EwA{}=",
        random_string(
            180,
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        )
    )
}

/// An MSA refresh token: `M.C5…_BAY.0.U.` then the characters real ones
/// carry (`!`, `*`, `$`), which a plugin must form-encode.
fn random_refresh_token() -> String {
    format!(
        "M.C5{}_BAY.0.U.{}",
        random_string(2, b"0123456789"),
        random_string(
            200,
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*$-"
        )
    )
}

pub(crate) fn random_string(len: usize, alphabet: &[u8]) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(alphabet[rng.random_range(0..alphabet.len())]))
        .collect()
}

/// A random lowercase GUID, for trace and correlation ids.
fn guid() -> String {
    let b: [u8; 16] = rand::rng().random();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `(year, month, day, hour, minute, second)` of Unix seconds, UTC
/// (Howard Hinnant's days-to-civil).
pub(crate) fn civil(secs: u64) -> (u64, u64, u64, u64, u64, u64) {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day, rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The envelope's `timestamp`: `2024-02-28 10:00:28Z`.
fn aad_timestamp(secs: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(secs);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}Z")
}

/// A timestamp inside messages: `2022-04-07T11:53:28.0000000Z`.
fn iso_timestamp(secs: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.0000000Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn post(url: &str, origin: Option<&str>, fields: &[(&str, &str)]) -> (u16, Value) {
        crate::tests::init_tls();
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let mut request = reqwest::Client::new()
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        let response = request.send().await.expect("the fake answers");
        let status = response.status().as_u16();
        let text = response.text().await.expect("a body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn refresh_spa(
        identity: &MsIdentity,
        refresh_token: &str,
        origin: Option<&str>,
    ) -> (u16, Value) {
        post(
            &format!("{}{PATH_SPA_TOKEN}", identity.base_url()),
            origin,
            &[
                ("grant_type", "refresh_token"),
                ("client_id", TEAMS_WEB_CLIENT_ID),
                ("refresh_token", refresh_token),
                ("scope", TEAMS_SCOPES),
            ],
        )
        .await
    }

    async fn refresh_device(
        identity: &MsIdentity,
        refresh_token: &str,
        origin: Option<&str>,
    ) -> (u16, Value) {
        post(
            &format!("{}{PATH_DEVICE_REFRESH}", identity.base_url()),
            origin,
            &[
                ("grant_type", "refresh_token"),
                ("client_id", TEAMS_DEVICE_CLIENT_ID),
                ("refresh_token", refresh_token),
                ("scope", TEAMS_SCOPES),
            ],
        )
        .await
    }

    async fn start_device_code(identity: &MsIdentity) -> Value {
        let (status, body) = post(
            &format!("{}{PATH_DEVICE_CODE}", identity.base_url()),
            None,
            &[
                ("client_id", TEAMS_DEVICE_CLIENT_ID),
                ("resource", SPACES_RESOURCE),
            ],
        )
        .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn poll_device_code(identity: &MsIdentity, device_code: &str) -> (u16, Value) {
        post(
            &format!("{}{PATH_DEVICE_TOKEN}", identity.base_url()),
            None,
            &[
                ("grant_type", DEVICE_CODE_GRANT),
                ("client_id", TEAMS_DEVICE_CLIENT_ID),
                ("code", device_code),
            ],
        )
        .await
    }

    fn aadsts(body: &Value) -> u64 {
        body["error_codes"][0].as_u64().expect("error_codes")
    }

    #[tokio::test]
    async fn an_spa_refresh_without_origin_is_refused_with_aadsts9002327() {
        let identity = MsIdentity::start().await;
        let tokens = identity.issue_spa_tokens(&Account::new("ada@example.com", "Ada"));

        let (status, body) = refresh_spa(&identity, &tokens.refresh_token, None).await;
        // It is an invalid_request in the platform's envelope.
        assert_eq!(status, 400);
        assert_eq!(body["error"], "invalid_request");
        assert_eq!(aadsts(&body), 9002327);
        let description = body["error_description"].as_str().unwrap();
        assert!(
            description.starts_with(
                "AADSTS9002327: Tokens issued for the 'Single-Page Application' client-type may only be redeemed via cross-origin requests."
            ),
            "{description}"
        );
        for field in ["timestamp", "trace_id", "correlation_id"] {
            assert!(body[field].is_string(), "{field} missing: {body}");
        }
        // The refused request spent nothing: the token still works with Origin.
        let (status, _) = refresh_spa(&identity, &tokens.refresh_token, Some(TEAMS_ORIGIN)).await;
        assert_eq!(status, 200);
        // Both calls are recorded, with and without their Origin.
        let calls = identity.calls();
        assert_eq!(calls.len(), 2);
        assert!(!calls[0].had_origin() && calls[0].outcome == "invalid_request");
        assert_eq!(calls[1].origin.as_deref(), Some(TEAMS_ORIGIN));
        assert_eq!(calls[1].outcome, "ok");
    }

    #[tokio::test]
    async fn a_refresh_rotates_and_the_old_token_stops_working() {
        let identity = MsIdentity::start().await;
        let account = Account::new("ada@example.com", "Ada");
        let tokens = identity.issue_spa_tokens(&account);

        let (status, body) =
            refresh_spa(&identity, &tokens.refresh_token, Some(TEAMS_ORIGIN)).await;
        assert_eq!(status, 200, "{body}");
        // The answer has the v2 shape, OIDC scopes left out of `scope`,
        // and an id token because `openid` was asked for.
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["scope"], MBI_SCOPE);
        assert_eq!(body["expires_in"], 3600);
        assert!(body["id_token"].as_str().unwrap().split('.').count() == 3);
        let new_refresh = body["refresh_token"].as_str().unwrap();
        let new_access = body["access_token"].as_str().unwrap();
        assert!(new_refresh.starts_with("M.C5") && new_refresh != tokens.refresh_token);
        assert!(new_access.starts_with("EwA"));
        // The new access token is known to belong to the account.
        assert_eq!(
            identity.valid_access_token(new_access),
            Some(account.clone())
        );
        // The old refresh token is spent.
        let (status, body) =
            refresh_spa(&identity, &tokens.refresh_token, Some(TEAMS_ORIGIN)).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant"))
        );
        assert_eq!(aadsts(&body), 70000);
        // The new one is the latest, and keeps the old one's fixed deadline.
        assert_eq!(
            identity
                .latest_refresh_token(&account, TokenKind::Spa)
                .as_deref(),
            Some(new_refresh)
        );
        let deadline = identity.state().refresh_tokens[new_refresh].expires_at;
        assert_eq!(deadline, tokens.refresh_expires_on);
    }

    #[tokio::test]
    async fn an_expired_spa_token_gets_aadsts700084_with_bad_token() {
        let identity = MsIdentity::start().await;
        let tokens = identity.issue_spa_tokens(&Account::new("ada@example.com", "Ada"));
        identity.expire_refresh_token(&tokens.refresh_token);

        let (status, body) =
            refresh_spa(&identity, &tokens.refresh_token, Some(TEAMS_ORIGIN)).await;
        // It is an invalid_grant with the SPA-lifetime code and suberror.
        assert_eq!(status, 400);
        assert_eq!(body["error"], "invalid_grant");
        assert_eq!(aadsts(&body), 700084);
        assert_eq!(body["suberror"], "bad_token");
        assert!(
            body["error_description"].as_str().unwrap().starts_with(
                "AADSTS700084: The refresh token was issued to a single page app (SPA)"
            )
        );
    }

    #[tokio::test]
    async fn each_endpoint_refuses_the_other_flows_token_and_origin_rule() {
        let identity = MsIdentity::start().await;
        let account = Account::new("ada@example.com", "Ada");
        let spa = identity.issue_spa_tokens(&account);
        let device = identity.issue_device_tokens(&account);

        // A device-code token at the SPA endpoint is an invalid grant.
        let (_, body) = post(
            &format!("{}{PATH_SPA_TOKEN}", identity.base_url()),
            Some(TEAMS_ORIGIN),
            &[
                ("grant_type", "refresh_token"),
                ("client_id", TEAMS_DEVICE_CLIENT_ID),
                ("refresh_token", &device.refresh_token),
            ],
        )
        .await;
        assert_eq!(body["error"], "invalid_grant");
        // An Origin at the device endpoint is refused with AADSTS9002326.
        let (status, body) =
            refresh_device(&identity, &device.refresh_token, Some(TEAMS_ORIGIN)).await;
        assert_eq!((status, aadsts(&body)), (400, 9002326));
        assert_eq!(body["error"], "invalid_request");
        // An SPA token at the device endpoint is an invalid grant.
        let (_, body) = refresh_device(&identity, &spa.refresh_token, None).await;
        assert_eq!(body["error"], "invalid_grant");
        // None of that spent the device token: without Origin it rotates.
        let (status, body) = refresh_device(&identity, &device.refresh_token, None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["scope"], MBI_SCOPE);
        let (_, body) = refresh_device(&identity, &device.refresh_token, None).await;
        assert_eq!(body["error"], "invalid_grant");
    }

    #[tokio::test]
    async fn a_device_code_goes_pending_then_approved_and_is_redeemed_once() {
        let identity = MsIdentity::start().await;
        let account = Account::new("ada@example.com", "Ada");
        let start = start_device_code(&identity).await;
        // The v1 answer gives its numbers as strings.
        assert_eq!(start["interval"], "1");
        assert_eq!(start["expires_in"], "900");
        let user_code = start["user_code"].as_str().unwrap();
        let device_code = start["device_code"].as_str().unwrap();
        assert!(start["message"].as_str().unwrap().contains(user_code));
        assert_eq!(identity.pending_user_codes(), vec![user_code.to_owned()]);

        // Before approval the poll is pending.
        let (status, body) = poll_device_code(&identity, device_code).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("authorization_pending"))
        );
        assert_eq!(aadsts(&body), 70016);
        // An armed slow_down answers once, then pending again.
        identity.slow_down_next(1);
        assert_eq!(
            poll_device_code(&identity, device_code).await.1["error"],
            "slow_down"
        );
        assert_eq!(
            poll_device_code(&identity, device_code).await.1["error"],
            "authorization_pending"
        );
        // After approval the tokens come v1-shaped, numbers as strings.
        identity.approve(user_code, &account);
        let (status, body) = poll_device_code(&identity, device_code).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["expires_in"], "3599");
        assert_eq!(body["resource"], SPACES_RESOURCE);
        assert!(body["expires_on"].as_str().unwrap().parse::<u64>().is_ok());
        // Its refresh token is a device-code one: it refreshes without Origin.
        let refresh = body["refresh_token"].as_str().unwrap();
        assert_eq!(refresh_device(&identity, refresh, None).await.0, 200);
        // A second redemption is an invalid grant.
        let (status, body) = poll_device_code(&identity, device_code).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant"))
        );
        assert!(identity.pending_user_codes().is_empty());
        // The polls are recorded as device-code grants.
        let polls: Vec<_> = identity
            .calls()
            .into_iter()
            .filter(Call::is_device_poll)
            .collect();
        assert_eq!(polls.len(), 5);
        assert!(
            polls
                .iter()
                .all(|c| c.grant_type.as_deref() == Some(DEVICE_CODE_GRANT))
        );
    }

    #[tokio::test]
    async fn declined_and_expired_codes_say_so() {
        let identity = MsIdentity::start().await;
        let first = start_device_code(&identity).await;
        let second = start_device_code(&identity).await;
        identity.decline(first["user_code"].as_str().unwrap());
        identity.expire_code(second["user_code"].as_str().unwrap());
        // A declined code answers authorization_declined.
        let (_, body) = poll_device_code(&identity, first["device_code"].as_str().unwrap()).await;
        assert_eq!(body["error"], "authorization_declined");
        // An expired code answers expired_token with AADSTS70020.
        let (_, body) = poll_device_code(&identity, second["device_code"].as_str().unwrap()).await;
        assert_eq!(body["error"], "expired_token");
        assert_eq!(aadsts(&body), 70020);
        // A code never issued answers bad_verification_code.
        let (_, body) = poll_device_code(&identity, "DAQABAAEAAADnope").await;
        assert_eq!(body["error"], "bad_verification_code");
    }

    #[tokio::test]
    async fn malformed_requests_get_invalid_request_and_unknown_paths_404() {
        let identity = MsIdentity::start().await;
        let url = format!("{}{PATH_SPA_TOKEN}", identity.base_url());
        // A missing field names itself (AADSTS900144).
        let (status, body) =
            post(&url, Some(TEAMS_ORIGIN), &[("grant_type", "refresh_token")]).await;
        assert_eq!((status, aadsts(&body)), (400, 900144));
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains("'client_id'")
        );
        // A JSON body reads as no form at all.
        let response = reqwest::Client::new()
            .post(&url)
            .json(&json!({"grant_type": "refresh_token"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request");
        // A field given twice is malformed.
        let (_, body) = post(
            &url,
            Some(TEAMS_ORIGIN),
            &[
                ("grant_type", "refresh_token"),
                ("grant_type", "refresh_token"),
            ],
        )
        .await;
        assert_eq!(aadsts(&body), 9002313);
        // Another grant type is unsupported.
        let (_, body) = post(&url, None, &[("grant_type", "password")]).await;
        assert_eq!(body["error"], "unsupported_grant_type");
        // Other paths and methods are 404s.
        let response = reqwest::get(format!(
            "{}/common/oauth2/v2.0/authorize",
            identity.base_url()
        ))
        .await
        .unwrap();
        assert_eq!(response.status(), 404);
        let response = reqwest::get(&url).await.unwrap();
        assert_eq!(response.status(), 404);
    }

    #[tokio::test]
    async fn injected_failures_spend_nothing_and_run_out() {
        let identity = MsIdentity::start().await;
        let tokens = identity.issue_spa_tokens(&Account::new("ada@example.com", "Ada"));
        identity.fail_next(2, 503);
        for _ in 0..2 {
            let (status, body) =
                refresh_spa(&identity, &tokens.refresh_token, Some(TEAMS_ORIGIN)).await;
            // Each armed failure answers the status, temporarily_unavailable.
            assert_eq!(
                (status, body["error"].as_str()),
                (503, Some("temporarily_unavailable"))
            );
        }
        // The token was not spent: the third request succeeds.
        let (status, _) = refresh_spa(&identity, &tokens.refresh_token, Some(TEAMS_ORIGIN)).await;
        assert_eq!(status, 200);
        let outcomes: Vec<_> = identity.calls().into_iter().map(|c| c.outcome).collect();
        assert_eq!(outcomes, ["injected", "injected", "ok"]);
    }

    #[tokio::test]
    async fn two_overlapping_refreshes_of_one_token_leave_one_winner() {
        let identity = MsIdentity::start().await;
        let tokens = identity.issue_spa_tokens(&Account::new("ada@example.com", "Ada"));
        identity.set_delay(Duration::from_millis(500));
        let started = std::time::Instant::now();
        let (a, b) = tokio::join!(
            refresh_spa(&identity, &tokens.refresh_token, Some(TEAMS_ORIGIN)),
            refresh_spa(&identity, &tokens.refresh_token, Some(TEAMS_ORIGIN)),
        );
        // They overlapped (both waited at once) ...
        assert!(started.elapsed() < Duration::from_millis(1000));
        // ... and exactly one rotated the token.
        let mut statuses = [a.0, b.0];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 400]);
    }

    #[test]
    fn timestamps_are_formatted_as_the_platform_does() {
        // 2024-02-28 10:00:28 UTC, the reference's example.
        assert_eq!(aad_timestamp(1_709_114_428), "2024-02-28 10:00:28Z");
        // A leap day.
        assert_eq!(iso_timestamp(951_782_400), "2000-02-29T00:00:00.0000000Z");
    }
}
