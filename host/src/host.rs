//! The host: storage, runtime, registry, servers and the plugin watcher,
//! started and stopped together.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use weft_runtime::Registry;
use weft_storage::{SledStorage, Storage};

use crate::admin::{self, AdminState};
use crate::bridge::store::BridgeStore;
use crate::bridge::{Bridge, BridgeParts};
use crate::capture::CaptureSessions;
use crate::config::Config;
use crate::login_process::LoginProcesses;
use crate::logins::{LoginKey, LoginStore, Logins};
use crate::matrix::{HomeserverClient, Namespaces, registration};
use crate::outbox::{EventSink, Outbox};
use crate::services::RuntimeServices;
use crate::watcher::{self, LoadErrors};

/// What to start the host with, beyond the config.
#[derive(Default)]
pub struct HostOptions {
    /// Storage to use instead of the sled database in the data directory.
    pub storage: Option<Arc<dyn Storage>>,
    /// Who consumes remote events, instead of the Matrix bridge (or the
    /// log, without a homeserver).
    pub event_sink: Option<Arc<dyn EventSink>>,
}

/// A running host.
pub struct Host {
    config: Arc<Config>,
    storage: Arc<dyn Storage>,
    registry: Arc<Registry>,
    logins: Arc<Logins>,
    outbox: Arc<Outbox>,
    bridge: Option<Arc<Bridge>>,
    load_errors: LoadErrors,
    admin_addr: Option<SocketAddr>,
    appservice_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    _watcher: Option<Box<dyn std::any::Any + Send>>,
}

impl Host {
    /// Starts a host on the embedded sled database.
    pub async fn start(config: Config) -> Result<Self> {
        Self::start_with(config, HostOptions::default()).await
    }

