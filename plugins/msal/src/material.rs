//! The material a login flow hands the connector, and what the token
//! functions make of it.
//!
//! A flow's `complete` step carries it as its metadata; the connector
//! passes it back to `tokens.from-captured`. Two kinds:
//! - `{"kind":"browser-cache","capture":<the pasted JSON>}` from the web
//!   flows (a bare paste, without the wrapper, is read the same);
//! - `{"kind":"device-code","token_response":{…},"received_at":<unix s>}`
//!   from the device-code flow, the token endpoint's answer as received.
//!
//! Pure functions, unit-tested natively.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use weft_sdk::tokens::{TokenError, TokenSet};

use crate::cache::{Cache, CacheError, Capture, Picked};
use crate::grant::{DEFAULT_SCOPE, RefreshKind, TokenResponse, effective_scopes};
use crate::json::{str_field, u64_field};

/// What a flow captured.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Material {
    /// A browser's MSAL cache, as pasted.
    BrowserCache(Value),
    /// The device-code login's token answer.
    DeviceCode {
        /// The token endpoint's answer.
        token_response: Value,
        /// When it arrived, Unix seconds.
        received_at: u64,
    },
}

impl Material {
    /// Reads material: either kind, or a bare paste.
    pub(crate) fn parse(text: &str) -> Result<Self, TokenError> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            TokenError::InvalidInput(format!("the captured material is not JSON: {e}"))
        })?;
        match str_field(&value, "kind") {
            Some("browser-cache") => match value.get("capture") {
                Some(Value::String(text)) => serde_json::from_str(text)
                    .map(Self::BrowserCache)
                    .map_err(|e| {
                        TokenError::InvalidInput(format!(
                            "the captured browser cache is not JSON: {e}"
                        ))
                    }),
                Some(capture) => Ok(Self::BrowserCache(capture.clone())),
                None => Err(TokenError::InvalidInput(
                    "the browser-cache material has no `capture`".into(),
                )),
            },
            Some("device-code") => {
                let token_response = value
                    .get("token_response")
                    .filter(|v| v.is_object())
                    .cloned()
                    .ok_or_else(|| {
                        TokenError::InvalidInput(
                            "the device-code material has no `token_response`".into(),
                        )
                    })?;
                let received_at = u64_field(&value, "received_at").ok_or_else(|| {
                    TokenError::InvalidInput("the device-code material has no `received_at`".into())
                })?;
                Ok(Self::DeviceCode {
                    token_response,
                    received_at,
                })
            }
            Some(other) => Err(TokenError::InvalidInput(format!(
                "unknown kind of material `{other}`"
            ))),
            None => Ok(Self::BrowserCache(value)),
        }
    }

    /// The material as JSON, for a `complete` step's metadata.
    pub(crate) fn to_json(&self) -> Value {
        match self {
            Self::BrowserCache(capture) => json!({"kind": "browser-cache", "capture": capture}),
            Self::DeviceCode {
                token_response,
                received_at,
            } => json!({
                "kind": "device-code",
                "token_response": token_response,
                "received_at": received_at,
            }),
        }
    }
}

/// What to do to hand out tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Next {
    /// These are good.
    Ready(TokenSet),
    /// Redeem this raw refresh token first.
    Refresh {
        /// How.
        kind: RefreshKind,
        /// The raw token.
        refresh_token: String,
        /// The account, to report if the answer does not name it.
        account_id: Option<String>,
    },
}

/// The tokens of a picked browser cache: its access token while fresh,
/// else a refresh.
pub(crate) fn browser_next(
    picked: Picked,
    scopes: &[String],
    now: u64,
) -> Result<Next, CacheError> {
    let account_id = Some(picked.home_account_id).filter(|h| !h.is_empty());
    if let Some(access) = picked.access.as_ref().filter(|a| a.is_fresh(now)) {
        return Ok(Next::Ready(TokenSet {
            access_token: access.secret.clone(),
            expires_at: access
                .expires_on
                .unwrap_or_default()
                .saturating_sub(crate::cache::EXPIRY_MARGIN_SECS),
            refresh_token: picked
                .refresh
                .as_ref()
                .map(|r| RefreshKind::Spa.wrap(&r.secret)),
            scopes: access.target.clone(),
            account_id,
        }));
    }
    match picked.refresh {
        Some(refresh) => Ok(Next::Refresh {
            kind: RefreshKind::Spa,
            refresh_token: refresh.secret,
            account_id,
        }),
        None => Err(CacheError::Expired {
            scopes: effective_scopes(scopes).join(" "),
        }),
    }
}

