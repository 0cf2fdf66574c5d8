//! Fixtures of the MSAL browser cache as a user captures it from
//! teams.live.com: the `localStorage` object, the `msal.cache.encryption`
//! cookie, and the capture JSON that [`CONSOLE_SNIPPET`] copies.
//!
//! The layouts follow the Teams reference (§1.1–1.2) and msal-browser's
//! source:
//!
//! - [`KeySchema::Unversioned`] (msal-browser 2–3): the index
//!   `msal.token.keys.<clientId>` and `msal.account.keys`; credential keys
//!   `<homeAccountId>-<env>-<type>-<clientId>-<realm>-<target>-<claimsHash>-<scheme>`,
//!   lowercased.
//! - [`KeySchema::V1`] (msal-browser 4): `msal.1.token.keys.<clientId>`,
//!   `msal.1.account.keys`; keys `msal.1-<homeAccountId>-<env>-<type>-<clientId>-<realm>-<target>-<scheme>`.
//! - [`KeySchema::V2`] (msal-browser 5): `msal.2.token.keys.<clientId>`,
//!   `msal.2.account.keys`; keys joined with `|`, as the field reports saw:
//!   `msal.2|<homeAccountId>|<env>|refreshtoken|<clientId>|||`.
//!
//! Values are JSON *strings* (localStorage holds strings), timestamps are
//! strings of Unix seconds. With [`MsalCache::encrypted`], each account and
//! credential value becomes `{"id","nonce","data","lastUpdatedAt"}` as
//! msal-browser 4+ writes it (`LocalStorage.setUserData`): a fresh 16-byte
//! nonce, a key HKDF-SHA256(ikm = the cookie's 32 key bytes, salt = nonce,
//! info = the *context*), then AES-256-GCM with a 12-byte zero IV over the
//! UTF-8 plain value, `data` = ciphertext‖tag. The context is the client id
//! when the storage key contains it, else empty: so credentials are bound
//! to the client id and accounts (whose keys don't name it) use an empty
//! `info`. The index entries and `msal.version` stay plain.
//!
//! Base64: msal-browser writes the cookie's key, `nonce` and `data` as
//! base64url without padding (`urlEncodeArr`) and decodes either flavour
//! (`base64DecToArr` maps `-_` back and re-pads), so the fixtures write
//! that by default; [`Base64Flavour::Standard`] (with `+/` and `=`
//! padding) tests that a reader accepts both.

use std::collections::BTreeMap;

use aes_gcm::aead::Aead as _;
use aes_gcm::{Aes256Gcm, KeyInit as _, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hkdf::Hkdf;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use rand::Rng as _;
use serde_json::{Map, Value, json};
use sha2::Sha256;

use crate::identity::{Account, TEAMS_SCOPES, TEAMS_WEB_CLIENT_ID, Tokens};

/// What the user pastes into the browser console on teams.live.com (the
/// helper page shows it). It copies `localStorage` and the
/// `msal.cache.encryption` cookie, as
/// `{"localStorage":{<key>:<string>,…},"cookies":{"msal.cache.encryption":"<the cookie's JSON, URL-decoded>"}}`
/// (`cookies` is `{}` when there is no such cookie). It splits each
/// cookie at `=` and keeps only that one before decoding it, so another
/// cookie with a stray `%` can't make `decodeURIComponent` throw.
/// `copy` is the DevTools console's clipboard helper.
pub const CONSOLE_SNIPPET: &str = "copy(JSON.stringify({localStorage: Object.fromEntries(Object.entries(localStorage)), cookies: Object.fromEntries(document.cookie.split(/; */).map(c => c.split('=')).filter(([k]) => k === 'msal.cache.encryption').map(([k, ...v]) => [k, decodeURIComponent(v.join('='))]))}))";

/// The cookie msal-browser 4+ keeps the cache's encryption key in.
pub const ENCRYPTION_COOKIE: &str = "msal.cache.encryption";

/// The `environment` the fixtures store by default: the cache alias MSAL's
/// built-in metadata gives `login.microsoftonline.com` (what teams.live.com
/// really stores is unverified; see [`MsalCache::environment`]).
pub const DEFAULT_ENVIRONMENT: &str = "login.windows.net";

/// The `target` of the Graph access token the web app also caches.
pub const GRAPH_TARGET: &str =
    "https://graph.microsoft.com/Files.ReadWrite openid profile offline_access";

/// `encodeURIComponent`'s set: everything but `A-Z a-z 0-9 - _ . ! ~ * ' ( )`.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// Which msal-browser generation laid the cache out (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySchema {
    /// msal-browser 2–3: `msal.token.keys.<clientId>`, `-`-joined keys.
    Unversioned,
    /// msal-browser 4: `msal.1.token.keys.<clientId>`, `msal.1-…` keys.
    V1,
    /// msal-browser 5: `msal.2.token.keys.<clientId>`, `msal.2|…` keys.
    V2,
}

