//! Capabilities: what a plugin asks for, checked against what the operator
//! granted. A plugin gets a capability only if both say so; a request
//! beyond the grant refuses the whole load, naming the capability.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde_json::Value as JsonValue;

use crate::config::{HttpConfig, PluginGrants, RuntimeConfig};
use crate::manifest::{Manifest, SettingType, World, check_setting_value, is_localpart_prefix};

/// What a loaded plugin may do: the intersection of request and grant.
#[derive(Debug, Clone)]
pub struct Capabilities {
    /// URL patterns it may reach.
    pub http: Vec<UrlPattern>,
    /// Whether it may reach loopback and private addresses.
    pub private_networks: bool,
    /// Its memory cap, in bytes, across all of an instance's memories.
    pub memory_bytes: u64,
    /// The most timers per login.
    pub timers: u32,
    /// The deadline of each call into it.
    pub call_deadline: Duration,
    /// The largest response body it may receive.
    pub max_response_bytes: u64,
    /// Plugins it uses through the host, by interface.
    pub uses: BTreeMap<String, String>,
    /// The largest file it may bridge either way, in bytes.
    pub max_media_bytes: u64,
    /// For a connector: the localpart prefix of its remote users' Matrix
    /// accounts, as the operator granted it (or the manifest asked).
    pub ghost_prefix: Option<String>,
    /// The localpart pattern of the Matrix users it may manage through the
    /// host's application service, if the operator granted `appservice`.
    pub appservice_users: Option<String>,
}

/// Why a plugin's request could not be granted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// The manifest asks for more than the operator granted.
    #[error(
        "the plugin asks for capability `{capability}`, which the operator has not granted (grant it in [plugin.{plugin}] of the config)"
    )]
    NotGranted {
        /// The plugin id.
        plugin: String,
        /// The capability, as written in the manifest.
        capability: String,
    },
    /// A URL pattern does not parse.
    #[error("bad URL pattern `{pattern}`: {message}")]
    BadPattern {
        /// The pattern.
        pattern: String,
        /// What is wrong.
        message: String,
    },
    /// A grant is outside what the host allows.
    #[error("{0}")]
    Limit(String),
    /// The operator's settings do not fit the manifest's schema.
    #[error("setting `{name}`: {message}")]
    Setting {
        /// The setting.
        name: String,
        /// What is wrong.
        message: String,
    },
}

/// Checks the operator's settings against the manifest's schema and fills
/// in defaults. Returns each setting's value as JSON.
pub fn resolve_settings(
    manifest: &Manifest,
    operator: &toml::Table,
) -> Result<BTreeMap<String, JsonValue>, GrantError> {
    let setting_error = |name: &str, message: String| GrantError::Setting {
        name: name.to_owned(),
        message,
    };
    for name in operator.keys() {
        if !manifest.settings.contains_key(name) {
            let known: Vec<&str> = manifest.settings.keys().map(String::as_str).collect();
            return Err(setting_error(
                name,
                format!("unknown setting; the plugin declares: {}", known.join(", ")),
            ));
        }
    }
    let mut resolved = BTreeMap::new();
    for (name, spec) in &manifest.settings {
        let value = match (operator.get(name), &spec.default) {
            (Some(value), _) => {
                check_setting_value(spec.kind, value).map_err(|m| setting_error(name, m))?;
                value.clone()
            }
            (None, Some(default)) => default.clone(),
            (None, None) if spec.required => {
                return Err(setting_error(
                    name,
                    "required, but not set in the config".into(),
                ));
            }
            (None, None) => continue,
        };
        let json = serde_json::to_value(&value).map_err(|e| setting_error(name, e.to_string()))?;
        resolved.insert(name.clone(), json);
    }
    Ok(resolved)
}

