//! The host: storage, runtime, registry, servers and the plugin watcher,
//! started and stopped together.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{self, AdminState};
use crate::bridge::Bridge;
use crate::bridge::store::BridgeStore;
use crate::config::Config;
use crate::login_process::LoginProcesses;
use crate::logins::{LoginKey, LoginStore};
use crate::matrix::{HomeserverClient, Namespaces, registration};
use crate::outbox::{EventSink, Outbox};
use crate::registry::{PluginTable, Registry};
use crate::runtime::Runtime;
use crate::runtime::http_client::HttpClients;
use crate::runtime::state::Services;
use crate::storage::{SledStorage, Storage, trees};
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
    services: Arc<Services>,
    registry: Arc<Registry>,
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
        let storage = match options.storage {
            Some(storage) => storage,
            None => {
                std::fs::create_dir_all(&config.data_dir)
                    .with_context(|| format!("failed to create {}", config.data_dir.display()))?;
                let path = config.data_dir.join("weft.sled");
                Arc::new(SledStorage::open(&path).context("failed to open the database")?)
            }
        };
        let runtime = Runtime::new(&config)?;
        let outbox = Arc::new(Outbox::open(&storage)?);
        let plugins = Arc::new(PluginTable::default());
        let services = Arc::new(Services {
            kv: storage.tree(trees::PLUGIN_KV)?,
            logins: LoginStore::open(&storage)?,
            outbox: outbox.clone(),
            http: HttpClients::new()?,
            http_config: config.http.clone(),
            runtime,
            plugins: plugins.clone(),
            storage,
        });
        let registry = Registry::new(config.clone(), services.clone(), plugins);

        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut servers = Vec::new();

        let mut bridge = None;
        let mut appservice_addr = None;
        if let (Some(homeserver), Some(appservice)) = (&config.homeserver, &config.appservice) {
            let registration = registration::read(&appservice.registration)?;
            let client = HomeserverClient::new(&homeserver.url, &registration.as_token)?;
            let namespaces = Namespaces {
                domain: homeserver.domain.clone(),
                bot_localpart: registration.sender_localpart.clone(),
            };
            let store = BridgeStore::open(&services.storage)?;
            let processes = LoginProcesses::new(registry.clone(), config.clone());
            let the_bridge = Bridge::new(
                client,
                namespaces,
                store,
                registry.clone(),
                processes,
                config.clone(),
                outbox.clone(),
            );
            registry.set_load_hook(namespace_check(&registration, &homeserver.domain));
            let router = crate::appservice::router(
                the_bridge.clone(),
                &registration.hs_token,
                appservice.max_body_bytes,
            );
            let (addr, task) = serve(appservice.listen, router, shutdown_rx.clone())
                .await
                .context("failed to start the appservice server")?;
            tracing::info!(%addr, "appservice and provisioning API listening");
            appservice_addr = Some(addr);
            servers.push(task);
            prepare_bot(&the_bridge).await;
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
                token: admin_config.token.clone().into(),
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
            services,
            registry,
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

    /// Host services.
    pub fn services(&self) -> &Arc<Services> {
        &self.services
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
        self.services.outbox.clear_sink();
        if let Some(bridge) = &self.bridge {
            bridge.shutdown().await;
        }
        self.registry.shutdown().await;
        if let Err(error) = crate::storage::flush_async(&self.services.storage).await {
            tracing::error!(%error, "failed to flush storage at shutdown");
        }
        // The database closes when its last handle goes; tasks finishing
        // their last step may hold one for a moment. Wait for them, so the
        // same process can open the database again (a restart).
        let storage = Arc::downgrade(&self.services.storage);
        drop(self.bridge);
        drop(self.registry);
        drop(self.services);
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
        if let Err(error) = axum::serve(listener, router)
            .with_graceful_shutdown(stopped)
            .await
        {
            tracing::error!(%error, "server failed");
        }
    });
    Ok((local, task))
}

/// Warns when a loaded connector's ghosts are outside the registration's
/// namespaces: the homeserver would refuse them until the registration is
/// regenerated and the homeserver restarted.
fn namespace_check(
    registration: &ruma::api::appservice::Registration,
    domain: &str,
) -> crate::registry::LoadHook {
    let registration = registration.clone();
    let domain = domain.to_owned();
    Arc::new(move |plugin| {
        if plugin.manifest.world != crate::runtime::manifest::World::Connector {
            return;
        }
        let prefix = plugin.manifest.ghost_prefix();
        if !registration::covers(&registration, &prefix, &domain) {
            tracing::warn!(
                plugin = plugin.id(),
                namespace = %format!("@{prefix}*:{domain}"),
                "this plugin's ghosts are not in the appservice registration: run `weft generate-registration` and restart the homeserver"
            );
        }
    })
}

/// Registers and names the bot, retrying while the homeserver starts.
async fn prepare_bot(bridge: &Arc<Bridge>) {
    for attempt in 0..20 {
        match bridge.prepare_bot().await {
            Ok(()) => return,
            Err(error) => {
                if attempt == 0 {
                    tracing::warn!(%error, "the homeserver is not ready; retrying");
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
    }
    let bridge = bridge.clone();
    tokio::spawn(async move {
        while let Err(error) = bridge.prepare_bot().await {
            tracing::warn!(%error, "the homeserver is still not reachable");
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        }
    });
}

/// Periodic chores: forget old transactions, end expired login processes.
async fn housekeeping(bridge: Arc<Bridge>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        bridge.processes.reap().await;
        let week_ago = crate::logins::now_ms().saturating_sub(7 * 24 * 3600 * 1000);
        if let Err(error) = bridge.store.prune_transactions(week_ago) {
            tracing::warn!(%error, "failed to prune old transactions");
        }
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
