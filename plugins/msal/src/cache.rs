//! The MSAL browser cache, as a user captures it from teams.live.com: read
//! the capture, decrypt it, and pick the access token for some scopes, the
//! refresh token and the account.
//!
//! The layouts MSAL.js has used (see the Teams reference, §1):
//! - msal-browser v2/v3: the index `msal.token.keys.<clientId>` and
//!   `-`-joined credential keys, values in plain JSON;
//! - v4/v5: the indexes `msal.1.token.keys.<clientId>` and
//!   `msal.2.token.keys.<clientId>` with `|`-joined keys, values encrypted
//!   (see [`crate::crypto`]).
//!
//! Every entry is read, whether an index lists it or not, so a missing or
//! stale index loses nothing; the indexes only rank otherwise equal
//! tokens, newest schema first. Pure functions, unit-tested natively.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::crypto::{self, CacheKey, CryptoError, Encrypted};
use crate::json::{str_field, unix_seconds};
use crate::jwt::IdClaims;

/// The cookie that holds the cache's encryption key.
pub(crate) const ENCRYPTION_COOKIE: &str = "msal.cache.encryption";

/// How early a token counts as expired: MSAL's own renewal offset, which
/// leaves time to use the token after it is handed out.
pub(crate) const EXPIRY_MARGIN_SECS: u64 = 300;

/// Scopes MSAL leaves out when it looks a token up: every token carries
/// them.
const OIDC_SCOPES: [&str; 4] = ["openid", "profile", "offline_access", "email"];

/// Why a capture gave no tokens. The messages finish the sentence "That
/// paste had no usable Teams tokens: …".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CacheError {
    /// Not JSON.
    #[error("it is not the JSON the snippet copies ({0})")]
    NotJson(String),
    /// JSON, but not an object of entries.
    #[error("it is JSON, but not the object of browser storage the snippet copies")]
    NotAnObject,
    /// Nothing MSAL wrote.
    #[error(
        "it holds no Microsoft sign-in data; sign in at teams.live.com first and run the snippet in that tab"
    )]
    NoMsalEntries,
    /// Encrypted values, and no key to open them.
    #[error(
        "the Teams cache is encrypted, and the paste lacks the `msal.cache.encryption` cookie that holds its key; copy it with the snippet shown, which reads that cookie along with localStorage"
    )]
    MissingKey,
    /// The cookie is there but unreadable.
    #[error("the `msal.cache.encryption` cookie is unreadable: {0}")]
    BadKey(CryptoError),
    /// The cookie's key opens none of the values.
    #[error(
        "the `msal.cache.encryption` cookie does not open the cache (it belongs to another browser session); reload teams.live.com, then run the snippet again"
    )]
    WrongKey,
    /// No token that could serve.
    #[error("it holds no access token for {scopes} and no refresh token")]
    NoTokens {
        /// The scopes asked for.
        scopes: String,
    },
    /// Only an expired access token.
    #[error(
        "its access token for {scopes} has expired and it holds no refresh token; reload teams.live.com, then copy again"
    )]
    Expired {
        /// The scopes asked for.
        scopes: String,
    },
}

/// The captured storage: `localStorage` entries and the key cookie.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Capture {
    entries: BTreeMap<String, String>,
    cookie: Option<String>,
}

impl Capture {
    /// Reads a capture from its JSON. Accepted shapes:
    /// - the snippet's `{"localStorage":{…},"cookies":{"msal.cache.encryption":…}}`
    ///   (`cookies` may also be a raw `document.cookie` string);
    /// - a bare `localStorage` object, maybe with a `msal.cache.encryption`
    ///   entry;
    /// - either inside the `{"kind":"browser-cache","capture":…}` material.
    ///
    /// Values are normally strings of JSON; other JSON is taken as its text.
    pub(crate) fn from_value(value: &Value) -> Result<Self, CacheError> {
        let value = unwrap_material(value);
        let root = value.as_object().ok_or(CacheError::NotAnObject)?;
        let (storage, cookies) = match root.get("localStorage") {
            Some(storage) => (storage, root.get("cookies")),
            None => (value, None),
        };
        // A storage dump that was stringified twice.
        let reparsed;
        let storage = match storage {
            Value::String(text) => {
                reparsed = serde_json::from_str::<Value>(text)
                    .map_err(|e| CacheError::NotJson(e.to_string()))?;
                &reparsed
            }
            other => other,
        };
        let storage = storage.as_object().ok_or(CacheError::NotAnObject)?;
        let mut entries: BTreeMap<String, String> = storage
            .iter()
            .map(|(k, v)| (k.clone(), value_text(v)))
            .collect();
        let cookie = cookies
            .and_then(|c| cookie_value(c, ENCRYPTION_COOKIE))
            .or_else(|| entries.remove(ENCRYPTION_COOKIE));
        Ok(Self { entries, cookie })
    }

    /// Whether the capture carries the key cookie.
    #[cfg(test)]
    pub(crate) fn has_cookie(&self) -> bool {
        self.cookie.is_some()
    }
}

