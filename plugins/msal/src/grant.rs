//! The identity platform's endpoints: building device-code and token
//! requests, and sorting their answers.
//!
//! Everything but [`send`] is a pure function of settings, status and
//! body, so the classification is unit-tested natively; `send` is the thin
//! call through the host.
//!
//! Refresh tokens are handed out wrapped with the kind of login that got
//! them (`spa:` web session, `dc:` device code), because the two must be
//! redeemed differently: a web (single-page-app) token only at the
//! `consumers` endpoint of the web client with the app's `Origin`, a
//! device-code token at the Microsoft-account tenant of its own client
//! without one.

use std::time::Duration;

use serde_json::Value;
use weft_sdk::tokens::{TokenError, TokenSet};

use crate::cache::EXPIRY_MARGIN_SECS;
use crate::json::{str_field, u64_field};
use crate::jwt::IdClaims;
use crate::settings::Settings;

/// The scope a Teams skypetoken is exchanged for; the default of every
/// token function.
pub(crate) const DEFAULT_SCOPE: &str = "service::api.fl.spaces.skype.com::MBI_SSL";

/// Added to every refresh, so the answer carries a new refresh token and
/// an id token.
const OIDC_SCOPES: [&str; 3] = ["openid", "profile", "offline_access"];

/// The tenant of personal Microsoft accounts, where device-code tokens are
/// redeemed.
const MSA_TENANT: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";

/// The timeout of every request: under the host's default 10-second call
/// deadline, so a hung endpoint ends as a clean transient error rather
/// than a trapped call.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(8);

/// When a token response gives no lifetime, assume an hour (the platform's
/// usual one).
const DEFAULT_LIFETIME_SECS: u64 = 3600;

/// How a refresh token must be redeemed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefreshKind {
    /// From a web (single-page-app) session: `consumers`, the web client,
    /// with `Origin`.
    Spa,
    /// From the device-code login: the Microsoft-account tenant, its own
    /// client, no `Origin`.
    DeviceCode,
}

impl RefreshKind {
    fn prefix(self) -> &'static str {
        match self {
            Self::Spa => "spa:",
            Self::DeviceCode => "dc:",
        }
    }

    /// A short name for logs.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Spa => "web",
            Self::DeviceCode => "device-code",
        }
    }

    /// The refresh token as handed to connectors.
    pub(crate) fn wrap(self, refresh_token: &str) -> String {
        format!("{}{refresh_token}", self.prefix())
    }

    /// The kind and the raw token of a handed-out refresh token; one
    /// without a prefix is a web token.
    pub(crate) fn unwrap(wrapped: &str) -> (Self, &str) {
        [Self::Spa, Self::DeviceCode]
            .into_iter()
            .find_map(|kind| wrapped.strip_prefix(kind.prefix()).map(|raw| (kind, raw)))
            .unwrap_or((Self::Spa, wrapped))
    }
}

/// Why the identity platform gave no tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum GrantError {
    /// The grant was rejected: the user must log in again.
    #[error("{0}")]
    InvalidGrant(String),
    /// Device code: the user has not finished signing in.
    #[error("the sign-in is not finished yet")]
    Pending,
    /// Device code: poll less often.
    #[error("polling too fast")]
    SlowDown,
    /// Device code: the user declined.
    #[error("You declined the sign-in on Microsoft's page; start the login again to retry.")]
    Declined,
    /// Device code: the code expired.
    #[error("The code expired; start the login again.")]
    CodeExpired,
    /// Any other refusal (bad client, bad scope, …), with Microsoft's
    /// explanation.
    #[error("{0}")]
    Refused(String),
    /// Network trouble, throttling, a server error or a malformed answer.
    #[error("{0}")]
    Transient(String),
}

impl From<GrantError> for TokenError {
    fn from(error: GrantError) -> Self {
        match error {
            GrantError::InvalidGrant(m) => Self::InvalidGrant(m),
            GrantError::Transient(m) => Self::Transient(m),
            GrantError::Refused(m) => Self::InvalidInput(m),
            // Device-code states never come out of a refresh; if they did,
            // the login is unusable.
            other @ (GrantError::Pending
            | GrantError::SlowDown
            | GrantError::Declined
            | GrantError::CodeExpired) => Self::InvalidGrant(other.to_string()),
        }
    }
}