/// Resolves the plugin's requests against the operator's grants.
pub fn resolve(
    manifest: &Manifest,
    settings: &BTreeMap<String, JsonValue>,
    grants: &PluginGrants,
    runtime: &RuntimeConfig,
    http: &HttpConfig,
) -> Result<Capabilities, GrantError> {
    let requested = &manifest.capabilities;
    let not_granted = |capability: String| GrantError::NotGranted {
        plugin: manifest.id.clone(),
        capability,
    };

    let granted_patterns: Vec<UrlPattern> = grants
        .http
        .iter()
        .map(|p| UrlPattern::parse(p))
        .collect::<Result<_, _>>()?;
    let mut allowed = Vec::new();
    for raw in &requested.http {
        let pattern = UrlPattern::parse(&substitute_setting(raw, manifest, settings)?)?;
        if !granted_patterns
            .iter()
            .any(|granted| granted.covers(&pattern))
        {
            // Name the setting a `${…}` request came from: the operator may
            // grant its origin or point the setting at one already granted.
            let from_setting = raw
                .strip_prefix("${")
                .and_then(|r| r.strip_suffix('}'))
                .map(|name| format!(" (from setting `{name}`)"))
                .unwrap_or_default();
            return Err(not_granted(format!("http: {pattern}{from_setting}")));
        }
        allowed.push(pattern);
    }

    // A limit the manifest asks for must be within the grant; without an
    // ask, the plugin gets the grant.
    let within = |name: &str, asked: Option<u64>, granted: u64| match asked {
        Some(asked) if asked > granted => {
            Err(not_granted(format!("{name} = {asked} (granted {granted})")))
        }
        Some(asked) => Ok(asked),
        None => Ok(granted),
    };
    let memory_mb = within(
        "memory-mb",
        requested.memory_mb,
        grants.memory_mb.unwrap_or(runtime.memory_mb),
    )?;
    let timers = within(
        "timers",
        requested.timers.map(u64::from),
        grants.timers.unwrap_or(runtime.timers).into(),
    )?;
    let call_deadline_ms = within(
        "call-deadline-ms",
        requested.call_deadline_ms,
        grants.call_deadline_ms.unwrap_or(runtime.call_deadline_ms),
    )?;

    // The operator may point an interface at another plugin than the one
    // the manifest names, e.g. a fork of the login provider.
    let mut uses = requested.uses.clone();
    for (interface, plugin) in &grants.uses {
        uses.insert(interface.clone(), plugin.clone());
    }

    if memory_mb > runtime.max_memory_mb {
        return Err(GrantError::Limit(format!(
            "memory-mb = {memory_mb} is above the host's max-memory-mb ({})",
            runtime.max_memory_mb
        )));
    }
    let ghost_prefix = match manifest.world {
        World::Connector => {
            let prefix = grants
                .ghost_prefix
                .clone()
                .unwrap_or_else(|| manifest.ghost_prefix());
            if !is_localpart_prefix(&prefix) {
                return Err(GrantError::Limit(format!(
                    "ghost-prefix `{prefix}`: use lowercase letters, digits and ._=-/"
                )));
            }
            Some(prefix)
        }
        _ => None,
    };

    let appservice_users = match (&requested.appservice_users, grants.appservice) {
        (_, false) if requested.appservice_users.is_some() => {
            return Err(GrantError::NotGranted {
                plugin: manifest.id.clone(),
                capability: "appservice".into(),
            });
        }
        (_, false) => None,
        (asked, true) => grants.appservice_users.clone().or_else(|| asked.clone()),
    };

    Ok(Capabilities {
        http: allowed,
        private_networks: grants.private_networks,
        memory_bytes: memory_mb << 20,
        timers: u32::try_from(timers).unwrap_or(u32::MAX),
        call_deadline: Duration::from_millis(call_deadline_ms),
        max_response_bytes: grants.max_response_bytes.unwrap_or(http.max_response_bytes),
        uses,
        max_media_bytes: grants.max_media_bytes.unwrap_or(runtime.max_media_mb << 20),
        ghost_prefix,
        appservice_users,
    })
}

/// Replaces a whole-pattern `${name}` with the origin of URL setting `name`.
fn substitute_setting(
    raw: &str,
    manifest: &Manifest,
    settings: &BTreeMap<String, JsonValue>,
) -> Result<String, GrantError> {
    let Some(name) = raw.strip_prefix("${").and_then(|r| r.strip_suffix('}')) else {
        return Ok(raw.to_owned());
    };
    let bad = |message: &str| GrantError::BadPattern {
        pattern: raw.to_owned(),
        message: message.to_owned(),
    };
    match manifest.settings.get(name) {
        Some(spec) if spec.kind == SettingType::Url => {}
        _ => return Err(bad("names no `url` setting of the manifest")),
    }
    let value = settings
        .get(name)
        .and_then(JsonValue::as_str)
        .ok_or_else(|| bad("the setting is not set"))?;
    let url = url::Url::parse(value).map_err(|e| bad(&e.to_string()))?;
    let host = url.host_str().ok_or_else(|| bad("the URL has no host"))?;
    let port = url
        .port_or_known_default()
        .ok_or_else(|| bad("the URL has no port"))?;
    Ok(format!("{}://{host}:{port}", url.scheme()))
}