/// The capture inside `{"kind":"browser-cache","capture":…}`, else `value`.
fn unwrap_material(value: &Value) -> &Value {
    match (str_field(value, "kind"), value.get("capture")) {
        (Some("browser-cache"), Some(capture)) => capture,
        _ => value,
    }
}

fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Cookie `name` from `{"name":"value"}` or a `document.cookie` string.
fn cookie_value(cookies: &Value, name: &str) -> Option<String> {
    match cookies {
        Value::Object(map) => map.get(name).map(value_text),
        Value::String(header) => header.split(';').find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key.trim() == name).then(|| value.trim().to_owned())
        }),
        _ => None,
    }
}

/// One token from the cache. Its `Debug` leaves the secret out.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct CachedToken {
    /// The token itself.
    pub(crate) secret: String,
    /// Its account, `<uid>.<utid>`.
    pub(crate) home_account_id: String,
    /// The client it was issued to.
    pub(crate) client_id: String,
    /// The scopes it carries (access tokens), as granted.
    pub(crate) target: Vec<String>,
    /// When it expires, Unix seconds.
    pub(crate) expires_on: Option<u64>,
    /// The newest msal schema whose index lists it (0 for
    /// `msal.token.keys.`); `None` if no index does.
    indexed: Option<u8>,
}

impl std::fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedToken")
            .field("secret_len", &self.secret.len())
            .field("home_account_id", &self.home_account_id)
            .field("client_id", &self.client_id)
            .field("target", &self.target)
            .field("expires_on", &self.expires_on)
            .field("indexed", &self.indexed)
            .finish()
    }
}

impl CachedToken {
    /// Whether it is still good for [`EXPIRY_MARGIN_SECS`] at `now`.
    pub(crate) fn is_fresh(&self, now: u64) -> bool {
        self.expires_on
            .is_some_and(|e| e.saturating_sub(EXPIRY_MARGIN_SECS) > now)
    }

    fn same_account(&self, other: &Self) -> bool {
        self.home_account_id
            .eq_ignore_ascii_case(&other.home_account_id)
    }
}

/// An account entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Account {
    home_account_id: String,
    local_account_id: Option<String>,
    username: Option<String>,
    name: Option<String>,
}

/// The decrypted cache: every credential and account the capture holds.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cache {
    access: Vec<CachedToken>,
    refresh: Vec<CachedToken>,
    id_tokens: Vec<CachedToken>,
    accounts: Vec<Account>,
    /// The active account (`…active-account…` entries): its home id, or
    /// its local id in the oldest format.
    active: Option<String>,
}

/// What a cache yields for some scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Picked {
    /// The best access token for the scopes, fresh or not.
    pub(crate) access: Option<CachedToken>,
    /// The refresh token of the same account.
    pub(crate) refresh: Option<CachedToken>,
    /// The account, `<uid>.<utid>` (may be empty in a malformed cache).
    pub(crate) home_account_id: String,
    /// Its sign-in name.
    pub(crate) username: Option<String>,
    /// Its display name.
    pub(crate) name: Option<String>,
}

/// What went wrong reading values, to explain an empty result.
#[derive(Debug, Default)]
struct Problems {
    encrypted_without_key: usize,
    undecryptable: usize,
    bad_key: Option<CryptoError>,
}

impl Cache {
    /// Reads and decrypts every entry of `capture`. `known_clients` are
    /// client ids to try as decryption contexts besides those the indexes
    /// name (the configured web client id).
    pub(crate) fn load(capture: &Capture, known_clients: &[&str]) -> Result<Self, CacheError> {
        let key = capture.cookie.as_deref().map(CacheKey::from_cookie);
        let mut problems = Problems::default();
        let mut clients: Vec<String> = known_clients.iter().map(|c| (*c).to_owned()).collect();
        for name in capture.entries.keys() {
            if let Some((_, client)) = index_name(name)
                && !clients.iter().any(|c| c.eq_ignore_ascii_case(client))
            {
                clients.push(client.to_owned());
            }
        }
        let open = |name: &str, raw: &str, problems: &mut Problems| -> Option<Value> {
            let value: Value = serde_json::from_str(raw).ok()?;
            let Some(encrypted) = Encrypted::from_json(&value) else {
                return Some(value);
            };
            match &key {
                None => problems.encrypted_without_key += 1,
                Some(Err(error)) => problems.bad_key = Some(error.clone()),
                Some(Ok(key)) => {
                    for context in contexts(name, &clients) {
                        if let Ok(text) = crypto::decrypt(key, &encrypted, &context) {
                            return serde_json::from_str(&text).ok();
                        }
                    }
                    problems.undecryptable += 1;
                }
            }
            None
        };

        // The indexes: which keys each lists, and the newest schema.
        let mut indexed: BTreeMap<&str, u8> = BTreeMap::new();
        for (name, raw) in &capture.entries {
            let Some((schema, _)) = index_name(name) else {
                continue;
            };
            let Some(index) = open(name, raw, &mut problems) else {
                continue;
            };
            for list in ["accessToken", "refreshToken", "idToken"] {
                let keys = index.get(list).and_then(Value::as_array);
                for listed in keys.into_iter().flatten().filter_map(Value::as_str) {
                    if let Some((stored, _)) = capture.entries.get_key_value(listed) {
                        let rank = indexed.entry(stored.as_str()).or_insert(schema);
                        *rank = (*rank).max(schema);
                    }
                }
            }
        }

        let mut cache = Self::default();
        let mut msal_entries = 0usize;
        for (name, raw) in &capture.entries {
            if index_name(name).is_some() || name.ends_with("account.keys") {
                msal_entries += 1;
                continue;
            }
            let lower = name.to_ascii_lowercase();
            let Some(value) = open(name, raw, &mut problems) else {
                // The oldest active-account entry holds a bare local id.
                if lower.contains("active-account") && !raw.trim_start().starts_with('{') {
                    cache.active = Some(raw.trim().trim_matches('"').to_owned());
                }
                continue;
            };
            let rank = indexed.get(name.as_str()).copied();
            if cache.add(&lower, &value, rank) {
                msal_entries += 1;
            }
        }

        if cache.access.is_empty() && cache.refresh.is_empty() {
            if problems.encrypted_without_key > 0 {
                return Err(CacheError::MissingKey);
            }
            if let Some(error) = problems.bad_key {
                return Err(CacheError::BadKey(error));
            }
            if problems.undecryptable > 0 {
                return Err(CacheError::WrongKey);
            }
            if msal_entries == 0 {
                return Err(CacheError::NoMsalEntries);
            }
        }
        Ok(cache)
    }

