//! `wasi:otel/metrics`: guests' metrics, kept per plugin and served in
//! `/metrics` as `spike_guest_<name>` with the plugin's label (the seed's
//! "cache hit rates" are then a query).
//!
//! Sums become counters (monotonic) or gauges, gauges gauges, histograms
//! histograms with the guest's bounds. Delta points add; cumulative ones
//! add what they grew by since the instance last reported (`Totals`),
//! so a kept instance reporting its totals again counts nothing twice.
//! The first plugin to report a name fixes its kind (and a histogram's
//! bounds); a point that disagrees is dropped, as is one past a plugin's
//! `MAX_SERIES`, and exponential histograms (Prometheus's classic format
//! has no place for them).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;

use super::{Bounds, OtelView, cut};
use crate::bindings::wasi::otel::metrics as wit;

/// Series (a name and its labels) one plugin may have.
pub const MAX_SERIES: usize = 256;
/// Labels one series may have, the plugin's not counted.
const MAX_LABELS: usize = 8;

type Labels = Vec<(String, String)>;

/// Every guest metric of the host.
#[derive(Debug, Default)]
pub struct GuestMetrics {
    inner: Mutex<Store>,
}

#[derive(Debug, Default)]
struct Store {
    metrics: BTreeMap<String, Metric>,
    /// Series by plugin, against `MAX_SERIES`.
    series: HashMap<Arc<str>, usize>,
}

#[derive(Debug)]
struct Metric {
    kind: Kind,
    help: String,
    points: HashMap<Labels, Point>,
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Counter,
    Gauge,
    Histogram(Vec<f64>),
}

#[derive(Debug, Clone)]
enum Point {
    Number(f64),
    Histogram {
        sum: f64,
        count: u64,
        buckets: Vec<u64>,
    },
}

/// What one instance last reported of each cumulative series.
#[derive(Default)]
pub struct Totals(HashMap<(String, Labels), Point>);

/// One point as a guest reported it.
struct Reported {
    name: String,
    help: String,
    kind: Kind,
    labels: Labels,
    point: Point,
    /// Whether the point is a total (cumulative), not an increment.
    total: bool,
    /// Whether it replaces the value (a gauge) rather than adds.
    set: bool,
}

impl GuestMetrics {
    /// Takes what `plugin` reported; how many points were dropped.
    fn take(&self, plugin: &Arc<str>, points: Vec<Reported>, totals: &mut Totals) -> u64 {
        let mut store = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut dropped = 0;
        for mut p in points {
            p.labels.insert(0, ("plugin".into(), plugin.to_string()));
            if p.total {
                let key = (p.name.clone(), p.labels.clone());
                let before = totals.0.get(&key);
                // An instance's totals are kept for as many series as its
                // plugin may have; one past them is dropped below anyway.
                if before.is_none() && totals.0.len() >= MAX_SERIES {
                    dropped += 1;
                    continue;
                }
                let grown = grown(before, &p.point);
                totals.0.insert(key, p.point);
                p.point = match grown {
                    Some(g) => g,
                    None => {
                        dropped += 1;
                        continue;
                    }
                };
            }
            if !store.add(plugin, p) {
                dropped += 1;
            }
        }
        dropped
    }
}

impl Store {
    /// Adds one point; false if it disagrees with the metric or is past
    /// the plugin's series.
    fn add(&mut self, plugin: &Arc<str>, p: Reported) -> bool {
        let metric = self
            .metrics
            .entry(p.name.clone())
            .or_insert_with(|| Metric {
                kind: p.kind.clone(),
                help: p.help.clone(),
                points: HashMap::new(),
            });
        if metric.kind != p.kind {
            return false;
        }
        let known = metric.points.contains_key(&p.labels);
        let count = self.series.entry(plugin.clone()).or_default();
        if !known {
            if *count >= MAX_SERIES {
                return false;
            }
            *count += 1;
        }
        let point = metric
            .points
            .entry(p.labels.clone())
            .or_insert_with(|| match &p.kind {
                Kind::Histogram(bounds) => Point::Histogram {
                    sum: 0.0,
                    count: 0,
                    buckets: vec![0; bounds.len() + 1],
                },
                _ => Point::Number(0.0),
            });
        let otlp = match (point, &p.point) {
            (Point::Number(v), Point::Number(n)) if p.set => {
                *v = *n;
                Otlp::Set(*n)
            }
            (Point::Number(v), Point::Number(n)) => {
                *v += n;
                match p.kind {
                    Kind::Counter => Otlp::Add(*n),
                    _ => Otlp::UpDown(*n),
                }
            }
            (
                Point::Histogram {
                    sum,
                    count,
                    buckets,
                },
                Point::Histogram {
                    sum: s,
                    count: c,
                    buckets: b,
                },
            ) if b.len() == buckets.len() => {
                *sum += s;
                *count += c;
                buckets.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                let Kind::Histogram(bounds) = &p.kind else {
                    return false;
                };
                Otlp::Observed {
                    bounds,
                    sum: *s,
                    count: *c,
                }
            }
            _ => return false,
        };
        // And over OTLP, when the operator sends metrics there.
        crate::telemetry::metrics::record(&p.name, &p.help, &p.labels, otlp);
        true
    }
}