/// The tokens of a device-code answer: its access token while fresh and
/// if it serves the scopes (the login asks for a resource, connectors
/// usually for a scope), else a refresh for the scopes.
pub(crate) fn device_code_next(
    token_response: &Value,
    received_at: u64,
    scopes: &[String],
    now: u64,
) -> Result<Next, TokenError> {
    let response = TokenResponse::from_json(token_response).ok_or_else(|| {
        TokenError::InvalidInput("the device-code material has no access token".into())
    })?;
    let scopes = effective_scopes(scopes);
    let fresh = response.expires_at(received_at) > now;
    if fresh && response.serves(&scopes) {
        return Ok(Next::Ready(response.token_set(
            RefreshKind::DeviceCode,
            None,
            &scopes,
            received_at,
        )));
    }
    match response.refresh_token {
        Some(refresh_token) => Ok(Next::Refresh {
            kind: RefreshKind::DeviceCode,
            refresh_token,
            account_id: response.claims.as_ref().and_then(|c| c.account_id()),
        }),
        None => Err(TokenError::InvalidGrant(
            "the device-code login's access token expired and it has no refresh token: log in again"
                .into(),
        )),
    }
}

/// A browser capture the web flows accept.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Validated {
    /// The account: its homeAccountId, else a hash of its token.
    pub(crate) account_id: String,
    /// Its sign-in name, else display name.
    pub(crate) name: String,
    /// The material for the `complete` step.
    pub(crate) material: Material,
}

/// Checks a pasted capture: it must hold a fresh Teams (MBI_SSL) access
/// token or a refresh token. The error finishes "That paste had no usable
/// Teams tokens: …".
pub(crate) fn validate_capture(
    text: &str,
    web_client_id: &str,
    now: u64,
) -> Result<Validated, CacheError> {
    let value: Value =
        serde_json::from_str(text.trim()).map_err(|e| CacheError::NotJson(e.to_string()))?;
    let capture = Capture::from_value(&value)?;
    let cache = Cache::load(&capture, &[web_client_id])?;
    let scopes = [DEFAULT_SCOPE.to_owned()];
    let picked = cache.pick(&scopes, web_client_id, now)?;
    let usable =
        picked.access.as_ref().is_some_and(|a| a.is_fresh(now)) || picked.refresh.is_some();
    if !usable {
        return Err(CacheError::Expired {
            scopes: DEFAULT_SCOPE.into(),
        });
    }
    let account_id = if picked.home_account_id.is_empty() {
        let secret = picked
            .refresh
            .as_ref()
            .or(picked.access.as_ref())
            .map(|t| t.secret.as_str())
            .unwrap_or_default();
        format!("web-{}", short_hash(secret))
    } else {
        picked.home_account_id.clone()
    };
    let name = picked
        .username
        .clone()
        .or_else(|| picked.name.clone())
        .unwrap_or_else(|| "Microsoft account".into());
    // The material keeps the capture itself, unwrapped if the user pasted
    // material.
    let capture = match (str_field(&value, "kind"), value.get("capture")) {
        (Some("browser-cache"), Some(inner)) => inner.clone(),
        _ => value,
    };
    Ok(Validated {
        account_id,
        name,
        material: Material::BrowserCache(capture),
    })
}

