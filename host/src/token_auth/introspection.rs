//! OAuth 2.0 token introspection (RFC 7662) against a configured issuer.
//!
//! At start the issuer's discovery document gives the introspection
//! endpoint, and one introspection of a random token proves weft's client
//! credentials, so a wrong issuer, a document without the endpoint or a
//! bad secret stop the start with a message naming the setting rather than
//! failing requests later. weft authenticates with HTTP Basic; the token
//! goes in the form body, never in a URL.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use ruma::{OwnedUserId, UserId};
use serde::Deserialize;
use serde_json::Value;

use crate::config::OAuthConfig;

/// Every call to the issuer is bounded.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The latest expiry taken from an answer (the year 3000, about).
const MAX_EXP_SECS: u64 = 32_503_680_000;
/// The largest discovery document or introspection answer read.
const MAX_ANSWER: usize = 256 << 10;

/// What an active token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Introspected {
    /// The Matrix user it acts for.
    pub user: OwnedUserId,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// When it expires, if the issuer said.
    pub expires: Option<SystemTime>,
}

/// Why a token is refused, or could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum IntrospectionError {
    /// The issuer does not know the token as an active one (it may be
    /// another kind of token, e.g. a homeserver's own).
    #[error("the token is not active")]
    Inactive,
    /// An active token of the issuer, but not one weft accepts: expired,
    /// for another audience, without the scope, or without a usable user.
    #[error("{0}")]
    Refused(String),
    /// The issuer could not answer.
    #[error("the token issuer is unavailable: {0}")]
    Unavailable(String),
}

/// An issuer's introspection endpoint, with weft's credentials.
#[derive(Clone)]
pub struct Introspector {
    http: reqwest::Client,
    endpoint: String,
    token_endpoint: Option<String>,
    config: OAuthConfig,
    domain: String,
}

#[derive(Deserialize)]
struct Discovery {
    introspection_endpoint: Option<String>,
    token_endpoint: Option<String>,
}

impl Introspector {
    /// Finds the introspection endpoint of `config.issuer` and checks
    /// weft's credentials with it. Users named by a localpart belong to
    /// `domain`.
    pub async fn discover(config: &OAuthConfig, domain: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("weft/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let issuer = config.issuer.trim_end_matches('/');
        let mut discovered = None;
        let mut last_error = None;
        for path in [
            "/.well-known/openid-configuration",
            "/.well-known/oauth-authorization-server",
        ] {
            match fetch_json::<Discovery>(&http, &format!("{issuer}{path}")).await {
                Ok(document) => {
                    discovered = Some(document);
                    break;
                }
                Err(error) => last_error = Some(error),
            }
        }
        let Some(discovered) = discovered else {
            let error = last_error.map(|e| format!("{e:#}")).unwrap_or_default();
            bail!("[oauth] issuer `{issuer}`: no discovery document: {error}");
        };
        let endpoint = discovered.introspection_endpoint.with_context(|| {
            format!(
                "[oauth] issuer `{issuer}`: its discovery document has no introspection_endpoint"
            )
        })?;
        let introspector = Self {
            http,
            endpoint,
            token_endpoint: discovered.token_endpoint,
            config: config.clone(),
            domain: domain.to_owned(),
        };
        // A random token is inactive; what matters is that the issuer
        // accepts weft's credentials for asking.
        match introspector
            .call(&crate::matrix::registration::random_token())
            .await
        {
            Ok(_) => Ok(introspector),
            Err(CallError::Unauthorized) => bail!(
                "[oauth] client-id / client-secret: the issuer refused weft's client credentials for introspection"
            ),
            Err(CallError::Other(error)) => {
                bail!("[oauth] issuer `{issuer}`: introspection does not work: {error}")
            }
        }
    }

    /// Introspects `token`.
    pub async fn check(&self, token: &str) -> Result<Introspected, IntrospectionError> {
        let answer = self.call(token).await.map_err(|e| match e {
            CallError::Unauthorized => IntrospectionError::Unavailable(
                "the issuer no longer accepts weft's client credentials".into(),
            ),
            CallError::Other(message) => IntrospectionError::Unavailable(message),
        })?;
        self.judge(&answer, SystemTime::now())
    }

    /// Decides on an introspection answer.
    fn judge(&self, answer: &Value, now: SystemTime) -> Result<Introspected, IntrospectionError> {
        let refused = |why: &str| Err(IntrospectionError::Refused(why.to_owned()));
        if answer["active"] != Value::Bool(true) {
            return Err(IntrospectionError::Inactive);
        }
        // Clamped: a far-future `exp` must not overflow the clock.
        let expires = answer["exp"]
            .as_u64()
            .map(|exp| UNIX_EPOCH + Duration::from_secs(exp.min(MAX_EXP_SECS)));
        if expires.is_some_and(|exp| exp <= now) {
            return refused("the token has expired");
        }
        if let Some(audience) = &self.config.audience {
            let named = match &answer["aud"] {
                Value::String(aud) => aud == audience,
                Value::Array(auds) => auds.iter().any(|a| a.as_str() == Some(audience)),
                _ => false,
            };
            if !named {
                return refused("the token is for another audience");
            }
        }
        let scopes: Vec<String> = answer["scope"]
            .as_str()
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if let Some(scope) = &self.config.required_scope
            && !scopes.contains(scope)
        {
            return refused("the token lacks the required scope");
        }
        let Some(claim) = answer[self.config.user_claim.as_str()].as_str() else {
            return refused("the token names no Matrix user");
        };
        let user = if claim.starts_with('@') {
            UserId::parse(claim).ok()
        } else {
            UserId::parse(format!("@{claim}:{}", self.domain)).ok()
        }
        // ruma takes historical ids leniently; a localpart is still
        // printable ASCII without spaces or colons.
        .filter(|user| {
            user.localpart()
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b':')
        });
        let Some(user) = user else {
            return refused("the token's user is not a Matrix user id");
        };
        Ok(Introspected {
            user,
            scopes,
            expires,
        })
    }