    /// Starts a host with `options`.
    pub async fn start_with(config: Config, options: HostOptions) -> Result<Self> {
        // reqwest is built without a default crypto provider; pick ring.
        crate::init_tls();
        let config = Arc::new(config);
        crate::secrets::restrict_data_dir(&config.data_dir)?;
        let storage = match options.storage {
            Some(storage) => storage,
            None => {
                let path = config.data_dir.join("weft.sled");
                let storage = SledStorage::open(&path).context("failed to open the database")?;
                // The files sled just created, too.
                crate::secrets::restrict_data_dir(&config.data_dir)?;
                Arc::new(storage)
            }
        };
        let storage = crate::secrets::seal(&config, storage)?;
        let outbox = Arc::new(Outbox::open(&storage)?);
        let login_store = LoginStore::open(&storage)?;
        let bot_localpart = config.appservice.as_ref().map(|a| a.bot_username.clone());
        let captures = CaptureSessions::new(
            config
                .appservice
                .as_ref()
                .and_then(|a| a.public_url.clone()),
            std::time::Duration::from_secs(config.bridge.login_timeout_secs),
        );
        let services = Arc::new(RuntimeServices::new(
            login_store.clone(),
            outbox.clone(),
            bot_localpart,
            captures.clone(),
        ));
        let registry = Registry::new(config.runtime_options(), storage.clone(), services.clone())?;
        registry.clear_all_process_state()?;
        let logins = Logins::new(
            login_store,
            registry.clone(),
            outbox.clone(),
            storage.clone(),
        );

        // A wrong issuer, a discovery document without introspection or
        // a bad client secret stop the start here, naming the setting.
        let introspector = match (&config.oauth, &config.homeserver) {
            (Some(oauth), Some(homeserver)) => Some(
                crate::token_auth::introspection::Introspector::discover(oauth, &homeserver.domain)
                    .await?,
            ),
            (Some(_), None) => anyhow::bail!("[oauth] needs [homeserver] (its domain names users)"),
            _ => None,
        };
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut servers = Vec::new();

        let mut bridge = None;
        let mut appservice_addr = None;
        let mut registration_warnings = None;
        if let (Some(homeserver), Some(appservice)) = (&config.homeserver, &config.appservice) {
            let registration = registration::read(&appservice.registration)?;
            let mut client = HomeserverClient::new(&homeserver.url, &registration.as_token)?;
            if let (Some(oauth), Some(introspector)) = (&config.oauth, &introspector)
                && let Some(device) = &oauth.bot_device
            {
                let endpoint = introspector.token_endpoint().context(
                    "[oauth] bot-device: the issuer's discovery document names no token_endpoint",
                )?;
                client = client.with_bot_token(crate::matrix::bot_token::BotToken::new(
                    endpoint,
                    &oauth.client_id,
                    &oauth.client_secret,
                    device,
                ));
            }
            let namespaces = Namespaces::new(&homeserver.domain, &registration.sender_localpart)
                .context("the registration's sender_localpart and [homeserver] domain do not make a user id")?;
            let store = BridgeStore::open(&storage)?;
            let processes = LoginProcesses::new(
                registry.clone(),
                logins.clone(),
                config.clone(),
                captures.clone(),
            );
            let double_puppet_token = if config.bridge.double_puppet {
                let path = &appservice.double_puppet_registration;
                let puppet = registration::read(path)
                    .context("[bridge] double-puppet is on, but its registration does not read")?;
                Some(puppet.as_token)
            } else {
                None
            };
            let the_bridge = Bridge::new(BridgeParts {
                client,
                namespaces,
                store,
                registry: registry.clone(),
                logins: logins.clone(),
                processes,
                config: config.clone(),
                outbox: outbox.clone(),
                double_puppet_token,
            })?;
            servers.push(tokio::spawn(wake_on_plugin_load(
                the_bridge.clone(),
                services.plugin_loads(),
                shutdown_rx.clone(),
            )));
            logins.set_deletion_hook(the_bridge.clone());
            let accounts = crate::bridge::accounts::PluginAccounts::new(&the_bridge);
            services.set_accounts(accounts.clone());
            registration_warnings = Some((registration.clone(), homeserver.domain.clone()));
            let provisioning = &config.provisioning;
            let token_auth = crate::token_auth::TokenAuth::new(
                provisioning
                    .allow_matrix_auth
                    .then(|| the_bridge.client.clone()),
                introspector.clone(),
                std::time::Duration::from_secs(provisioning.token_cache_secs),
                provisioning.failed_auth_per_minute,
            );
            let router = crate::appservice::router(
                the_bridge.clone(),
                &registration.hs_token,
                appservice.max_body_bytes,
                token_auth,
            )
            .merge(crate::capture::router(captures.clone()))
            .merge(crate::routes::router(&registry, &config.plugin));
            let (addr, task) = serve(appservice.listen, router, shutdown_rx.clone())
                .await
                .context("failed to start the appservice server")?;
            tracing::info!(%addr, "appservice and provisioning API listening");
            // A listener on all addresses has no one address to link to:
            // then the operator must say (`public-url`).
            if !addr.ip().is_unspecified() {
                captures.default_public_url(format!("http://{addr}"));
            }
            appservice_addr = Some(addr);
            servers.push(task);
            for (_, _, task) in
                crate::routes::serve_tls(&registry, &config.plugin, &shutdown_rx).await?
            {
                servers.push(task);
            }
            prepare_bot(&the_bridge).await;
            accounts.detect_auth_mode().await;
            // Matrix events stored before a restart go on; those whose
            // plugin is not loaded yet wait for it.
            the_bridge.resume_inbound()?;
            servers.push(tokio::spawn(housekeeping(
                the_bridge.clone(),
                shutdown_rx.clone(),
            )));
            bridge = Some(the_bridge);
        }

        let sink: Arc<dyn EventSink> = match (options.event_sink, &bridge) {
            (Some(sink), _) => sink,
            (None, Some(bridge)) => bridge.clone(),
            (None, None) => Arc::new(LogSink {
                outbox: outbox.clone(),
            }),
        };
        outbox.set_sink(sink.clone());
        for login in outbox.pending_logins()? {
            sink.events_queued(&login);
        }

        let load_errors = LoadErrors::default();
        let mut admin_addr = None;
        if let Some(admin_config) = &config.admin {
            let state = AdminState {
                registry: registry.clone(),
                logins: logins.clone(),
                outbox: outbox.clone(),
                bridge: bridge.clone(),
                token: admin_config.token.clone().into(),
                oauth: introspector
                    .clone()
                    .filter(|_| {
                        config
                            .oauth
                            .as_ref()
                            .is_some_and(|o| o.admin_scope.is_some())
                    })
                    .map(|introspector| {
                        crate::token_auth::TokenAuth::new(
                            None,
                            Some(introspector),
                            std::time::Duration::ZERO,
                            config.provisioning.failed_auth_per_minute,
                        )
                    }),
                load_errors: load_errors.clone(),
            };
            let (addr, task) = serve(
                admin_config.listen,
                admin::router(state),
                shutdown_rx.clone(),
            )
            .await
            .context("failed to start the admin API")?;
            tracing::info!(%addr, "admin API listening");
            admin_addr = Some(addr);
            servers.push(task);
        }

        if config.plugins.dir.is_dir() {
            watcher::load_dir(&registry, &load_errors, &config.plugins.dir).await?;
            if let Some((registration, domain)) = &registration_warnings {
                warn_uncovered_namespaces(&registry, registration, domain);
            }
        } else {
            tracing::warn!(dir = %config.plugins.dir.display(), "the plugins directory does not exist; no plugins loaded");
        }
        let watcher = if config.plugins.watch && config.plugins.dir.is_dir() {
            let guard = watcher::watch(
                registry.clone(),
                load_errors.clone(),
                config.plugins.dir.clone(),
            )?;
            Some(Box::new(guard) as Box<dyn std::any::Any + Send>)
        } else {
            None
        };

        Ok(Self {
            config,
            storage,
            registry,
            logins,
            outbox,
            bridge,
            load_errors,
            admin_addr,
            appservice_addr,
            shutdown,
            servers,
            _watcher: watcher,
        })
    }