/// A form POST to a token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TokenRequest {
    /// The endpoint.
    pub(crate) url: String,
    /// The form fields.
    pub(crate) form: Vec<(&'static str, String)>,
    /// The `Origin` header, for web refresh tokens only.
    pub(crate) origin: Option<String>,
}

/// The device-code request (v1 endpoint, as the Teams personal client).
pub(crate) fn device_code_request(settings: &Settings) -> TokenRequest {
    TokenRequest {
        url: format!("{}/common/oauth2/devicecode", settings.authority_url),
        form: vec![
            ("client_id", settings.device_code_client_id.clone()),
            ("resource", settings.device_code_resource.clone()),
        ],
        origin: None,
    }
}

/// One poll for the device code's tokens.
pub(crate) fn device_token_request(settings: &Settings, device_code: &str) -> TokenRequest {
    TokenRequest {
        url: format!("{}/common/oauth2/token", settings.authority_url),
        form: vec![
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:device_code".into(),
            ),
            ("client_id", settings.device_code_client_id.clone()),
            ("code", device_code.to_owned()),
        ],
        origin: None,
    }
}

/// The refresh-token grant for a raw refresh token of `kind`.
pub(crate) fn refresh_request(
    settings: &Settings,
    kind: RefreshKind,
    refresh_token: &str,
    scopes: &[String],
) -> TokenRequest {
    let (url, client_id, origin) = match kind {
        RefreshKind::Spa => (
            format!("{}/consumers/oauth2/v2.0/token", settings.authority_url),
            &settings.web_client_id,
            Some(settings.spa_origin.clone()),
        ),
        RefreshKind::DeviceCode => (
            format!("{}/{MSA_TENANT}/oauth2/v2.0/token", settings.authority_url),
            &settings.device_code_client_id,
            None,
        ),
    };
    TokenRequest {
        url,
        form: vec![
            ("grant_type", "refresh_token".into()),
            ("client_id", client_id.clone()),
            ("refresh_token", refresh_token.to_owned()),
            ("scope", request_scope(scopes)),
        ],
        origin,
    }
}

/// The scopes to ask for (the default when none) plus the OIDC ones, each
/// once, space-separated.
pub(crate) fn request_scope(scopes: &[String]) -> String {
    let requested = effective_scopes(scopes);
    let mut out: Vec<&str> = Vec::new();
    let words = requested.iter().flat_map(|s| s.split_whitespace());
    for scope in words.chain(OIDC_SCOPES) {
        if !out.iter().any(|s| s.eq_ignore_ascii_case(scope)) {
            out.push(scope);
        }
    }
    out.join(" ")
}

/// The requested scopes, or the default when none were.
pub(crate) fn effective_scopes(scopes: &[String]) -> Vec<String> {
    let scopes: Vec<String> = scopes
        .iter()
        .filter(|s| !s.trim().is_empty())
        .cloned()
        .collect();
    if scopes.is_empty() {
        vec![DEFAULT_SCOPE.to_owned()]
    } else {
        scopes
    }
}

/// What the device-code endpoint hands out. Its `Debug` leaves the
/// device code out.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct DeviceCode {
    /// The secret the polls send.
    pub(crate) device_code: String,
    /// The code the user types.
    pub(crate) user_code: String,
    /// Where the user types it.
    pub(crate) verification_uri: String,
    /// How long the code lives, seconds.
    pub(crate) expires_in: u64,
    /// How often to poll, seconds (at least 1).
    pub(crate) interval: u64,
}

impl std::fmt::Debug for DeviceCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCode")
            .field("user_code", &self.user_code)
            .field("verification_uri", &self.verification_uri)
            .field("expires_in", &self.expires_in)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

