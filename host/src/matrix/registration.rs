//! The appservice registration: the YAML file the homeserver loads.
//!
//! `weft generate-registration` writes it from the config and the ghost
//! namespaces that the plugins in the plugins directory claim. Running it
//! again keeps the tokens, so only the namespaces change; the homeserver
//! must then be restarted to read it.

use std::path::Path;

use anyhow::{Context, Result};
use rand::Rng;
use rand::distr::Alphanumeric;
use ruma::api::appservice::{Namespace, Namespaces, Registration, RegistrationInit};

use weft_runtime::manifest::{Manifest, World};
use weft_runtime::plugin::{PluginSource, components_in};

use super::ids::namespace_regex;
use crate::config::{AppserviceConfig, HomeserverConfig};

/// A fresh random token.
pub fn random_token() -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(64)
        .map(char::from)
        .collect()
}

/// Builds the registration for `ghost_prefixes` and the localpart
/// patterns of plugins granted `appservice` (`account_patterns`), keeping
/// the tokens of `existing` if given.
pub fn build(
    homeserver: &HomeserverConfig,
    appservice: &AppserviceConfig,
    ghost_prefixes: &[String],
    account_patterns: &[String],
    existing: Option<&Registration>,
) -> Registration {
    let mut users = vec![Namespace::new(
        true,
        format!(
            "@{}:{}",
            regex::escape(&appservice.bot_username),
            regex::escape(&homeserver.domain)
        ),
    )];
    for prefix in ghost_prefixes {
        users.push(Namespace::new(
            true,
            namespace_regex(prefix, &homeserver.domain),
        ));
    }
    for pattern in account_patterns {
        users.push(Namespace::new(
            true,
            format!("^@(?:{pattern}):{}$", regex::escape(&homeserver.domain)),
        ));
    }
    let mut namespaces = Namespaces::new();
    namespaces.users = users;
    let mut registration: Registration = RegistrationInit {
        id: appservice.id.clone(),
        url: Some(appservice.address.clone()),
        as_token: existing.map_or_else(random_token, |r| r.as_token.clone()),
        hs_token: existing.map_or_else(random_token, |r| r.hs_token.clone()),
        sender_localpart: appservice.bot_username.clone(),
        namespaces,
        rate_limited: Some(false),
        protocols: None,
    }
    .into();
    // Read receipts and typing of the owners in their portals.
    registration.receive_ephemeral = true;
    registration
}

/// The double-puppeting registration: every user of `homeserver`,
/// non-exclusively, and no traffic (`url: null`). Its token lets the
/// bridge send as the bridge's users; keeps the tokens of `existing`.
pub fn build_double_puppet(
    homeserver: &HomeserverConfig,
    appservice: &AppserviceConfig,
    existing: Option<&Registration>,
) -> Registration {
    let mut namespaces = Namespaces::new();
    namespaces.users = vec![Namespace::new(
        false,
        format!("@.*:{}", regex::escape(&homeserver.domain)),
    )];
    RegistrationInit {
        id: format!("{}-doublepuppet", appservice.id),
        url: None,
        as_token: existing.map_or_else(random_token, |r| r.as_token.clone()),
        hs_token: existing.map_or_else(random_token, |r| r.hs_token.clone()),
        sender_localpart: existing.map_or_else(
            || format!("{}-doublepuppet-{}", appservice.id, &random_token()[..8]).to_lowercase(),
            |r| r.sender_localpart.clone(),
        ),
        namespaces,
        rate_limited: Some(false),
        protocols: None,
    }
    .into()
}

/// The user namespaces the plugins of a plugins directory need.
#[derive(Debug, Default)]
pub struct PluginNamespaces {
    /// The connectors' ghost prefixes.
    pub ghost_prefixes: Vec<String>,
    /// The localpart patterns of plugins granted `appservice`.
    pub account_patterns: Vec<String>,
    /// Files whose manifest does not read, and why.
    pub failures: Vec<(std::path::PathBuf, String)>,
}

/// The namespaces of the plugins in the plugins directory of `config`
/// (from their manifests and the operator's grants, without compiling
/// them).
pub fn namespaces_in(config: &crate::config::Config) -> PluginNamespaces {
    let mut found = PluginNamespaces::default();
    let components = components_in(&config.plugins.dir).unwrap_or_default();
    for path in components {
        let manifest = PluginSource::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|s| Manifest::parse(&s.manifest).map_err(|e| e.to_string()));
        let manifest = match manifest {
            Ok(manifest) => manifest,
            Err(error) => {
                found.failures.push((path, error));
                continue;
            }
        };
        let grants = config.grants(&manifest.id);
        if manifest.world == World::Connector {
            let prefix = grants
                .ghost_prefix
                .clone()
                .unwrap_or_else(|| manifest.ghost_prefix());
            if !found.ghost_prefixes.contains(&prefix) {
                found.ghost_prefixes.push(prefix);
            }
        }
        let pattern = grants
            .appservice_users
            .or_else(|| manifest.capabilities.appservice_users.clone());
        if grants.appservice
            && let Some(pattern) = pattern
            && !found.account_patterns.contains(&pattern)
        {
            found.account_patterns.push(pattern);
        }
    }
    found
}

/// What `generate` wrote.
pub struct Generated {
    /// The bridge's registration.
    pub registration: Registration,
    /// The ghost prefixes it covers.
    pub prefixes: Vec<String>,
    /// The localpart patterns of plugins' own users it covers.
    pub accounts: Vec<String>,
    /// The double-puppeting registration's file, if double puppeting is
    /// on.
    pub double_puppet: Option<std::path::PathBuf>,
}