    /// Files one decrypted entry; whether it was MSAL's.
    fn add(&mut self, lower_name: &str, value: &Value, indexed: Option<u8>) -> bool {
        if let Some(kind) = str_field(value, "credentialType") {
            let Some(token) = credential(value, indexed) else {
                return false;
            };
            match kind.to_ascii_lowercase().as_str() {
                // Proof-of-possession and SSH tokens
                // (`AccessToken_With_AuthScheme`) are useless as bearers.
                "accesstoken"
                    if str_field(value, "tokenType")
                        .is_none_or(|t| t.eq_ignore_ascii_case("bearer")) =>
                {
                    self.access.push(token);
                }
                "refreshtoken" => self.refresh.push(token),
                "idtoken" => self.id_tokens.push(token),
                _ => {}
            }
            return true;
        }
        let home = str_field(value, "homeAccountId");
        if lower_name.contains("active-account") {
            if let Some(home) = home {
                self.active = Some(home.to_owned());
            }
            return true;
        }
        let is_account = ["authorityType", "localAccountId", "username"]
            .iter()
            .any(|f| value.get(f).is_some());
        match home {
            Some(home) if is_account => {
                let text = |f: &str| str_field(value, f).map(str::to_owned);
                self.accounts.push(Account {
                    home_account_id: home.to_owned(),
                    local_account_id: text("localAccountId"),
                    username: text("username"),
                    name: text("name"),
                });
                true
            }
            _ => false,
        }
    }

    /// Picks the access token for `scopes` (every one in its target,
    /// case-insensitively), the refresh token of its account and the
    /// account. Among several accounts or tokens: the active account
    /// first, then one that can serve (fresh, or refreshable), then fresh,
    /// then issued to `preferred_client`, then the latest expiry, then the
    /// newest index.
    pub(crate) fn pick(
        &self,
        scopes: &[String],
        preferred_client: &str,
        now: u64,
    ) -> Result<Picked, CacheError> {
        let wanted = search_scopes(scopes);
        let active = self.active_home_account_id();
        let is_active = |t: &CachedToken| {
            active
                .as_deref()
                .is_some_and(|a| a.eq_ignore_ascii_case(&t.home_account_id))
        };
        let preferred = |t: &CachedToken| t.client_id.eq_ignore_ascii_case(preferred_client);
        let refresh_for = |access: &CachedToken| {
            self.refresh
                .iter()
                .filter(|r| access.home_account_id.is_empty() || r.same_account(access))
                .max_by_key(|r| {
                    (
                        r.client_id.eq_ignore_ascii_case(&access.client_id),
                        preferred(r),
                        r.indexed,
                    )
                })
        };
        let access = self
            .access
            .iter()
            .filter(|t| covers(&t.target, &wanted))
            .max_by_key(|t| {
                let fresh = t.is_fresh(now);
                let usable = fresh || refresh_for(t).is_some();
                (
                    is_active(t),
                    usable,
                    fresh,
                    preferred(t),
                    t.expires_on,
                    t.indexed,
                )
            });
        let refresh = match access {
            Some(access) => refresh_for(access),
            None => self
                .refresh
                .iter()
                .max_by_key(|r| (is_active(r), preferred(r), r.indexed)),
        };
        let Some(home) = access.or(refresh).map(|t| t.home_account_id.clone()) else {
            return Err(CacheError::NoTokens {
                scopes: wanted.join(" "),
            });
        };
        let account = self
            .accounts
            .iter()
            .find(|a| a.home_account_id.eq_ignore_ascii_case(&home));
        let claims = self
            .id_tokens
            .iter()
            .filter(|t| t.home_account_id.eq_ignore_ascii_case(&home))
            .find_map(|t| IdClaims::from_token(&t.secret));
        let username = account.and_then(|a| a.username.clone()).or_else(|| {
            claims
                .as_ref()
                .and_then(|c| c.username().map(str::to_owned))
        });
        let name = account.and_then(|a| a.name.clone()).or_else(|| {
            claims
                .as_ref()
                .and_then(|c| c.display_name().map(str::to_owned))
        });
        Ok(Picked {
            access: access.cloned(),
            refresh: refresh.cloned(),
            home_account_id: home,
            username,
            name,
        })
    }