/// Sorts the device-code endpoint's answer; its numbers may be strings,
/// and v1 spells the URI `verification_url`.
pub(crate) fn parse_device_code(status: u16, body: &[u8]) -> Result<DeviceCode, GrantError> {
    let json = check_status(status, body)?;
    let text = |name: &str| str_field(&json, name).map(str::to_owned);
    let malformed = || GrantError::Transient("the device-code answer lacks its codes".into());
    Ok(DeviceCode {
        device_code: text("device_code").ok_or_else(malformed)?,
        user_code: text("user_code").ok_or_else(malformed)?,
        verification_uri: text("verification_uri")
            .or_else(|| text("verification_url"))
            .unwrap_or_else(|| "https://microsoft.com/devicelogin".into()),
        expires_in: u64_field(&json, "expires_in").unwrap_or(900),
        interval: u64_field(&json, "interval").unwrap_or(5).max(1),
    })
}

/// Sorts a token endpoint's answer: the response JSON (with an access
/// token) on success.
pub(crate) fn classify(status: u16, body: &[u8]) -> Result<Value, GrantError> {
    let json = check_status(status, body)?;
    if str_field(&json, "access_token").is_none() {
        return Err(GrantError::Transient(
            "the token endpoint's answer has no access token".into(),
        ));
    }
    Ok(json)
}

/// The JSON of a 2xx answer, or the error an error answer means.
fn check_status(status: u16, body: &[u8]) -> Result<Value, GrantError> {
    if status == 429 || status >= 500 {
        return Err(GrantError::Transient(format!(
            "Microsoft's sign-in service answered HTTP {status}; trying again later"
        )));
    }
    let json: Option<Value> = serde_json::from_slice(body).ok();
    if (200..300).contains(&status) {
        return json.filter(Value::is_object).ok_or_else(|| {
            GrantError::Transient("Microsoft's sign-in service answered with malformed JSON".into())
        });
    }
    match json.as_ref().and_then(|j| str_field(j, "error")) {
        Some(error) => Err(rejection(error, json.as_ref().unwrap_or(&Value::Null))),
        None => Err(GrantError::Transient(format!(
            "Microsoft's sign-in service answered HTTP {status} without an error code"
        ))),
    }
}

/// The meaning of an OAuth error body.
fn rejection(error: &str, body: &Value) -> GrantError {
    let description = str_field(body, "error_description").unwrap_or_default();
    let code = aadsts_code(body, description);
    let tag = code.map_or_else(|| error.to_owned(), |c| format!("AADSTS{c}"));
    match (error, code) {
        ("authorization_pending", _) => GrantError::Pending,
        ("slow_down", _) => GrantError::SlowDown,
        ("authorization_declined" | "access_denied", _) => GrantError::Declined,
        ("expired_token" | "code_expired", _) | (_, Some(70019)) => GrantError::CodeExpired,
        ("temporarily_unavailable" | "server_error", _) => GrantError::Transient(format!(
            "Microsoft's sign-in service is unavailable for now ({tag})"
        )),
        ("invalid_grant", Some(700084)) => GrantError::InvalidGrant(
            "The web session's refresh token expired (AADSTS700084): Microsoft renews a web login for only 24 hours. Log in again; the device-code login lasts longer."
                .into(),
        ),
        ("invalid_grant", Some(70008)) => GrantError::InvalidGrant(
            "The refresh token expired after going unused (AADSTS70008): log in again.".into(),
        ),
        ("invalid_grant", _) => GrantError::InvalidGrant(format!(
            "Microsoft rejected the refresh token ({tag}): log in again."
        )),
        ("interaction_required", _) => GrantError::InvalidGrant(format!(
            "Microsoft wants you to sign in again in person ({tag}): log in again."
        )),
        ("invalid_request", Some(9002327)) => GrantError::InvalidGrant(
            "Microsoft redeems a web session's refresh token only from the web app's origin (AADSTS9002327): log in again, and check the `spa-origin` setting if it keeps happening."
                .into(),
        ),
        ("invalid_request", Some(9002326)) => GrantError::InvalidGrant(
            "Microsoft refused the refresh token because it was sent with a web origin it was not issued for (AADSTS9002326): log in again."
                .into(),
        ),
        _ => GrantError::Refused(format!(
            "Microsoft refused the request ({tag}){}",
            first_sentence(description)
                .map(|s| format!(": {s}"))
                .unwrap_or_default()
        )),
    }
}