impl KeySchema {
    fn prefix(self) -> Option<&'static str> {
        match self {
            Self::Unversioned => None,
            Self::V1 => Some("msal.1"),
            Self::V2 => Some("msal.2"),
        }
    }

    fn separator(self) -> &'static str {
        match self {
            Self::Unversioned | Self::V1 => "-",
            Self::V2 => "|",
        }
    }

    /// The token index's key.
    pub fn token_keys_key(self, client_id: &str) -> String {
        match self.prefix() {
            None => format!("msal.token.keys.{client_id}"),
            Some(prefix) => format!("{prefix}.token.keys.{client_id}"),
        }
    }

    /// The account index's key.
    pub fn account_keys_key(self) -> String {
        match self.prefix() {
            None => "msal.account.keys".to_owned(),
            Some(prefix) => format!("{prefix}.account.keys"),
        }
    }

    /// A credential's key (`generateCredentialKey`): the unversioned form
    /// has a requested-claims-hash field the versioned ones dropped.
    fn credential_key(
        self,
        account: &Account,
        env: &str,
        kind: &str,
        client_id: &str,
        realm: &str,
        target: &str,
    ) -> String {
        let mut parts: Vec<&str> = self.prefix().into_iter().collect();
        parts.extend([
            account.home_account_id.as_str(),
            env,
            kind,
            client_id,
            realm,
            target,
        ]);
        match self {
            Self::Unversioned => parts.extend(["", ""]),
            Self::V1 | Self::V2 => parts.push(""),
        }
        parts.join(self.separator()).to_lowercase()
    }

    /// An account's key (`generateAccountKey`).
    fn account_key(self, account: &Account, env: &str) -> String {
        let mut parts: Vec<&str> = self.prefix().into_iter().collect();
        parts.extend([account.home_account_id.as_str(), env, account.tenant_id()]);
        parts.join(self.separator()).to_lowercase()
    }

    /// The `msal.version` a cache of this schema would carry.
    fn msal_version(self) -> &'static str {
        match self {
            Self::Unversioned => "3.26.1",
            Self::V1 => "4.21.0",
            Self::V2 => "5.7.0",
        }
    }
}

/// How binary values are written in base64 (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Base64Flavour {
    /// `-_`, no padding: what msal-browser writes.
    #[default]
    UrlSafeNoPad,
    /// `+/` with `=` padding: what a reader must accept too.
    Standard,
}

impl Base64Flavour {
    fn encode(self, bytes: &[u8]) -> String {
        match self {
            Self::UrlSafeNoPad => URL_SAFE_NO_PAD.encode(bytes),
            Self::Standard => STANDARD.encode(bytes),
        }
    }
}

/// The cache's encryption key, as the `msal.cache.encryption` cookie holds
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    /// The key's id, which every encrypted value repeats.
    pub id: String,
    /// The raw key (the HKDF input).
    pub key: [u8; 32],
    /// How the key, nonces and ciphertexts are written.
    pub flavour: Base64Flavour,
}

impl CacheKey {
    /// A fresh random key, written as msal-browser writes it.
    pub fn random() -> Self {
        let mut rng = rand::rng();
        let b: [u8; 16] = rng.random();
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        Self {
            id: format!(
                "{}-{}-7{}-8{}-{}",
                &hex[..8],
                &hex[8..12],
                &hex[13..16],
                &hex[17..20],
                &hex[20..]
            ),
            key: rng.random(),
            flavour: Base64Flavour::default(),
        }
    }

