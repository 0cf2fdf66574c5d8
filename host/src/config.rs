//! The operator's configuration: one TOML file (`weft.toml`).
//!
//! Unknown keys are errors, so a typo never silently falls back to a
//! default. Every limit has a default chosen for a small host running many
//! idle logins; each is documented where it is declared.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;
pub use weft_runtime::{HttpConfig, PluginGrants, RuntimeConfig};

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Where the host keeps its database and compile cache. Relative paths
    /// are relative to the config file.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Plugin loading.
    #[serde(default)]
    pub plugins: PluginsConfig,
    /// Limits for wasm execution.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// Limits for plugins' outgoing HTTP.
    #[serde(default)]
    pub http: HttpConfig,
    /// The admin API.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// The operator's grants and settings per plugin id.
    #[serde(default)]
    pub plugin: BTreeMap<String, PluginGrants>,
    /// The homeserver; absent means the host runs without a Matrix side.
    #[serde(default)]
    pub homeserver: Option<HomeserverConfig>,
    /// The appservice; required with `homeserver`.
    #[serde(default)]
    pub appservice: Option<AppserviceConfig>,
    /// The provisioning API.
    #[serde(default)]
    pub provisioning: ProvisioningConfig,
    /// An OAuth 2.0 server whose tokens the provisioning and admin APIs
    /// accept.
    #[serde(default)]
    pub oauth: Option<OAuthConfig>,
    /// Bridge behaviour.
    #[serde(default)]
    pub bridge: BridgeConfig,
    /// Logging.
    #[serde(default)]
    pub logging: LoggingConfig,
    /// The key that encrypts tokens at rest.
    #[serde(default)]
    pub secrets: SecretsConfig,
}

/// The key that encrypts login metadata and plugins' KV at rest.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SecretsConfig {
    /// The key's file (64 hex digits); created with a new key, readable
    /// by the host's user only, if missing. Default: `secret.key` in the
    /// data directory.
    pub key_file: Option<PathBuf>,
    /// Keys being rotated out: values sealed with them still open, and
    /// the host re-seals them with the current key at start.
    #[serde(default)]
    pub previous_key_files: Vec<PathBuf>,
}

impl Config {
    /// The file of the key that seals secrets at rest.
    pub fn key_file(&self) -> PathBuf {
        self.secrets
            .key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("secret.key"))
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}

/// Plugin loading.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PluginsConfig {
    /// Directory of plugin components (`*.wasm`, each with an embedded or
    /// a sibling `*.toml` manifest).
    #[serde(default = "default_plugins_dir")]
    pub dir: PathBuf,
    /// Watch the directory and load, upgrade or unload as files change.
    #[serde(default = "yes")]
    pub watch: bool,
}

fn default_plugins_dir() -> PathBuf {
    PathBuf::from("plugins")
}

fn yes() -> bool {
    true
}

impl Default for PluginsConfig {
    fn default() -> Self {
        Self {
            dir: default_plugins_dir(),
            watch: true,
        }
    }
}

/// The admin API: loading plugins and managing logins, for operators.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AdminConfig {
    /// Where it listens; keep it on loopback.
    pub listen: SocketAddr,
    /// The bearer token it requires (at least 16 characters).
    pub token: String,
}

/// The homeserver the appservice belongs to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HomeserverConfig {
    /// Its client-server API base URL.
    pub url: String,
    /// Its server name, the part after `:` in user ids.
    pub domain: String,
}

/// The appservice.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AppserviceConfig {
    /// Where the appservice (and provisioning) HTTP server listens.
    pub listen: SocketAddr,
    /// The URL the homeserver uses to reach it.
    pub address: String,
    /// The registration file (written by `weft generate-registration`).
    #[serde(default = "default_registration")]
    pub registration: PathBuf,
    /// The appservice id in the registration.
    #[serde(default = "default_appservice_id")]
    pub id: String,
    /// The bridge bot's localpart.
    #[serde(default = "default_bot")]
    pub bot_username: String,
    /// The bridge bot's display name.
    #[serde(default = "default_bot_name")]
    pub bot_displayname: String,
    /// The largest request body the server accepts.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// The double-puppeting registration (written by `weft
    /// generate-registration` when `[bridge] double-puppet` is on).
    #[serde(default = "default_double_puppet_registration")]
    pub double_puppet_registration: PathBuf,
    /// The URL at which users' browsers reach this listener, for the
    /// login pages it serves (`{public-url}/login/...`), e.g. behind a
    /// reverse proxy. Unset, it is `http://` and the listen address.
    #[serde(default)]
    pub public_url: Option<String>,
}

