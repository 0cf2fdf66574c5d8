//! Fuzz target (`WEFT_FUZZ_CASES`, see `weft-fuzz`): the MSAL cache
//! parser, on any capture a user (or an attacker with the helper page's
//! URL) could paste. It may refuse; it may not panic.

use proptest::prelude::*;

use crate::cache::{Cache, Capture};

const CLIENT: &str = "4b3e8f46-56d3-427f-b1e2-d239b2ea3bca";

/// localStorage keys of the layouts MSAL.js has used (§1).
const KEYS: &[&str] = &[
    "localStorage",
    "cookies",
    "kind",
    "capture",
    "browser-cache",
    "msal.cache.encryption",
    "msal.token.keys.4b3e8f46-56d3-427f-b1e2-d239b2ea3bca",
    "msal.1.token.keys.4b3e8f46-56d3-427f-b1e2-d239b2ea3bca",
    "msal.2.token.keys.4b3e8f46-56d3-427f-b1e2-d239b2ea3bca",
    "msal.account.keys",
    "msal.1.active-account",
    "accessToken",
    "refreshToken",
    "idToken",
    "00000000-0000-0000-1234-567890abcdef.9188040d-6c67-4c5b-b112-36a304b66dad-login.windows.net-accesstoken-4b3e8f46-56d3-427f-b1e2-d239b2ea3bca-9188040d-6c67-4c5b-b112-36a304b66dad-service::api.fl.spaces.skype.com::mbi_ssl--",
    "homeAccountId",
    "environment",
    "credentialType",
    "clientId",
    "secret",
    "realm",
    "target",
    "expiresOn",
    "extendedExpiresOn",
    "cachedAt",
    "tokenType",
    "id",
    "nonce",
    "data",
    "lastUpdatedAt",
];
const STRINGS: &[&str] = &[
    "AccessToken",
    "RefreshToken",
    "IdToken",
    "login.windows.net",
    "Bearer",
    "service::api.fl.spaces.skype.com::MBI_SSL",
    "1700000000",
    "99999999999999999999",
    "-1",
    "{\"id\":\"x\",\"nonce\":\"AAAA\",\"data\":\"AAAA\"}",
    "eyJhbGciOiJub25lIn0.e30.",
    "not base64 !!",
    "msal.cache.encryption=%7B%22id%22%3A%22x%22%7D",
    CLIENT,
    "",
];

proptest! {
    #![proptest_config(weft_fuzz::config())]

    #[test]
    fn any_capture_parses_or_is_refused_never_a_panic(capture in weft_fuzz::json(KEYS, STRINGS)) {
        let Ok(capture) = Capture::from_value(&capture) else { return Ok(()) };
        let Ok(cache) = Cache::load(&capture, &[CLIENT]) else { return Ok(()) };
        let scopes = ["service::api.fl.spaces.skype.com::MBI_SSL".to_owned()];
        let _ = cache.pick(&scopes, CLIENT, 1_700_000_000);
    }

    #[test]
    fn any_text_pasted_as_a_capture_is_refused_or_read_never_a_panic(text in "\\PC{0,400}") {
        if let Ok(value) = serde_json::from_str(&text)
            && let Ok(capture) = Capture::from_value(&value)
        {
            let _ = Cache::load(&capture, &[CLIENT]);
        }
    }
}
