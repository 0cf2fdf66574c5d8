//! The operator's settings (declared with their defaults in `weft.toml`;
//! the same defaults are here so a missing or mistyped value never stops
//! a login).

/// The settings the flows and token functions read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    /// The identity platform's base URL, without a trailing `/`.
    pub(crate) authority_url: String,
    /// The teams.live.com web app's client id.
    pub(crate) web_client_id: String,
    /// The client id of the device-code login.
    pub(crate) device_code_client_id: String,
    /// The resource the device-code login asks for.
    pub(crate) device_code_resource: String,
    /// The Origin sent with a web (SPA) refresh token.
    pub(crate) spa_origin: String,
    /// The web app the browser-session logins open.
    pub(crate) web_url: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            authority_url: "https://login.microsoftonline.com".into(),
            web_client_id: "4b3e8f46-56d3-427f-b1e2-d239b2ea6bca".into(),
            device_code_client_id: "8ec6bc83-69c8-4392-8f08-b3c986009232".into(),
            device_code_resource: "https://api.spaces.skype.com".into(),
            spa_origin: "https://teams.live.com".into(),
            web_url: "https://teams.live.com/v2".into(),
        }
    }
}

impl Settings {
    /// The operator's values, each falling back to its default.
    pub(crate) fn load() -> Self {
        let defaults = Self::default();
        let get = |name: &str, default: String| match weft_sdk::config::get::<String>(name) {
            Ok(Some(value)) if !value.trim().is_empty() => value.trim().to_owned(),
            Ok(_) => default,
            Err(error) => {
                weft_sdk::warn!("setting `{name}` ignored: {error}");
                default
            }
        };
        Self {
            authority_url: get("authority-url", defaults.authority_url)
                .trim_end_matches('/')
                .to_owned(),
            web_client_id: get("web-client-id", defaults.web_client_id),
            device_code_client_id: get("device-code-client-id", defaults.device_code_client_id),
            device_code_resource: get("device-code-resource", defaults.device_code_resource),
            spa_origin: get("spa-origin", defaults.spa_origin)
                .trim_end_matches('/')
                .to_owned(),
            web_url: get("web-url", defaults.web_url),
        }
    }
}
