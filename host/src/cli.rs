//! `weft`: the host's command line. Runs the host, and talks to a running
//! host's admin API for operators. No logic lives here. (It is in the
//! library so that the test crate can run the same binary as a process.)

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::host::Host;
use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "weft",
    version,
    about = "Runs Matrix-bridge connectors as sandboxed WebAssembly components."
)]
struct Cli {
    /// The config file.
    #[arg(
        short,
        long,
        global = true,
        env = "WEFT_CONFIG",
        default_value = "weft.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the host.
    Run,
    /// Write the appservice registration for the homeserver, from the
    /// config and the ghost namespaces of the plugins directory's
    /// connectors (keeping existing tokens).
    GenerateRegistration,
    /// Check the config file: unknown keys and bad values are reported
    /// with the path of the offending key.
    CheckConfig,
    /// Check a plugin file without a running host: manifest, grants,
    /// compilation and linking.
    CheckPlugin {
        /// The component.
        path: PathBuf,
    },
    /// Measure the runtime with a connector and print the figures.
    Bench {
        /// The connector component.
        #[arg(long, default_value = "target/plugins/probe.wasm")]
        plugin: PathBuf,
        /// Live logins to run, one measurement per number (e.g. 1000,10000).
        #[arg(long, value_delimiter = ',', default_value = "1000")]
        logins: Vec<usize>,
        /// Hibernating logins to measure (0: skip).
        #[arg(long, default_value_t = 0)]
        hibernating: usize,
        /// Instances to create and calls to time.
        #[arg(long, default_value_t = 200)]
        samples: usize,
        /// The period of each live login's timer, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        tick_ms: u64,
        /// How long to let the timers tick, in seconds.
        #[arg(long, default_value_t = 10)]
        tick_secs: u64,
        /// The allocator: pooling or on-demand (default: the config's).
        #[arg(long)]
        allocator: Option<String>,
        /// Run one scenario in this process (basics, live:N or
        /// hibernating:N); `weft bench` runs each in a child process.
        #[arg(long, hide = true)]
        scenario: Option<crate::bench::Scenario>,
    },
    /// Manage the plugins of a running host.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Manage the logins of a running host.
    #[command(subcommand)]
    Login(LoginCommand),
    /// Show remote events that could not be bridged.
    DeadLetters {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Include each event's stored content (it may hold private messages).
        #[arg(long)]
        content: bool,
    },
    /// Show the Matrix events waiting in each room, and those that could
    /// not be handled.
    Inbound {
        /// At most this many failed events.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// List loaded plugins and files that failed to load.
    List,
    /// Load a plugin file (or upgrade to it if its id is loaded).
    Load {
        /// The component.
        path: PathBuf,
    },
    /// Upgrade a loaded plugin to the one in a file.
    Upgrade {
        /// The plugin id.
        id: String,
        /// The component.
        path: PathBuf,
    },
    /// Unload a plugin; its logins stop until it is loaded again.
    Unload {
        /// The plugin id.
        id: String,
    },
}

#[derive(Subcommand)]
enum LoginCommand {
    /// List logins with their states.
    List,
    /// Create a login directly, without a login process.
    Create {
        /// The connector plugin.
        #[arg(long)]
        plugin: String,
        /// The login id.
        #[arg(long)]
        id: String,
        /// The Matrix user who owns it.
        #[arg(long)]
        owner: String,
        /// The connector's metadata, as JSON.
        #[arg(long, default_value = "{}")]
        metadata: String,
    },
    /// Start a fresh instance of a login and resume its timers (e.g. after
    /// a crash loop).
    Restart {
        /// The login (`plugin:login-id`).
        key: String,
    },
    /// Delete a login (`plugin:login-id`).
    Delete {
        /// The login.
        key: String,
        /// Log out of the remote service first.
        #[arg(long)]
        logout: bool,
    },
}

/// Runs the command line; what `weft`'s `main` does.
pub fn main() -> std::process::ExitCode {
    // Operators get the error and its causes, not a backtrace.
    match run_cli() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_cli() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Run => run(&cli.config).await,
            Command::GenerateRegistration => generate_registration(&cli.config),
            Command::Bench {
                plugin,
                logins,
                hibernating,
                samples,
                tick_ms,
                tick_secs,
                allocator,
                scenario,
            } => {
                let allocator = match allocator.as_deref() {
                    None => None,
                    Some("pooling") => Some(weft_runtime::Allocator::Pooling),
                    Some("on-demand") => Some(weft_runtime::Allocator::OnDemand),
                    Some(other) => bail!("--allocator is pooling or on-demand, not {other}"),
                };
                let options = crate::bench::BenchOptions {
                    logins,
                    hibernating,
                    samples,
                    tick_ms,
                    tick_for: std::time::Duration::from_secs(tick_secs),
                    allocator,
                    scenario,
                };
                crate::bench::run(&plugin, options).await
            }
            Command::DeadLetters { limit, content } => {
                let client = AdminClient::new(&cli.config)?;
                let path = format!("/dead-letters?limit={limit}&content={content}");
                print(&client.call(reqwest::Method::GET, &path, None).await?);
                Ok(())
            }
            Command::Inbound { limit } => {
                let client = AdminClient::new(&cli.config)?;
                let path = format!("/inbound?limit={limit}");
                print(&client.call(reqwest::Method::GET, &path, None).await?);
                Ok(())
            }
            Command::CheckPlugin { path } => check_plugin(&cli.config, &path).await,
            Command::CheckConfig => check_config(&cli.config),
            Command::Plugin(command) => plugin_command(&cli.config, command).await,
            Command::Login(command) => login_command(&cli.config, command).await,
        }
    })
}