/// The first 16 bytes of SHA-256 of `text`, in hex: a stable id that does
/// not reveal the token.
pub(crate) fn short_hash(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::tests::{
        ADA, CLIENT, Fixture, Layout, MBI, NOW, snippet_capture, two_accounts,
    };
    use crate::jwt::token_for_test;

    fn validate(value: &Value) -> Result<Validated, CacheError> {
        validate_capture(&value.to_string(), CLIENT, NOW)
    }

    #[test]
    fn a_good_capture_names_the_account_and_becomes_browser_material() {
        let storage = two_accounts(Layout::V5).storage();
        let capture = snippet_capture(storage, None);
        let validated = validate(&capture).unwrap();
        assert_eq!(validated.account_id, ADA);
        assert_eq!(validated.name, "ada@example.com");
        // The material wraps the paste as it was.
        assert_eq!(
            validated.material.to_json(),
            json!({"kind": "browser-cache", "capture": capture})
        );
    }

    #[test]
    fn captures_without_tokens_say_why() {
        // Not JSON.
        assert!(matches!(
            validate_capture("copy(...)", CLIENT, NOW),
            Err(CacheError::NotJson(_))
        ));
        // Encrypted without the cookie.
        let (storage, _) = two_accounts(Layout::V5).encrypted(true);
        assert_eq!(validate(&storage).unwrap_err(), CacheError::MissingKey);
        // Only an expired access token.
        let mut f = Fixture::new(Layout::V3);
        f.access(ADA, MBI, NOW - 60, "old");
        assert!(matches!(
            validate(&f.storage()),
            Err(CacheError::Expired { .. })
        ));
    }

    #[test]
    fn material_of_both_kinds_and_a_bare_paste_parse() {
        let storage = two_accounts(Layout::V3).storage();
        // A bare paste is browser material.
        assert_eq!(
            Material::parse(&storage.to_string()).unwrap(),
            Material::BrowserCache(storage.clone())
        );
        // The wrapper, also with the capture as a string.
        let wrapped = json!({"kind": "browser-cache", "capture": storage.to_string()});
        assert_eq!(
            Material::parse(&wrapped.to_string()).unwrap(),
            Material::BrowserCache(storage)
        );
        // Device-code material with a string timestamp.
        let dc = json!({"kind": "device-code", "token_response": {"access_token": "a"}, "received_at": "100"});
        assert_eq!(
            Material::parse(&dc.to_string()).unwrap(),
            Material::DeviceCode {
                token_response: json!({"access_token": "a"}),
                received_at: 100
            }
        );
        // Nonsense is invalid input.
        for bad in ["nope", r#"{"kind":"magic"}"#, r#"{"kind":"device-code"}"#] {
            assert!(
                matches!(Material::parse(bad), Err(TokenError::InvalidInput(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_fresh_browser_token_is_handed_out_with_the_wrapped_refresh_token() {
        let storage = two_accounts(Layout::V4).storage();
        let cache = Cache::load(&Capture::from_value(&storage).unwrap(), &[CLIENT]).unwrap();
        let scopes = [MBI.to_owned()];
        let picked = cache.pick(&scopes, CLIENT, NOW).unwrap();
        let Next::Ready(set) = browser_next(picked, &scopes, NOW).unwrap() else {
            panic!("expected ready tokens")
        };
        assert_eq!(set.access_token, "ada-mbi");
        assert_eq!(set.expires_at, NOW + 7000 - 300);
        assert_eq!(set.refresh_token.as_deref(), Some("spa:ada-rt"));
        assert_eq!(set.account_id.as_deref(), Some(ADA));
        assert!(set.scopes.iter().any(|s| s == MBI));
    }

    #[test]
    fn an_expired_browser_token_is_refreshed_and_without_refresh_token_rejected() {
        let mut f = Fixture::new(Layout::V3);
        f.access(ADA, MBI, NOW + 200, "stale")
            .refresh(ADA, "ada-rt");
        let cache = Cache::load(&Capture::from_value(&f.storage()).unwrap(), &[CLIENT]).unwrap();
        let scopes = [MBI.to_owned()];
        let next = browser_next(cache.pick(&scopes, CLIENT, NOW).unwrap(), &scopes, NOW).unwrap();
        assert_eq!(
            next,
            Next::Refresh {
                kind: RefreshKind::Spa,
                refresh_token: "ada-rt".into(),
                account_id: Some(ADA.into())
            }
        );
        // The same without a refresh token.
        let mut f = Fixture::new(Layout::V3);
        f.access(ADA, MBI, NOW + 200, "stale");
        let cache = Cache::load(&Capture::from_value(&f.storage()).unwrap(), &[CLIENT]).unwrap();
        let picked = cache.pick(&scopes, CLIENT, NOW).unwrap();
        assert!(matches!(
            browser_next(picked, &scopes, NOW),
            Err(CacheError::Expired { .. })
        ));
    }

    #[test]
    fn a_device_code_answer_is_used_while_fresh_and_serving_else_refreshed() {
        let id_token = token_for_test(&json!({"oid": "o", "tid": "t", "name": "Ada"}));
        let answer = json!({
            "access_token": "dc-at", "refresh_token": "dc-rt", "expires_in": "3600",
            "scope": MBI, "id_token": id_token,
        });
        // Fresh: handed out, expiry counted from when it arrived.
        let Next::Ready(set) = device_code_next(&answer, NOW - 100, &[], NOW).unwrap() else {
            panic!("expected ready tokens")
        };
        assert_eq!(set.expires_at, NOW - 100 + 3600 - 300);
        assert_eq!(set.refresh_token.as_deref(), Some("dc:dc-rt"));
        assert_eq!(set.account_id.as_deref(), Some("o.t"));
        // Stale: refreshed with the device-code kind.
        let next = device_code_next(&answer, NOW - 3400, &[], NOW).unwrap();
        assert_eq!(
            next,
            Next::Refresh {
                kind: RefreshKind::DeviceCode,
                refresh_token: "dc-rt".into(),
                account_id: Some("o.t".into())
            }
        );
        // A token for the v1 resource does not serve another scope.
        let v1 = json!({"access_token": "a", "refresh_token": "r", "expires_in": 3600, "resource": "https://api.spaces.skype.com"});
        assert!(matches!(
            device_code_next(&v1, NOW, &[MBI.to_owned()], NOW),
            Ok(Next::Refresh { .. })
        ));
    }

    #[test]
    fn hashes_are_stable_and_short() {
        assert_eq!(short_hash("x"), short_hash("x"));
        assert_eq!(short_hash("x").len(), 32);
        assert_ne!(short_hash("x"), short_hash("y"));
    }
}
