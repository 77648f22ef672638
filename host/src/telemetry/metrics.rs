//! The plugins' own metrics (`caps::otel::metrics`) over OTLP too, beside
//! `/metrics`: each point a guest reports is recorded in an OpenTelemetry
//! instrument of its name (made on first use), which a reader collects and
//! sends every `interval` from a task on the server's runtime (the SDK's
//! periodic reader runs a thread of its own, where the async HTTP client
//! has no runtime to run on).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter, MeterProvider as _, UpDownCounter};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{
    InstrumentKind, ManualReader, Pipeline, SdkMeterProvider, Temporality,
};

/// One point of a guest's metric, as `caps::otel` made it: increments
/// (already the difference, for a total), or a gauge's value, or values
/// observed by a histogram.
pub enum Point<'a> {
    Add(f64),
    UpDown(f64),
    Set(f64),
    Observed {
        bounds: &'a [f64],
        sum: f64,
        count: u64,
    },
}

struct Meters {
    meter: Meter,
    instruments: Mutex<HashMap<String, Instrument>>,
    /// Keeps the provider (and its reader) alive.
    _provider: SdkMeterProvider,
}

enum Instrument {
    Counter(Counter<f64>),
    UpDown(UpDownCounter<f64>),
    Gauge(Gauge<f64>),
    Histogram(Histogram<f64>),
}

static METERS: OnceLock<Meters> = OnceLock::new();

/// A histogram point of more values than this is recorded as this many
/// (its mean each time): the SDK takes values, not buckets.
const MAX_REPLAYED: u64 = 1000;

/// Records a guest's point, if metrics go out over OTLP.
pub fn record(name: &str, help: &str, labels: &[(String, String)], point: Point<'_>) {
    let Some(meters) = METERS.get() else { return };
    let attributes: Vec<KeyValue> = (labels.iter())
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
        .collect();
    let mut instruments = meters.instruments.lock().unwrap_or_else(|e| e.into_inner());
    let instrument = instruments.entry(name.to_owned()).or_insert_with(|| {
        let (name, help) = (name.to_owned(), help.to_owned());
        let meter = &meters.meter;
        match &point {
            Point::Add(_) => {
                Instrument::Counter(meter.f64_counter(name).with_description(help).build())
            }
            Point::UpDown(_) => Instrument::UpDown(
                meter
                    .f64_up_down_counter(name)
                    .with_description(help)
                    .build(),
            ),
            Point::Set(_) => {
                Instrument::Gauge(meter.f64_gauge(name).with_description(help).build())
            }
            Point::Observed { bounds, .. } => Instrument::Histogram(
                (meter.f64_histogram(name).with_description(help))
                    .with_boundaries(bounds.to_vec())
                    .build(),
            ),
        }
    });
    match (instrument, point) {
        (Instrument::Counter(c), Point::Add(v)) => c.add(v, &attributes),
        (Instrument::UpDown(c), Point::UpDown(v)) => c.add(v, &attributes),
        (Instrument::Gauge(g), Point::Set(v)) => g.record(v, &attributes),
        (Instrument::Histogram(h), Point::Observed { sum, count, .. }) if count > 0 => {
            let mean = sum / count as f64;
            for _ in 0..count.min(MAX_REPLAYED) {
                h.record(mean, &attributes);
            }
        }
        // `caps::otel` keeps one kind per name: nothing else arrives.
        _ => {}
    }
}

/// Starts sending guests' metrics through `exporter` every `interval`,
/// under `resource`.
pub fn start<E: PushMetricExporter>(
    exporter: E,
    resource: opentelemetry_sdk::Resource,
    interval: Duration,
) {
    let reader = Arc::new(
        ManualReader::builder()
            .with_temporality(Temporality::Cumulative)
            .build(),
    );
    let provider = SdkMeterProvider::builder()
        .with_reader(Shared(reader.clone()))
        .with_resource(resource)
        .build();
    let meters = Meters {
        meter: provider.meter("spike.guest"),
        instruments: Mutex::default(),
        _provider: provider,
    };
    if METERS.set(meters).is_err() {
        return;
    }
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            let mut collected = ResourceMetrics::default();
            if reader.collect(&mut collected).is_ok()
                && let Err(e) = exporter.export(&collected).await
            {
                tracing::debug!("exporting the plugins' metrics failed: {e}");
            }
        }
    });
}

/// The reader, shared between the provider and the export task.
#[derive(Debug)]
struct Shared(Arc<ManualReader>);

impl MetricReader for Shared {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline);
    }

    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}
