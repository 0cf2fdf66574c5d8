//! The host: storage, runtime, registry, servers and the plugin watcher,
//! started and stopped together.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::logins::{LoginKey, LoginStore};
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
    load_errors: LoadErrors,
    admin_addr: Option<SocketAddr>,
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
        let _ = rustls::crypto::ring::default_provider().install_default();
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

        let sink: Arc<dyn EventSink> = match options.event_sink {
            Some(sink) => sink,
            None => Arc::new(LogSink {
                outbox: outbox.clone(),
            }),
        };
        outbox.set_sink(sink.clone());
        for login in outbox.pending_logins()? {
            sink.events_queued(&login);
        }

        let (shutdown, shutdown_rx) = watch::channel(false);
        let load_errors = LoadErrors::default();
        let mut servers = Vec::new();
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
            load_errors,
            admin_addr,
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
        let _ = self.shutdown.send(true);
        for server in self.servers {
            let _ = server.await;
        }
        self.registry.shutdown().await;
        if let Err(error) = crate::storage::flush_async(&self.services.storage).await {
            tracing::error!(%error, "failed to flush storage at shutdown");
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
