//! The login's metadata (its tokens), the token lifecycle decision
//! (EnsureValidSkypeToken), and the skypetoken exchange (reference §3).
//!
//! A login holds the MSAL token set for the `MBI_SSL` scope (whose refresh
//! token MSAL hands out wrapped, `spa:`/`dc:`, and takes back unchanged),
//! and the skypetoken it was exchanged for. Before every sync,
//! [`token_step`] says what to renew; the glue in `lib.rs` does it.

use std::fmt;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use weft_sdk::TokenSet;

use crate::ids;

/// The scope a skypetoken is exchanged for.
pub(crate) const SCOPE: &str = "service::api.fl.spaces.skype.com::MBI_SSL";

/// Tokens count as expired this long before they do, at most.
const EARLY_SECS: u64 = 300;

/// A skypetoken's lifetime when the answer gives none.
const DEFAULT_SKYPETOKEN_SECS: u64 = 3600;

/// The login's metadata, as the host stores it (JSON).
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Session {
    /// The account's normalized MRI, `8:` + skypeid: the login id.
    pub(crate) mri: String,
    /// MSAL's tokens for [`SCOPE`]; the refresh token as MSAL wrapped it.
    pub(crate) tokens: TokenSet,
    /// When the tokens were received, in Unix seconds (to know their
    /// lifetime).
    #[serde(default)]
    pub(crate) tokens_at: u64,
    /// The skypetoken, if one was acquired.
    #[serde(default)]
    pub(crate) skypetoken: Option<String>,
    /// When it was acquired, in Unix seconds.
    #[serde(default)]
    pub(crate) skypetoken_at: u64,
    /// When it expires, in Unix seconds.
    #[serde(default)]
    pub(crate) skypetoken_expires_at: u64,
    /// The chat service's base URL (`regionGtms.chatService`).
    pub(crate) chat_service: String,
    /// The account's sign-in name, if Teams gave it.
    #[serde(default)]
    pub(crate) signin_name: Option<String>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the tokens themselves.
        f.debug_struct("Session")
            .field("mri", &self.mri)
            .field("tokens_expire_at", &self.tokens.expires_at)
            .field("has_refresh_token", &self.tokens.refresh_token.is_some())
            .field("has_skypetoken", &self.skypetoken.is_some())
            .field("skypetoken_expires_at", &self.skypetoken_expires_at)
            .field("chat_service", &self.chat_service)
            .finish()
    }
}

/// Whether a token issued at `issued_at` and expiring at `expires_at` is
/// still good at `now` (all Unix seconds): it counts as expired five
/// minutes early, or a fifth of its lifetime early if that is shorter
/// (so a short-lived token is not renewed on every sync).
pub(crate) fn is_fresh(expires_at: u64, issued_at: u64, now: u64) -> bool {
    let lifetime = expires_at.saturating_sub(issued_at);
    let early = if issued_at == 0 || issued_at >= expires_at {
        EARLY_SECS
    } else {
        (lifetime / 5).min(EARLY_SECS)
    };
    now.saturating_add(early) < expires_at
}

/// What to do before talking to Teams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenStep {
    /// The skypetoken is good: no calls.
    Ready,
    /// The access token is good: exchange it for a skypetoken.
    AcquireSkypeToken,
    /// The access token is stale: refresh it through MSAL, store the new
    /// tokens, then acquire a skypetoken.
    Refresh,
    /// Nothing left to renew with: the user must log in again.
    Relogin(&'static str),
}

/// The token lifecycle decision (EnsureValidSkypeToken) at `now` (Unix
/// seconds). `skypetoken_rejected`: Teams just refused the skypetoken, so
/// it counts as expired whatever its time says.
pub(crate) fn token_step(session: &Session, now: u64, skypetoken_rejected: bool) -> TokenStep {
    let skypetoken_ok = !skypetoken_rejected
        && session.skypetoken.as_deref().is_some_and(|t| !t.is_empty())
        && is_fresh(session.skypetoken_expires_at, session.skypetoken_at, now);
    if skypetoken_ok {
        return TokenStep::Ready;
    }
    let access_ok = !session.tokens.access_token.is_empty()
        && is_fresh(session.tokens.expires_at, session.tokens_at, now);
    if access_ok {
        return TokenStep::AcquireSkypeToken;
    }
    match session.tokens.refresh_token.as_deref() {
        Some(token) if !token.trim().is_empty() => TokenStep::Refresh,
        _ => TokenStep::Relogin("the Teams token expired and there is no refresh token"),
    }
}