    /// The same key written in another base64 flavour.
    pub fn with_flavour(mut self, flavour: Base64Flavour) -> Self {
        self.flavour = flavour;
        self
    }

    /// The cookie's value decoded: `{"id":"…","key":"<base64 of 32 bytes>"}`
    /// (what `CookieStorage.getItem` and [`CONSOLE_SNIPPET`] give).
    pub fn cookie_json(&self) -> String {
        json!({"id": self.id, "key": self.flavour.encode(&self.key)}).to_string()
    }

    /// The cookie's raw value as `document.cookie` shows it:
    /// [`Self::cookie_json`] through `encodeURIComponent`.
    pub fn cookie_value(&self) -> String {
        utf8_percent_encode(&self.cookie_json(), URI_COMPONENT).to_string()
    }

    /// Encrypts the plain value `plain` stored under `storage_key`, as
    /// `LocalStorage.setUserData` does: the returned string is what
    /// localStorage then holds.
    pub fn encrypt(&self, client_id: &str, storage_key: &str, plain: &str) -> String {
        let nonce: [u8; 16] = rand::rng().random();
        let cipher = derive_cipher(&self.key, &nonce, context(client_id, storage_key));
        let data = cipher
            .encrypt(Nonce::from_slice(&[0; 12]), plain.as_bytes())
            .expect("AES-GCM encrypts any length a test uses");
        json!({
            "id": self.id,
            "nonce": self.flavour.encode(&nonce),
            "data": self.flavour.encode(&data),
            "lastUpdatedAt": now_millis().to_string(),
        })
        .to_string()
    }
}

/// The HKDF `info` for `storage_key` (`LocalStorage.getContext`): the
/// client id if the key contains it, else nothing.
fn context<'a>(client_id: &'a str, storage_key: &str) -> &'a [u8] {
    if storage_key.contains(client_id) {
        client_id.as_bytes()
    } else {
        b""
    }
}

fn derive_cipher(key: &[u8], nonce: &[u8], info: &[u8]) -> Aes256Gcm {
    let mut derived = [0u8; 32];
    Hkdf::<Sha256>::new(Some(nonce), key)
        .expand(info, &mut derived)
        .expect("32 bytes is a valid HKDF-SHA256 length");
    Aes256Gcm::new_from_slice(&derived).expect("a 32-byte key")
}

/// Decodes base64 as `base64DecToArr` does: either flavour, padded or not.
fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    let normalized: String = text
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    URL_SAFE_NO_PAD
        .decode(normalized)
        .map_err(|e| format!("bad base64: {e}"))
}

/// Decrypts a stored value with the cookie's decoded JSON, as msal-browser
/// does on load: the reference a reader's own decryption is checked
/// against.
pub fn decrypt(
    cookie_json: &str,
    client_id: &str,
    storage_key: &str,
    stored: &str,
) -> Result<String, String> {
    let cookie: Value = serde_json::from_str(cookie_json).map_err(|e| format!("cookie: {e}"))?;
    let stored: Value = serde_json::from_str(stored).map_err(|e| format!("value: {e}"))?;
    let field = |v: &Value, name: &str| {
        v[name]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no `{name}`"))
    };
    if field(&cookie, "id")? != field(&stored, "id")? {
        return Err("encrypted with another key".to_owned());
    }
    let key = decode_base64(&field(&cookie, "key")?)?;
    let nonce = decode_base64(&field(&stored, "nonce")?)?;
    let data = decode_base64(&field(&stored, "data")?)?;
    let plain = derive_cipher(&key, &nonce, context(client_id, storage_key))
        .decrypt(Nonce::from_slice(&[0; 12]), data.as_slice())
        .map_err(|_| "authentication failed".to_owned())?;
    String::from_utf8(plain).map_err(|e| format!("not UTF-8: {e}"))
}

