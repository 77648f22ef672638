//! Host capabilities given to plugins, one module per capability.
//!
//! Each module follows the shape of wasmtime's own WASI crates: a context the
//! host owns (`KvCtx`, `BlobCtx`, ...), the generated `Host` traits
//! implemented on the borrowed `View` of it (`KvView`, `BlobView`), and one
//! `add_to_linker`.
//! Host functions return `Result<T, CapError>`: bindgen's trappable error
//! type, turned by `to_wit` into the WIT `error` variant the guest handles,
//! or into a trap for a host bug or a bad handle.
//!
//! `Caps` holds every capability, built once at start from the backends;
//! `Caps::for_plugin` is the one place a plugin's view of them (`PluginCaps`:
//! its name and grants over them) is made.

pub mod blob;
pub mod grants;
pub mod guest_log;
pub mod identity;
pub mod kv;
pub mod otel;
pub mod outbound;
pub mod rate_limit;
pub mod render;
pub mod rooms;
pub mod secrets;
pub mod services;
pub mod sql;
pub mod wasi_config;
pub mod wasi_keyvalue;

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

pub use crate::bindings::spike::host::types::Error as WitError;
use crate::metrics::{Metrics, PluginLabel};
use crate::storage::{Backends, StorageError};
pub use grants::{Grants, Kind};

/// A capability call that failed.
#[derive(Debug, thiserror::Error)]
pub enum CapError {
    #[error("access denied: {0}")]
    AccessDenied(String),
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("too large: {0}")]
    TooLarge(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// A write past a `[storage]` quota: `too-large` to the guest, its
    /// message starting "quota exceeded:" (the SDK answers it 507
    /// `quota_exceeded`); a new WIT case would change what every built
    /// guest links against.
    #[error("{0}")]
    QuotaExceeded(String),
    /// Not the guest's to handle: the call traps.
    #[error("{0}")]
    Trap(wasmtime::Error),
}

impl CapError {
    /// A storage or I/O failure. The detail goes to the log; the guest gets a
    /// short message, since it has no use for our file paths.
    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!(%err, "{context}");
        Self::Internal(format!("{context} failed"))
    }
}

impl From<StorageError> for CapError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NotAnInteger { .. } | StorageError::Overflow { .. } => {
                CapError::InvalidInput(e.to_string())
            }
            StorageError::QuotaExceeded(_) => CapError::QuotaExceeded(e.to_string()),
            e => {
                crate::metrics::STORAGE_ERRORS.inc();
                CapError::internal("storage", e)
            }
        }
    }
}

impl From<wasmtime::component::ResourceTableError> for CapError {
    fn from(e: wasmtime::component::ResourceTableError) -> Self {
        CapError::Trap(e.into())
    }
}

impl crate::telemetry::ErrorType for CapError {
    fn error_type(&self) -> &'static str {
        match self {
            CapError::AccessDenied(_) => "access_denied",
            CapError::InvalidInput(_) => "invalid_input",
            CapError::TooLarge(_) => "too_large",
            CapError::Internal(_) => "internal",
            CapError::QuotaExceeded(_) => "quota_exceeded",
            CapError::Trap(_) => "trap",
        }
    }
}

/// The span of one capability call, `{capability} {operation}` on the
/// named resource (a namespace, bucket, database, secret or quota): its
/// sizes and outcome are recorded on it, never a key or a value.
pub(crate) fn call_span(
    capability: &'static str,
    operation: &'static str,
    resource: &str,
) -> tracing::Span {
    crate::telemetry::span!(
        "capability call",
        otel.name = %format_args!("{capability} {operation}"),
        spike.capability = capability,
        spike.operation = operation,
        spike.resource = resource,
        spike.bytes = tracing::field::Empty,
        spike.rows = tracing::field::Empty,
        spike.outcome = tracing::field::Empty,
    )
}

