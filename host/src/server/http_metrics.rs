//! The server's series: requests, connections, and what its gate refused.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::{
    Histograms, KindLabels, PluginLabel, RequestLabels, RouteLabels, latency_histogram, series,
};

series! {
    /// Requests and connections, and the gate's refusals.
    pub struct HttpMetrics {
        requests: Family<RequestLabels, Counter> = Family::default(),
            "http_requests", "HTTP requests answered, by plugin, route and status";
        request_seconds: Histograms = Family::new_with_constructor(latency_histogram),
            "http_request_duration_seconds", "Time to answer an HTTP request, to its headers";
        connections_open: Gauge = Gauge::default(),
            "http_connections_open", "Client connections open";
        connections_refused: Counter = Counter::default(),
            "http_connections_refused", "Connections refused at the connection cap";
        /// Requests a route's rate limit refused (429), by plugin and route.
        rate_limited: Family<RouteLabels, Counter> = Family::default(),
            "rate_limited", "Requests a route's rate limit refused with 429";
        /// Requests refused with 429 `too_many_at_once` past the plugin's
        /// `max_concurrent_per_client` (room joins past
        /// `--max-room-connections-per-client` count in `room_closes` as
        /// `client_full`).
        client_capped: Family<PluginLabel, Counter> = Family::default(),
            "client_capped", "Requests refused past the plugin's max_concurrent_per_client";
        /// Wrong operator tokens (plugin `-`): `wrong` (401), `throttled`
        /// (429, past ten a minute from one address).
        operator_token_refusals: Family<KindLabels, Counter> = Family::default(),
            "operator_token_refusals", "Wrong operator tokens, refused (wrong) or throttled";
    }
}