    /// The config.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The registry.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Logins: create, renew, delete.
    pub fn logins(&self) -> &Arc<Logins> {
        &self.logins
    }

    /// The outbox of remote events, and the dead letters.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// The bridge, if a homeserver is configured.
    pub fn bridge(&self) -> Option<&Arc<Bridge>> {
        self.bridge.as_ref()
    }

    /// Where the appservice and provisioning API listen, if configured.
    pub fn appservice_addr(&self) -> Option<SocketAddr> {
        self.appservice_addr
    }

    /// Where the admin API listens, if enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The last load error of each plugin file that failed.
    pub fn load_errors(&self) -> &LoadErrors {
        &self.load_errors
    }

    /// Stops servers and logins, retiring instances gracefully, and flushes
    /// storage.
    pub async fn shutdown(self) {
        // The watcher's task holds the registry; stop it first.
        drop(self._watcher);
        let _ = self.shutdown.send(true);
        for server in self.servers {
            let _ = server.await;
        }
        self.outbox.clear_sink();
        self.logins.clear_deletion_hook();
        if let Some(bridge) = &self.bridge {
            bridge.shutdown().await;
        }
        self.registry.shutdown().await;
        if let Err(error) = weft_storage::flush_async(&self.storage).await {
            tracing::error!(%error, "failed to flush storage at shutdown");
        }
        // The database closes when its last handle goes; tasks finishing
        // their last step may hold one for a moment. Wait for them, so the
        // same process can open the database again (a restart).
        let storage = Arc::downgrade(&self.storage);
        drop(self.bridge);
        drop(self.registry);
        drop(self.logins);
        drop(self.outbox);
        drop(self.storage);
        for _ in 0..100 {
            if storage.strong_count() == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        if storage.strong_count() > 0 {
            tracing::warn!("storage still in use after shutdown");
        }
        tracing::info!("host stopped");
    }
}

/// Serves `router` on `addr` until `shutdown` turns true.
pub(crate) async fn serve(
    addr: SocketAddr,
    router: axum::Router,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(SocketAddr, JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("failed to listen on {addr}"))?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let stopped = async move {
            while !*shutdown.borrow() {
                if shutdown.changed().await.is_err() {
                    break;
                }
            }
        };
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(error) = axum::serve(listener, service)
            .with_graceful_shutdown(stopped)
            .await
        {
            tracing::error!(%error, "server failed");
        }
    });
    Ok((local, task))
}