    /// The issuer's token endpoint, if its discovery document names one.
    pub fn token_endpoint(&self) -> Option<&str> {
        self.token_endpoint.as_deref()
    }

    /// The longest an answer about a token may be trusted.
    pub fn max_cache(&self) -> Duration {
        Duration::from_secs(self.config.max_cache_secs)
    }

    /// Whether `scopes` include the admin scope, if one is set.
    pub fn grants_admin(&self, scopes: &[String]) -> bool {
        self.config
            .admin_scope
            .as_ref()
            .is_some_and(|admin| scopes.contains(admin))
    }

    async fn call(&self, token: &str) -> Result<Value, CallError> {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("token", token)
            .append_pair("token_type_hint", "access_token")
            .finish();
        let response = self
            .http
            .post(&self.endpoint)
            .basic_auth(&self.config.client_id, Some(&self.config.client_secret))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| CallError::Other(e.without_url().to_string()))?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(CallError::Unauthorized);
        }
        if !status.is_success() {
            return Err(CallError::Other(format!("introspection answered {status}")));
        }
        read_json(response)
            .await
            .map_err(|e| CallError::Other(format!("{e:#}")))
    }
}

enum CallError {
    Unauthorized,
    Other(String),
}

async fn fetch_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
) -> Result<T> {
    let response = http
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.without_url()))?;
    let status = response.status();
    if !status.is_success() {
        bail!("{url} answered {status}");
    }
    let value = read_json(response).await?;
    serde_json::from_value(value).with_context(|| format!("{url} is not a discovery document"))
}

async fn read_json(mut response: reqwest::Response) -> Result<Value> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.without_url()))?
    {
        if bytes.len() + chunk.len() > MAX_ANSWER {
            bail!("the answer is larger than {MAX_ANSWER} bytes");
        }
        bytes.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&bytes).context("the answer is not JSON")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn introspector(audience: Option<&str>, scope: Option<&str>) -> Introspector {
        crate::init_tls();
        Introspector {
            http: reqwest::Client::new(),
            endpoint: "http://127.0.0.1:1/introspect".into(),
            token_endpoint: None,
            config: OAuthConfig {
                issuer: "http://127.0.0.1:1".into(),
                client_id: "weft".into(),
                client_secret: "secret".into(),
                audience: audience.map(str::to_owned),
                required_scope: scope.map(str::to_owned),
                user_claim: "username".into(),
                max_cache_secs: 60,
                admin_scope: Some("urn:weft:admin".into()),
                bot_device: None,
            },
            domain: "example.org".into(),
        }
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn an_active_token_names_its_user_scopes_and_expiry() {
        let checked = introspector(None, None)
            .judge(
                &json!({ "active": true, "username": "alice", "scope": "openid urn:weft:admin", "exp": 2000 }),
                at(1000),
            )
            .unwrap();
        assert_eq!(checked.user, "@alice:example.org");
        assert_eq!(checked.expires, Some(at(2000)));
        assert!(introspector(None, None).grants_admin(&checked.scopes));
        let full = introspector(None, None)
            .judge(
                &json!({ "active": true, "username": "@bob:other.org" }),
                at(1000),
            )
            .unwrap();
        assert_eq!(full.user, "@bob:other.org");
    }

    #[test]
    fn inactive_expired_misdirected_or_unscoped_tokens_are_refused() {
        let plain = introspector(Some("weft"), Some("urn:weft:provision"));
        let good = json!({ "active": true, "username": "alice", "aud": ["x", "weft"], "scope": "urn:weft:provision", "exp": 2000 });
        assert!(plain.judge(&good, at(1000)).is_ok());
        for answer in [
            json!({ "active": false }),
            json!({ "active": "true", "username": "alice" }),
        ] {
            assert!(matches!(
                plain.judge(&answer, at(1000)),
                Err(IntrospectionError::Inactive)
            ));
        }
        let far = json!({ "active": true, "username": "alice", "aud": "weft", "scope": "urn:weft:provision", "exp": u64::MAX });
        assert!(
            plain.judge(&far, at(1000)).is_ok(),
            "a far-future exp is fine"
        );
        for (answer, why) in [
            (
                json!({ "active": true, "username": "alice", "aud": "weft", "scope": "urn:weft:provision", "exp": 999 }),
                "expired",
            ),
            (
                json!({ "active": true, "username": "alice", "aud": "other", "scope": "urn:weft:provision" }),
                "another audience",
            ),
            (
                json!({ "active": true, "username": "alice", "aud": "weft", "scope": "openid" }),
                "no scope",
            ),
            (
                json!({ "active": true, "aud": "weft", "scope": "urn:weft:provision" }),
                "no user",
            ),
            (
                json!({ "active": true, "username": "not a localpart", "aud": "weft", "scope": "urn:weft:provision" }),
                "a bad user",
            ),
        ] {
            assert!(
                matches!(
                    plain.judge(&answer, at(1000)),
                    Err(IntrospectionError::Refused(_))
                ),
                "{why} was accepted"
            );
        }
    }
}
