//! The HTTP server: what the public address serves (`App`), the host's own
//! routes and the running server handle.
//!
//! A request reads top to bottom: `app::plugin_request` routes it,
//! `runtime::dispatch` runs it in a fresh (or kept) instance, the component calls
//! `caps::*`, and `errors` turns any failure into a JSON error.

pub mod admin;
mod admin_sql;
mod answer_cache;
mod app;
mod connection;
mod edge;
pub mod errors;
pub mod gate;
mod http_metrics;
mod json;
pub mod listener;
pub mod operator;
mod room_socket;
pub mod rooms;
mod services;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::caps::{CapSettings, Caps};
use crate::config::{ClientAddresses, ClientLimits, ServerConfig};
use crate::metrics::Metrics;
use crate::rooms::RoomHub;
use crate::runtime::dispatch::{BodyTimeouts, Dispatcher};
use crate::runtime::registry::RegistrySettings;
use crate::runtime::{PluginRegistry, watch};
use crate::storage::{Backends, Liveness, StorageSettings};
pub use answer_cache::AnswerCacheMetrics;
pub use app::{App, Scope};
pub use connection::Secure;
pub use http_metrics::HttpMetrics;
use listener::HttpApp;

/// What every handler shares; what only the admin API uses is `admin`.
pub struct AppState {
    pub registry: Arc<PluginRegistry>,
    pub metrics: Arc<Metrics>,
    /// The label of requests no plugin served.
    unserved: Arc<str>,
    /// The operator's token: the admin API, `auth = "operator"` routes.
    pub operator: operator::OperatorToken,
    pub clients: ClientLimits,
    /// Runs requests through plugins (with the clients' body timeouts).
    pub dispatcher: Dispatcher,
    /// Answers plugins mark immutable, given again without the plugin.
    pub answers: answer_cache::AnswerCache,
    pub client_addresses: ClientAddresses,
    /// Static sites, tried where no plugin route matches.
    pub sites: crate::assets::Sites,
    pub rooms: Arc<RoomHub>,
    /// Room sockets by client address (`max_room_connections_per_client`).
    pub room_clients: Arc<crate::runtime::per_client::PerClient>,
    /// Turns true when the server stops: answers that would go on forever
    /// (a followed log) end then.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    pub admin: AdminState,
}

/// What the admin API uses beyond the handlers' shared state.
pub struct AdminState {
    /// The largest component an upload may be.
    pub max_component_bytes: u64,
    /// KV storage, for a look into a namespace.
    pub kv: Arc<dyn crate::storage::KvBackend>,
    /// The other nodes, with a shared backend.
    pub cluster: Option<Arc<dyn crate::storage::Cluster>>,
    /// The SQL databases (`spike sql`).
    pub sql: Option<Arc<spike_sql::Databases>>,
    /// HTTPS's certificates (`spike certs`), when it is on.
    pub tls: Option<Arc<crate::tls::Tls>>,
}

/// The metrics as a scrape answer.
fn metrics_response(metrics: &Metrics) -> Response {
    let headers = [(http::header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)];
    (headers, metrics.render()).into_response()
}

/// A running server: its address, and how to stop it.
pub struct RunningServer {
    pub addr: SocketAddr,
    /// Where `/metrics` is served, with `metrics_listen`.
    pub metrics_addr: Option<SocketAddr>,
    pub registry: Arc<PluginRegistry>,
    /// One per listener (the public one, and the metrics one if any).
    shutdown: Vec<tokio::sync::oneshot::Sender<()>>,
    /// Tells the answers that never end by themselves to end.
    stopping: tokio::sync::watch::Sender<bool>,
    serving: Vec<tokio::task::JoinHandle<()>>,
    _watcher: Option<watch::FileWatch>,
    /// Following the cluster's plugin versions, publishing this node's.
    _cluster: Option<crate::runtime::cluster::ClusterTasks>,
    storage: Liveness,
    rooms: Arc<RoomHub>,
    sql: Option<Arc<spike_sql::Databases>>,
    /// What requests in flight get at a stop.
    drain_timeout: Duration,
}

impl RunningServer {
    /// Waits until every plugin has finished loading (ready or failed);
    /// the server listens before that.
    pub async fn ready(&self) {
        self.registry.ready().await
    }