type Otlp<'a> = crate::telemetry::metrics::Point<'a>;

/// What a total grew by since `before`; `None` if the two cannot be
/// compared. A total smaller than before started again (a new instance's
/// counter): all of it is new.
fn grown(before: Option<&Point>, now: &Point) -> Option<Point> {
    match (before, now) {
        (None, now) => Some(now.clone()),
        (Some(Point::Number(b)), Point::Number(n)) => {
            Some(Point::Number(if n >= b { n - b } else { *n }))
        }
        (
            Some(Point::Histogram {
                sum: bs,
                count: bc,
                buckets: bb,
            }),
            Point::Histogram {
                sum,
                count,
                buckets,
            },
        ) if bb.len() == buckets.len() => Some(if count >= bc {
            Point::Histogram {
                sum: sum - bs,
                count: count - bc,
                buckets: buckets
                    .iter()
                    .zip(bb)
                    .map(|(n, b)| n.saturating_sub(*b))
                    .collect(),
            }
        } else {
            now.clone()
        }),
        _ => None,
    }
}

impl Collector for GuestMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let store = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for (name, metric) in &store.metrics {
            let kind = match metric.kind {
                Kind::Counter => MetricType::Counter,
                Kind::Gauge => MetricType::Gauge,
                Kind::Histogram(_) => MetricType::Histogram,
            };
            let mut family = encoder.encode_descriptor(name, &metric.help, None, kind)?;
            for (labels, point) in &metric.points {
                let encoder = family.encode_family(labels)?;
                Encoded {
                    kind: &metric.kind,
                    point,
                }
                .encode(encoder)?;
            }
        }
        Ok(())
    }
}

/// One series' value, as Prometheus's encoder takes it.
struct Encoded<'a> {
    kind: &'a Kind,
    point: &'a Point,
}

impl EncodeMetric for Encoded<'_> {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        match (self.kind, self.point) {
            (Kind::Counter, Point::Number(v)) => {
                encoder.encode_counter::<prometheus_client::encoding::NoLabelSet, _, f64>(v, None)
            }
            (Kind::Gauge, Point::Number(v)) => encoder.encode_gauge(v),
            (
                Kind::Histogram(bounds),
                Point::Histogram {
                    sum,
                    count,
                    buckets,
                },
            ) => {
                let upper = bounds.iter().copied().chain([f64::INFINITY]);
                let buckets: Vec<(f64, u64)> = upper.zip(buckets.iter().copied()).collect();
                encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    *sum, *count, &buckets, None,
                )
            }
            _ => Ok(()),
        }
    }

    fn metric_type(&self) -> MetricType {
        match self.kind {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge => MetricType::Gauge,
            Kind::Histogram(_) => MetricType::Histogram,
        }
    }
}

impl wit::Host for OtelView<'_> {
    fn export(
        &mut self,
        metrics: wit::ResourceMetrics,
    ) -> wasmtime::Result<Result<(), wit::Error>> {
        if self.state.exports >= Bounds::EXPORTS {
            self.dropped("metric", 1);
            return Ok(Err(format!(
                "at most {} metric exports in one call",
                Bounds::EXPORTS
            )));
        }
        self.state.exports += 1;
        let mut points = Vec::new();
        let mut unreadable = 0;
        for scope in metrics.scope_metrics {
            for metric in scope.metrics {
                match reported(metric) {
                    Some(mut more) => points.append(&mut more),
                    None => unreadable += 1,
                }
            }
        }
        if points.len() > Bounds::POINTS {
            unreadable += (points.len() - Bounds::POINTS) as u64;
            points.truncate(Bounds::POINTS);
        }
        let guest = &self.plugin.metrics.host.guest;
        let dropped =
            unreadable + guest.take(&self.plugin.metrics.plugin, points, &mut self.state.totals);
        if dropped > 0 {
            self.dropped("metric", dropped);
        }
        Ok(Ok(()))
    }
}

