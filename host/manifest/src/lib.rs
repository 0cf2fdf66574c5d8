//! The plugin manifest: what a plugin is and what it asks for.
//!
//! It is TOML, either beside the `.wasm` (`echo.toml` for `echo.wasm`) or
//! embedded in the component's `weft-manifest` custom section by
//! `cargo weft build`; a file beside the component wins.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The API versions of `weft:plugin` this host serves.
pub const SUPPORTED_API: &[&str] = &["0.1"];

/// The custom section that carries an embedded manifest.
pub const MANIFEST_SECTION: &str = "weft-manifest";

/// A parsed, checked manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Manifest {
    /// The plugin id: lowercase letters, digits, `-` and `_`, at most 32.
    pub id: String,
    /// The plugin's version.
    pub version: semver::Version,
    /// The `weft:plugin` API version it was built against, e.g. `0.1`.
    pub api: String,
    /// Its role.
    pub world: World,
    /// A human name.
    #[serde(default)]
    pub name: Option<String>,
    /// A sentence about it.
    #[serde(default)]
    pub description: Option<String>,
    /// What it asks for.
    #[serde(default)]
    pub capabilities: RequestedCapabilities,
    /// Connector details; only for connectors.
    #[serde(default)]
    pub connector: Option<ConnectorInfo>,
    /// The login flows it offers.
    #[serde(default)]
    pub login_flows: Vec<LoginFlowInfo>,
    /// Its settings, by name.
    #[serde(default)]
    pub settings: BTreeMap<String, SettingSpec>,
}

/// The three plugin roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum World {
    /// Bridges a network; one instance per login.
    Connector,
    /// Runs login flows and token functions for connectors.
    LoginProvider,
    /// Issues credentials.
    CredentialProvider,
}

impl World {
    /// The world's name in WIT.
    pub fn wit_name(self) -> &'static str {
        match self {
            Self::Connector => "connector",
            Self::LoginProvider => "login-provider",
            Self::CredentialProvider => "credential-provider",
        }
    }

    /// The interfaces a component of this world must export.
    pub fn required_exports(self) -> &'static [&'static str] {
        match self {
            Self::Connector => &["network-api", "login-flow"],
            Self::LoginProvider => &["login-flow", "tokens"],
            Self::CredentialProvider => &["credentials"],
        }
    }
}

/// What a plugin asks for.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RequestedCapabilities {
    /// URL patterns it needs to reach; `${setting}` stands for the origin
    /// of a `url` setting.
    #[serde(default)]
    pub http: Vec<String>,
    /// The memory it needs, in MiB.
    pub memory_mb: Option<u64>,
    /// The most timers a login needs.
    pub timers: Option<u32>,
    /// The per-call deadline it needs, in milliseconds.
    pub call_deadline_ms: Option<u64>,
    /// Plugins it uses through the host, by interface (`tokens = "msal"`).
    #[serde(default)]
    pub uses: BTreeMap<String, String>,
    /// The Matrix users it manages through the host's application service
    /// (the `appservice` import): a regular expression their localparts
    /// match in full, e.g. `[0-9]+`. The registration claims them
    /// exclusively.
    pub appservice_users: Option<String>,
}

/// Connector details.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConnectorInfo {
    /// The network's name, shown to users.
    pub network_name: String,
    /// Whether every portal belongs to exactly one login (the receiver),
    /// so two logins never share a room.
    #[serde(default = "default_true")]
    pub split_portals: bool,
    /// The localpart prefix of its ghosts, e.g. `teams_`.
    pub ghost_prefix: Option<String>,
}

fn default_true() -> bool {
    true
}

/// A login flow.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LoginFlowInfo {
    /// The flow id the plugin's `start` receives.
    pub id: String,
    /// A short name. A connector's flow from its provider may leave it
    /// out to use the provider's.
    #[serde(default)]
    pub name: String,
    /// A sentence about it; likewise.
    #[serde(default)]
    pub description: String,
    /// For a connector: the flow of the same id is run by the login
    /// provider it uses for `tokens`, and the connector finishes the login
    /// (`provider-login.finish`).
    #[serde(default)]
    pub from_provider: bool,
}

/// The type of a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SettingType {
    /// Text.
    String,
    /// An `http` or `https` URL.
    Url,
    /// A whole number.
    Integer,
    /// `true` or `false`.
    Boolean,
}

/// One declared setting.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SettingSpec {
    /// Its type.
    #[serde(rename = "type")]
    pub kind: SettingType,
    /// Whether the operator must set it.
    #[serde(default)]
    pub required: bool,
    /// The value when the operator sets none.
    pub default: Option<toml::Value>,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Whether the value is a secret (never logged or shown).
    #[serde(default)]
    pub secret: bool,
}