fn default_double_puppet_registration() -> PathBuf {
    PathBuf::from("doublepuppet.yaml")
}

fn default_registration() -> PathBuf {
    PathBuf::from("registration.yaml")
}
fn default_appservice_id() -> String {
    "weft".into()
}
fn default_bot() -> String {
    "weftbot".into()
}
fn default_bot_name() -> String {
    "weft bridge bot".into()
}
fn default_max_body() -> usize {
    // Synapse batches up to 100 PDUs and 100 EDUs per transaction; 8 MiB
    // leaves room for large events without accepting anything unbounded.
    8 << 20
}

/// The provisioning API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ProvisioningConfig {
    /// The shared secret; shorter than 16 characters or `disable` turns
    /// the API off. Matrix access tokens work too (checked with `/whoami`).
    #[serde(default)]
    pub shared_secret: Option<String>,
    /// Whether users may authenticate with their own Matrix access token.
    #[serde(default = "yes")]
    pub allow_matrix_auth: bool,
    /// How long a user token found valid is trusted for requests that
    /// only read, in seconds. Requests that change something always check
    /// the token afresh.
    #[serde(default = "default_token_cache_secs")]
    pub token_cache_secs: u64,
    /// Failed authentications one client address may make per minute;
    /// past that it gets 429 without its tokens being checked.
    #[serde(default = "default_failed_auth_per_minute")]
    pub failed_auth_per_minute: u32,
}

fn default_token_cache_secs() -> u64 {
    30
}

fn default_failed_auth_per_minute() -> u32 {
    30
}

impl Default for ProvisioningConfig {
    fn default() -> Self {
        Self {
            shared_secret: None,
            allow_matrix_auth: true,
            token_cache_secs: default_token_cache_secs(),
            failed_auth_per_minute: default_failed_auth_per_minute(),
        }
    }
}

/// An OAuth 2.0 authorization server whose access tokens weft accepts,
/// checked by introspection (RFC 7662): for example the Matrix
/// Authentication Service of a homeserver that delegates its auth.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OAuthConfig {
    /// The issuer; its discovery document (`/.well-known/openid-configuration`
    /// or `/.well-known/oauth-authorization-server`) names the endpoints.
    pub issuer: String,
    /// weft's client id at the issuer (introspection is authenticated).
    pub client_id: String,
    /// weft's client secret.
    pub client_secret: String,
    /// A token must name this audience (`aud`), if set.
    pub audience: Option<String>,
    /// A token must carry this scope to use the provisioning API, if set.
    pub required_scope: Option<String>,
    /// The claim of the introspection response that holds the Matrix user:
    /// a full user id, or a localpart on [homeserver] domain.
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    /// The longest an introspection result is trusted, in seconds (never
    /// past the token's own `exp`).
    #[serde(default = "default_oauth_cache_secs")]
    pub max_cache_secs: u64,
    /// A token with this scope may use the admin API, if set.
    pub admin_scope: Option<String>,
    /// Makes the bot an OAuth client: its own homeserver calls carry a
    /// `client_credentials` token of weft's client, for this device
    /// (scopes `urn:matrix:client:api:*` and the device's). Registering
    /// users and acting as ghosts keep the appservice token.
    pub bot_device: Option<String>,
}

fn default_user_claim() -> String {
    "username".into()
}

fn default_oauth_cache_secs() -> u64 {
    60
}