/// The AADSTS code: `error_codes[0]`, else the number after `AADSTS` in
/// the description.
fn aadsts_code(body: &Value, description: &str) -> Option<u32> {
    let listed = body
        .get("error_codes")
        .and_then(Value::as_array)
        .and_then(|codes| codes.first())
        .and_then(Value::as_u64)
        .and_then(|c| u32::try_from(c).ok());
    listed.or_else(|| {
        let rest = &description[description.find("AADSTS")? + "AADSTS".len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    })
}

/// The description's first sentence without its `AADSTSnnn:` tag or trace
/// ids, at most 200 characters.
fn first_sentence(description: &str) -> Option<String> {
    let text = match description.split_once(": ") {
        Some((tag, rest)) if tag.starts_with("AADSTS") => rest,
        _ => description,
    };
    let end = text
        .find(['\r', '\n'])
        .or_else(|| text.find(". ").map(|i| i + 1))
        .unwrap_or(text.len());
    let sentence: String = text[..end].trim().chars().take(200).collect();
    (!sentence.is_empty()).then_some(sentence)
}

/// The fields of a successful token answer. Its `Debug` leaves the
/// tokens out.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct TokenResponse {
    /// The access token.
    pub(crate) access_token: String,
    /// The new refresh token, if one was issued.
    pub(crate) refresh_token: Option<String>,
    /// Its lifetime, seconds (a number or a string).
    pub(crate) expires_in: Option<u64>,
    /// Its expiry, Unix seconds (v1 answers).
    pub(crate) expires_on: Option<u64>,
    /// The granted scopes.
    pub(crate) scopes: Vec<String>,
    /// The resource (v1 answers).
    pub(crate) resource: Option<String>,
    /// The id token's claims, if one came.
    pub(crate) claims: Option<IdClaims>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("refresh_token", &self.refresh_token.is_some())
            .field("expires_in", &self.expires_in)
            .field("expires_on", &self.expires_on)
            .field("scopes", &self.scopes)
            .field("resource", &self.resource)
            .finish_non_exhaustive()
    }
}

impl TokenResponse {
    /// Reads a token answer; `None` without an access token.
    pub(crate) fn from_json(json: &Value) -> Option<Self> {
        let text = |name: &str| str_field(json, name).map(str::to_owned);
        Some(Self {
            access_token: text("access_token")?,
            refresh_token: text("refresh_token"),
            expires_in: u64_field(json, "expires_in"),
            expires_on: u64_field(json, "expires_on"),
            scopes: str_field(json, "scope")
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            resource: text("resource"),
            claims: str_field(json, "id_token").and_then(IdClaims::from_token),
        })
    }

    /// When the access token should be renewed: [`EXPIRY_MARGIN_SECS`]
    /// before it expires, counted from `issued_at`.
    pub(crate) fn expires_at(&self, issued_at: u64) -> u64 {
        let expiry = match (self.expires_in, self.expires_on) {
            (Some(lifetime), _) => issued_at.saturating_add(lifetime),
            (None, Some(on)) => on,
            (None, None) => issued_at.saturating_add(DEFAULT_LIFETIME_SECS),
        };
        expiry.saturating_sub(EXPIRY_MARGIN_SECS)
    }

    /// Whether the access token serves every one of `scopes`: its granted
    /// scopes hold them, or they are all of its v1 resource. An answer
    /// that names neither is taken to serve what was asked.
    pub(crate) fn serves(&self, scopes: &[String]) -> bool {
        if self.scopes.is_empty() && self.resource.is_none() {
            return true;
        }
        scopes.iter().all(|wanted| {
            self.scopes.iter().any(|s| s.eq_ignore_ascii_case(wanted))
                || self.resource.as_deref().is_some_and(|r| {
                    let r = r.trim_end_matches('/').to_ascii_lowercase();
                    let wanted = wanted.to_ascii_lowercase();
                    wanted == r || wanted.starts_with(&format!("{r}/"))
                })
        })
    }

    /// The token set handed out: the rotated refresh token, else
    /// `previous` (the one just redeemed), wrapped with `kind`.
    pub(crate) fn token_set(
        &self,
        kind: RefreshKind,
        previous: Option<&str>,
        requested: &[String],
        issued_at: u64,
    ) -> TokenSet {
        TokenSet {
            access_token: self.access_token.clone(),
            expires_at: self.expires_at(issued_at),
            refresh_token: self
                .refresh_token
                .as_deref()
                .or(previous)
                .map(|rt| kind.wrap(rt)),
            scopes: if self.scopes.is_empty() {
                effective_scopes(requested)
            } else {
                self.scopes.clone()
            },
            account_id: self.claims.as_ref().and_then(IdClaims::account_id),
        }
    }
}