    /// The active account's home id, if an entry names one.
    fn active_home_account_id(&self) -> Option<String> {
        let active = self.active.as_deref()?;
        self.accounts
            .iter()
            .find(|a| {
                a.home_account_id.eq_ignore_ascii_case(active)
                    || a.local_account_id
                        .as_deref()
                        .is_some_and(|l| l.eq_ignore_ascii_case(active))
            })
            .map_or_else(|| active.to_owned(), |a| a.home_account_id.clone())
            .into()
    }
}

/// A credential entry's fields; `None` without a secret.
fn credential(value: &Value, indexed: Option<u8>) -> Option<CachedToken> {
    let text = |f: &str| str_field(value, f).unwrap_or_default().to_owned();
    Some(CachedToken {
        secret: str_field(value, "secret")?.to_owned(),
        home_account_id: text("homeAccountId"),
        client_id: text("clientId"),
        target: str_field(value, "target")
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        expires_on: value.get("expiresOn").and_then(unix_seconds),
        indexed,
    })
}

/// `msal.token.keys.<client>` → (0, client); `msal.<n>.token.keys.<client>`
/// → (n, client).
fn index_name(name: &str) -> Option<(u8, &str)> {
    let rest = name.strip_prefix("msal.")?;
    if let Some(client) = rest.strip_prefix("token.keys.") {
        return Some((0, client));
    }
    let (schema, rest) = rest.split_once('.')?;
    let client = rest.strip_prefix("token.keys.")?;
    Some((schema.parse().ok()?, client))
}

/// The HKDF contexts to try for entry `name`: the client ids it contains
/// (msal-browser binds app entries to their client id), then none (shared
/// entries such as accounts), then any other id-shaped part of the name.
fn contexts(name: &str, clients: &[String]) -> Vec<String> {
    let lower = name.to_ascii_lowercase();
    let mut out: Vec<String> = clients
        .iter()
        .filter(|c| lower.contains(&c.to_ascii_lowercase()))
        .cloned()
        .collect();
    out.push(String::new());
    for guid in guids(name) {
        if !out.iter().any(|c| c.eq_ignore_ascii_case(guid)) {
            out.push(guid.to_owned());
        }
    }
    out
}

/// The GUID-shaped substrings of `text` (8-4-4-4-12 hex digits).
fn guids(text: &str) -> Vec<&str> {
    const SHAPE: [usize; 5] = [8, 4, 4, 4, 12];
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut start = 0;
    while start + 36 <= bytes.len() {
        let candidate = &bytes[start..start + 36];
        let mut at = 0;
        let ok = SHAPE.iter().enumerate().all(|(i, &len)| {
            let group = &candidate[at..at + len];
            at += len;
            let dash = i == SHAPE.len() - 1 || candidate.get(at) == Some(&b'-');
            at += 1;
            dash && group.iter().all(u8::is_ascii_hexdigit)
        });
        if ok && let Some(guid) = text.get(start..start + 36) {
            found.push(guid);
            start += 36;
        } else {
            start += 1;
        }
    }
    found
}

/// The scopes to look for, lowercased: the OIDC ones are dropped unless
/// they are all that was asked (as MSAL does).
fn search_scopes(scopes: &[String]) -> Vec<String> {
    let lower: Vec<String> = scopes
        .iter()
        .flat_map(|s| s.split_whitespace())
        .map(str::to_ascii_lowercase)
        .collect();
    let without_oidc: Vec<String> = lower
        .iter()
        .filter(|s| !OIDC_SCOPES.contains(&s.as_str()))
        .cloned()
        .collect();
    if without_oidc.is_empty() {
        lower
    } else {
        without_oidc
    }
}

/// Whether a token's target holds every wanted (lowercased) scope.
fn covers(target: &[String], wanted: &[String]) -> bool {
    wanted
        .iter()
        .all(|w| target.iter().any(|t| t.eq_ignore_ascii_case(w)))
}