/// What [`CONSOLE_SNIPPET`] copies, given a page's `localStorage` and its
/// `document.cookie`: the snippet's logic, step for step.
pub fn snippet_capture(local_storage: &Map<String, Value>, document_cookie: &str) -> String {
    let mut cookies = Map::new();
    // `split(/; */)`: at each `;`, dropping the spaces after it.
    for cookie in document_cookie
        .split(';')
        .map(|c| c.trim_start_matches(' '))
    {
        let mut parts = cookie.split('=');
        let name = parts.next().unwrap_or_default();
        if name != ENCRYPTION_COOKIE {
            continue;
        }
        let value = parts.collect::<Vec<_>>().join("=");
        let decoded = percent_decode_str(&value)
            .decode_utf8()
            .expect("the fixture's own cookie is valid UTF-8")
            .into_owned();
        cookies.insert(name.to_owned(), Value::String(decoded));
    }
    json!({"localStorage": local_storage, "cookies": cookies}).to_string()
}

enum Entry {
    Access {
        account: Account,
        secret: String,
        target: String,
        expires_on: u64,
    },
    Refresh {
        account: Account,
        secret: String,
        expires_on: Option<u64>,
    },
    Id {
        account: Account,
        secret: String,
    },
}

/// A teams.live.com MSAL cache under construction.
pub struct MsalCache {
    client_id: String,
    environment: String,
    schema: KeySchema,
    key: Option<CacheKey>,
    junk: bool,
    accounts: Vec<Account>,
    entries: Vec<Entry>,
}

impl Default for MsalCache {
    fn default() -> Self {
        Self::new()
    }
}

impl MsalCache {
    /// An empty, unencrypted, unversioned cache for the teams.live.com
    /// client, with the non-MSAL entries a real page also has.
    pub fn new() -> Self {
        Self {
            client_id: TEAMS_WEB_CLIENT_ID.to_owned(),
            environment: DEFAULT_ENVIRONMENT.to_owned(),
            schema: KeySchema::Unversioned,
            key: None,
            junk: true,
            accounts: Vec::new(),
            entries: Vec::new(),
        }
    }

    /// The cache of a web session that just signed in with `tokens` (from
    /// [`crate::identity::MsIdentity::issue_spa_tokens`]): the account,
    /// its id token, the `MBI_SSL` access token (target with the OIDC
    /// scopes, as MSAL stores it) and the refresh token.
    pub fn signed_in(tokens: &Tokens) -> Self {
        Self::new()
            .account(&tokens.account)
            .id_token(&tokens.account, &tokens.id_token)
            .access_token(
                &tokens.account,
                &tokens.access_token,
                TEAMS_SCOPES,
                tokens.access_expires_on,
            )
            .refresh_token(&tokens.account, &tokens.refresh_token, None)
    }

    /// Another client id (default [`TEAMS_WEB_CLIENT_ID`]).
    pub fn client_id(mut self, client_id: &str) -> Self {
        self.client_id = client_id.to_owned();
        self
    }

    /// Another key layout (default [`KeySchema::Unversioned`]).
    pub fn schema(mut self, schema: KeySchema) -> Self {
        self.schema = schema;
        self
    }

    /// Another `environment` (default [`DEFAULT_ENVIRONMENT`]; try
    /// `login.live.com` or `login.microsoftonline.com`).
    pub fn environment(mut self, environment: &str) -> Self {
        self.environment = environment.to_owned();
        self
    }

    /// Encrypts the account and credential values under a fresh key, as
    /// msal-browser 4+ does (pair it with [`KeySchema::V1`] or
    /// [`KeySchema::V2`] to be faithful).
    pub fn encrypted(self) -> Self {
        self.encrypted_with(CacheKey::random())
    }

    /// Encrypts under `key`.
    pub fn encrypted_with(mut self, key: CacheKey) -> Self {
        self.key = Some(key);
        self
    }

    /// Leaves out the non-MSAL entries.
    pub fn without_junk(mut self) -> Self {
        self.junk = false;
        self
    }

    /// Adds an account entry.
    pub fn account(mut self, account: &Account) -> Self {
        self.accounts.push(account.clone());
        self
    }

    /// Adds an access token whose `target` is `target` (space-separated
    /// scopes as granted, e.g. [`TEAMS_SCOPES`] or [`GRAPH_TARGET`]),
    /// expiring at `expires_on` (Unix seconds).
    pub fn access_token(
        mut self,
        account: &Account,
        secret: &str,
        target: &str,
        expires_on: u64,
    ) -> Self {
        self.entries.push(Entry::Access {
            account: account.clone(),
            secret: secret.to_owned(),
            target: target.to_owned(),
            expires_on,
        });
        self
    }