    /// Stops accepting, lets requests in flight finish, and releases the
    /// database (so the same data folder can be opened again).
    pub async fn stop(mut self) {
        for tx in self.shutdown.drain(..) {
            let _ = tx.send(());
        }
        let _ = self.stopping.send(true);
        // Room connections outlive their HTTP connection: close them.
        self.rooms
            .stop(self.drain_timeout.min(Duration::from_secs(5)))
            .await;
        // Kept-alive connections close after one more request or a short
        // grace; requests in flight get the drain timeout (the listener
        // cuts them then); a stuck listener must not hold the stop forever.
        let limit = self.drain_timeout + Duration::from_secs(5);
        for serve in &mut self.serving {
            if tokio::time::timeout(limit, &mut *serve).await.is_err() {
                serve.abort();
            }
        }
        // Their connections close (every write is on disk already).
        if let Some(sql) = &self.sql {
            sql.stop(Duration::from_secs(5)).await;
        }
        let storage = self.storage.clone();
        drop(self);
        // Guests still streaming a body hold the storage; give them a moment.
        let _ = tokio::time::timeout(Duration::from_secs(10), storage.closed()).await;
    }
}

/// A node's name when the operator gives none: the host's name and the
/// port it serves (its process id for a port chosen by the system).
pub fn default_node(listen: SocketAddr) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "spike".into());
    match listen.port() {
        0 => format!("{host}-{}", std::process::id()),
        port => format!("{host}:{port}"),
    }
}

/// Opens the data folder, loads the plugins and starts serving.
pub async fn start(config: ServerConfig) -> anyhow::Result<RunningServer> {
    let secrets = config.secrets.load()?;
    tracing::info!(secrets = secrets.len(), "secrets loaded");
    let backends = open_storage(&config).await?;
    let cluster = backends.cluster.clone();
    let liveness = backends.liveness();
    let metrics = Metrics::new();
    let sql = Some(open_sql(&config, &backends)?);
    let caps = Caps::new(&backends, &cap_settings(&config, secrets, &sql), &metrics);
    let settings = registry_settings(&config);
    let sites = crate::assets::Sites::start(&config.sites, config.watch)?;
    let registry =
        PluginRegistry::start(&settings, &caps, backends.versions.clone(), &metrics).await?;
    let rooms = RoomHub::new(
        backends.rooms.clone(),
        backends.cluster.clone(),
        Arc::new(crate::runtime::PluginRooms(registry.clone())),
        &metrics,
    );
    let kv = backends.kv.clone();
    let tls = start_tls(&config, &backends, &metrics)?;
    let cluster_tasks = cluster
        .as_ref()
        .map(|cluster| crate::runtime::cluster::start(&registry, cluster));
    drop(backends);
    let watcher = config.watch.then(|| watch_plugins(&registry)).flatten();
    let (listener, addr, clients) = bind(&config).await?;
    rooms.set_max_connections(clients.max_room_connections);
    rooms.serve_other_nodes();
    let max_connections = clients.max_connections;
    let drain_timeout = clients.drain_timeout;
    let (dispatcher, operator) = bind_caps(&config, caps, &registry, &clients, &metrics, addr);
    let (stop_tx, stopping) = tokio::sync::watch::channel(false);
    let state = Arc::new(AppState {
        registry: registry.clone(),
        metrics: metrics.clone(),
        unserved: "-".into(),
        operator,
        clients: clients.clone(),
        dispatcher,
        answers: answer_cache::AnswerCache::new(config.answer_cache_bytes, &metrics.answer_cache),
        client_addresses: config.client_addresses.clone(),
        sites,
        rooms: rooms.clone(),
        room_clients: crate::runtime::per_client::PerClient::new(
            clients.max_room_connections_per_client,
        ),
        stopping,
        admin: AdminState {
            max_component_bytes: config.max_component_bytes,
            kv,
            cluster,
            sql: sql.clone(),
            tls: tls.clone(),
        },
    });
    let mut listeners = Listeners::new(&clients, registry.watchdog(), &metrics);
    let scope = match config.admin_listen {
        Some(_) => Scope::Public,
        None => Scope::All,
    };
    let secure = tls.as_ref().map(|tls| Secure {
        tls: tls.clone(),
        hsts: config.hsts_max_age.map(hsts),
    });
    listeners.serve(listener, App::new(state.clone(), scope), secure);
    let metrics_addr = listeners.add_others(&config, state, addr, &tls).await?;
    let Listeners { stops, serving, .. } = listeners;
    tracing::info!(
        %addr,
        https = tls.is_some(),
        plugins = registry.slots().len(),
        max_connections,
        memory_budget_mib = config.memory_budget_bytes >> 20,
        "spike is serving"
    );
    Ok(RunningServer {
        addr,
        metrics_addr,
        registry,
        shutdown: stops,
        stopping: stop_tx,
        serving,
        _watcher: watcher,
        _cluster: cluster_tasks,
        storage: liveness,
        rooms,
        sql,
        drain_timeout,
    })
}