/// Warns about loaded connectors whose ghosts are outside the
/// registration's namespaces: the homeserver refuses them until the
/// registration is regenerated and the homeserver restarted.
fn warn_uncovered_namespaces(
    registry: &Registry,
    registration: &ruma::api::appservice::Registration,
    domain: &str,
) {
    for plugin in registry.connectors() {
        let Some(prefix) = &plugin.capabilities.ghost_prefix else {
            continue;
        };
        if !registration::covers(registration, prefix, domain) {
            tracing::warn!(
                plugin = plugin.id(),
                namespace = %format!("@{prefix}*:{domain}"),
                "this plugin's ghosts are not in the appservice registration: run `weft generate-registration` and restart the homeserver"
            );
        }
    }
}

/// Registers and names the bot, retrying while the homeserver starts:
/// for about ten seconds before the host goes on, then in the background.
async fn prepare_bot(bridge: &Arc<Bridge>) {
    let mut backoff = crate::matrix::client::retry_backoff();
    let started = std::time::Instant::now();
    loop {
        match bridge.prepare_bot().await {
            Ok(()) => return,
            Err(error) => {
                if started.elapsed() > std::time::Duration::from_secs(10) {
                    tracing::warn!(%error, "the homeserver is not ready; retrying in the background");
                    break;
                }
                let delay = error
                    .retry_after()
                    .or_else(|| backoff.next())
                    .unwrap_or(std::time::Duration::from_secs(1));
                tokio::time::sleep(delay.min(std::time::Duration::from_secs(2))).await;
            }
        }
    }
    let bridge = bridge.clone();
    tokio::spawn(async move {
        while let Err(error) = bridge.prepare_bot().await {
            let delay = error
                .retry_after()
                .or_else(|| backoff.next())
                .unwrap_or(std::time::Duration::from_secs(60));
            tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "the homeserver is still not reachable");
            tokio::time::sleep(delay).await;
        }
    });
}

/// Periodic chores: forget old event ids, end expired login processes.
async fn housekeeping(bridge: Arc<Bridge>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        bridge.processes.reap().await;
        let week_ago = crate::logins::now_ms().saturating_sub(7 * 24 * 3600 * 1000);
        if let Err(error) = bridge.prune_seen(week_ago) {
            tracing::warn!(%error, "failed to prune old event ids");
        }
    }
}

/// Events waiting for a plugin go on once it is loaded.
async fn wake_on_plugin_load(
    bridge: Arc<Bridge>,
    mut loads: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            changed = loads.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
        }
        bridge.plugin_loaded();
    }
}

/// Without a Matrix side, remote events are logged and dropped.
struct LogSink {
    outbox: Arc<Outbox>,
}

impl EventSink for LogSink {
    fn events_queued(&self, login: &LoginKey) {
        let outbox = self.outbox.clone();
        let login = login.clone();
        tokio::spawn(async move {
            match outbox.peek(&login, 100) {
                Ok(events) => {
                    for queued in events {
                        tracing::debug!(%login, event = ?queued.event, "remote event (no homeserver configured)");
                        let _ = outbox.ack(&login, queued.seq);
                    }
                }
                Err(error) => tracing::error!(%login, %error, "failed to read the outbox"),
            }
        });
    }
}
