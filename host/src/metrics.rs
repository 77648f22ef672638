//! The host's metrics, served in the Prometheus (OpenMetrics) text format
//! at `/_spike/metrics` (admin token) or `/metrics` on `--metrics-listen`.
//!
//! Each subsystem owns its series, declared beside its code with `series!`
//! (a struct of its metrics and their registration): the server's
//! (`server::HttpMetrics`), the runtime's instances (`runtime::
//! InstanceMetrics`), the auth hook's, the rooms', and each capability's.
//! `Metrics` holds one of each and registers them once; a new capability
//! adds its struct and one line here. Series a request touches every time
//! are taken once per plugin (`PluginMetrics`), so counting costs an atomic
//! add, not a lookup.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The content type of `render`'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabel {
    pub plugin: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `-` for the host's own endpoints.
    pub plugin: Arc<str>,
    /// The route prefix that matched (`-` when none did).
    pub route: Arc<str>,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub plugin: Arc<str>,
    pub route: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub plugin: Arc<str>,
    /// What happened: a fault (`trap`, `cpu_limit`, ...), a limit that
    /// turned a request away, a swap's outcome, a storage operation.
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    /// The calling plugin.
    pub plugin: Arc<str>,
    /// The plugin it called.
    pub service: Arc<str>,
    pub outcome: &'static str,
}

pub type Histograms = Family<PluginLabel, Histogram, fn() -> Histogram>;

/// Latencies from 0.1 ms to about 26 s.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 19))
}

/// A subsystem's series, registered once in the host's registry.
pub trait Series {
    fn register(&self, registry: &mut Registry);
}

/// Declares a subsystem's series: a struct with one field per metric, each
/// made as its initializer says, and its registration under the name given
/// (prefixed `spike_`; counters get `_total`).
///
/// ```ignore
/// series! {
///     /// The KV import's series.
///     pub struct KvMetrics {
///         /// KV calls by operation.
///         operations: Family<KindLabels, Counter> = Family::default(),
///             "kv_operations", "KV calls, by operation";
///     }
/// }
/// ```
macro_rules! series {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[$field_meta:meta])*
                $field:ident : $ty:ty = $make:expr, $metric:literal, $help:literal;
            )*
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $( $(#[$field_meta])* pub $field: $ty, )*
        }

        impl Default for $name {
            fn default() -> Self {
                Self { $( $field: $make, )* }
            }
        }

        impl $crate::metrics::Series for $name {
            fn register(&self, registry: &mut prometheus_client::registry::Registry) {
                $( registry.register($metric, $help, self.$field.clone()); )*
            }
        }
    };
}
pub(crate) use series;

/// Storage calls that failed, counted where they are met (capabilities,
/// room logs), which have no `Metrics` at hand: the process's, shared by
/// every server's registry.
pub static STORAGE_ERRORS: std::sync::LazyLock<Counter> =
    std::sync::LazyLock::new(Counter::default);

series! {
    /// Storage's health, as the host meets it.
    pub struct StorageMetrics {
        /// Failed calls of the storage backend (the database, the blob
        /// folder, NATS JetStream): each refused a write or a read.
        errors: Counter = STORAGE_ERRORS.clone(),
            "storage_errors", "Storage calls that failed (a write or read refused)";
    }
}