/// Sends `request` through the host; the status and body of any answer.
/// No answer at all (refused by the host, timeout, connection failure) is
/// transient.
pub(crate) fn send(request: &TokenRequest) -> Result<(u16, Vec<u8>), GrantError> {
    let form: Vec<(&str, &str)> = request.form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut http = weft_sdk::http::Request::post(&request.url)
        .header("accept", "application/json")
        .timeout(REQUEST_TIMEOUT);
    if let Some(origin) = &request.origin {
        http = http.header("origin", origin);
    }
    let response = http.form(&form).send().map_err(|error| {
        GrantError::Transient(format!(
            "Microsoft's sign-in service is unreachable: {error}"
        ))
    })?;
    Ok((response.status(), response.bytes().to_vec()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::jwt::token_for_test;

    fn body(value: &Value) -> Vec<u8> {
        value.to_string().into_bytes()
    }

    fn scopes(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn refresh_tokens_carry_their_kind_and_bare_ones_are_web_tokens() {
        assert_eq!(RefreshKind::Spa.wrap("M.C5_x"), "spa:M.C5_x");
        assert_eq!(
            RefreshKind::unwrap("dc:abc"),
            (RefreshKind::DeviceCode, "abc")
        );
        assert_eq!(RefreshKind::unwrap("spa:abc"), (RefreshKind::Spa, "abc"));
        // Unprefixed: a web token, whole.
        assert_eq!(RefreshKind::unwrap("M.C5_x"), (RefreshKind::Spa, "M.C5_x"));
    }

    #[test]
    fn a_web_refresh_goes_to_consumers_with_the_origin() {
        let settings = Settings::default();
        let request = refresh_request(&settings, RefreshKind::Spa, "rt", &[]);
        assert_eq!(
            request.url,
            "https://login.microsoftonline.com/consumers/oauth2/v2.0/token"
        );
        assert_eq!(request.origin.as_deref(), Some("https://teams.live.com"));
        assert!(
            request
                .form
                .contains(&("client_id", settings.web_client_id.clone()))
        );
        // No scope asked: MBI_SSL plus the OIDC scopes.
        assert!(request.form.contains(&(
            "scope",
            format!("{DEFAULT_SCOPE} openid profile offline_access")
        )));
        assert!(
            request
                .form
                .contains(&("grant_type", "refresh_token".into()))
        );
    }

    #[test]
    fn a_device_code_refresh_goes_to_the_msa_tenant_without_origin() {
        let settings = Settings::default();
        let request = refresh_request(
            &settings,
            RefreshKind::DeviceCode,
            "rt",
            &scopes(&["https://graph.microsoft.com/Files.Read", "openid"]),
        );
        assert_eq!(
            request.url,
            "https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/oauth2/v2.0/token"
        );
        assert_eq!(request.origin, None);
        assert!(
            request
                .form
                .contains(&("client_id", settings.device_code_client_id.clone()))
        );
        // `openid` asked for is not repeated.
        assert!(request.form.contains(&(
            "scope",
            "https://graph.microsoft.com/Files.Read openid profile offline_access".into()
        )));
    }

    #[test]
    fn device_code_requests_use_the_v1_endpoints_without_origin() {
        let settings = Settings::default();
        let start = device_code_request(&settings);
        assert_eq!(
            start.url,
            "https://login.microsoftonline.com/common/oauth2/devicecode"
        );
        assert!(
            start
                .form
                .contains(&("resource", "https://api.spaces.skype.com".into()))
        );
        let poll = device_token_request(&settings, "DC");
        assert_eq!(
            poll.url,
            "https://login.microsoftonline.com/common/oauth2/token"
        );
        assert!(poll.form.contains(&("code", "DC".into())));
        assert_eq!(poll.origin, None);
    }

    #[test]
    fn device_code_answers_with_numbers_as_strings_are_read() {
        let answer = json!({
            "user_code": "ABCD1234", "device_code": "DC-secret",
            "verification_url": "https://microsoft.com/devicelogin",
            "expires_in": "900", "interval": "5", "message": "…",
        });
        let code = parse_device_code(200, &body(&answer)).unwrap();
        assert_eq!(code.user_code, "ABCD1234");
        assert_eq!(code.verification_uri, "https://microsoft.com/devicelogin");
        assert_eq!(code.expires_in, 900);
        assert_eq!(code.interval, 5);
        // A zero interval still polls at most once a second.
        let fast = json!({"user_code": "u", "device_code": "d", "interval": 0});
        assert_eq!(parse_device_code(200, &body(&fast)).unwrap().interval, 1);
        // Without codes the answer is malformed, hence transient.
        assert!(matches!(
            parse_device_code(200, &body(&json!({}))),
            Err(GrantError::Transient(_))
        ));
    }

    #[test]
    fn a_successful_refresh_with_rotation_hands_out_the_new_token() {
        let id_token = token_for_test(&json!({"oid": "o", "tid": "t"}));
        let answer = json!({
            "token_type": "Bearer", "scope": format!("{DEFAULT_SCOPE} openid profile"),
            "expires_in": 86399, "ext_expires_in": 86399,
            "access_token": "EwA-new", "refresh_token": "M.C5-new", "id_token": id_token,
        });
        let json = classify(200, &body(&answer)).unwrap();
        let set = TokenResponse::from_json(&json).unwrap().token_set(
            RefreshKind::Spa,
            Some("M.C5-old"),
            &[],
            1000,
        );
        assert_eq!(set.access_token, "EwA-new");
        // Five minutes early.
        assert_eq!(set.expires_at, 1000 + 86399 - 300);
        assert_eq!(set.refresh_token.as_deref(), Some("spa:M.C5-new"));
        assert_eq!(set.account_id.as_deref(), Some("o.t"));
        assert!(set.scopes.iter().any(|s| s == DEFAULT_SCOPE));
    }

    #[test]
    fn a_successful_refresh_without_a_new_refresh_token_keeps_the_old_one() {
        let answer = json!({"access_token": "EwA-new", "expires_in": "3600"});
        let json = classify(200, &body(&answer)).unwrap();
        let set = TokenResponse::from_json(&json).unwrap().token_set(
            RefreshKind::DeviceCode,
            Some("old"),
            &scopes(&["x"]),
            10,
        );
        assert_eq!(set.refresh_token.as_deref(), Some("dc:old"));
        assert_eq!(set.expires_at, 10 + 3600 - 300);
        // No scope in the answer: the requested ones.
        assert_eq!(set.scopes, scopes(&["x"]));
    }

    #[test]
    fn an_expired_web_refresh_token_is_an_invalid_grant_naming_the_code() {
        let answer = json!({
            "error": "invalid_grant",
            "error_description": "AADSTS700084: The refresh token was issued to a single page app (SPA), and therefore has a fixed, limited lifetime of 1.00:00:00, which cannot be extended. Trace ID: x",
            "error_codes": [700084], "suberror": "bad_token",
        });
        let error = classify(400, &body(&answer)).unwrap_err();
        let GrantError::InvalidGrant(message) = &error else {
            panic!("{error:?}")
        };
        assert!(message.contains("AADSTS700084"), "{message}");
        assert!(message.contains("24 hours"), "{message}");
        // The connector sees it as a rejected grant.
        assert!(matches!(
            TokenError::from(error),
            TokenError::InvalidGrant(_)
        ));
    }

    #[test]
    fn interaction_required_means_logging_in_again() {
        let answer = json!({"error": "interaction_required", "error_description": "AADSTS50076: MFA. Trace ID: y", "error_codes": [50076]});
        let error = classify(400, &body(&answer)).unwrap_err();
        assert!(matches!(&error, GrantError::InvalidGrant(m) if m.contains("AADSTS50076")));
    }

    #[test]
    fn the_cross_origin_refusals_are_invalid_grants_too() {
        // The real AADSTS9002327 body.
        let answer = json!({
            "error": "invalid_request",
            "error_description": "AADSTS9002327: Tokens issued for the 'Single-Page Application' client-type may only be redeemed via cross-origin requests. Trace ID: … Correlation ID: … Timestamp: …",
            "error_codes": [9002327],
        });
        let error = classify(400, &body(&answer)).unwrap_err();
        assert!(matches!(&error, GrantError::InvalidGrant(m) if m.contains("AADSTS9002327")));
        // The code found in the description when `error_codes` is missing.
        let answer = json!({"error": "invalid_request", "error_description": "AADSTS9002326: Cross-origin token redemption is permitted only for the 'Single-Page Application' client-type."});
        let error = classify(400, &body(&answer)).unwrap_err();
        assert!(matches!(&error, GrantError::InvalidGrant(m) if m.contains("AADSTS9002326")));
    }

    #[test]
    fn other_refusals_carry_microsofts_first_sentence() {
        let answer = json!({"error": "invalid_scope", "error_description": "AADSTS70011: The provided value for the input parameter 'scope' is not valid. Trace ID: z", "error_codes": [70011]});
        let error = classify(400, &body(&answer)).unwrap_err();
        assert_eq!(
            error,
            GrantError::Refused(
                "Microsoft refused the request (AADSTS70011): The provided value for the input parameter 'scope' is not valid.".into()
            )
        );
        assert!(matches!(
            TokenError::from(error),
            TokenError::InvalidInput(_)
        ));
    }

    #[test]
    fn server_errors_throttling_and_garbage_are_transient() {
        for status in [500, 503, 429] {
            // Whatever the body says.
            let answer = json!({"error": "invalid_grant"});
            assert!(
                matches!(
                    classify(status, &body(&answer)),
                    Err(GrantError::Transient(_))
                ),
                "{status}"
            );
        }
        // A 200 that is not JSON, or has no access token.
        assert!(matches!(
            classify(200, b"<html>"),
            Err(GrantError::Transient(_))
        ));
        assert!(matches!(
            classify(200, &body(&json!({"token_type": "Bearer"}))),
            Err(GrantError::Transient(_))
        ));
        // A 400 without an OAuth error.
        assert!(matches!(
            classify(400, b"oops"),
            Err(GrantError::Transient(_))
        ));
        // An explicit temporary outage.
        let answer = json!({"error": "temporarily_unavailable"});
        assert!(matches!(
            classify(400, &body(&answer)),
            Err(GrantError::Transient(_))
        ));
    }

    #[test]
    fn device_code_poll_states_are_told_apart() {
        let error = |e: &str| classify(400, &body(&json!({"error": e}))).unwrap_err();
        assert_eq!(error("authorization_pending"), GrantError::Pending);
        assert_eq!(error("slow_down"), GrantError::SlowDown);
        assert_eq!(error("authorization_declined"), GrantError::Declined);
        assert_eq!(error("expired_token"), GrantError::CodeExpired);
        assert_eq!(error("code_expired"), GrantError::CodeExpired);
    }

    #[test]
    fn a_device_code_token_serves_its_scopes_or_its_resource() {
        let v1 = TokenResponse::from_json(&json!({
            "access_token": "a", "resource": "https://api.spaces.skype.com", "scope": "user_impersonation",
        }))
        .unwrap();
        assert!(v1.serves(&scopes(&["https://api.spaces.skype.com/.default"])));
        assert!(!v1.serves(&scopes(&[DEFAULT_SCOPE])));
        let mbi = TokenResponse::from_json(&json!({"access_token": "a", "scope": DEFAULT_SCOPE}))
            .unwrap();
        assert!(mbi.serves(&scopes(&[&DEFAULT_SCOPE.to_lowercase()])));
        // Nothing said: taken to serve.
        let silent = TokenResponse::from_json(&json!({"access_token": "a"})).unwrap();
        assert!(silent.serves(&scopes(&[DEFAULT_SCOPE])));
    }

    #[test]
    fn expiry_comes_from_expires_in_else_expires_on_else_an_hour() {
        let of = |v: Value| TokenResponse::from_json(&v).unwrap().expires_at(1000);
        assert_eq!(of(json!({"access_token": "a", "expires_in": "600"})), 1300);
        assert_eq!(of(json!({"access_token": "a", "expires_on": "5000"})), 4700);
        assert_eq!(of(json!({"access_token": "a"})), 1000 + 3600 - 300);
    }
}