/// The one place capability errors become the WIT variant (or a trap).
pub fn to_wit(e: CapError) -> wasmtime::Result<WitError> {
    Ok(match e {
        CapError::AccessDenied(m) => WitError::AccessDenied(m),
        CapError::InvalidInput(m) => WitError::InvalidInput(m),
        CapError::TooLarge(m) | CapError::QuotaExceeded(m) => WitError::TooLarge(m),
        CapError::Internal(m) => WitError::Internal(m),
        CapError::Trap(e) => return Err(e),
    })
}

/// Most entries one `list` call returns (KV keys, blob objects).
pub const MAX_LIST_LIMIT: u32 = 1000;

/// A listing's `limit` argument: 0 means the maximum, more is refused.
pub(crate) fn page_limit(limit: u32) -> Result<usize, CapError> {
    match limit {
        0 => Ok(MAX_LIST_LIMIT as usize),
        l if l > MAX_LIST_LIMIT => Err(CapError::InvalidInput(format!(
            "limit {l} is over the maximum of {MAX_LIST_LIMIT}"
        ))),
        l => Ok(l as usize),
    }
}

/// Checks a key: not empty, at most `max` bytes.
pub(crate) fn check_key(what: &str, key: &str, max: usize) -> Result<(), CapError> {
    if key.is_empty() {
        return Err(CapError::InvalidInput(format!("{what} must not be empty")));
    }
    if key.len() > max {
        return Err(CapError::InvalidInput(format!(
            "{what} is {} bytes, the limit is {max}",
            key.len()
        )));
    }
    Ok(())
}

/// The borrowed view through which a guest calls a capability: the host's
/// context for it (`C`), the plugin's grants and series, and the store's
/// resources. Each capability implements its generated `Host` traits on
/// `View<'_, ItsCtx>`.
pub struct View<'a, C> {
    pub ctx: &'a C,
    pub grants: &'a Grants,
    pub counts: Counts<'a>,
    pub table: &'a mut wasmtime::component::ResourceTable,
}

impl<C: Send> crate::bindings::spike::host::types::Host for View<'_, C> {
    fn convert_error(&mut self, e: CapError) -> wasmtime::Result<WitError> {
        if let CapError::QuotaExceeded(_) = e {
            self.counts.quota_exceeded();
        }
        to_wit(e)
    }
}

/// A handle to a named resource the plugin's grants allow (a namespace, a
/// bucket).
pub trait Named: Send + 'static {
    const KIND: Kind;
    fn new(name: Arc<str>) -> Self;
    fn name(&self) -> &Arc<str>;
}

impl<C> View<'_, C> {
    /// A handle to the resource `name`, if the plugin's grants allow it.
    pub fn open_granted<H: Named>(
        &mut self,
        name: String,
    ) -> Result<wasmtime::component::Resource<H>, CapError> {
        self.grants.check(H::KIND, &name)?;
        Ok(self.table.push(H::new(name.into()))?)
    }

    /// The name behind a handle.
    pub fn name_of<H: Named>(
        &self,
        handle: &wasmtime::component::Resource<H>,
    ) -> Result<Arc<str>, CapError> {
        Ok(self.table.get(handle)?.name().clone())
    }
}

/// Where a view counts its operations: the plugin's series.
#[derive(Clone, Copy)]
pub struct Counts<'a> {
    pub metrics: &'a Metrics,
    pub plugin: &'a Arc<str>,
}