/// A pattern of URL origins: `scheme://host[:port]`, where the scheme may
/// be `*`, the host `*` or `*.domain`, and the port `*`. Without a port,
/// the scheme's default port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlPattern {
    scheme: Option<String>,
    host: HostPattern,
    port: PortPattern,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    Exact(String),
    /// `*.example.com`, stored as `.example.com`.
    Subdomains(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PortPattern {
    Any,
    Default,
    Exact(u16),
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

impl UrlPattern {
    /// Parses a pattern.
    pub fn parse(raw: &str) -> Result<Self, GrantError> {
        let bad = |message: &str| GrantError::BadPattern {
            pattern: raw.to_owned(),
            message: message.to_owned(),
        };
        let (scheme, rest) = raw
            .split_once("://")
            .ok_or_else(|| bad("expected scheme://host[:port]"))?;
        let scheme = match scheme {
            "*" => None,
            "http" | "https" => Some(scheme.to_owned()),
            _ => return Err(bad("the scheme must be http, https or *")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('?') || rest.contains('@') {
            return Err(bad(
                "a pattern names an origin only: no path, query or user",
            ));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("unclosed IPv6 bracket"))?;
            (host.to_owned(), after.strip_prefix(':'))
        } else {
            match rest.rsplit_once(':') {
                Some((host, port)) => (host.to_owned(), Some(port)),
                None => (rest.to_owned(), None),
            }
        };
        let port = match port {
            None => PortPattern::Default,
            Some("*") => PortPattern::Any,
            Some(p) => PortPattern::Exact(p.parse().map_err(|_| bad("bad port"))?),
        };
        if port == PortPattern::Default && scheme.is_none() {
            return Err(bad("with scheme `*`, give a port or `*`"));
        }
        let host = host.to_ascii_lowercase();
        let host = if host == "*" {
            HostPattern::Any
        } else if let Some(domain) = host.strip_prefix("*.") {
            HostPattern::Subdomains(format!(".{domain}"))
        } else if host.is_empty() || host.contains('*') {
            return Err(bad("a host is a name, `*`, or `*.domain`"));
        } else {
            HostPattern::Exact(host)
        };
        Ok(Self { scheme, host, port })
    }

    /// Whether it names a loopback or private host (`localhost`, or an
    /// address literal the egress rule counts as private), which only a
    /// grant with `private-networks` may reach.
    pub fn names_private_host(&self) -> bool {
        let HostPattern::Exact(host) = &self.host else {
            return false;
        };
        host == "localhost"
            || host.ends_with(".localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(crate::net::is_private)
    }

    fn effective_port(&self, scheme: &str) -> Option<u16> {
        match self.port {
            PortPattern::Any => None,
            PortPattern::Exact(p) => Some(p),
            PortPattern::Default => default_port(scheme),
        }
    }

    /// Whether every URL this pattern matches is also matched by `self`.
    pub fn covers(&self, other: &UrlPattern) -> bool {
        let scheme_ok = match (&self.scheme, &other.scheme) {
            (None, _) => true,
            (Some(a), Some(b)) => a == b,
            (Some(_), None) => false,
        };
        let host_ok = match (&self.host, &other.host) {
            (HostPattern::Any, _) => true,
            (HostPattern::Exact(a), HostPattern::Exact(b)) => a == b,
            (HostPattern::Subdomains(suffix), HostPattern::Exact(b)) => {
                b.ends_with(suffix.as_str())
            }
            (HostPattern::Subdomains(a), HostPattern::Subdomains(b)) => b.ends_with(a.as_str()),
            _ => false,
        };
        let port_ok = match &self.port {
            PortPattern::Any => true,
            _ => {
                // Compare effective ports for each scheme `other` allows.
                let schemes: Vec<&str> = match &other.scheme {
                    Some(s) => vec![s.as_str()],
                    None => vec!["http", "https"],
                };
                schemes.iter().all(|scheme| {
                    let mine = self.effective_port(scheme);
                    let theirs = other.effective_port(scheme);
                    mine.is_some() && mine == theirs
                })
            }
        };
        scheme_ok && host_ok && port_ok
    }

    /// Whether `url` matches.
    pub fn matches(&self, url: &url::Url) -> bool {
        let scheme = url.scheme();
        if self.scheme.as_deref().is_some_and(|s| s != scheme) {
            return false;
        }
        let Some(host) = url.host_str() else {
            return false;
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let host_ok = match &self.host {
            HostPattern::Any => true,
            HostPattern::Exact(h) => *h == host,
            HostPattern::Subdomains(suffix) => host.ends_with(suffix.as_str()),
        };
        let port_ok = match self.port {
            PortPattern::Any => true,
            _ => self.effective_port(scheme) == url.port_or_known_default(),
        };
        host_ok && port_ok
    }
}

impl fmt::Display for UrlPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme.as_deref().unwrap_or("*"))?;
        match &self.host {
            HostPattern::Any => f.write_str("*")?,
            HostPattern::Exact(h) if h.contains(':') => write!(f, "[{h}]")?,
            HostPattern::Exact(h) => f.write_str(h)?,
            HostPattern::Subdomains(s) => write!(f, "*{s}")?,
        }
        match self.port {
            PortPattern::Any => f.write_str(":*"),
            PortPattern::Default => Ok(()),
            PortPattern::Exact(p) => write!(f, ":{p}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_naming_loopback_or_private_hosts_are_recognized() {
        for private in [
            "http://127.0.0.1:*",
            "http://localhost:8080",
            "http://[::1]:80",
            "https://10.1.2.3",
            "http://app.localhost",
        ] {
            assert!(
                UrlPattern::parse(private).unwrap().names_private_host(),
                "{private}"
            );
        }
        for public in [
            "https://example.com",
            "https://*.example.com",
            "http://*:*",
            "https://8.8.8.8",
        ] {
            assert!(
                !UrlPattern::parse(public).unwrap().names_private_host(),
                "{public}"
            );
        }
    }

    fn pattern(s: &str) -> UrlPattern {
        UrlPattern::parse(s).unwrap()
    }

    fn url(s: &str) -> url::Url {
        url::Url::parse(s).unwrap()
    }

    #[test]
    fn a_pattern_matches_only_its_origin() {
        let p = pattern("https://teams.live.com");
        assert!(p.matches(&url("https://teams.live.com/api/x?y=1")));
        // Another scheme, port or host does not match.
        assert!(!p.matches(&url("http://teams.live.com/")));
        assert!(!p.matches(&url("https://teams.live.com:8443/")));
        assert!(!p.matches(&url("https://teams.live.com.evil.net/")));
    }

    #[test]
    fn wildcards_match_subdomains_and_ports_but_not_the_bare_domain_suffix_trick() {
        let p = pattern("https://*.live.com");
        assert!(p.matches(&url("https://teams.live.com/")));
        // `notlive.com` ends with `live.com` but is not a subdomain of it.
        assert!(!p.matches(&url("https://notlive.com/")));
        let any_port = pattern("http://127.0.0.1:*");
        assert!(any_port.matches(&url("http://127.0.0.1:8090/api")));
        assert!(!any_port.matches(&url("http://127.0.0.2:8090/api")));
    }

    #[test]
    fn a_grant_covers_narrower_requests_only() {
        let grant = pattern("http://127.0.0.1:*");
        // A specific port on the granted host is covered.
        assert!(grant.covers(&pattern("http://127.0.0.1:8090")));
        // Another host, or https, is not.
        assert!(!grant.covers(&pattern("http://127.0.0.2:8090")));
        assert!(!grant.covers(&pattern("https://127.0.0.1:8090")));
        // A wildcard request is not covered by an exact grant.
        assert!(!pattern("https://a.example.com").covers(&pattern("https://*.example.com")));
        assert!(pattern("*://*:*").covers(&pattern("https://*.example.com")));
    }

    #[test]
    fn patterns_with_paths_or_credentials_are_refused() {
        for bad in [
            "https://x.com/path",
            "https://user@x.com",
            "ftp://x.com",
            "x.com",
            "https://*x.com",
        ] {
            assert!(UrlPattern::parse(bad).is_err(), "{bad}");
        }
    }

    fn manifest(extra: &str) -> Manifest {
        Manifest::parse(&format!(
            "id = \"echo\"\nversion = \"0.1.0\"\napi = \"0.1\"\nworld = \"connector\"\n{extra}"
        ))
        .unwrap()
    }

    /// Resolves `manifest` with the operator's `settings` (TOML) under
    /// `grants`, with the default limits.
    fn resolve_under(
        manifest: &Manifest,
        settings: &str,
        grants: &PluginGrants,
    ) -> Result<Capabilities, GrantError> {
        let operator: toml::Table = toml::from_str(settings).unwrap();
        let settings = resolve_settings(manifest, &operator).unwrap();
        resolve(
            manifest,
            &settings,
            grants,
            &RuntimeConfig::default(),
            &HttpConfig::default(),
        )
    }

    fn loopback_grant() -> PluginGrants {
        PluginGrants {
            http: vec!["http://127.0.0.1:*".into()],
            ..Default::default()
        }
    }

    #[test]
    fn a_request_beyond_the_grant_is_refused_naming_the_capability() {
        let manifest = manifest("[capabilities]\nhttp = [\"https://api.example.com\"]\n");
        let error = resolve_under(&manifest, "", &PluginGrants::default()).unwrap_err();
        // The error names the plugin and the exact capability.
        assert_eq!(
            error,
            GrantError::NotGranted {
                plugin: "echo".into(),
                capability: "http: https://api.example.com".into()
            }
        );
    }

    #[test]
    fn more_memory_than_granted_is_refused() {
        let manifest = manifest("[capabilities]\nmemory-mb = 512\n");
        let error = resolve_under(&manifest, "", &PluginGrants::default()).unwrap_err();
        assert!(error.to_string().contains("memory-mb = 512"), "{error}");
    }

    #[test]
    fn a_setting_placeholder_requests_exactly_the_configured_origin() {
        let manifest = manifest(
            "[capabilities]\nhttp = [\"${base-url}\"]\n[settings.base-url]\ntype = \"url\"\nrequired = true\n",
        );
        let caps = resolve_under(
            &manifest,
            "base-url = \"http://127.0.0.1:8090/x\"",
            &loopback_grant(),
        )
        .unwrap();
        // The plugin may reach the configured origin and nothing else.
        assert!(caps.http[0].matches(&url("http://127.0.0.1:8090/api/chats")));
        assert!(!caps.http[0].matches(&url("http://127.0.0.1:9999/")));
    }

    #[test]
    fn a_setting_placeholder_beyond_the_grant_is_refused_naming_the_setting() {
        let manifest = manifest(
            "[capabilities]\nhttp = [\"${media-url}\"]\n[settings.media-url]\ntype = \"url\"\ndefault = \"https://*.asm.skype.com\"\n",
        );
        let error = resolve_under(&manifest, "", &loopback_grant()).unwrap_err();
        assert_eq!(
            error,
            GrantError::NotGranted {
                plugin: "echo".into(),
                capability: "http: https://*.asm.skype.com:443 (from setting `media-url`)".into()
            }
        );
    }

    #[test]
    fn settings_are_checked_against_the_schema() {
        let manifest = manifest(
            "[settings.n]\ntype = \"integer\"\ndefault = 3\n[settings.u]\ntype = \"url\"\nrequired = true\n",
        );
        // A missing required setting is named.
        let error = resolve_settings(&manifest, &toml::Table::new()).unwrap_err();
        assert!(
            matches!(&error, GrantError::Setting { name, .. } if name == "u"),
            "{error}"
        );
        // An unknown setting is named.
        let operator: toml::Table = toml::from_str("u = \"https://x.com\"\nbogus = 1").unwrap();
        let error = resolve_settings(&manifest, &operator).unwrap_err();
        assert!(
            matches!(&error, GrantError::Setting { name, .. } if name == "bogus"),
            "{error}"
        );
        // Defaults fill in.
        let operator: toml::Table = toml::from_str("u = \"https://x.com\"").unwrap();
        let settings = resolve_settings(&manifest, &operator).unwrap();
        assert_eq!(settings["n"], serde_json::json!(3));
    }
}