/// The points of one metric, or `None` for one spike cannot serve
/// (a bad name, an exponential histogram).
fn reported(metric: wit::Metric) -> Option<Vec<Reported>> {
    use wit::MetricData as D;
    let name = prometheus_name(&metric.name)?;
    let help = match metric.description.trim() {
        "" => "Reported by the plugin (wasi:otel)".to_string(),
        _ => cut(metric.description, Bounds::TEXT),
    };
    let (kind, total, set, data) = match metric.data {
        D::F64Sum(s) | D::U64Sum(s) | D::S64Sum(s) => {
            let kind = if s.is_monotonic {
                Kind::Counter
            } else {
                Kind::Gauge
            };
            // Low-memory temporality keeps monotonic sums as deltas.
            let total = match s.temporality {
                wit::Temporality::Cumulative => true,
                wit::Temporality::Delta => false,
                wit::Temporality::LowMemory => !s.is_monotonic,
            };
            let points = s
                .data_points
                .into_iter()
                .map(|p| (p.attributes, Point::Number(number(p.value))));
            (kind, total, false, points.collect::<Vec<_>>())
        }
        D::F64Gauge(g) | D::U64Gauge(g) | D::S64Gauge(g) => {
            let points = g
                .data_points
                .into_iter()
                .map(|p| (p.attributes, Point::Number(number(p.value))));
            (Kind::Gauge, false, true, points.collect())
        }
        D::F64Histogram(h) | D::U64Histogram(h) | D::S64Histogram(h) => {
            let total = h.temporality == wit::Temporality::Cumulative;
            let mut bounds = None;
            let mut points = Vec::new();
            for p in h.data_points {
                if p.bucket_counts.len() != p.bounds.len() + 1
                    || bounds.as_ref().is_some_and(|b| *b != p.bounds)
                {
                    return None;
                }
                bounds.get_or_insert(p.bounds);
                let point = Point::Histogram {
                    sum: number(p.sum),
                    count: p.count,
                    buckets: p.bucket_counts,
                };
                points.push((p.attributes, point));
            }
            (
                Kind::Histogram(bounds.unwrap_or_default()),
                total,
                false,
                points,
            )
        }
        D::F64ExponentialHistogram(_)
        | D::U64ExponentialHistogram(_)
        | D::S64ExponentialHistogram(_) => {
            return None;
        }
    };
    Some(
        data.into_iter()
            .map(|(attributes, point)| Reported {
                name: name.clone(),
                help: help.clone(),
                kind: kind.clone(),
                labels: labels(attributes),
                point,
                total,
                set,
            })
            .collect(),
    )
}

fn number(n: wit::MetricNumber) -> f64 {
    match n {
        wit::MetricNumber::F64(v) => v,
        wit::MetricNumber::S64(v) => v as f64,
        wit::MetricNumber::U64(v) => v as f64,
    }
}

/// `guest_<name>`, in the characters Prometheus allows (a counter's
/// `_total` is the encoder's to add); `None` for an empty or overlong
/// name.
fn prometheus_name(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > 128 {
        return None;
    }
    let name = name.strip_suffix("_total").unwrap_or(name);
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    Some(format!("guest_{clean}"))
}

/// A point's attributes as labels: sorted, at most `MAX_LABELS`, names
/// in Prometheus's characters, values as text (JSON strings unquoted).
fn labels(attributes: Vec<crate::bindings::wasi::otel::types::KeyValue>) -> Labels {
    let mut labels: Labels = attributes
        .into_iter()
        .filter(|kv| kv.key != "plugin")
        .take(MAX_LABELS)
        .map(|kv| {
            let key: String = (kv.key.chars())
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            (cut(key, 128), cut(super::value(&kv.value).to_string(), 256))
        })
        .collect();
    labels.sort();
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(value: f64, total: bool) -> Reported {
        Reported {
            name: "guest_hits".into(),
            help: String::new(),
            kind: Kind::Counter,
            labels: vec![("cache".into(), "ai".into())],
            point: Point::Number(value),
            total,
            set: false,
        }
    }

    fn rendered(m: &Arc<GuestMetrics>) -> String {
        let mut registry = prometheus_client::registry::Registry::with_prefix("spike");
        registry.register_collector(Box::new(m.clone()));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn deltas_add_and_totals_add_what_they_grew_by() {
        let m = Arc::new(GuestMetrics::default());
        let plugin: Arc<str> = "ai".into();
        let mut instance = Totals::default();
        assert_eq!(
            m.take(
                &plugin,
                vec![counter(2.0, false), counter(3.0, false)],
                &mut instance
            ),
            0
        );
        // A kept instance reports its total twice: 4 then 6 add 4 and 2.
        m.take(&plugin, vec![counter(4.0, true)], &mut instance);
        m.take(&plugin, vec![counter(6.0, true)], &mut instance);
        // A new instance starts at 1.
        m.take(&plugin, vec![counter(1.0, true)], &mut Totals::default());
        let text = rendered(&m);
        assert!(
            text.contains("spike_guest_hits_total{plugin=\"ai\",cache=\"ai\"} 12"),
            "{text}"
        );
    }

    #[test]
    fn a_plugin_cannot_pass_its_series_or_change_a_kind() {
        let m = GuestMetrics::default();
        let plugin: Arc<str> = "noisy".into();
        let many = (0..MAX_SERIES + 10)
            .map(|i| Reported {
                labels: vec![("n".into(), i.to_string())],
                ..counter(1.0, false)
            })
            .collect();
        assert_eq!(m.take(&plugin, many, &mut Totals::default()), 10);
        let gauge = Reported {
            kind: Kind::Gauge,
            ..counter(1.0, false)
        };
        assert_eq!(
            m.take(&"other".into(), vec![gauge], &mut Totals::default()),
            1
        );
    }

    #[test]
    fn names_are_made_prometheus_names() {
        assert_eq!(
            prometheus_name("ai.cache-hits_total").as_deref(),
            Some("guest_ai_cache_hits")
        );
        assert_eq!(prometheus_name(""), None);
    }
}