/// Takes a refreshed token set into the session; a set without a refresh
/// token keeps the old one (MSAL rotates it, but need not).
pub(crate) fn apply_refresh(session: &mut Session, mut fresh: TokenSet, now: u64) {
    if fresh.refresh_token.as_deref().is_none_or(str::is_empty) {
        fresh.refresh_token = session.tokens.refresh_token.take();
    }
    session.tokens = fresh;
    session.tokens_at = now;
}

/// What `POST {auth}/v1.0/authz/consumer` answered.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Authz {
    /// The skypetoken.
    pub(crate) skypetoken: String,
    /// Its lifetime in seconds.
    pub(crate) expires_in: u64,
    /// The account's skypeid (`live:…`), if given or in the token.
    pub(crate) skypeid: Option<String>,
    /// The sign-in name, if given.
    pub(crate) signin_name: Option<String>,
    /// `regionGtms.chatService`.
    pub(crate) chat_service: Option<String>,
    /// `regionGtms.chatServiceAfd`.
    pub(crate) chat_service_afd: Option<String>,
}

impl fmt::Debug for Authz {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authz")
            .field("expires_in", &self.expires_in)
            .field("skypeid", &self.skypeid)
            .field("chat_service", &self.chat_service)
            .field("chat_service_afd", &self.chat_service_afd)
            .finish_non_exhaustive()
    }
}

fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn number(value: Option<&Value>) -> Option<u64> {
    match value? {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Reads the authz answer: the consumer shape (`skypeToken.skypetoken`,
/// `expiresIn`, `skypeid`, `regionGtms`) or the enterprise one
/// (`tokens.skypeToken`). Missing pieces come from the token's own
/// claims (`skypeid`, `exp`) where it has them.
pub(crate) fn parse_authz(body: &[u8], now: u64) -> Result<Authz, String> {
    let json: Value = serde_json::from_slice(body)
        .map_err(|e| format!("the skypetoken answer is not JSON: {e}"))?;
    let consumer = json.get("skypeToken").filter(|v| v.is_object());
    let enterprise = json.get("tokens").filter(|v| v.is_object());
    let skypetoken = consumer
        .and_then(|c| text(c.get("skypetoken")).or_else(|| text(c.get("skypeToken"))))
        .or_else(|| enterprise.and_then(|t| text(t.get("skypeToken"))))
        .or_else(|| text(json.get("skypeToken")))
        .ok_or("the skypetoken answer has no skypetoken")?;
    let claims = jwt_claims(&skypetoken);
    let expires_in = consumer
        .and_then(|c| number(c.get("expiresIn")))
        .or_else(|| enterprise.and_then(|t| number(t.get("expiresIn"))))
        .or_else(|| {
            claims
                .as_ref()
                .and_then(|c| number(c.get("exp")))
                .map(|exp| exp.saturating_sub(now))
        })
        .filter(|secs| *secs > 0)
        .unwrap_or(DEFAULT_SKYPETOKEN_SECS);
    let skypeid = consumer
        .and_then(|c| text(c.get("skypeid")))
        .or_else(|| claims.as_ref().and_then(|c| text(c.get("skypeid"))));
    let region = json.get("regionGtms");
    Ok(Authz {
        skypetoken,
        expires_in,
        skypeid,
        signin_name: consumer.and_then(|c| text(c.get("signinname"))),
        chat_service: region.and_then(|r| text(r.get("chatService"))),
        chat_service_afd: region.and_then(|r| text(r.get("chatServiceAfd"))),
    })
}

/// The claims of a JWT, if it is one.
fn jwt_claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The chat service to use: `regionGtms.chatService`, else
/// `chatServiceAfd`, each only if it is on an origin the plugin may reach
/// (`allowed`); else the configured one.
pub(crate) fn pick_chat_service(authz: &Authz, configured: &str, allowed: &[String]) -> String {
    let reachable = |url: &&String| ids::origin(url).is_some_and(|o| allowed.contains(&o));
    authz
        .chat_service
        .as_ref()
        .filter(reachable)
        .or(authz.chat_service_afd.as_ref().filter(reachable))
        .map_or(configured, String::as_str)
        .trim_end_matches('/')
        .to_owned()
}

/// Takes a skypetoken answer into the session.
pub(crate) fn apply_authz(session: &mut Session, authz: Authz, chat_service: String, now: u64) {
    session.skypetoken = Some(authz.skypetoken);
    session.skypetoken_at = now;
    session.skypetoken_expires_at = now.saturating_add(authz.expires_in);
    session.chat_service = chat_service;
    if authz.signin_name.is_some() {
        session.signin_name = authz.signin_name;
    }
}

/// The login's display name: its sign-in name as Teams gives it (the
/// authenticated profile), else the account's name as the provider knows
/// it (which may come from what the user pasted), else the MRI.
pub(crate) fn remote_name(account_name: &str, signin_name: Option<&str>, mri: &str) -> String {
    [signin_name, Some(account_name)]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|name| !name.is_empty())
        .unwrap_or(mri)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn session(
        skypetoken_expires_in: i64,
        access_expires_in: i64,
        refresh: Option<&str>,
    ) -> Session {
        let at = |delta: i64| NOW.checked_add_signed(delta).unwrap();
        Session {
            mri: "8:live:alice".into(),
            tokens: TokenSet {
                access_token: "EwA-access".into(),
                expires_at: at(access_expires_in),
                refresh_token: refresh.map(str::to_owned),
                scopes: vec![SCOPE.into()],
                account_id: None,
            },
            tokens_at: at(-3600),
            skypetoken: Some("eyJ-skype".into()),
            skypetoken_at: at(-3600),
            skypetoken_expires_at: at(skypetoken_expires_in),
            chat_service: "https://msgapi.teams.live.com".into(),
            signin_name: None,
        }
    }

    #[test]
    fn the_token_decision_matrix() {
        let hour = 3600;
        // Skypetoken valid: nothing to do, whatever the access token.
        assert_eq!(
            token_step(&session(hour, -hour, None), NOW, false),
            TokenStep::Ready
        );
        // Skypetoken expired, access token valid: acquire a skypetoken.
        assert_eq!(
            token_step(&session(-1, hour, None), NOW, false),
            TokenStep::AcquireSkypeToken
        );
        // Both expired, a refresh token: refresh first.
        assert_eq!(
            token_step(&session(-1, -1, Some("dc:M.C5")), NOW, false),
            TokenStep::Refresh
        );
        // Both expired, no refresh token (or an empty one): relogin.
        assert!(matches!(
            token_step(&session(-1, -1, None), NOW, false),
            TokenStep::Relogin(_)
        ));
        assert!(matches!(
            token_step(&session(-1, -1, Some(" ")), NOW, false),
            TokenStep::Relogin(_)
        ));
        // A skypetoken Teams just refused counts as expired.
        assert_eq!(
            token_step(&session(hour, hour, None), NOW, true),
            TokenStep::AcquireSkypeToken
        );
        assert_eq!(
            token_step(&session(hour, -1, Some("spa:r")), NOW, true),
            TokenStep::Refresh
        );
        // No skypetoken at all.
        let mut s = session(hour, hour, None);
        s.skypetoken = None;
        assert_eq!(token_step(&s, NOW, false), TokenStep::AcquireSkypeToken);
    }

    #[test]
    fn tokens_expire_a_few_minutes_early() {
        // A day-long token with 4 minutes left is stale (5 minutes early).
        assert!(!is_fresh(NOW + 240, NOW - 86_000, NOW));
        // With 6 minutes left it is fine.
        assert!(is_fresh(NOW + 360, NOW - 86_000, NOW));
        // A 10-minute token (the community fake's 600 s) is renewed 2
        // minutes early, not on every sync.
        assert!(is_fresh(NOW + 300, NOW - 300, NOW));
        assert!(!is_fresh(NOW + 100, NOW - 500, NOW));
        // Without an issue time, five minutes early.
        assert!(!is_fresh(NOW + 299, 0, NOW));
        assert!(is_fresh(NOW + 301, 0, NOW));
        // Expired is expired.
        assert!(!is_fresh(NOW - 1, NOW - 100, NOW));
    }

    #[test]
    fn a_refresh_keeps_the_old_refresh_token_if_none_is_issued() {
        let mut s = session(-1, -1, Some("dc:old"));
        let fresh = TokenSet {
            access_token: "new".into(),
            expires_at: NOW + 3600,
            refresh_token: None,
            scopes: vec![SCOPE.into()],
            account_id: None,
        };
        apply_refresh(&mut s, fresh.clone(), NOW);
        assert_eq!(s.tokens.access_token, "new");
        // Kept, still wrapped as MSAL gave it.
        assert_eq!(s.tokens.refresh_token.as_deref(), Some("dc:old"));
        assert_eq!(s.tokens_at, NOW);
        // A rotated one replaces it.
        let rotated = TokenSet {
            refresh_token: Some("dc:new".into()),
            ..fresh
        };
        apply_refresh(&mut s, rotated, NOW);
        assert_eq!(s.tokens.refresh_token.as_deref(), Some("dc:new"));
    }

    #[test]
    fn the_consumer_authz_answer_parses() {
        let body = br#"{"skypeToken":{"skypetoken":"eyJ.x.y","expiresIn":86372,"skypeid":"live:.cid.0123456789abcdef","signinname":"user@example.com","isBusinessTenant":false},
            "regionGtms":{"ams":"https://us-api.asm.skype.com","chatService":"https://msgapi.teams.live.com","chatServiceAfd":"https://teams.live.com/api/chatsvc/consumer"},
            "regionSettings":{"isFederationEnabled":true}}"#;
        let authz = parse_authz(body, NOW).unwrap();
        assert_eq!(authz.skypetoken, "eyJ.x.y");
        assert_eq!(authz.expires_in, 86_372);
        assert_eq!(authz.skypeid.as_deref(), Some("live:.cid.0123456789abcdef"));
        assert_eq!(authz.signin_name.as_deref(), Some("user@example.com"));
        assert_eq!(
            authz.chat_service.as_deref(),
            Some("https://msgapi.teams.live.com")
        );
        // The community bridge's minimal answer, with a string lifetime.
        let authz = parse_authz(
            br#"{"skypeToken":{"skypetoken":"t","expiresIn":"600","skypeid":"live:tester"}}"#,
            NOW,
        )
        .unwrap();
        assert_eq!(authz.expires_in, 600);
        assert_eq!(authz.chat_service, None);
    }

    #[test]
    fn the_enterprise_shape_and_jwt_claims_fill_the_gaps() {
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!(r#"{{"skypeid":"live:bob","exp":{}}}"#, NOW + 1000));
        let token = format!("eyJhbGciOiJub25lIn0.{claims}.sig");
        let body = format!(r#"{{"tokens":{{"skypeToken":"{token}"}},"region":"emea"}}"#);
        let authz = parse_authz(body.as_bytes(), NOW).unwrap();
        assert_eq!(authz.skypetoken, token);
        // From the token's claims.
        assert_eq!(authz.skypeid.as_deref(), Some("live:bob"));
        assert_eq!(authz.expires_in, 1000);
        // No token at all is an error, as is garbage.
        assert!(parse_authz(br#"{"status":{"code":40120}}"#, NOW).is_err());
        assert!(parse_authz(b"<html>", NOW).is_err());
    }

    #[test]
    fn the_chat_service_must_be_reachable() {
        let authz = Authz {
            skypetoken: "t".into(),
            expires_in: 1,
            skypeid: None,
            signin_name: None,
            chat_service: Some("https://msgapi.teams.live.com/".into()),
            chat_service_afd: Some("https://teams.live.com/api/chatsvc/consumer".into()),
        };
        let both = vec![
            "https://teams.live.com:443".to_owned(),
            "https://msgapi.teams.live.com:443".to_owned(),
        ];
        // `chatService` first, without its trailing slash.
        assert_eq!(
            pick_chat_service(&authz, "https://configured", &both),
            "https://msgapi.teams.live.com"
        );
        // Not granted: the AFD base.
        let afd_only = vec!["https://teams.live.com:443".to_owned()];
        assert_eq!(
            pick_chat_service(&authz, "https://configured", &afd_only),
            "https://teams.live.com/api/chatsvc/consumer"
        );
        // Neither: the setting.
        assert_eq!(
            pick_chat_service(&authz, "http://127.0.0.1:9/", &[]),
            "http://127.0.0.1:9"
        );
    }

    #[test]
    fn the_remote_name_prefers_what_teams_says() {
        assert_eq!(
            remote_name("Alice Example", Some("a@x.com"), "8:live:a"),
            "a@x.com"
        );
        assert_eq!(
            remote_name("Alice Example", None, "8:live:a"),
            "Alice Example"
        );
        assert_eq!(remote_name(" ", Some(" "), "8:live:a"), "8:live:a");
        assert_eq!(remote_name("", None, "8:live:a"), "8:live:a");
    }

    #[test]
    fn the_session_debug_output_has_no_tokens() {
        let rendered = format!("{:?}", session(1, 1, Some("dc:secret-refresh")));
        assert!(!rendered.contains("EwA-access"));
        assert!(!rendered.contains("eyJ-skype"));
        assert!(!rendered.contains("secret-refresh"));
    }
}
