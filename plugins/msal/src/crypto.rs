//! Decryption of msal-browser's encrypted `localStorage` values (v4 on).
//!
//! msal-browser keeps a random base key in the session cookie
//! `msal.cache.encryption` (`{"id","key"}`, the key base64) and stores
//! every user-data value as `{"id","nonce","data"}`: the AES-256 key of
//! one value is HKDF-SHA256(ikm = base key, salt = nonce, info = context),
//! where the context is the app's client id for entries whose cache key
//! contains it and empty otherwise, and `data` is AES-256-GCM with a
//! 12-byte zero IV (safe only because every value gets a fresh key).
//! msal-browser writes base64url without padding; the scheme's write-ups
//! show standard base64 with padding, so both are read.
//!
//! Pure functions: no host calls, so they are unit-tested natively.

use aes_gcm::aead::Aead;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hkdf::Hkdf;
use sha2::Sha256;

/// Why a value or the cookie could not be decrypted or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CryptoError {
    /// The cookie is not `{"id","key"}` JSON (even after URL-decoding).
    #[error("the `msal.cache.encryption` cookie is not the expected {{\"id\",\"key\"}} JSON")]
    BadCookie,
    /// A field is not base64.
    #[error("`{0}` is not base64")]
    BadBase64(&'static str),
    /// The key does not open the value: another session's key, or a
    /// different context.
    #[error("the key does not decrypt the value")]
    WrongKey,
    /// The plaintext is not UTF-8 text.
    #[error("the decrypted value is not text")]
    NotText,
}

/// The cache's base key, from the `msal.cache.encryption` cookie.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct CacheKey {
    /// The key's id; encrypted values name the id of the key that wrote
    /// them.
    pub(crate) id: String,
    bytes: Vec<u8>,
}

// The key bytes are a secret: never print them.
impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheKey")
            .field("id", &self.id)
            .field("len", &self.bytes.len())
            .finish()
    }
}

impl CacheKey {
    /// Reads the cookie's value: `{"id","key"}` JSON, possibly still
    /// URL-encoded as `document.cookie` holds it (up to twice), possibly
    /// as a JSON string of that JSON.
    pub(crate) fn from_cookie(value: &str) -> Result<Self, CryptoError> {
        let mut text = value.trim().to_owned();
        for _ in 0..2 {
            if text.starts_with('{') || text.starts_with('"') {
                break;
            }
            text = percent_decode(&text);
        }
        // A cookie pasted as a JSON string: unwrap it once.
        if text.starts_with('"')
            && let Ok(inner) = serde_json::from_str::<String>(&text)
        {
            text = inner;
        }
        #[derive(serde::Deserialize)]
        struct Cookie {
            id: String,
            key: String,
        }
        let cookie: Cookie = serde_json::from_str(&text).map_err(|_| CryptoError::BadCookie)?;
        let bytes = decode_base64(&cookie.key).ok_or(CryptoError::BadBase64("key"))?;
        if bytes.is_empty() {
            return Err(CryptoError::BadBase64("key"));
        }
        Ok(Self {
            id: cookie.id,
            bytes,
        })
    }

    /// A key from raw parts (tests build caches with it).
    #[cfg(test)]
    pub(crate) fn new(id: &str, bytes: &[u8]) -> Self {
        Self {
            id: id.to_owned(),
            bytes: bytes.to_vec(),
        }
    }
}

/// An encrypted value, `{"id","nonce","data"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Encrypted {
    /// The id of the key that wrote it.
    pub(crate) id: String,
    nonce: String,
    data: String,
}