/// Why a manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Not TOML, or missing or mistyped fields.
    #[error("the manifest is not valid: {0}")]
    Invalid(String),
    /// The API version is not one this host serves.
    #[error("the plugin needs API {api}, but this host serves {}", SUPPORTED_API.join(", "))]
    UnsupportedApi {
        /// What the manifest asked for.
        api: String,
    },
    /// A field has a bad value.
    #[error("manifest field `{field}`: {message}")]
    BadField {
        /// The field.
        field: String,
        /// What is wrong.
        message: String,
    },
}

impl Manifest {
    /// Parses and checks a manifest.
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        let manifest: Manifest =
            toml::from_str(text).map_err(|e| ManifestError::Invalid(e.message().to_owned()))?;
        manifest.check()?;
        Ok(manifest)
    }

    fn check(&self) -> Result<(), ManifestError> {
        let bad = |field: &str, message: &str| ManifestError::BadField {
            field: field.to_owned(),
            message: message.to_owned(),
        };
        if !is_plugin_id(&self.id) {
            return Err(bad(
                "id",
                "use 1-32 lowercase letters, digits, `-` or `_`, starting with a letter or digit",
            ));
        }
        if !SUPPORTED_API.contains(&self.api.as_str()) {
            return Err(ManifestError::UnsupportedApi {
                api: self.api.clone(),
            });
        }
        match (self.world, &self.connector) {
            (World::Connector, _) => {
                if !is_localpart_prefix(&self.ghost_prefix()) {
                    return Err(bad(
                        "connector.ghost-prefix",
                        "use lowercase letters, digits and ._=-/",
                    ));
                }
            }
            (_, Some(_)) => {
                return Err(bad("connector", "only connectors have a [connector] table"));
            }
            (_, None) => {}
        }
        if !self.capabilities.uses.is_empty() && self.world != World::Connector {
            return Err(bad(
                "capabilities.uses",
                "only a connector uses other plugins",
            ));
        }
        if self.capabilities.uses.values().any(|p| *p == self.id) {
            return Err(bad("capabilities.uses", "a plugin cannot use itself"));
        }
        let mut flow_ids = std::collections::BTreeSet::new();
        for flow in &self.login_flows {
            if flow.id.is_empty()
                || !flow
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(bad("login-flows.id", "use letters, digits, `-` or `_`"));
            }
            if flow.from_provider {
                if self.world != World::Connector {
                    return Err(bad(
                        "login-flows.from-provider",
                        "only a connector's flow can come from a provider",
                    ));
                }
                if !self.capabilities.uses.contains_key("tokens") {
                    return Err(bad(
                        "login-flows.from-provider",
                        "name the provider in capabilities.uses.tokens",
                    ));
                }
            } else if flow.name.is_empty() || flow.description.is_empty() {
                return Err(bad(
                    "login-flows",
                    &format!("flow `{}` needs a name and a description", flow.id),
                ));
            }
            if !flow_ids.insert(&flow.id) {
                return Err(bad(
                    "login-flows.id",
                    &format!("`{}` appears twice", flow.id),
                ));
            }
        }
        for (name, spec) in &self.settings {
            if let Some(default) = &spec.default {
                check_setting_value(spec.kind, default)
                    .map_err(|m| bad(&format!("settings.{name}.default"), &m))?;
            }
        }
        Ok(())
    }

    /// The localpart prefix of the plugin's ghosts that the manifest asks
    /// for; the operator's grant may replace it
    /// (the host's `Capabilities::ghost_prefix`).
    pub fn ghost_prefix(&self) -> String {
        self.connector
            .as_ref()
            .and_then(|c| c.ghost_prefix.clone())
            .unwrap_or_else(|| format!("{}_", self.id))
    }

    /// Whether the plugin splits portals by login.
    pub fn split_portals(&self) -> bool {
        self.connector.as_ref().is_none_or(|c| c.split_portals)
    }

    /// The network's display name.
    pub fn network_name(&self) -> String {
        self.connector
            .as_ref()
            .map(|c| c.network_name.clone())
            .or_else(|| self.name.clone())
            .unwrap_or_else(|| self.id.clone())
    }
}

/// Whether `id` is a valid plugin id.
pub fn is_plugin_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Whether `prefix` can start Matrix localparts: non-empty, and only the
/// characters the spec allows.
pub fn is_localpart_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._=-/".contains(&b))
}

