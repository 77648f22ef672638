//! The runtime's series: plugin instances, their faults and refusals, and
//! version swaps.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

use crate::metrics::{Histograms, KindLabels, PluginLabel, series};

/// Instantiation times from 1 µs to about 16 ms.
fn instantiation_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_001, 2.0, 15))
}

series! {
    /// Plugin instances, and what ended or refused their requests.
    pub struct InstanceMetrics {
        instantiations: Family<PluginLabel, Counter> = Family::default(),
            "plugin_instantiations", "Plugin instances created";
        /// Requests served by an instance kept from an earlier request
        /// (`instance_reuse`).
        reuses: Family<PluginLabel, Counter> = Family::default(),
            "plugin_instance_reuses",
            "Requests served by an instance kept from an earlier request of its plugin";
        instantiation_seconds: Histograms = Family::new_with_constructor(instantiation_histogram),
            "plugin_instantiation_seconds", "Time to create a plugin instance";
        /// Requests a guest failed or a limit ended: `trap`, `cpu_limit`,
        /// `memory_limit`, `timeout`, `max_duration`, `client_stalled`,
        /// `body_timeout`, `body_too_large`.
        faults: Family<KindLabels, Counter> = Family::default(),
            "plugin_faults", "Requests a guest failed or a limit ended, by kind";
        /// Requests turned away with 503 `busy`: `plugin` (its
        /// `max_concurrent`), `pool`, `memory`.
        busy: Family<KindLabels, Counter> = Family::default(),
            "plugin_busy", "Requests turned away with 503 busy, by the limit reached";
        /// Versions `activated` or `refused`.
        swaps: Family<KindLabels, Counter> = Family::default(),
            "plugin_swaps", "Plugin versions activated or refused";
    }
}
