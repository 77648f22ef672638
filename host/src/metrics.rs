//! The host's metrics, served in the Prometheus (OpenMetrics) text format
//! at `/_spike/metrics` (admin token) or `/metrics` on `--metrics-listen`.
//!
//! Every series is registered here, once; each layer counts what it owns:
//! the server its requests and connections, the runtime instantiations,
//! faults, refusals and swaps, the capabilities their operations and bytes.
//! A later capability adds its series here. Series a request touches every
//! time are taken once per plugin (`PluginMetrics`), so counting costs an
//! atomic add, not a lookup.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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

type Histograms = Family<PluginLabel, Histogram, fn() -> Histogram>;

/// Latencies from 0.1 ms to about 26 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 19))
}

/// Instantiation times from 1 µs to about 16 ms.
fn instantiation_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_001, 2.0, 15))
}

/// Every series of the host.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Histograms,
    pub connections_open: Gauge,
    pub connections_refused: Counter,
    pub instantiations: Family<PluginLabel, Counter>,
    /// Requests served by an instance kept from an earlier request
    /// (`instance_reuse`).
    pub instance_reuses: Family<PluginLabel, Counter>,
    pub instantiation_seconds: Histograms,
    /// Requests a guest failed or a limit ended: `trap`, `cpu_limit`,
    /// `memory_limit`, `timeout`, `max_duration`, `client_stalled`,
    /// `body_timeout`, `body_too_large`.
    pub faults: Family<KindLabels, Counter>,
    /// Requests turned away with 503 `busy`: `plugin` (its
    /// `max_concurrent`), `pool`, `memory`.
    pub busy: Family<KindLabels, Counter>,
    /// Versions `activated` or `refused`.
    pub swaps: Family<KindLabels, Counter>,
    /// KV calls by operation.
    pub kv_operations: Family<KindLabels, Counter>,
    /// KV value bytes `read` and `written`.
    pub kv_bytes: Family<KindLabels, Counter>,
    /// Blob calls by operation.
    pub blob_operations: Family<KindLabels, Counter>,
    /// Object bytes `read` and `written`.
    pub blob_bytes: Family<KindLabels, Counter>,
    /// Secret reads: `read`, `denied`, `unset`.
    pub secret_reads: Family<KindLabels, Counter>,
    /// Quota checks through `rate-limit`: `allowed`, `refused`.
    pub quota_checks: Family<KindLabels, Counter>,
    /// Requests a route's rate limit refused (429), by plugin and route.
    pub rate_limited: Family<RouteLabels, Counter>,
    /// Keys held by all limiters, after the last sweep.
    pub rate_limit_keys: Gauge,
    /// What the auth hook concluded, by the route's plugin: `verified`,
    /// `anonymous`, `missing`, `rejected`, `unavailable`.
    pub auth_outcomes: Family<KindLabels, Counter>,
    /// Auth hook lookups of a token: `hit` (cached) or `miss` (the
    /// authenticator ran).
    pub auth_cache: Family<KindLabels, Counter>,
    /// Rooms with an owner task (their state in memory or hibernating).
    pub rooms_open: Gauge,
    /// WebSocket connections in rooms.
    pub room_connections: Gauge,
    /// Room events stored, by plugin.
    pub room_events: Family<PluginLabel, Counter>,
    /// Frames queued to room connections (events, presence, errors).
    pub room_deliveries: Family<PluginLabel, Counter>,
    /// Room connections closed by the host, or refused, by reason.
    pub room_closes: Family<KindLabels, Counter>,
    /// Room connections forwarded between the nodes of a cluster, by
    /// plugin and side: `entry` (this node holds the client's socket) or
    /// `owner` (this node owns the room).
    pub room_links: Family<KindLabels, Gauge>,
    /// Time to make a batch of room events durable (the output gate).
    pub room_append_seconds: Histogram,
    /// Calls of the rooms import, by plugin and function.
    pub room_operations: Family<KindLabels, Counter>,
    /// Room handler calls, by plugin and outcome (`ok`, or the fault).
    pub room_handler_calls: Family<KindLabels, Counter>,
    /// LiveStore sync requests, by plugin and outcome: `pull`, `push`
    /// (stored), `server_ahead` (a stale push), `refused` (a malformed
    /// push, another store), `backend_mismatch`, `bad_message`.
    pub livestore_requests: Family<KindLabels, Counter>,
    /// Outgoing HTTP requests, by plugin and how each went out: `reused`
    /// (a kept-alive connection), `connected` (a new one), `denied` (not
    /// granted, or an internal address), `failed` (no connection).
    pub outbound_requests: Family<KindLabels, Counter>,
    /// Service calls (`caps::services`), by caller, callee and outcome:
    /// `called` (the callee answered, whatever its status), `denied` (not
    /// granted), `too_deep` (the chain reached its depth limit), `failed`
    /// (no such plugin, or not ready).
    pub service_calls: Family<ServiceLabels, Counter>,
    /// Renders, by plugin and outcome: `ok`, `busy`, `timeout`, `blocked`,
    /// `failed`, `unavailable`, `invalid`, `denied`, `too_large`.
    pub renders: Family<KindLabels, Counter>,
    /// Time of a render that succeeded, queueing included.
    pub render_seconds: Histograms,
    /// What the renderer's guard refused, by plugin: a `page` (the render
    /// failed) or a `request` of a page (the render went on without it).
    pub render_blocked: Family<KindLabels, Counter>,
    /// Chromium processes started.
    pub render_launches: Counter,
    /// Browsers replaced: `crashed`, `recycled` (after `restart_after`).
    pub render_restarts: Family<KindLabels, Counter>,
    /// Pages (renderer processes) stopped past `--render-page-mib`.
    pub render_pages_killed: Counter,
    /// Writes through the storage imports (KV, blob, a room handler's
    /// appends) refused past a quota, by plugin (a client's room event
    /// past `max_log_mib` counts in `room_closes` as `log_full`).
    pub storage_quota_refusals: Family<PluginLabel, Counter>,
    /// Requests refused with 429 `too_many_at_once` past the plugin's
    /// `max_concurrent_per_client` (room joins past
    /// `--max-room-connections-per-client` count in `room_closes` as
    /// `client_full`).
    pub client_capped: Family<PluginLabel, Counter>,
    /// Wrong operator tokens (plugin `-`): `wrong` (401), `throttled`
    /// (429, past ten a minute from one address).
    pub operator_token_refusals: Family<KindLabels, Counter>,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("spike");
        let m = Self {
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency_histogram),
            connections_open: Gauge::default(),
            connections_refused: Counter::default(),
            instantiations: Family::default(),
            instance_reuses: Family::default(),
            instantiation_seconds: Family::new_with_constructor(instantiation_histogram),
            faults: Family::default(),
            busy: Family::default(),
            swaps: Family::default(),
            kv_operations: Family::default(),
            kv_bytes: Family::default(),
            blob_operations: Family::default(),
            blob_bytes: Family::default(),
            secret_reads: Family::default(),
            quota_checks: Family::default(),
            rate_limited: Family::default(),
            rate_limit_keys: Gauge::default(),
            auth_outcomes: Family::default(),
            auth_cache: Family::default(),
            rooms_open: Gauge::default(),
            room_connections: Gauge::default(),
            room_events: Family::default(),
            room_deliveries: Family::default(),
            room_closes: Family::default(),
            room_links: Family::default(),
            room_append_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            room_operations: Family::default(),
            room_handler_calls: Family::default(),
            livestore_requests: Family::default(),
            outbound_requests: Family::default(),
            service_calls: Family::default(),
            renders: Family::default(),
            render_seconds: Family::new_with_constructor(latency_histogram),
            render_blocked: Family::default(),
            render_launches: Counter::default(),
            render_restarts: Family::default(),
            render_pages_killed: Counter::default(),
            storage_quota_refusals: Family::default(),
            client_capped: Family::default(),
            operator_token_refusals: Family::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "http_requests",
            "HTTP requests answered, by plugin, route and status",
            m.requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, to its headers",
            m.request_seconds.clone(),
        );
        r.register(
            "http_connections_open",
            "Client connections open",
            m.connections_open.clone(),
        );
        r.register(
            "http_connections_refused",
            "Connections refused at the connection cap",
            m.connections_refused.clone(),
        );
        r.register(
            "plugin_instantiations",
            "Plugin instances created",
            m.instantiations.clone(),
        );
        r.register(
            "plugin_instance_reuses",
            "Requests served by an instance kept from an earlier request of its plugin",
            m.instance_reuses.clone(),
        );
        r.register(
            "plugin_instantiation_seconds",
            "Time to create a plugin instance",
            m.instantiation_seconds.clone(),
        );
        r.register(
            "plugin_faults",
            "Requests a guest failed or a limit ended, by kind",
            m.faults.clone(),
        );
        r.register(
            "plugin_busy",
            "Requests turned away with 503 busy, by the limit reached",
            m.busy.clone(),
        );
        r.register(
            "plugin_swaps",
            "Plugin versions activated or refused",
            m.swaps.clone(),
        );
        r.register(
            "kv_operations",
            "KV calls, by operation",
            m.kv_operations.clone(),
        );
        r.register(
            "kv_bytes",
            "KV value bytes read and written",
            m.kv_bytes.clone(),
        );
        r.register(
            "blob_operations",
            "Blob calls, by operation",
            m.blob_operations.clone(),
        );
        r.register(
            "blob_bytes",
            "Object bytes read and written",
            m.blob_bytes.clone(),
        );
        r.register(
            "secret_reads",
            "Secret reads, by outcome",
            m.secret_reads.clone(),
        );
        r.register(
            "quota_checks",
            "Quota checks through rate-limit, by decision",
            m.quota_checks.clone(),
        );
        r.register(
            "rate_limited",
            "Requests a route's rate limit refused with 429",
            m.rate_limited.clone(),
        );
        r.register(
            "rate_limit_keys",
            "Keys held by all rate limiters, after the last sweep",
            m.rate_limit_keys.clone(),
        );
        r.register(
            "auth_outcomes",
            "What the auth hook concluded, by the route's plugin",
            m.auth_outcomes.clone(),
        );
        r.register(
            "auth_cache",
            "Auth hook token lookups: hit (cached) or miss",
            m.auth_cache.clone(),
        );
        r.register(
            "rooms_open",
            "Rooms with an owner (in memory or hibernating)",
            m.rooms_open.clone(),
        );
        r.register(
            "room_connections",
            "WebSocket connections in rooms",
            m.room_connections.clone(),
        );
        r.register(
            "room_events",
            "Room events stored, by plugin",
            m.room_events.clone(),
        );
        r.register(
            "room_deliveries",
            "Frames queued to room connections, by plugin",
            m.room_deliveries.clone(),
        );
        r.register(
            "room_closes",
            "Room connections the host closed or refused, by reason",
            m.room_closes.clone(),
        );
        r.register(
            "room_links",
            "Room connections forwarded between nodes, by plugin and side (entry, owner)",
            m.room_links.clone(),
        );
        r.register(
            "room_append_seconds",
            "Time to make a batch of room events durable",
            m.room_append_seconds.clone(),
        );
        r.register(
            "room_operations",
            "Calls of the rooms import, by plugin and function",
            m.room_operations.clone(),
        );
        r.register(
            "room_handler_calls",
            "Room handler calls, by plugin and outcome",
            m.room_handler_calls.clone(),
        );
        r.register(
            "livestore_requests",
            "LiveStore sync requests, by plugin and outcome",
            m.livestore_requests.clone(),
        );
        r.register(
            "outbound_requests",
            "Outgoing HTTP requests, by plugin and connection (reused, connected, denied, failed)",
            m.outbound_requests.clone(),
        );
        r.register(
            "service_calls",
            "Calls of a plugin to another in-process, by caller, service and outcome (called, denied, too_deep, failed)",
            m.service_calls.clone(),
        );
        r.register(
            "renders",
            "Renders (screenshots, PDFs, HTML), by plugin and outcome",
            m.renders.clone(),
        );
        r.register(
            "render_seconds",
            "Time of a successful render, queueing included, by plugin",
            m.render_seconds.clone(),
        );
        r.register(
            "render_blocked",
            "What the renderer's guard refused, by plugin: a page, or a request of a page",
            m.render_blocked.clone(),
        );
        r.register(
            "render_browser_launches",
            "Chromium processes the renderer started",
            m.render_launches.clone(),
        );
        r.register(
            "render_browser_restarts",
            "Browsers the renderer replaced, by reason (crashed, recycled)",
            m.render_restarts.clone(),
        );
        r.register(
            "render_pages_killed",
            "Pages the renderer stopped for holding more memory than --render-page-mib",
            m.render_pages_killed.clone(),
        );
        r.register(
            "storage_quota_refusals",
            "Writes through the storage imports refused past a quota",
            m.storage_quota_refusals.clone(),
        );
        r.register(
            "client_capped",
            "Requests refused past the plugin's max_concurrent_per_client",
            m.client_capped.clone(),
        );
        r.register(
            "operator_token_refusals",
            "Wrong operator tokens, refused (wrong) or throttled",
            m.operator_token_refusals.clone(),
        );
        Arc::new(Self { registry, ..m })
    }

    /// Every series, in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }

    /// Times a render of `plugin` that succeeded.
    pub fn render_time(&self, plugin: &Arc<str>, took: std::time::Duration) {
        let label = PluginLabel {
            plugin: plugin.clone(),
        };
        self.render_seconds
            .get_or_create(&label)
            .observe(took.as_secs_f64());
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

    /// Counts a service call of `plugin` to `service`.
    pub fn count_service_call(&self, plugin: &Arc<str>, service: &Arc<str>, outcome: &'static str) {
        let labels = ServiceLabels {
            plugin: plugin.clone(),
            service: service.clone(),
            outcome,
        };
        self.service_calls.get_or_create(&labels).inc();
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
}

impl PluginMetrics {
    pub fn new(host: &Arc<Metrics>, plugin: &Arc<str>) -> Self {
        let label = PluginLabel {
            plugin: plugin.clone(),
        };
        Self {
            plugin: plugin.clone(),
            host: host.clone(),
            request_seconds: host.request_seconds.get_or_create_owned(&label),
            instantiations: host.instantiations.get_or_create_owned(&label),
            instance_reuses: host.instance_reuses.get_or_create_owned(&label),
            instantiation_seconds: host.instantiation_seconds.get_or_create_owned(&label),
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
        m.requests.get_or_create(&labels).inc_by(3);
        Metrics::count(&m.faults, &plugin, "trap", 1);
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