/// The data folder (this user's alone) and the storage backends: the
/// embedded database in it, or the cluster's NATS server.
async fn open_storage(config: &ServerConfig) -> anyhow::Result<Backends> {
    crate::util::private_dir(&config.data_dir)
        .with_context(|| format!("the data folder {}", config.data_dir.display()))?;
    let storage = &StorageSettings {
        kv_sweep_interval: config.kv_sweep_interval,
    };
    let Some(nats) = &config.storage else {
        return Ok(Backends::open_redb(&config.data_dir, storage)?);
    };
    let node = (config.node.clone()).unwrap_or_else(|| default_node(config.listen));
    let backends = Backends::connect_nats(nats, &node, &config.data_dir, storage).await?;
    tracing::info!(node, servers = %nats.servers, prefix = %nats.prefix, "joined the cluster");
    Ok(backends)
}

/// What the handlers run requests with: the dispatcher (bound into the
/// services capability too, for calls between plugins) and the operator's
/// token. The renderer may reach this server's own listener at `addr`.
fn bind_caps(
    config: &ServerConfig,
    caps: Arc<Caps>,
    registry: &Arc<PluginRegistry>,
    clients: &ClientLimits,
    metrics: &Arc<Metrics>,
    addr: SocketAddr,
) -> (Dispatcher, operator::OperatorToken) {
    let body_timeouts = BodyTimeouts {
        request: clients.body_timeout,
        response: clients.send_timeout,
    };
    let dispatcher = Dispatcher::new(
        registry.engine().clone(),
        registry.watchdog().clone(),
        body_timeouts,
    );
    let services = services::ServiceDispatcher::for_registry(registry, dispatcher.clone());
    caps.outbound.services.bind(services);
    caps.render.allow_own_listener(addr);
    let operator = operator::OperatorToken::new(
        config.admin_token.clone(),
        &caps.rate_limits,
        metrics.clone(),
    );
    (dispatcher, operator)
}

/// The public listener, its address, and the client limits fitted to the
/// open-file limit.
async fn bind(
    config: &ServerConfig,
) -> anyhow::Result<(tokio::net::TcpListener, SocketAddr, ClientLimits)> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr()?;
    let mut clients = config.clients.clone();
    (clients.max_connections, clients.max_room_connections) =
        listener::connection_caps(clients.max_connections, clients.max_room_connections);
    Ok((listener, addr, clients))
}

/// The SQL databases: their files in the data folder's `sql/`, their
/// change logs and snapshots in the storage (shared on a cluster, where a
/// database's owner rebuilds it from them).
fn open_sql(
    config: &ServerConfig,
    backends: &crate::storage::Backends,
) -> anyhow::Result<Arc<spike_sql::Databases>> {
    let dir = config.data_dir.join("sql");
    let storage = spike_sql::SqlStorage {
        log: backends.rooms.clone(),
        blobs: backends.blob.clone(),
        cluster: backends.cluster.clone(),
        retention: config.sql_retention,
        snapshot_every: spike_sql::SNAPSHOT_EVERY,
    };
    let databases =
        spike_sql::Databases::new(dir.clone(), spike_sql::SqlLimits::default(), storage)
            .with_context(|| format!("the SQL folder {}", dir.display()))?;
    databases.set_tracing(spike_sql::Tracing {
        current: crate::telemetry::current_traceparent,
        continued: |traceparent| crate::telemetry::continued_span("sql (forwarded)", traceparent),
    });
    Ok(databases)
}

/// The host's settings of the capabilities.
fn cap_settings(
    config: &ServerConfig,
    secrets: crate::caps::secrets::SecretsCtx,
    sql: &Option<Arc<spike_sql::Databases>>,
) -> CapSettings {
    CapSettings {
        max_object_bytes: config.max_object_bytes,
        resolver: config.resolver.clone(),
        secrets: Arc::new(secrets),
        default_rate_limit: config.default_rate_limit,
        render: crate::caps::render::RenderSettings {
            profiles_dir: config.data_dir.join("render"),
            ..config.render.clone()
        },
        sql: sql.clone(),
    }
}