/// Bridge behaviour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct BridgeConfig {
    /// Who may use the bridge: `*`, server names, or user ids. Empty means
    /// the homeserver's own users.
    pub permitted: Vec<String>,
    /// How many logins one Matrix user may have; 0 means no limit.
    pub max_logins_per_user: usize,
    /// How long a login process may take, in seconds.
    pub login_timeout_secs: u64,
    /// A login process nobody has touched for this long ends, in seconds
    /// (a long-polling client touches it every 25 s).
    pub login_idle_timeout_secs: u64,
    /// How many login processes one user may have in progress at once.
    /// Each holds a live instance, so one user must not be able to take
    /// them all.
    pub max_login_processes_per_user: usize,
    /// How many login processes may be in progress at once, host-wide.
    pub max_login_processes: usize,
    /// How many recent messages a new portal gets from the connector's
    /// history; 0 turns backfill off.
    pub backfill_messages: u32,
    /// Send what users sent from the remote app as their own Matrix
    /// account (double puppeting), through a second appservice
    /// registration; off, such messages come from their remote ghost.
    pub double_puppet: bool,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            permitted: Vec::new(),
            max_logins_per_user: 0,
            login_timeout_secs: 30 * 60,
            login_idle_timeout_secs: 10 * 60,
            max_login_processes_per_user: 3,
            max_login_processes: 256,
            backfill_messages: 20,
            double_puppet: false,
        }
    }
}

/// Logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LoggingConfig {
    /// A `tracing` filter, e.g. `info,weft_host=debug`; `RUST_LOG` wins.
    #[serde(default = "default_log_filter")]
    pub filter: String,
    /// Emit JSON lines instead of text.
    #[serde(default)]
    pub json: bool,
}

fn default_log_filter() -> String {
    "info".into()
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            filter: default_log_filter(),
            json: false,
        }
    }
}

/// Parses config text; an error names the offending key's path (e.g.
/// `runtime.memory-mb`) as well as TOML's line and column.
fn parse(text: &str) -> Result<Config> {
    let document = toml::Deserializer::parse(text).map_err(|e| anyhow::anyhow!("{e}"))?;
    serde_path_to_error::deserialize(document).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if path == "." {
            anyhow::anyhow!("{inner}")
        } else {
            anyhow::anyhow!("at `{path}`: {inner}")
        }
    })
}