/// Every series of the host, by the subsystem that owns it.
#[derive(Default)]
pub struct Metrics {
    registry: Registry,
    pub http: crate::server::HttpMetrics,
    pub instances: crate::runtime::InstanceMetrics,
    pub auth: crate::runtime::auth::AuthMetrics,
    pub rooms: crate::rooms::RoomMetrics,
    pub kv: crate::caps::kv::KvMetrics,
    pub blob: crate::caps::blob::BlobMetrics,
    pub secrets: crate::caps::secrets::SecretMetrics,
    pub quota: crate::caps::QuotaMetrics,
    pub rate_limit: crate::caps::rate_limit::RateLimitMetrics,
    pub outbound: crate::caps::outbound::OutboundMetrics,
    pub services: crate::caps::services::ServiceMetrics,
    pub render: crate::caps::render::RenderMetrics,
    pub sql: crate::caps::sql::SqlMetrics,
    pub telemetry: crate::telemetry::TelemetryMetrics,
    pub guest_telemetry: crate::caps::otel::GuestTelemetryMetrics,
    pub storage: StorageMetrics,
    pub tls: crate::tls::TlsMetrics,
    pub answer_cache: crate::server::AnswerCacheMetrics,
    /// Guests' own metrics (`wasi:otel`), encoded at each scrape.
    pub guest: Arc<crate::caps::otel::metrics::GuestMetrics>,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut m = Self::default();
        let mut registry = Registry::with_prefix("spike");
        let all: [&dyn Series; 18] = [
            &m.http,
            &m.instances,
            &m.auth,
            &m.rooms,
            &m.kv,
            &m.blob,
            &m.secrets,
            &m.quota,
            &m.rate_limit,
            &m.outbound,
            &m.services,
            &m.render,
            &m.sql,
            &m.telemetry,
            &m.guest_telemetry,
            &m.storage,
            &m.tls,
            &m.answer_cache,
        ];
        for series in all {
            series.register(&mut registry);
        }
        registry.register_collector(Box::new(m.guest.clone()));
        m.registry = registry;
        Arc::new(m)
    }

    /// Every series, in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }

    /// Counts one `kind` of `family` for `plugin`.
    pub fn count(
        family: &Family<KindLabels, Counter>,
        plugin: &Arc<str>,
        kind: &'static str,
        n: u64,
    ) {
        let labels = KindLabels {
            plugin: plugin.clone(),
            kind,
        };
        family.get_or_create(&labels).inc_by(n);
    }
}

/// One plugin's per-request series, taken once, and the host's for the
/// rest.
#[derive(Clone)]
pub struct PluginMetrics {
    pub plugin: Arc<str>,
    pub host: Arc<Metrics>,
    pub request_seconds: Histogram,
    pub instantiations: Counter,
    pub instance_reuses: Counter,
    pub instantiation_seconds: Histogram,
    pub cpu_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    pub instance_memory: Histogram,
    pub memory_peak: prometheus_client::metrics::gauge::Gauge,
}

impl PluginMetrics {
    pub fn new(host: &Arc<Metrics>, plugin: &Arc<str>) -> Self {
        let label = PluginLabel {
            plugin: plugin.clone(),
        };
        Self {
            plugin: plugin.clone(),
            host: host.clone(),
            request_seconds: host.http.request_seconds.get_or_create_owned(&label),
            instantiations: host.instances.instantiations.get_or_create_owned(&label),
            instance_reuses: host.instances.reuses.get_or_create_owned(&label),
            instantiation_seconds: (host.instances.instantiation_seconds)
                .get_or_create_owned(&label),
            cpu_seconds: host.instances.cpu_seconds.get_or_create_owned(&label),
            instance_memory: host.instances.instance_memory.get_or_create_owned(&label),
            memory_peak: host.instances.memory_peak.get_or_create_owned(&label),
        }
    }

    /// Counts what one instance's calls used: `cpu` of wasm; and, when
    /// it ends, the `memory` it held.
    pub fn used(&self, cpu: std::time::Duration, memory: Option<u64>) {
        if !cpu.is_zero() {
            self.cpu_seconds.inc_by(cpu.as_secs_f64());
        }
        if let Some(bytes) = memory {
            self.instance_memory.observe(bytes as f64);
            let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
            (self.memory_peak.inner()).fetch_max(bytes, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Counts one `kind` of `family` for this plugin.
    pub fn count(&self, family: &Family<KindLabels, Counter>, kind: &'static str) {
        Metrics::count(family, &self.plugin, kind, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_was_counted() {
        let m = Metrics::new();
        let plugin: Arc<str> = "hello".into();
        let labels = RequestLabels {
            plugin: plugin.clone(),
            route: "/hello".into(),
            status: 200,
        };
        m.http.requests.get_or_create(&labels).inc_by(3);
        Metrics::count(&m.instances.faults, &plugin, "trap", 1);
        PluginMetrics::new(&m, &plugin)
            .instantiation_seconds
            .observe(0.000_01);
        let text = m.render();
        assert!(
            text.contains(
                r#"spike_http_requests_total{plugin="hello",route="/hello",status="200"} 3"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"spike_plugin_faults_total{plugin="hello",kind="trap"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("spike_plugin_instantiation_seconds_count{plugin=\"hello\"} 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