impl Counts<'_> {
    pub fn kv(self, operation: &'static str) {
        Metrics::count(&self.metrics.kv.operations, self.plugin, operation, 1);
    }

    pub fn kv_bytes(self, direction: &'static str, n: usize) {
        Metrics::count(&self.metrics.kv.bytes, self.plugin, direction, n as u64);
    }

    pub fn blob(self, operation: &'static str) {
        Metrics::count(&self.metrics.blob.operations, self.plugin, operation, 1);
    }

    pub fn blob_bytes(self, direction: &'static str, n: u64) {
        Metrics::count(&self.metrics.blob.bytes, self.plugin, direction, n);
    }

    /// A secret read: `read`, `denied` or `unset`.
    pub fn secret(self, outcome: &'static str) {
        Metrics::count(&self.metrics.secrets.reads, self.plugin, outcome, 1);
    }

    /// A quota check: `allowed` or `refused`.
    pub fn quota(self, decision: &'static str) {
        Metrics::count(
            &self.metrics.rate_limit.quota_checks,
            self.plugin,
            decision,
            1,
        );
    }

    /// A write refused past a `[storage]` quota.
    pub fn quota_exceeded(self) {
        let labels = PluginLabel {
            plugin: self.plugin.clone(),
        };
        (self.metrics.quota.refusals).get_or_create(&labels).inc();
    }

    /// A call of the rooms import, by function.
    pub fn room(self, operation: &'static str) {
        Metrics::count(&self.metrics.rooms.operations, self.plugin, operation, 1);
    }
}

/// Settings of the capabilities that are the host's, not a plugin's.
#[derive(Clone)]
pub struct CapSettings {
    /// Largest blob object.
    pub max_object_bytes: u64,
    /// How outbound requests resolve host names.
    pub resolver: Arc<dyn outbound::Resolver>,
    /// The operator's secrets.
    pub secrets: Arc<secrets::SecretsCtx>,
    /// The limit of routes whose manifest sets none.
    pub default_rate_limit: Option<rate_limit::Rule>,
    /// The renderer's browser, pages and guard.
    pub render: render::RenderSettings,
    /// The SQL databases, where this host serves them.
    pub sql: Option<Arc<spike_sql::Databases>>,
}

/// Every capability the host offers, built once at start.
pub struct Caps {
    pub kv: kv::KvCtx,
    pub blob: blob::BlobCtx,
    pub outbound: outbound::OutboundCtx,
    pub secrets: Arc<secrets::SecretsCtx>,
    /// Every limiter: routes' and plugins' quotas.
    pub rate_limits: Arc<rate_limit::RateLimits>,
    /// The headless browser (started when a plugin with the grant loads).
    pub render: render::RenderCtx,
    pub sql: sql::SqlCtx,
    /// Where the capabilities count their operations and bytes.
    pub metrics: Arc<Metrics>,
    /// What each plugin's guests printed lately.
    pub guest_logs: guest_log::LogFeeds,
}

impl Caps {
    pub fn new(backends: &Backends, settings: &CapSettings, metrics: &Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            metrics: metrics.clone(),
            guest_logs: guest_log::LogFeeds::default(),
            kv: kv::KvCtx {
                backend: backends.kv.clone(),
            },
            blob: blob::BlobCtx {
                backend: backends.blob.clone(),
                max_object_bytes: settings.max_object_bytes,
            },
            outbound: outbound::OutboundCtx {
                resolver: settings.resolver.clone(),
                pool: outbound::ConnectionPool::start(),
                services: Arc::default(),
            },
            secrets: settings.secrets.clone(),
            rate_limits: rate_limit::RateLimits::start(
                settings.default_rate_limit,
                backends.cluster.clone(),
                metrics,
            ),
            render: render::Renderer::new(
                settings.render.clone(),
                settings.resolver.clone(),
                metrics,
            ),
            sql: sql::SqlCtx {
                databases: settings.sql.clone(),
            },
        })
    }

    /// What the plugin `name` may use: these capabilities, under `grants`.
    pub fn for_plugin(self: &Arc<Self>, name: &str, grants: &Grants) -> PluginCaps {
        let quotas = grants
            .quotas
            .iter()
            .map(|(quota, rule)| (quota.clone(), self.rate_limits.quota(name, quota, *rule)))
            .collect();
        if grants.render {
            self.render.warm();
        }
        let name: Arc<str> = name.into();
        PluginCaps {
            log_feed: self.guest_logs.feed(&name),
            name,
            grants: Arc::new(grants.clone()),
            quotas,
            caps: self.clone(),
        }
    }
}