    /// Adds a refresh token, with the optional `expiresOn` newer MSAL
    /// versions write.
    pub fn refresh_token(
        mut self,
        account: &Account,
        secret: &str,
        expires_on: Option<u64>,
    ) -> Self {
        self.entries.push(Entry::Refresh {
            account: account.clone(),
            secret: secret.to_owned(),
            expires_on,
        });
        self
    }

    /// Adds an id token.
    pub fn id_token(mut self, account: &Account, secret: &str) -> Self {
        self.entries.push(Entry::Id {
            account: account.clone(),
            secret: secret.to_owned(),
        });
        self
    }

    /// The encryption key, if the cache is encrypted.
    pub fn encryption_key(&self) -> Option<&CacheKey> {
        self.key.as_ref()
    }

    /// The storage key of the first refresh token added: where a reader
    /// should find it (and, when encrypted, what decides its HKDF context).
    pub fn refresh_token_key(&self) -> Option<String> {
        self.entries.iter().find_map(|e| match e {
            Entry::Refresh { account, .. } => Some(self.key_of(account, "RefreshToken", "", "")),
            _ => None,
        })
    }

    fn key_of(&self, account: &Account, kind: &str, realm: &str, target: &str) -> String {
        self.schema.credential_key(
            account,
            &self.environment,
            kind,
            &self.client_id,
            realm,
            target,
        )
    }

    /// `Object.fromEntries(Object.entries(localStorage))` for the page:
    /// every value a string.
    pub fn local_storage(&self) -> Map<String, Value> {
        let now = now_secs();
        let env = self.environment.as_str();
        let versioned = self.schema != KeySchema::Unversioned;
        let mut storage = BTreeMap::new();
        let mut user_data = BTreeMap::new();
        let mut index = json!({"idToken": [], "accessToken": [], "refreshToken": []});
        let mut account_keys = Vec::new();

        for account in &self.accounts {
            let key = self.schema.account_key(account, env);
            let client_info = URL_SAFE_NO_PAD
                .encode(json!({"uid": account.uid(), "utid": account.tenant_id()}).to_string());
            let mut value = json!({
                "homeAccountId": account.home_account_id,
                "environment": env,
                "realm": account.tenant_id(),
                "localAccountId": account.uid(),
                "username": account.username,
                "authorityType": "MSA",
                "name": account.name,
                "clientInfo": client_info,
                "tenantProfiles": [{
                    "tenantId": account.tenant_id(),
                    "localAccountId": account.uid(),
                    "name": account.name,
                    "isHomeTenant": true,
                }],
            });
            if versioned {
                value["lastUpdatedAt"] = json!(now_millis().to_string());
            }
            account_keys.push(Value::String(key.clone()));
            user_data.insert(key, value);
        }

        for entry in &self.entries {
            let (key, mut value, list) = match entry {
                Entry::Access {
                    account,
                    secret,
                    target,
                    expires_on,
                } => (
                    self.key_of(account, "AccessToken", account.tenant_id(), target),
                    json!({
                        "homeAccountId": account.home_account_id,
                        "credentialType": "AccessToken",
                        "secret": secret,
                        "cachedAt": now.to_string(),
                        "expiresOn": expires_on.to_string(),
                        "extendedExpiresOn": expires_on.to_string(),
                        "environment": env,
                        "clientId": self.client_id,
                        "realm": account.tenant_id(),
                        "target": target,
                        "tokenType": "Bearer",
                    }),
                    "accessToken",
                ),
                Entry::Refresh {
                    account,
                    secret,
                    expires_on,
                } => {
                    let mut value = json!({
                        "credentialType": "RefreshToken",
                        "homeAccountId": account.home_account_id,
                        "environment": env,
                        "clientId": self.client_id,
                        "secret": secret,
                    });
                    if let Some(expires_on) = expires_on {
                        value["expiresOn"] = json!(expires_on.to_string());
                    }
                    (
                        self.key_of(account, "RefreshToken", "", ""),
                        value,
                        "refreshToken",
                    )
                }
                Entry::Id { account, secret } => (
                    self.key_of(account, "IdToken", account.tenant_id(), ""),
                    json!({
                        "credentialType": "IdToken",
                        "homeAccountId": account.home_account_id,
                        "environment": env,
                        "clientId": self.client_id,
                        "secret": secret,
                        "realm": account.tenant_id(),
                    }),
                    "idToken",
                ),
            };
            if versioned {
                value["lastUpdatedAt"] = json!(now_millis().to_string());
            }
            index[list]
                .as_array_mut()
                .expect("the index's lists")
                .push(Value::String(key.clone()));
            user_data.insert(key, value);
        }

        for (key, value) in user_data {
            let plain = value.to_string();
            let stored = match &self.key {
                Some(cache_key) => cache_key.encrypt(&self.client_id, &key, &plain),
                None => plain,
            };
            storage.insert(key, stored);
        }
        storage.insert(
            self.schema.token_keys_key(&self.client_id),
            index.to_string(),
        );
        storage.insert(
            self.schema.account_keys_key(),
            Value::Array(account_keys).to_string(),
        );
        storage.insert(
            "msal.version".to_owned(),
            self.schema.msal_version().to_owned(),
        );
        if self.junk {
            storage.extend(self.junk_entries());
        }
        storage
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect()
    }