#[cfg(test)]
pub(crate) mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde_json::json;

    use super::*;
    use crate::crypto::encrypt_for_test;

    pub(crate) const CLIENT: &str = "4b3e8f46-56d3-427f-b1e2-d239b2ea6bca";
    pub(crate) const MBI: &str = "service::api.fl.spaces.skype.com::MBI_SSL";
    const GRAPH: &str = "https://graph.microsoft.com/Files.ReadWrite";
    pub(crate) const ADA: &str =
        "00000000-0000-0000-aaaa-aaaaaaaaaaaa.9188040d-6c67-4c5b-b112-36a304b66dad";
    const BOB: &str = "00000000-0000-0000-bbbb-bbbbbbbbbbbb.9188040d-6c67-4c5b-b112-36a304b66dad";
    const ENV: &str = "login.windows.net";
    const TENANT: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";
    pub(crate) const NOW: u64 = 1_700_000_000;
    const KEY: [u8; 32] = [42; 32];

    /// The layouts a fixture can take.
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Layout {
        /// msal-browser v2/v3: `-` keys, `msal.token.keys.`, plain values.
        V3,
        /// v4: `msal.1.` index, `-` keys.
        V4,
        /// v5: `msal.2.` index, `|` keys.
        V5,
    }

    /// Builds `localStorage` the way msal-browser writes it.
    pub(crate) struct Fixture {
        layout: Layout,
        pub(crate) entries: serde_json::Map<String, Value>,
        index: BTreeMap<&'static str, Vec<String>>,
        indexed: bool,
    }

    impl Fixture {
        pub(crate) fn new(layout: Layout) -> Self {
            Self {
                layout,
                entries: serde_json::Map::new(),
                index: BTreeMap::new(),
                indexed: true,
            }
        }

        fn key(&self, parts: &[&str]) -> String {
            match self.layout {
                Layout::V3 | Layout::V4 => parts.join("-").to_ascii_lowercase(),
                Layout::V5 => format!("msal.2|{}", parts.join("|")).to_ascii_lowercase(),
            }
        }

        fn put(&mut self, list: &'static str, key: String, value: Value) -> &mut Self {
            self.index.entry(list).or_default().push(key.clone());
            self.entries.insert(key, Value::String(value.to_string()));
            self
        }

        pub(crate) fn access(
            &mut self,
            account: &str,
            scopes: &str,
            expires_on: u64,
            secret: &str,
        ) -> &mut Self {
            let key = self.key(&[account, ENV, "accesstoken", CLIENT, TENANT, scopes, "", ""]);
            let value = json!({
                "homeAccountId": account, "credentialType": "AccessToken", "secret": secret,
                "cachedAt": (expires_on - 3600).to_string(), "expiresOn": expires_on.to_string(),
                "extendedExpiresOn": expires_on.to_string(), "environment": ENV,
                "clientId": CLIENT, "realm": TENANT, "target": scopes, "tokenType": "Bearer",
            });
            self.put("accessToken", key, value)
        }

        pub(crate) fn refresh(&mut self, account: &str, secret: &str) -> &mut Self {
            let key = self.key(&[account, ENV, "refreshtoken", CLIENT, "", "", "", ""]);
            let value = json!({
                "homeAccountId": account, "credentialType": "RefreshToken", "secret": secret,
                "environment": ENV, "clientId": CLIENT,
            });
            self.put("refreshToken", key, value)
        }

        pub(crate) fn account(&mut self, account: &str, username: &str, name: &str) -> &mut Self {
            let key = self.key(&[account, ENV, TENANT]);
            let value = json!({
                "homeAccountId": account, "environment": ENV, "realm": TENANT,
                "localAccountId": account.split('.').next().unwrap_or_default(),
                "username": username, "name": name, "authorityType": "MSSTS",
            });
            self.entries.insert(key, Value::String(value.to_string()));
            self
        }

        /// Leaves the index out of the storage.
        pub(crate) fn without_index(&mut self) -> &mut Self {
            self.indexed = false;
            self
        }

        pub(crate) fn junk(&mut self) -> &mut Self {
            for (k, v) in [
                ("tmp.auth.v1.GLOBAL.something", "not json"),
                ("theme", "\"dark\""),
                ("numbers", "[1,2,3]"),
                ("msal.token.keys.bogus", "{broken"),
                ("msal.x.token.keys.y", "{}"),
            ] {
                self.entries.insert(k.into(), Value::String(v.into()));
            }
            self
        }

        fn index_name(&self) -> String {
            match self.layout {
                Layout::V3 => format!("msal.token.keys.{CLIENT}"),
                Layout::V4 => format!("msal.1.token.keys.{CLIENT}"),
                Layout::V5 => format!("msal.2.token.keys.{CLIENT}"),
            }
        }

        /// The bare `localStorage` object, plain.
        pub(crate) fn storage(&self) -> Value {
            let mut entries = self.entries.clone();
            if self.indexed {
                let index: serde_json::Map<String, Value> =
                    ["idToken", "accessToken", "refreshToken"]
                        .iter()
                        .map(|l| {
                            (
                                l.to_string(),
                                json!(self.index.get(l).cloned().unwrap_or_default()),
                            )
                        })
                        .collect();
                entries.insert(
                    self.index_name(),
                    Value::String(Value::Object(index).to_string()),
                );
            }
            Value::Object(entries)
        }

        /// The `localStorage` object with every MSAL value encrypted as
        /// msal-browser does (url-safe or standard base64), and the cookie.
        pub(crate) fn encrypted(&self, url_safe: bool) -> (Value, String) {
            let Value::Object(plain) = self.storage() else {
                unreachable!()
            };
            let mut out = serde_json::Map::new();
            for (i, (key, value)) in plain.into_iter().enumerate() {
                let text = value.as_str().unwrap_or_default().to_owned();
                let is_msal = serde_json::from_str::<Value>(&text)
                    .is_ok_and(|v| v.get("homeAccountId").is_some());
                if !is_msal {
                    out.insert(key, value);
                    continue;
                }
                let context = if key.contains(CLIENT) { CLIENT } else { "" };
                let nonce = [i as u8; 16];
                let (nonce, data) = encrypt_for_test(&KEY, &nonce, context, &text, url_safe);
                let sealed = json!({"id": "key-1", "nonce": nonce, "data": data});
                out.insert(key, Value::String(sealed.to_string()));
            }
            let cookie = json!({"id": "key-1", "key": STANDARD.encode(KEY)}).to_string();
            (Value::Object(out), cookie)
        }
    }

    /// The snippet's object for `storage` and an optional cookie.
    pub(crate) fn snippet_capture(storage: Value, cookie: Option<&str>) -> Value {
        let cookies = match cookie {
            Some(c) => json!({ ENCRYPTION_COOKIE: c }),
            None => json!({}),
        };
        json!({"localStorage": storage, "cookies": cookies})
    }

    fn pick(capture: &Value, scopes: &[&str]) -> Result<Picked, CacheError> {
        let capture = Capture::from_value(capture)?;
        let cache = Cache::load(&capture, &[CLIENT])?;
        let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
        cache.pick(&scopes, CLIENT, NOW)
    }

    /// Two accounts, MBI_SSL and Graph tokens, an expired one, junk.
    pub(crate) fn two_accounts(layout: Layout) -> Fixture {
        let mut f = Fixture::new(layout);
        f.access(
            ADA,
            &format!("{MBI} openid profile"),
            NOW + 3000,
            "ada-mbi-old",
        )
        .access(ADA, &format!("{MBI} openid profile"), NOW + 7000, "ada-mbi")
        .access(ADA, GRAPH, NOW + 9000, "ada-graph")
        .access(BOB, MBI, NOW - 10, "bob-mbi-expired")
        .refresh(ADA, "ada-rt")
        .refresh(BOB, "bob-rt")
        .account(ADA, "ada@example.com", "Ada")
        .account(BOB, "bob@example.com", "Bob")
        .junk();
        f
    }

    #[test]
    fn the_freshest_access_token_for_the_scope_comes_with_its_accounts_refresh_token() {
        for layout in [Layout::V3, Layout::V4, Layout::V5] {
            let picked = pick(&two_accounts(layout).storage(), &[MBI]).unwrap();
            // The later of Ada's two MBI_SSL tokens wins over the older one
            // and over Bob's expired one.
            assert_eq!(picked.access.as_ref().unwrap().secret, "ada-mbi");
            assert_eq!(picked.access.as_ref().unwrap().expires_on, Some(NOW + 7000));
            // The refresh token is Ada's, not Bob's.
            assert_eq!(picked.refresh.unwrap().secret, "ada-rt");
            assert_eq!(picked.home_account_id, ADA);
            assert_eq!(picked.username.as_deref(), Some("ada@example.com"));
            assert_eq!(picked.name.as_deref(), Some("Ada"));
        }
    }

    #[test]
    fn scopes_match_whole_and_case_insensitively() {
        let f = two_accounts(Layout::V3);
        // The Graph scope picks the Graph token.
        let graph = pick(&f.storage(), &[&GRAPH.to_uppercase()]).unwrap();
        assert_eq!(graph.access.unwrap().secret, "ada-graph");
        // Lowercase MBI_SSL still matches the token's `MBI_SSL`.
        let mbi = pick(&f.storage(), &[&MBI.to_lowercase()]).unwrap();
        assert_eq!(mbi.access.unwrap().secret, "ada-mbi");
        // Every scope must be in the target: no token holds both.
        let both = pick(&f.storage(), &[MBI, GRAPH]).unwrap();
        assert_eq!(both.access, None);
        // OIDC scopes are ignored when others are asked for.
        let with_oidc = pick(&f.storage(), &[MBI, "openid", "offline_access"]).unwrap();
        assert_eq!(with_oidc.access.unwrap().secret, "ada-mbi");
    }

    #[test]
    fn an_expired_access_token_with_a_refresh_token_is_picked_for_refreshing() {
        let mut f = Fixture::new(Layout::V3);
        f.access(BOB, MBI, NOW + 100, "bob-nearly-expired")
            .refresh(BOB, "bob-rt");
        let picked = pick(&f.storage(), &[MBI]).unwrap();
        let access = picked.access.unwrap();
        // Within the five-minute margin counts as expired.
        assert!(!access.is_fresh(NOW));
        assert_eq!(picked.refresh.unwrap().secret, "bob-rt");
    }

    #[test]
    fn a_usable_account_wins_over_one_with_only_an_expired_token() {
        let mut f = Fixture::new(Layout::V3);
        // Bob's token expires later but is expired and cannot be renewed.
        f.access(BOB, MBI, NOW + 200, "bob-stuck")
            .access(ADA, MBI, NOW - 5000, "ada-old")
            .refresh(ADA, "ada-rt");
        let picked = pick(&f.storage(), &[MBI]).unwrap();
        assert_eq!(picked.access.unwrap().secret, "ada-old");
        assert_eq!(picked.refresh.unwrap().secret, "ada-rt");
    }

    #[test]
    fn a_missing_refresh_token_leaves_only_the_access_token() {
        let mut f = Fixture::new(Layout::V5);
        f.access(ADA, MBI, NOW + 3600, "ada-mbi")
            .refresh(BOB, "bob-rt");
        let picked = pick(&f.storage(), &[MBI]).unwrap();
        assert_eq!(picked.access.unwrap().secret, "ada-mbi");
        // Bob's refresh token is never paired with Ada's access token.
        assert_eq!(picked.refresh, None);
    }

    #[test]
    fn only_a_refresh_token_is_enough_to_pick_its_account() {
        let mut f = Fixture::new(Layout::V4);
        f.refresh(ADA, "ada-rt")
            .account(ADA, "ada@example.com", "Ada");
        let picked = pick(&f.storage(), &[MBI]).unwrap();
        assert_eq!(picked.access, None);
        assert_eq!(picked.refresh.unwrap().secret, "ada-rt");
        assert_eq!(picked.username.as_deref(), Some("ada@example.com"));
    }

    #[test]
    fn no_tokens_at_all_is_an_error_naming_the_scope() {
        let mut f = Fixture::new(Layout::V3);
        f.access(ADA, GRAPH, NOW + 3600, "ada-graph");
        let error = pick(&f.storage(), &[MBI]).unwrap_err();
        assert_eq!(
            error,
            CacheError::NoTokens {
                scopes: MBI.to_lowercase()
            }
        );
    }

    #[test]
    fn entries_are_found_without_an_index_and_despite_a_stale_one() {
        // No index: the entries are scanned.
        let mut f = two_accounts(Layout::V5);
        f.without_index();
        let picked = pick(&f.storage(), &[MBI]).unwrap();
        assert_eq!(picked.access.unwrap().secret, "ada-mbi");
        // A stale index lists keys that are gone and misses new ones.
        let mut storage = Fixture::new(Layout::V3);
        storage
            .access(ADA, MBI, NOW + 3600, "ada-mbi")
            .refresh(ADA, "ada-rt");
        let mut storage = storage.storage();
        storage[format!("msal.token.keys.{CLIENT}")] = Value::String(
            json!({"accessToken": ["gone-1", "gone-2"], "refreshToken": ["gone-3"], "idToken": []})
                .to_string(),
        );
        let picked = pick(&storage, &[MBI]).unwrap();
        assert_eq!(picked.access.unwrap().secret, "ada-mbi");
        assert_eq!(picked.refresh.unwrap().secret, "ada-rt");
    }

    #[test]
    fn among_equal_tokens_the_newest_index_wins() {
        // The same token listed in an old v3 index and a v5 one: both
        // layouts in one capture, with identical expiry.
        let mut old = Fixture::new(Layout::V3);
        old.access(ADA, MBI, NOW + 3600, "from-v3");
        let mut new = Fixture::new(Layout::V5);
        new.access(ADA, MBI, NOW + 3600, "from-v5");
        let mut storage = old.storage();
        if let (Value::Object(all), Value::Object(more)) = (&mut storage, new.storage()) {
            all.extend(more);
        }
        let picked = pick(&storage, &[MBI]).unwrap();
        assert_eq!(picked.access.unwrap().secret, "from-v5");
    }

    #[test]
    fn encrypted_values_open_with_the_cookie_in_either_base64() {
        for url_safe in [true, false] {
            let (storage, cookie) = two_accounts(Layout::V5).encrypted(url_safe);
            let picked = pick(&snippet_capture(storage, Some(&cookie)), &[MBI]).unwrap();
            assert_eq!(picked.access.unwrap().secret, "ada-mbi");
            assert_eq!(picked.refresh.unwrap().secret, "ada-rt");
            // Account entries (no client id in their key) use the empty
            // context and still open.
            assert_eq!(picked.username.as_deref(), Some("ada@example.com"));
        }
    }

    #[test]
    fn encrypted_values_without_the_cookie_ask_for_the_cookie() {
        let (storage, _) = two_accounts(Layout::V4).encrypted(true);
        let error = pick(&storage, &[MBI]).unwrap_err();
        assert_eq!(error, CacheError::MissingKey);
        // The message names the cookie, so the user knows what to copy.
        assert!(error.to_string().contains("msal.cache.encryption"));
    }

    #[test]
    fn a_cookie_from_another_session_is_reported_as_such() {
        let (storage, _) = two_accounts(Layout::V5).encrypted(true);
        let other = json!({"id": "key-2", "key": STANDARD.encode([1u8; 32])}).to_string();
        let error = pick(&snippet_capture(storage, Some(&other)), &[MBI]).unwrap_err();
        assert_eq!(error, CacheError::WrongKey);
    }

    #[test]
    fn the_cookie_may_sit_in_a_bare_paste_or_stay_url_encoded() {
        let (mut storage, cookie) = two_accounts(Layout::V5).encrypted(false);
        // The bare localStorage with the cookie as an entry.
        storage[ENCRYPTION_COOKIE] = Value::String(cookie.clone());
        let picked = pick(&storage, &[MBI]).unwrap();
        assert_eq!(picked.access.unwrap().secret, "ada-mbi");
        // The snippet's object with the cookie still URL-encoded.
        let (storage, _) = two_accounts(Layout::V5).encrypted(false);
        let encoded: String = cookie
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' => (b as char).to_string(),
                other => format!("%{other:02X}"),
            })
            .collect();
        let picked = pick(&snippet_capture(storage, Some(&encoded)), &[MBI]).unwrap();
        assert_eq!(picked.access.unwrap().secret, "ada-mbi");
    }

    #[test]
    fn a_raw_cookie_header_and_a_stringified_storage_are_read_too() {
        let (storage, cookie) = two_accounts(Layout::V4).encrypted(true);
        let capture = json!({
            "localStorage": storage.to_string(),
            "cookies": format!("theme=dark; {ENCRYPTION_COOKIE}={cookie}; other=1"),
        });
        let picked = pick(&capture, &[MBI]).unwrap();
        assert_eq!(picked.access.unwrap().secret, "ada-mbi");
    }

    #[test]
    fn the_bare_paste_and_the_snippets_object_read_the_same() {
        let storage = two_accounts(Layout::V3).storage();
        let bare = Capture::from_value(&storage).unwrap();
        let wrapped = Capture::from_value(&snippet_capture(storage, None)).unwrap();
        assert_eq!(bare, wrapped);
        assert!(!bare.has_cookie());
        // The material wrapper is unwrapped as well.
        let material =
            json!({"kind": "browser-cache", "capture": two_accounts(Layout::V3).storage()});
        assert_eq!(Capture::from_value(&material).unwrap(), bare);
    }

    #[test]
    fn an_active_account_entry_decides_between_accounts() {
        let mut f = Fixture::new(Layout::V3);
        f.access(ADA, MBI, NOW + 9000, "ada-mbi")
            .access(BOB, MBI, NOW + 3600, "bob-mbi")
            .refresh(ADA, "ada-rt")
            .refresh(BOB, "bob-rt");
        let mut storage = f.storage();
        storage[format!("msal.{CLIENT}.active-account-filters")] =
            Value::String(json!({"homeAccountId": BOB, "localAccountId": "x"}).to_string());
        let picked = pick(&storage, &[MBI]).unwrap();
        assert_eq!(picked.access.unwrap().secret, "bob-mbi");
        assert_eq!(picked.refresh.unwrap().secret, "bob-rt");
    }

    #[test]
    fn timestamps_may_be_numbers_or_strings() {
        let mut f = Fixture::new(Layout::V3);
        f.refresh(ADA, "ada-rt");
        let mut storage = f.storage();
        storage["numeric-access"] = Value::String(
            json!({"homeAccountId": ADA, "credentialType": "AccessToken", "secret": "n",
                   "clientId": CLIENT, "target": MBI, "expiresOn": NOW + 4000})
            .to_string(),
        );
        let picked = pick(&storage, &[MBI]).unwrap();
        assert_eq!(picked.access.unwrap().expires_on, Some(NOW + 4000));
    }

    #[test]
    fn storage_without_msal_or_not_an_object_is_refused_plainly() {
        let junk = json!({"theme": "dark", "x": "{\"a\":1}"});
        assert_eq!(pick(&junk, &[MBI]).unwrap_err(), CacheError::NoMsalEntries);
        assert_eq!(
            pick(&json!([1, 2]), &[MBI]).unwrap_err(),
            CacheError::NotAnObject
        );
        assert_eq!(
            pick(&json!({"localStorage": 5}), &[MBI]).unwrap_err(),
            CacheError::NotAnObject
        );
    }

    #[test]
    fn proof_of_possession_tokens_are_not_bearers() {
        let mut storage = Fixture::new(Layout::V3).storage();
        storage["pop"] = Value::String(
            json!({"homeAccountId": ADA, "credentialType": "AccessToken", "secret": "pop",
                   "clientId": CLIENT, "target": MBI, "expiresOn": "1800000000", "tokenType": "pop"})
            .to_string(),
        );
        assert!(matches!(
            pick(&storage, &[MBI]),
            Err(CacheError::NoTokens { .. })
        ));
    }

    #[test]
    fn guid_shaped_parts_of_a_key_are_found() {
        let key = format!("msal.2|{ADA}|login.windows.net|accesstoken|{CLIENT}|x");
        let found = guids(&key);
        assert!(found.contains(&CLIENT));
        assert!(found.contains(&TENANT));
        assert!(guids("short").is_empty());
    }

    #[test]
    fn index_names_of_every_schema_are_recognised() {
        assert_eq!(index_name("msal.token.keys.abc"), Some((0, "abc")));
        assert_eq!(index_name("msal.1.token.keys.abc"), Some((1, "abc")));
        assert_eq!(index_name("msal.2.token.keys.abc"), Some((2, "abc")));
        assert_eq!(index_name("msal.account.keys"), None);
        assert_eq!(index_name("msal.x.token.keys.abc"), None);
    }
}