/// One plugin's view of the capabilities: every call goes through its
/// grants.
pub struct PluginCaps {
    pub name: Arc<str>,
    pub grants: Arc<Grants>,
    /// Where its guests' stdout and stderr lines go, besides the log.
    pub log_feed: Arc<guest_log::LogFeed>,
    /// The limiters of its quotas.
    quotas: rate_limit::Quotas,
    caps: Arc<Caps>,
}

impl PluginCaps {
    pub fn kv<'a>(&'a self, table: &'a mut wasmtime::component::ResourceTable) -> kv::KvView<'a> {
        self.view(&self.caps.kv, table)
    }

    fn view<'a, C>(
        &'a self,
        ctx: &'a C,
        table: &'a mut wasmtime::component::ResourceTable,
    ) -> View<'a, C> {
        View {
            ctx,
            grants: &self.grants,
            counts: self.counts(),
            table,
        }
    }

    fn counts(&self) -> Counts<'_> {
        Counts {
            metrics: &self.caps.metrics,
            plugin: &self.name,
        }
    }

    pub fn blob<'a>(
        &'a self,
        table: &'a mut wasmtime::component::ResourceTable,
    ) -> blob::BlobView<'a> {
        self.view(&self.caps.blob, table)
    }

    pub fn secrets<'a>(
        &'a self,
        table: &'a mut wasmtime::component::ResourceTable,
    ) -> secrets::SecretsView<'a> {
        self.view(&self.caps.secrets, table)
    }

    pub fn rate_limit<'a>(
        &'a self,
        table: &'a mut wasmtime::component::ResourceTable,
    ) -> rate_limit::RateLimitView<'a> {
        self.view(&self.quotas, table)
    }

    /// The identity view of one request: its caller is the request's own.
    pub fn identity<'a>(
        &'a self,
        caller: &'a identity::IdentityCtx,
        table: &'a mut wasmtime::component::ResourceTable,
    ) -> identity::IdentityView<'a> {
        self.view(caller, table)
    }

    /// The rooms view of one call: the room event it handles, if any.
    pub fn rooms<'a>(
        &'a self,
        event: &'a rooms::RoomsCtx,
        table: &'a mut wasmtime::component::ResourceTable,
    ) -> rooms::RoomsView<'a> {
        self.view(event, table)
    }

    pub fn render<'a>(
        &'a self,
        table: &'a mut wasmtime::component::ResourceTable,
    ) -> render::RenderView<'a> {
        self.view(&self.caps.render, table)
    }

    pub fn sql<'a>(
        &'a self,
        table: &'a mut wasmtime::component::ResourceTable,
    ) -> sql::SqlView<'a> {
        self.view(&self.caps.sql, table)
    }

    /// The host's limiters (routes' limits are kept there too).
    pub fn rate_limits(&self) -> &Arc<rate_limit::RateLimits> {
        &self.caps.rate_limits
    }

    /// The `wasi:http` hooks of one request of this plugin, made by
    /// `origin`.
    pub fn outbound_hooks(&self, origin: services::CallOrigin) -> outbound::OutboundHooks {
        outbound::OutboundHooks::new(
            self.grants.clone(),
            &self.caps.outbound,
            self.caps.metrics.clone(),
            self.name.clone(),
            origin,
        )
    }
}

crate::metrics::series! {
    /// Storage quotas' series (each import's own operations are its own).
    pub struct QuotaMetrics {
        /// Writes through the storage imports (KV, blob, a room handler's
        /// appends) refused past a quota, by plugin (a client's room event
        /// past `max_log_mib` counts in `room_closes` as `log_full`).
        refusals: Family<PluginLabel, Counter> = Family::default(),
            "storage_quota_refusals", "Writes through the storage imports refused past a quota";
    }
}