/// Builds the registration for `config` and the connectors in its
/// plugins directory, keeping the tokens of the existing file, and writes
/// it; with double puppeting on, writes its registration too.
pub fn generate(config: &crate::config::Config) -> Result<Generated> {
    let (Some(homeserver), Some(appservice)) = (&config.homeserver, &config.appservice) else {
        anyhow::bail!("the config has no [homeserver] and [appservice] sections");
    };
    let found = namespaces_in(config);
    for (path, error) in &found.failures {
        tracing::warn!(path = %path.display(), %error, "skipping a plugin whose manifest does not read");
    }
    let existing = read(&appservice.registration).ok();
    let registration = build(
        homeserver,
        appservice,
        &found.ghost_prefixes,
        &found.account_patterns,
        existing.as_ref(),
    );
    write(&appservice.registration, &registration)?;
    let double_puppet = if config.bridge.double_puppet {
        let path = &appservice.double_puppet_registration;
        let existing = read(path).ok();
        write(
            path,
            &build_double_puppet(homeserver, appservice, existing.as_ref()),
        )?;
        Some(path.clone())
    } else {
        None
    };
    Ok(Generated {
        registration,
        prefixes: found.ghost_prefixes,
        accounts: found.account_patterns,
        double_puppet,
    })
}

/// Reads a registration file.
pub fn read(path: &Path) -> Result<Registration> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read the registration {}; create it with `weft generate-registration`",
            path.display()
        )
    })?;
    serde_yaml_ng::from_str(&text)
        .with_context(|| format!("{} is not a valid registration", path.display()))
}

/// Writes a registration file readable only by its owner (it holds the
/// tokens).
pub fn write(path: &Path, registration: &Registration) -> Result<()> {
    let text = serde_yaml_ng::to_string(registration)?;
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Whether an exclusive user namespace of `registration` covers every
/// ghost with `prefix` on `domain`.
pub fn covers(registration: &Registration, prefix: &str, domain: &str) -> bool {
    let sample = format!("@{prefix}x:{domain}");
    registration.namespaces.users.iter().any(|ns| {
        ns.exclusive
            && regex::Regex::new(&format!("^(?:{})$", ns.regex))
                .is_ok_and(|re| re.is_match(&sample))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configs() -> (HomeserverConfig, AppserviceConfig) {
        let homeserver = HomeserverConfig {
            url: "http://127.0.0.1:8008".into(),
            domain: "example.org".into(),
        };
        let appservice: AppserviceConfig =
            toml::from_str("listen = \"127.0.0.1:29300\"\naddress = \"http://127.0.0.1:29300\"")
                .unwrap();
        (homeserver, appservice)
    }

    #[test]
    fn regenerating_keeps_the_tokens_and_updates_namespaces() {
        let (homeserver, appservice) = configs();
        let first = build(&homeserver, &appservice, &["echo_".into()], &[], None);
        let second = build(
            &homeserver,
            &appservice,
            &["echo_".into(), "teams_".into()],
            &[],
            Some(&first),
        );
        // The homeserver keeps trusting the same tokens...
        assert_eq!(first.as_token, second.as_token);
        assert_eq!(first.hs_token, second.hs_token);
        assert_ne!(first.as_token, first.hs_token);
        // ...and the new plugin's ghosts are covered.
        assert!(!covers(&first, "teams_", "example.org"));
        assert!(covers(&second, "teams_", "example.org"));
    }

    #[test]
    fn plugin_accounts_are_claimed_exclusively_on_the_domain_and_nothing_else() {
        let (homeserver, appservice) = configs();
        let registration = build(&homeserver, &appservice, &[], &["[0-9]+".into()], None);
        let accounts = registration
            .namespaces
            .users
            .iter()
            .find(|ns| ns.regex.contains("[0-9]+"))
            .expect("the plugin's users are in the registration");
        assert!(accounts.exclusive);
        let regex = regex::Regex::new(&format!("^(?:{})$", accounts.regex)).unwrap();
        assert!(regex.is_match("@42:example.org"));
        assert!(!regex.is_match("@42x:example.org"));
        assert!(!regex.is_match("@42:example.org.evil"));
        assert!(!regex.is_match("@weftbot:example.org"));
    }

    #[test]
    fn the_double_puppet_registration_claims_every_local_user_without_traffic() {
        let (homeserver, appservice) = configs();
        let first = build_double_puppet(&homeserver, &appservice, None);
        assert_eq!(first.url, None);
        let users = &first.namespaces.users;
        assert_eq!(users.len(), 1);
        assert!(!users[0].exclusive);
        assert_eq!(users[0].regex, "@.*:example\\.org");
        // Regenerating keeps its tokens and its sender.
        let second = build_double_puppet(&homeserver, &appservice, Some(&first));
        assert_eq!(first.as_token, second.as_token);
        assert_eq!(first.sender_localpart, second.sender_localpart);
        // And its YAML says `url: null`, which Synapse requires.
        let yaml = serde_yaml_ng::to_string(&first).unwrap();
        assert!(yaml.contains("url: null"), "{yaml}");
    }

    #[test]
    fn the_registration_round_trips_through_yaml() {
        let (homeserver, appservice) = configs();
        let registration = build(&homeserver, &appservice, &["echo_".into()], &[], None);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registration.yaml");
        write(&path, &registration).unwrap();
        let read_back = read(&path).unwrap();
        assert_eq!(read_back.as_token, registration.as_token);
        assert_eq!(read_back.sender_localpart, "weftbot");
        assert_eq!(read_back.rate_limited, Some(false));
        // Only the owner may read the tokens.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }
}