impl Encrypted {
    /// The encrypted value in `value`, if it is one: an object whose `id`,
    /// `nonce` and `data` are non-empty strings (MSAL's own test for it).
    pub(crate) fn from_json(value: &serde_json::Value) -> Option<Self> {
        let field = |name: &str| {
            value
                .get(name)
                .and_then(serde_json::Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        Some(Self {
            id: field("id")?,
            nonce: field("nonce")?,
            data: field("data")?,
        })
    }
}

/// Decrypts `value` with `key` under `context` (the client id, or empty).
pub(crate) fn decrypt(
    key: &CacheKey,
    value: &Encrypted,
    context: &str,
) -> Result<String, CryptoError> {
    let nonce = decode_base64(&value.nonce).ok_or(CryptoError::BadBase64("nonce"))?;
    let data = decode_base64(&value.data).ok_or(CryptoError::BadBase64("data"))?;
    let cipher = derive_cipher(&key.bytes, &nonce, context)?;
    let plain = cipher
        .decrypt(Nonce::from_slice(&[0u8; 12]), data.as_slice())
        .map_err(|_| CryptoError::WrongKey)?;
    String::from_utf8(plain).map_err(|_| CryptoError::NotText)
}

/// The per-value AES-256-GCM cipher: HKDF-SHA256 of the base key.
fn derive_cipher(base_key: &[u8], nonce: &[u8], context: &str) -> Result<Aes256Gcm, CryptoError> {
    let mut okm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(nonce), base_key)
        .expand(context.as_bytes(), &mut okm)
        .map_err(|_| CryptoError::WrongKey)?;
    Aes256Gcm::new_from_slice(&okm).map_err(|_| CryptoError::WrongKey)
}

/// Decodes base64 in either alphabet, with or without padding, ignoring
/// surrounding whitespace.
pub(crate) fn decode_base64(text: &str) -> Option<Vec<u8>> {
    const LENIENT: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);
    let text = text.trim();
    if text.contains(['-', '_']) {
        URL_SAFE.decode(text).ok()
    } else {
        STANDARD.decode(text).ok()
    }
}