    /// Entries a real teams.live.com page has beside MSAL's, including
    /// traps: one whose key contains the client id but isn't a credential,
    /// one that isn't JSON, and Teams' own encrypted skypetoken.
    fn junk_entries(&self) -> Vec<(String, String)> {
        let mut rng = rand::rng();
        let random_b64 = |n: usize, rng: &mut rand::rngs::ThreadRng| {
            let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            STANDARD.encode(bytes)
        };
        let first = self.accounts.first();
        let mut junk = vec![
            ("i18nextLng".to_owned(), "en-US".to_owned()),
            ("ECS.canary".to_owned(), "true".to_owned()),
            (
                "tmp.auth.v1.GLOBAL.ExportedEncryptionKey.ExportedEncryptionKey".to_owned(),
                random_b64(32, &mut rng),
            ),
            (
                format!("msal.{}.active-account-filters", self.client_id),
                json!({
                    "homeAccountId": first.map(|a| a.home_account_id.as_str()),
                    "localAccountId": first.map(Account::uid),
                    "tenantId": first.map(Account::tenant_id),
                })
                .to_string(),
            ),
            (
                "Teams.Settings.Appearance".to_owned(),
                json!({"theme": "default", "density": "comfy"}).to_string(),
            ),
        ];
        if let Some(account) = first {
            junk.push((
                format!("tmp.auth.v1.{}.Discover.SKYPE-TOKEN", account.uid()),
                json!({"item": {
                    "encryptedToken": random_b64(96, &mut rng),
                    "iv": random_b64(16, &mut rng),
                    "expiration": now_millis() + 86_400_000,
                    "userDetails": {"id": format!("live:.cid.{:016x}", rng.random::<u64>())},
                }})
                .to_string(),
            ));
        }
        junk
    }

    /// The page's `document.cookie`: the encryption cookie (if encrypted)
    /// between two others, one with `=` in its value.
    pub fn document_cookie(&self) -> String {
        let mut cookies = vec!["MUID=0D3A5C9E1B2F4A6C8E0F1A2B3C4D5E6F".to_owned()];
        if let Some(key) = &self.key {
            cookies.push(format!("{ENCRYPTION_COOKIE}={}", key.cookie_value()));
        }
        cookies.push("MC1=GUID=4f1e2d3c&HASH=4f1e&LV=202611&V=4".to_owned());
        cookies.join("; ")
    }

    /// The text a user pastes into the helper page: exactly what
    /// [`CONSOLE_SNIPPET`] copies on a page with this cache.
    pub fn capture(&self) -> String {
        snippet_capture(&self.local_storage(), &self.document_cookie())
    }

    /// The bare `localStorage` object as JSON (what older instructions
    /// copied; the plugin accepts it too, unencrypted only).
    pub fn local_storage_json(&self) -> String {
        Value::Object(self.local_storage()).to_string()
    }
}