async fn run(config_path: &Path) -> Result<()> {
    let config = Config::load(config_path)?;
    crate::telemetry::init(&config.logging);
    let host = Host::start(config).await?;
    tracing::info!("weft is running; stop it with Ctrl-C or SIGTERM");
    wait_for_signal().await;
    host.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("failed to install the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

fn generate_registration(config_path: &Path) -> Result<()> {
    let config = Config::load(config_path)?;
    let path = config
        .appservice
        .as_ref()
        .map(|a| a.registration.clone())
        .context("the config has no [appservice] section")?;
    let generated = crate::matrix::registration::generate(&config)?;
    println!("wrote {}", path.display());
    println!(
        "  bot: @{}:{}",
        generated.registration.sender_localpart,
        config
            .homeserver
            .as_ref()
            .map(|h| h.domain.as_str())
            .unwrap_or("?")
    );
    for prefix in &generated.prefixes {
        println!("  ghosts: @{prefix}*");
    }
    for pattern in &generated.accounts {
        println!("  plugin accounts: @{pattern}");
    }
    if let Some(double_puppet) = &generated.double_puppet {
        println!("wrote {} (double puppeting)", double_puppet.display());
    }
    println!(
        "The homeserver reads these files at startup: list them in its app_service_config_files and restart it after they change."
    );
    Ok(())
}

fn check_config(path: &Path) -> Result<()> {
    let config = Config::load(path)?;
    let sections: Vec<&str> = [
        ("[homeserver]", config.homeserver.is_some()),
        ("[appservice]", config.appservice.is_some()),
        ("[admin]", config.admin.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    println!(
        "{} is valid: data in {}, plugins from {}, {}",
        path.display(),
        config.data_dir.display(),
        config.plugins.dir.display(),
        if sections.is_empty() {
            "no Matrix side or admin API".to_owned()
        } else {
            sections.join(", ")
        }
    );
    Ok(())
}

async fn check_plugin(config_path: &Path, path: &Path) -> Result<()> {
    let config = if config_path.exists() {
        Config::load(config_path)?
    } else {
        println!(
            "note: no config file at {}: checking against the default grants (pass --config to use yours)",
            config_path.display()
        );
        Config::from_toml("", Path::new("."))?
    };
    crate::init_tls();
    let source = weft_runtime::plugin::PluginSource::read(path)?;
    let manifest = weft_runtime::manifest::Manifest::parse(&source.manifest)?;
    let plugin = weft_runtime::plugin::check_offline(
        source,
        &config.grants(&manifest.id),
        &config.runtime,
        &config.http,
    )
    .await?;
    println!(
        "{} {} ({}) loads: memory {} MiB, call deadline {} ms, http {:?}",
        plugin.id(),
        plugin.version(),
        plugin.manifest.world.wit_name(),
        plugin.capabilities.memory_bytes >> 20,
        plugin.capabilities.call_deadline.as_millis(),
        plugin
            .capabilities
            .http
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
    );
    if !plugin.capabilities.private_networks {
        for pattern in plugin
            .capabilities
            .http
            .iter()
            .filter(|p| p.names_private_host())
        {
            println!(
                "warning: {pattern} is a loopback or private address, but the grant lacks `private-networks = true`: every request to it will be refused"
            );
        }
    }
    Ok(())
}

/// A client of the running host's admin API, from the config.
struct AdminClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl AdminClient {
    fn new(config_path: &Path) -> Result<Self> {
        let config = Config::load(config_path)?;
        let admin = config
            .admin
            .context("the config has no [admin] section, so the host has no admin API")?;
        crate::init_tls();
        Ok(Self {
            base: format!("http://{}/_weft/admin/v1", admin.listen),
            token: admin.token,
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(120))
                .build()?,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .context("cannot reach the host's admin API; is `weft run` running?")?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if !status.is_success() {
            bail!(
                "{}",
                body.get("error")
                    .and_then(|e| e.as_str())
                    .unwrap_or(status.as_str())
            );
        }
        Ok(body)
    }
}

fn print(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(path).with_context(|| format!("cannot find {}", path.display()))
}

async fn plugin_command(config: &Path, command: PluginCommand) -> Result<()> {
    let client = AdminClient::new(config)?;
    let result = match command {
        PluginCommand::List => client.call(reqwest::Method::GET, "/plugins", None).await?,
        PluginCommand::Load { path } => {
            let body = serde_json::json!({ "path": absolute(&path)? });
            client
                .call(reqwest::Method::POST, "/plugins", Some(body))
                .await?
        }
        PluginCommand::Upgrade { id, path } => {
            let body = serde_json::json!({ "path": absolute(&path)? });
            client
                .call(
                    reqwest::Method::POST,
                    &format!("/plugins/{id}/upgrade"),
                    Some(body),
                )
                .await?
        }
        PluginCommand::Unload { id } => {
            client
                .call(reqwest::Method::DELETE, &format!("/plugins/{id}"), None)
                .await?
        }
    };
    print(&result);
    Ok(())
}

async fn login_command(config: &Path, command: LoginCommand) -> Result<()> {
    let client = AdminClient::new(config)?;
    let result = match command {
        LoginCommand::List => client.call(reqwest::Method::GET, "/logins", None).await?,
        LoginCommand::Create {
            plugin,
            id,
            owner,
            metadata,
        } => {
            let metadata: serde_json::Value =
                serde_json::from_str(&metadata).context("--metadata must be JSON")?;
            let body = serde_json::json!({ "plugin": plugin, "id": id, "owner": owner, "metadata": metadata });
            client
                .call(reqwest::Method::POST, "/logins", Some(body))
                .await?
        }
        LoginCommand::Restart { key } => {
            let key =
                percent_encoding::utf8_percent_encode(&key, percent_encoding::NON_ALPHANUMERIC)
                    .to_string();
            client
                .call(
                    reqwest::Method::POST,
                    &format!("/logins/{key}/restart"),
                    None,
                )
                .await?
        }
        LoginCommand::Delete { key, logout } => {
            let key =
                percent_encoding::utf8_percent_encode(&key, percent_encoding::NON_ALPHANUMERIC)
                    .to_string();
            client
                .call(
                    reqwest::Method::DELETE,
                    &format!("/logins/{key}?logout={logout}"),
                    None,
                )
                .await?
        }
    };
    print(&result);
    Ok(())
}