/// Checks that `value` has the setting's type.
pub fn check_setting_value(kind: SettingType, value: &toml::Value) -> Result<(), String> {
    match (kind, value) {
        (SettingType::String, toml::Value::String(_))
        | (SettingType::Integer, toml::Value::Integer(_))
        | (SettingType::Boolean, toml::Value::Boolean(_)) => Ok(()),
        (SettingType::Url, toml::Value::String(s)) => match url::Url::parse(s) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(()),
            Ok(_) => Err(format!("`{s}` is not an http(s) URL")),
            Err(e) => Err(format!("`{s}` is not a URL: {e}")),
        },
        (kind, value) => {
            Err(format!("expected {kind:?}, found {}", value.type_str()).to_lowercase())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const MINIMAL: &str =
        "id = \"echo\"\nversion = \"0.1.0\"\napi = \"0.1\"\nworld = \"connector\"\n";

    #[test]
    fn a_minimal_connector_manifest_gets_sensible_defaults() {
        let manifest = Manifest::parse(MINIMAL).unwrap();
        // Ghosts default to `<id>_` and portals are split by login.
        assert_eq!(manifest.ghost_prefix(), "echo_");
        assert!(manifest.split_portals());
        assert_eq!(manifest.network_name(), "echo");
    }

    #[test]
    fn an_unsupported_api_version_is_refused_with_both_versions_named() {
        let text = MINIMAL.replace("api = \"0.1\"", "api = \"7.0\"");
        let error = Manifest::parse(&text).unwrap_err();
        assert_eq!(error, ManifestError::UnsupportedApi { api: "7.0".into() });
        // The message says what the host serves.
        assert!(error.to_string().contains("0.1"));
    }

    #[test]
    fn ids_that_could_escape_a_namespace_are_refused() {
        for id in ["", "Echo", "../x", "a:b", "x".repeat(33).as_str()] {
            let text = MINIMAL.replace("id = \"echo\"", &format!("id = {id:?}"));
            // Ids end up in keys and Matrix localparts, so only a safe
            // alphabet is allowed.
            assert!(
                matches!(Manifest::parse(&text), Err(ManifestError::BadField { .. })),
                "{id}"
            );
        }
    }

    #[test]
    fn a_default_of_the_wrong_type_is_refused() {
        let text = format!("{MINIMAL}[settings.poll]\ntype = \"integer\"\ndefault = \"soon\"\n");
        let error = Manifest::parse(&text).unwrap_err();
        assert!(
            error.to_string().contains("settings.poll.default"),
            "{error}"
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let text = format!("{MINIMAL}colour = \"red\"\n");
        assert!(
            matches!(Manifest::parse(&text), Err(ManifestError::Invalid(m)) if m.contains("colour"))
        );
    }
}

/// Fuzz target: the manifest parser (`WEFT_FUZZ_CASES`, see `weft-fuzz`).
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::Manifest;

    /// The pieces of a manifest, for spliced inputs.
    const PIECES: &[&str] = &[
        "\n",
        "id = ",
        "\"echo\"",
        "api = \"0.1\"\n",
        "world = ",
        "\"connector\"",
        "\"login-provider\"",
        "[capabilities]\n",
        "http = [\"${base-url}\"]\n",
        "memory-mb = ",
        "timers = ",
        "uses = { tokens = \"msal\" }\n",
        "[connector]\n",
        "ghost-prefix = ",
        "[[login-flows]]\n",
        "from-provider = true\n",
        "[settings.base-url]\n",
        "type = \"url\"\n",
        "default = ",
        "required = true\n",
        "\"",
        "[",
        "]",
        "{",
        "}",
        "=",
        "'",
        "\\u0000",
        "${",
        "99999999999999999999",
        "-1",
        "1e400",
        "\"\\ud800\"",
    ];

    proptest! {
        #![proptest_config(weft_fuzz::config())]

        #[test]
        fn any_text_is_a_manifest_or_an_error_never_a_panic(text in weft_fuzz::spliced(PIECES)) {
            let _ = Manifest::parse(&text);
        }

        #[test]
        fn a_valid_manifest_with_one_line_replaced_is_a_manifest_or_an_error(
            line in 0usize..64,
            replacement in weft_fuzz::spliced(PIECES),
        ) {
            let text = format!(
                "{}[capabilities]\nhttp = [\"${{base-url}}\"]\ntimers = 2\n[settings.base-url]\ntype = \"url\"\nrequired = true\n",
                super::tests::MINIMAL
            );
            let mut lines: Vec<&str> = text.lines().collect();
            let at = line % lines.len();
            lines[at] = &replacement;
            let _ = Manifest::parse(&lines.join("\n"));
        }
    }
}