fn registry_settings(config: &ServerConfig) -> RegistrySettings {
    RegistrySettings {
        plugins_dir: config.plugins_dir.clone(),
        pool: config.pool.clone(),
        memory_budget_bytes: config.memory_budget_bytes,
        compile_cache_dir: config.data_dir.join("compile-cache"),
        staging_dir: config.data_dir.join("staging"),
        load_delay: config.test_load_delay,
        auth_cache_entries: config.auth_cache_entries,
        overrides: config.plugin_overrides.clone(),
    }
}

/// Watches the plugins folder for changed components and manifests, if
/// the system lets it.
fn watch_plugins(registry: &Arc<PluginRegistry>) -> Option<watch::FileWatch> {
    match watch::watch_plugins(registry.clone()) {
        Ok(watcher) => Some(watcher),
        Err(e) => {
            tracing::warn!("file watching unavailable, hot swap only through the admin API: {e}");
            None
        }
    }
}

/// The server's listeners (the public one, and those the operator asked
/// for besides), and how each is stopped.
struct Listeners {
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    serving: Vec<tokio::task::JoinHandle<()>>,
    clients: ClientLimits,
    watchdog: crate::runtime::watchdog::Watchdog,
    metrics: Arc<Metrics>,
}

impl Listeners {
    /// The listeners the operator asked for besides the public one:
    /// metrics, the admin API, plain HTTP beside HTTPS. The metrics'
    /// address, if any.
    async fn add_others(
        &mut self,
        config: &ServerConfig,
        state: Arc<AppState>,
        public: SocketAddr,
        tls: &Option<Arc<crate::tls::Tls>>,
    ) -> anyhow::Result<Option<SocketAddr>> {
        let mut metrics_addr = None;
        if let Some(at) = config.metrics_listen {
            let scrapes = self.metrics.clone();
            let app = Router::new().route(
                "/metrics",
                get(move || {
                    let metrics = scrapes.clone();
                    async move { metrics_response(&metrics) }
                }),
            );
            metrics_addr = Some(self.add(at, app, "metrics at /metrics").await?);
        }
        if let Some(at) = config.admin_listen {
            let app = App::new(state, Scope::Admin);
            self.add(at, app, "the admin API").await?;
        }
        if let Some(at) = config.listen_http {
            let challenges = tls.as_ref().and_then(|tls| tls.challenges());
            let app = edge::redirect_app(public.port(), challenges);
            self.add(at, app, "plain HTTP, redirected to HTTPS").await?;
        }
        Ok(metrics_addr)
    }

    fn new(
        clients: &ClientLimits,
        watchdog: &crate::runtime::watchdog::Watchdog,
        metrics: &Arc<Metrics>,
    ) -> Self {
        Self {
            stops: Vec::new(),
            serving: Vec::new(),
            clients: clients.clone(),
            watchdog: watchdog.clone(),
            metrics: metrics.clone(),
        }
    }

    /// Serves `app` on `listener` (over TLS with `secure`) until the stop.
    fn serve<S: HttpApp>(
        &mut self,
        listener: tokio::net::TcpListener,
        app: S,
        secure: Option<Secure>,
    ) {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        self.serving.push(tokio::spawn(listener::serve(
            listener,
            app,
            self.clients.clone(),
            secure,
            self.watchdog.clone(),
            self.metrics.clone(),
            stopped,
        )));
        self.stops.push(stop);
    }

    /// Serves `app` (plain HTTP, the public address's client limits) on
    /// `at`; the address it got.
    async fn add<S: HttpApp>(
        &mut self,
        at: SocketAddr,
        app: S,
        what: &str,
    ) -> anyhow::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(at)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen for {what} on {at}: {e}"))?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "serving {what}");
        self.serve(listener, app, None);
        Ok(addr)
    }
}

/// HTTPS, if the operator asked for it: its certificates are loaded (or
/// their ACME manager started) before anything listens.
fn start_tls(
    config: &ServerConfig,
    backends: &Backends,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Option<Arc<crate::tls::Tls>>> {
    let Some(settings) = &config.tls else {
        return Ok(None);
    };
    let storage = crate::tls::acme::Storage {
        kv: backends.kv.clone(),
        cluster: backends.cluster.clone(),
    };
    Ok(Some(crate::tls::Tls::start(settings, storage, metrics)?))
}

/// The `strict-transport-security` value for `max_age` seconds.
fn hsts(max_age: u64) -> http::HeaderValue {
    http::HeaderValue::try_from(format!("max-age={max_age}")).expect("a number is a valid header")
}