impl Config {
    /// Reads and checks the file at `path`; relative paths in it become
    /// relative to its directory.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read {}", path.display()))?;
        let mut config = parse(&text)
            .with_context(|| format!("{} is not a valid weft config", path.display()))?;
        // An absolute base, so a relative `--config` (whose parent is the
        // empty path) still yields absolute paths: wasmtime's compile
        // cache, among others, refuses relative ones.
        let path = std::path::absolute(path)
            .with_context(|| format!("failed to resolve {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("/"));
        config.resolve_paths(base);
        config.check()?;
        Ok(config)
    }

    /// Parses a config from text, with paths relative to `base`.
    pub fn from_toml(text: &str, base: &Path) -> Result<Self> {
        let mut config = parse(text).context("not a valid weft config")?;
        let base = std::path::absolute(base).context("failed to resolve the config's directory")?;
        config.resolve_paths(&base);
        config.check()?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let absolute = |path: &mut PathBuf| {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        };
        absolute(&mut self.data_dir);
        absolute(&mut self.plugins.dir);
        if let Some(key_file) = &mut self.secrets.key_file {
            absolute(key_file);
        }
        for key_file in &mut self.secrets.previous_key_files {
            absolute(key_file);
        }
        if let Some(cache) = &mut self.runtime.compile_cache_dir {
            absolute(cache);
        }
        if let Some(appservice) = &mut self.appservice {
            absolute(&mut appservice.registration);
            absolute(&mut appservice.double_puppet_registration);
        }
        for grants in self.plugin.values_mut() {
            if let Some(tls) = grants.routes.as_mut().and_then(|r| r.tls.as_mut()) {
                absolute(&mut tls.certificate);
                absolute(&mut tls.key);
            }
        }
    }

    fn check(&self) -> Result<()> {
        if let Some(url) = self
            .appservice
            .as_ref()
            .and_then(|a| a.public_url.as_deref())
        {
            let parsed = url::Url::parse(url)
                .with_context(|| format!("[appservice] public-url `{url}` is not a URL"))?;
            if !matches!(parsed.scheme(), "http" | "https")
                || parsed.query().is_some()
                || parsed.fragment().is_some()
            {
                bail!("[appservice] public-url must be an http(s) URL without query or fragment");
            }
        }
        if let Some(admin) = &self.admin
            && admin.token.len() < 16
        {
            bail!("[admin] token must be at least 16 characters");
        }
        if self.homeserver.is_some() != self.appservice.is_some() {
            bail!("[homeserver] and [appservice] go together: set both or neither");
        }
        self.runtime.check().map_err(anyhow::Error::msg)?;
        crate::routes::check(&self.plugin)?;
        if self.appservice.is_none()
            && let Some(plugin) = self
                .plugin
                .iter()
                .find(|(_, g)| g.routes.is_some())
                .map(|(id, _)| id)
        {
            bail!("[plugin.{plugin}.routes] needs the public listener of [appservice]");
        }
        Ok(())
    }

    /// The operator's grants for plugin `id` (empty if none are set).
    pub fn grants(&self, id: &str) -> PluginGrants {
        self.plugin.get(id).cloned().unwrap_or_default()
    }

    /// Where compiled components are cached, if the cache is on.
    pub fn compile_cache_dir(&self) -> Option<PathBuf> {
        self.runtime.compile_cache.then(|| {
            self.runtime
                .compile_cache_dir
                .clone()
                .unwrap_or_else(|| self.data_dir.join("compile-cache"))
        })
    }

    /// What the runtime needs from this config.
    pub fn runtime_options(&self) -> weft_runtime::RuntimeOptions {
        weft_runtime::RuntimeOptions {
            runtime: self.runtime.clone(),
            http: self.http.clone(),
            grants: self.plugin.clone(),
            compile_cache: self.compile_cache_dir(),
            transport: None,
            manual_timers: false,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_bad_key_or_value_is_reported_with_its_path() {
        let error = format!(
            "{:#}",
            Config::from_toml("[runtime]\nmemory-mb = \"lots\"\n", Path::new("/")).unwrap_err()
        );
        assert!(error.contains("at `runtime.memory-mb`"), "{error}");
        let error = format!(
            "{:#}",
            Config::from_toml("[bridge]\nbackfill = 5\n", Path::new("/")).unwrap_err()
        );
        assert!(error.contains("backfill"), "{error}");
        assert!(error.contains("bridge"), "{error}");
    }

    #[test]
    fn the_example_config_is_valid_and_sets_every_section() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/weft.toml");
        let config = Config::load(&path).unwrap();
        assert!(config.admin.is_some() && config.homeserver.is_some());
        assert!(config.appservice.is_some());
    }

    #[test]
    fn a_relative_config_path_yields_absolute_paths() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("weft.toml"), "data-dir = \"data\"\n").unwrap();
        // As `weft --config weft.toml run` from the config's directory.
        let relative = pathdiff(dir.path());
        let config = Config::load(&relative.join("weft.toml")).unwrap();
        assert!(
            config.data_dir.is_absolute(),
            "{}",
            config.data_dir.display()
        );
        assert!(config.compile_cache_dir().unwrap().is_absolute());
        assert!(config.plugins.dir.is_absolute());
    }

    /// `dir` relative to the current directory, through `..` as needed.
    fn pathdiff(dir: &Path) -> PathBuf {
        let here = std::env::current_dir().unwrap();
        let ups = here.components().count() - 1;
        let mut path = PathBuf::new();
        for _ in 0..ups {
            path.push("..");
        }
        path.join(dir.strip_prefix("/").unwrap())
    }

    use super::*;

    #[test]
    fn an_empty_file_is_a_valid_config_with_defaults() {
        let config = Config::from_toml("", Path::new("/etc/weft")).unwrap();
        // Relative default paths are anchored at the config's directory.
        assert_eq!(config.data_dir, PathBuf::from("/etc/weft/data"));
        assert_eq!(config.runtime.call_deadline_ms, 10_000);
        assert!(config.homeserver.is_none());
    }

    #[test]
    fn a_misspelled_key_is_an_error_that_names_it() {
        let error =
            Config::from_toml("[runtime]\ncall-dedline-ms = 5\n", Path::new(".")).unwrap_err();
        // The message names the unknown key.
        assert!(
            format!("{error:#}").contains("call-dedline-ms"),
            "{error:#}"
        );
    }

    #[test]
    fn a_short_admin_token_is_refused() {
        let error = Config::from_toml(
            "[admin]\nlisten = \"127.0.0.1:1\"\ntoken = \"short\"\n",
            Path::new("."),
        )
        .unwrap_err();
        assert!(error.to_string().contains("at least 16"), "{error}");
    }
}