fn now_secs() -> u64 {
    now_millis() / 1000
}

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{CONSUMER_TENANT, MBI_SCOPE};

    fn ada() -> Account {
        Account {
            home_account_id: format!("00000000-0000-0000-0123-456789abcdef.{CONSUMER_TENANT}"),
            username: "ada@example.com".to_owned(),
            name: "Ada Lovelace".to_owned(),
        }
    }

    fn cache(schema: KeySchema) -> MsalCache {
        let ada = ada();
        MsalCache::new()
            .schema(schema)
            .account(&ada)
            .id_token(&ada, "eyJ.id.")
            .access_token(&ada, "EwA-mbi", TEAMS_SCOPES, 1_900_000_000)
            .access_token(&ada, "EwA-graph", GRAPH_TARGET, 1_900_000_000)
            .refresh_token(&ada, "M.C5_rt", None)
    }

    fn parse(value: &Value) -> Value {
        serde_json::from_str(value.as_str().expect("localStorage values are strings"))
            .expect("JSON")
    }

    #[test]
    fn msal_browser_encryption_matches_webcrypto() {
        // A vector from Node's WebCrypto running msal-browser's `encrypt`
        // steps: key bytes 0..32, nonce a0..af, context the client id.
        let cookie = r#"{"id":"k","key":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"}"#;
        let stored = r#"{"id":"k","nonce":"oKGio6SlpqeoqaqrrK2urw","data":"XxyFtsZgkmPTRQ-Na1FyAqW5VllExyRbx40GMR8HrEqOY3KwkDEbBIymWr4-sDV3W-7x9trzMkTXMz8Q2MU5-0WZ6wK3uw"}"#;
        let plain = r#"{"credentialType":"RefreshToken","secret":"M.C5_test"}"#;
        let key = format!("x-refreshtoken-{TEAMS_WEB_CLIENT_ID}----");
        assert_eq!(
            decrypt(cookie, TEAMS_WEB_CLIENT_ID, &key, stored).as_deref(),
            Ok(plain)
        );
        // A key without the client id uses an empty HKDF info.
        let stored = r#"{"id":"k","nonce":"oKGio6SlpqeoqaqrrK2urw","data":"1ruqEF9VcjoPCiesXNzDEuInzG596qqOBf0WNHCPrNvgXXJdPYH7BYF1y7R2lYE7d3V2n5FqVSM0LY6oZzWMwRQoW_RP1Q"}"#;
        assert_eq!(
            decrypt(cookie, TEAMS_WEB_CLIENT_ID, "an-account-key", stored).as_deref(),
            Ok(plain)
        );
    }

    #[test]
    fn the_unversioned_layout_has_the_v3_index_and_dash_keys() {
        let storage = cache(KeySchema::Unversioned).local_storage();
        let index = parse(&storage[&format!("msal.token.keys.{TEAMS_WEB_CLIENT_ID}")]);
        // The refresh token's key is lowercase, `-`-joined, empty fields kept.
        let rt_key = index["refreshToken"][0].as_str().unwrap();
        assert_eq!(
            rt_key,
            format!(
                "00000000-0000-0000-0123-456789abcdef.{CONSUMER_TENANT}-login.windows.net-refreshtoken-{TEAMS_WEB_CLIENT_ID}----"
            )
        );
        assert_eq!(parse(&storage[rt_key])["secret"], "M.C5_rt");
        // The MBI access token's target keeps its case in the value, not the key.
        let at_keys: Vec<&str> = index["accessToken"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        assert_eq!(at_keys.len(), 2);
        let mbi = at_keys
            .iter()
            .find(|k| k.contains("mbi_ssl"))
            .expect("an MBI_SSL key");
        assert!(mbi.ends_with(&format!("-{}--", TEAMS_SCOPES.to_lowercase())));
        let value = parse(&storage[*mbi]);
        assert!(value["target"].as_str().unwrap().contains(MBI_SCOPE));
        assert_eq!(value["expiresOn"], "1900000000");
        // The account index names the account, whose authority is MSA.
        let accounts = parse(&storage["msal.account.keys"]);
        let account = parse(&storage[accounts[0].as_str().unwrap()]);
        assert_eq!(account["authorityType"], "MSA");
        // Every value, junk included, is a string.
        assert!(storage.values().all(Value::is_string));
        assert!(storage.contains_key("i18nextLng"));
    }

    #[test]
    fn the_v2_layout_joins_keys_with_bars() {
        let storage = cache(KeySchema::V2).local_storage();
        let index = parse(&storage[&format!("msal.2.token.keys.{TEAMS_WEB_CLIENT_ID}")]);
        // The key has the field reports' shape.
        assert_eq!(
            index["refreshToken"][0],
            format!(
                "msal.2|00000000-0000-0000-0123-456789abcdef.{CONSUMER_TENANT}|login.windows.net|refreshtoken|{TEAMS_WEB_CLIENT_ID}|||"
            )
        );
        assert!(storage.contains_key("msal.2.account.keys"));
    }

    #[test]
    fn an_encrypted_cache_decrypts_with_the_captured_cookie() {
        let cache = cache(KeySchema::V2).encrypted();
        let capture: Value = serde_json::from_str(&cache.capture()).unwrap();
        // The capture has exactly the snippet's two members.
        assert_eq!(capture.as_object().unwrap().len(), 2);
        let cookie = capture["cookies"][ENCRYPTION_COOKIE]
            .as_str()
            .expect("the cookie");
        assert_eq!(cookie, cache.encryption_key().unwrap().cookie_json());
        let storage = capture["localStorage"].as_object().unwrap();
        // The refresh token's value is an encrypted envelope ...
        let rt_key = cache.refresh_token_key().unwrap();
        let stored = storage[&rt_key].as_str().unwrap();
        let envelope: Value = serde_json::from_str(stored).unwrap();
        assert!(envelope["nonce"].is_string() && envelope["data"].is_string());
        assert!(!stored.contains("M.C5_rt"));
        // ... that the cookie's key opens.
        let plain = decrypt(cookie, TEAMS_WEB_CLIENT_ID, &rt_key, stored).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&plain).unwrap()["secret"],
            "M.C5_rt"
        );
        // Accounts are encrypted with an empty context, and open too.
        let account_key = parse(&storage["msal.2.account.keys"].clone())[0]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(!account_key.contains(TEAMS_WEB_CLIENT_ID));
        let plain = decrypt(
            cookie,
            TEAMS_WEB_CLIENT_ID,
            &account_key,
            storage[&account_key].as_str().unwrap(),
        )
        .unwrap();
        assert!(plain.contains("ada@example.com"));
        // The index stays plain.
        assert!(
            parse(&storage[&format!("msal.2.token.keys.{TEAMS_WEB_CLIENT_ID}")])["refreshToken"]
                .is_array()
        );
    }

    #[test]
    fn standard_base64_still_decrypts() {
        let key = CacheKey::random().with_flavour(Base64Flavour::Standard);
        let stored = key.encrypt(TEAMS_WEB_CLIENT_ID, TEAMS_WEB_CLIENT_ID, "{}");
        // The key is padded standard base64.
        assert!(key.cookie_json().contains("=\"}"));
        assert_eq!(
            decrypt(
                &key.cookie_json(),
                TEAMS_WEB_CLIENT_ID,
                TEAMS_WEB_CLIENT_ID,
                &stored
            )
            .as_deref(),
            Ok("{}")
        );
    }

    #[test]
    fn the_cookie_is_uri_encoded_as_document_cookie_shows_it() {
        let cache = MsalCache::new().encrypted();
        let raw = cache.encryption_key().unwrap().cookie_value();
        // encodeURIComponent leaves no `{`, `"` or `:` in it.
        assert!(raw.starts_with("%7B%22id%22%3A%22"));
        assert!(
            cache
                .document_cookie()
                .contains(&format!("; {ENCRYPTION_COOKIE}={raw}; "))
        );
        // An unencrypted page has no such cookie, so the capture's is empty.
        let capture: Value = serde_json::from_str(&MsalCache::new().capture()).unwrap();
        assert_eq!(capture["cookies"], json!({}));
    }
}
