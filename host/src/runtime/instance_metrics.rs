//! The runtime's series: plugin instances, their faults and refusals, and
//! version swaps.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

use crate::metrics::{Histograms, KindLabels, PluginLabel, series};

/// Instantiation times from 1 µs to about 16 ms.
fn instantiation_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_001, 2.0, 15))
}

/// Linear memory from 64 KiB (a page) to 4 GiB.
fn memory_histogram() -> Histogram {
    Histogram::new(exponential_buckets(65_536.0, 4.0, 9))
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
        /// The time guests ran wasm (time in host calls, waiting on I/O,
        /// is not theirs): the seed's "worker CPU usage".
        cpu_seconds: Family<PluginLabel, Counter<f64, AtomicU64>> = Family::default(),
            "plugin_cpu_seconds", "CPU time guests spent running wasm, by plugin";
        /// Each instance's linear memory when it ended (its most: linear
        /// memory only grows).
        instance_memory: Histograms = Family::new_with_constructor(memory_histogram),
            "plugin_instance_memory_bytes", "Linear memory each plugin instance held at its end";
        /// The most linear memory one instance held, since start.
        memory_peak: Family<PluginLabel, Gauge> = Family::default(),
            "plugin_memory_peak_bytes", "The most linear memory one instance of the plugin held";
        /// Versions `activated` or `refused`.
        swaps: Family<KindLabels, Counter> = Family::default(),
            "plugin_swaps", "Plugin versions activated or refused";
    }
}