/// Undoes `encodeURIComponent`: `%XX` escapes become bytes; anything else,
/// `+` included, stays. Invalid escapes are kept as they are.
pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        let escaped = (byte == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(decoded) => {
                out.push(decoded);
                i += 3;
            }
            None => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Encrypts like msal-browser (for tests): returns `(nonce, data)`, base64
/// in the chosen alphabet.
#[cfg(test)]
pub(crate) fn encrypt_for_test(
    base_key: &[u8],
    nonce: &[u8],
    context: &str,
    plaintext: &str,
    url_safe: bool,
) -> (String, String) {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let cipher = derive_cipher(base_key, nonce, context).expect("a 32-byte key derives");
    let data = cipher
        .encrypt(Nonce::from_slice(&[0u8; 12]), plaintext.as_bytes())
        .expect("AES-GCM encrypts");
    if url_safe {
        (URL_SAFE_NO_PAD.encode(nonce), URL_SAFE_NO_PAD.encode(data))
    } else {
        (STANDARD.encode(nonce), STANDARD.encode(data))
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::STANDARD;

    use super::*;

    const KEY: [u8; 32] = [7; 32];
    const CLIENT: &str = "4b3e8f46-56d3-427f-b1e2-d239b2ea6bca";

    fn encrypted(nonce: &str, data: &str) -> Encrypted {
        Encrypted {
            id: "k1".into(),
            nonce: nonce.into(),
            data: data.into(),
        }
    }

    #[test]
    fn a_value_encrypted_like_msal_browser_decrypts_with_its_context() {
        let (nonce, data) = encrypt_for_test(&KEY, &[3; 16], CLIENT, "{\"a\":1}", true);
        let key = CacheKey::new("k1", &KEY);
        // The client id is the HKDF info of app-specific entries.
        assert_eq!(
            decrypt(&key, &encrypted(&nonce, &data), CLIENT).as_deref(),
            Ok("{\"a\":1}")
        );
        // Another context derives another key, which GCM rejects.
        assert_eq!(
            decrypt(&key, &encrypted(&nonce, &data), ""),
            Err(CryptoError::WrongKey)
        );
    }

    #[test]
    fn a_vector_from_webcrypto_running_msal_browsers_steps_decrypts() {
        // Computed with Node's WebCrypto following msal-browser's
        // `encrypt` (the same vector as examples/fake-teams/src/msal_cache.rs): key
        // bytes 0..32, nonce a0..af, base64url without padding.
        let key = CacheKey::from_cookie(
            r#"{"id":"k","key":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"}"#,
        )
        .unwrap();
        let plain = r#"{"credentialType":"RefreshToken","secret":"M.C5_test"}"#;
        let bound = encrypted(
            "oKGio6SlpqeoqaqrrK2urw",
            "XxyFtsZgkmPTRQ-Na1FyAqW5VllExyRbx40GMR8HrEqOY3KwkDEbBIymWr4-sDV3W-7x9trzMkTXMz8Q2MU5-0WZ6wK3uw",
        );
        // Bound to the client id.
        assert_eq!(decrypt(&key, &bound, CLIENT).as_deref(), Ok(plain));
        // The same plaintext under the empty (shared-entry) context.
        let shared = encrypted(
            "oKGio6SlpqeoqaqrrK2urw",
            "1ruqEF9VcjoPCiesXNzDEuInzG596qqOBf0WNHCPrNvgXXJdPYH7BYF1y7R2lYE7d3V2n5FqVSM0LY6oZzWMwRQoW_RP1Q",
        );
        assert_eq!(decrypt(&key, &shared, "").as_deref(), Ok(plain));
    }

    #[test]
    fn standard_padded_base64_decrypts_as_well_as_url_safe() {
        let (nonce, data) = encrypt_for_test(&KEY, &[9; 32], "", "plain", false);
        let key = CacheKey::new("k1", &KEY);
        // The documented scheme's standard alphabet with padding works.
        assert_eq!(
            decrypt(&key, &encrypted(&nonce, &data), "").as_deref(),
            Ok("plain")
        );
    }

    #[test]
    fn a_wrong_key_is_reported_not_panicked_on() {
        let (nonce, data) = encrypt_for_test(&KEY, &[1; 16], "", "x", true);
        let other = CacheKey::new("k1", &[8; 32]);
        assert_eq!(
            decrypt(&other, &encrypted(&nonce, &data), ""),
            Err(CryptoError::WrongKey)
        );
        // Garbage base64 is named, not a panic.
        assert_eq!(
            decrypt(&other, &encrypted("!!", &data), ""),
            Err(CryptoError::BadBase64("nonce"))
        );
    }

    #[test]
    fn the_cookie_is_read_plain_url_encoded_or_as_a_json_string() {
        let json = format!("{{\"id\":\"k1\",\"key\":\"{}\"}}", STANDARD.encode(KEY));
        let expected = CacheKey::new("k1", &KEY);
        // As `document.cookie` holds it when MSAL set it with encodeURIComponent.
        let encoded = json
            .replace('{', "%7B")
            .replace('}', "%7D")
            .replace('"', "%22")
            .replace(':', "%3A")
            .replace(',', "%2C")
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D");
        assert_eq!(CacheKey::from_cookie(&json), Ok(expected.clone()));
        assert_eq!(CacheKey::from_cookie(&encoded), Ok(expected.clone()));
        // Encoded twice.
        let twice = encoded.replace('%', "%25");
        assert_eq!(CacheKey::from_cookie(&twice), Ok(expected.clone()));
        // As a JSON string of the JSON.
        let quoted = serde_json::to_string(&json).unwrap();
        assert_eq!(CacheKey::from_cookie(&quoted), Ok(expected));
        // Not JSON at all.
        assert_eq!(
            CacheKey::from_cookie("nonsense"),
            Err(CryptoError::BadCookie)
        );
    }

    #[test]
    fn only_objects_with_id_nonce_and_data_are_encrypted_values() {
        let value = serde_json::json!({"id": "k", "nonce": "n", "data": "d"});
        assert!(Encrypted::from_json(&value).is_some());
        // A credential is not.
        let credential = serde_json::json!({"credentialType": "AccessToken", "secret": "s"});
        assert!(Encrypted::from_json(&credential).is_none());
        // Empty fields mean "not encrypted" to MSAL too.
        let empty = serde_json::json!({"id": "", "nonce": "n", "data": "d"});
        assert!(Encrypted::from_json(&empty).is_none());
    }

    #[test]
    fn percent_decoding_keeps_plus_and_broken_escapes() {
        // `+` is a base64 character here, not a space.
        assert_eq!(percent_decode("a+b%2Fc"), "a+b/c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
