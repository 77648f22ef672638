//! `spike serve`'s trace flags, each also read from the OpenTelemetry
//! standard variable of the same meaning (a flag wins over its variable).

use std::time::Duration;

use clap::Args;

use crate::telemetry::{Batching, Honour, Protocol, Sampler, Settings};

#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Traces (OpenTelemetry, off unless an endpoint is set)")]
pub struct TelemetryArgs {
    /// The OTLP collector: its base URL (http/protobuf sends to
    /// `<URL>/v1/traces`; grpc to the URL itself). Traces are off
    /// without it.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// The traces URL itself, used as given (wins over --otlp-endpoint).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")]
    pub otlp_traces_endpoint: Option<String>,
    #[arg(
        long,
        value_enum,
        default_value = "http/protobuf",
        env = "OTEL_EXPORTER_OTLP_PROTOCOL"
    )]
    pub otlp_protocol: Protocol,
    /// Headers every export carries: key=value,key2=value2 (values
    /// percent-encoded), e.g. a collector's API key.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_HEADERS", hide_env_values = true)]
    pub otlp_headers: Option<String>,
    /// Milliseconds one export may take, retries included.
    #[arg(long, default_value_t = 10_000, env = "OTEL_EXPORTER_OTLP_TIMEOUT")]
    pub otlp_timeout: u64,
    /// The service name of every span.
    #[arg(long, default_value = "spike", env = "OTEL_SERVICE_NAME")]
    pub service_name: String,
    /// More resource attributes: key=value,key2=value2.
    #[arg(long, env = "OTEL_RESOURCE_ATTRIBUTES")]
    pub resource_attributes: Option<String>,
    /// Which requests are traced: always_on, always_off, traceidratio,
    /// parentbased_always_on, parentbased_always_off,
    /// parentbased_traceidratio.
    #[arg(
        long,
        default_value = "parentbased_always_on",
        env = "OTEL_TRACES_SAMPLER"
    )]
    pub traces_sampler: String,
    /// The sampler's ratio, 0 to 1 (1 when absent).
    #[arg(long, env = "OTEL_TRACES_SAMPLER_ARG")]
    pub traces_sampler_arg: Option<String>,
    /// Whose `traceparent` header a request may continue: `always` (any
    /// client's, which lets a client choose to be sampled), `trusted`
    /// (only from a --trusted-proxy address), `never`.
    #[arg(
        long,
        value_enum,
        default_value = "trusted",
        env = "SPIKE_TRACE_CONTEXT"
    )]
    pub trace_context: Honour,
    /// Spans waiting for the collector at most; more are dropped (and
    /// counted in /metrics).
    #[arg(long, default_value_t = Batching::default().max_queue, env = "OTEL_BSP_MAX_QUEUE_SIZE")]
    pub otlp_max_queue: usize,
    /// Spans sent at most in one export.
    #[arg(long, default_value_t = Batching::default().max_batch, env = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE")]
    pub otlp_max_batch: usize,
    /// Milliseconds a span waits for others to go out with it.
    #[arg(long, default_value_t = Batching::default().delay.as_millis() as u64, env = "OTEL_BSP_SCHEDULE_DELAY")]
    pub otlp_batch_delay: u64,
    /// The metrics URL itself (wins over --otlp-endpoint's `/v1/metrics`).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")]
    pub otlp_metrics_endpoint: Option<String>,
    /// Milliseconds between exports of the plugins' metrics.
    #[arg(long, default_value_t = 60_000, env = "OTEL_METRIC_EXPORT_INTERVAL")]
    pub otlp_metrics_interval: u64,
    /// `none` keeps the plugins' metrics off OTLP (they stay in /metrics).
    #[arg(long, env = "OTEL_METRICS_EXPORTER", hide = true)]
    pub otel_metrics_exporter: Option<String>,
    /// `true` turns traces off whatever else is set.
    #[arg(long, env = "OTEL_SDK_DISABLED", hide = true)]
    pub otel_sdk_disabled: Option<String>,
    /// `none` turns traces off; `otlp` (the only exporter) sends them to
    /// the default endpoint if none is set.
    #[arg(long, env = "OTEL_TRACES_EXPORTER", hide = true)]
    pub otel_traces_exporter: Option<String>,
}

impl TelemetryArgs {
    /// The trace settings, or `None` if traces are off.
    pub fn settings(&self) -> Result<Option<Settings>, String> {
        if self
            .otel_sdk_disabled
            .as_deref()
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        {
            return Ok(None);
        }
        let exporter = self.otel_traces_exporter.as_deref().map(str::trim);
        match exporter {
            Some("none") => return Ok(None),
            None | Some("otlp") => {}
            Some(other) => {
                return Err(format!(
                    "the traces exporter '{other}' is not supported: use otlp or none"
                ));
            }
        }
        let endpoint = match (&self.otlp_traces_endpoint, &self.otlp_endpoint) {
            (Some(url), _) => url.trim().to_owned(),
            (None, Some(base)) => match self.otlp_protocol {
                Protocol::HttpProtobuf => {
                    format!("{}/v1/traces", base.trim().trim_end_matches('/'))
                }
                Protocol::Grpc => base.trim().to_owned(),
            },
            (None, None) if exporter == Some("otlp") => match self.otlp_protocol {
                Protocol::HttpProtobuf => "http://localhost:4318/v1/traces".to_owned(),
                Protocol::Grpc => "http://localhost:4317".to_owned(),
            },
            (None, None) => return Ok(None),
        };
        check_endpoint(&endpoint)?;
        let metrics_endpoint = match (
            self.otel_metrics_exporter.as_deref().map(str::trim),
            &self.otlp_metrics_endpoint,
            &self.otlp_endpoint,
        ) {
            (Some("none"), _, _) => None,
            (_, Some(url), _) => Some(url.trim().to_owned()),
            (_, None, Some(base)) => Some(match self.otlp_protocol {
                Protocol::HttpProtobuf => {
                    format!("{}/v1/metrics", base.trim().trim_end_matches('/'))
                }
                Protocol::Grpc => base.trim().to_owned(),
            }),
            // Only a traces URL: where metrics go is not said.
            (_, None, None) => None,
        };
        if let Some(url) = &metrics_endpoint {
            check_endpoint(url)?;
        }
        let batching = Batching {
            max_queue: self.otlp_max_queue.max(1),
            max_batch: self.otlp_max_batch.max(1),
            delay: Duration::from_millis(self.otlp_batch_delay),
            timeout: Duration::from_millis(self.otlp_timeout.max(1)),
        };
        Ok(Some(Settings {
            endpoint,
            metrics_endpoint,
            metrics_interval: Duration::from_millis(self.otlp_metrics_interval.max(100)),
            protocol: self.otlp_protocol,
            headers: pairs("OTLP headers", self.otlp_headers.as_deref())?,
            service_name: self.service_name.clone(),
            resource: pairs("resource attributes", self.resource_attributes.as_deref())?,
            sampler: Sampler::parse(&self.traces_sampler, self.traces_sampler_arg.as_deref())?,
            honour: self.trace_context,
            batching,
        }))
    }
}

/// A collector URL spike can send to.
fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|e| format!("the OTLP endpoint '{endpoint}' is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") if uri.host().is_some() => Ok(()),
        Some("https") => Err(format!(
            "the OTLP endpoint '{endpoint}' is https: spike sends traces over plain http \
             (to a collector on this machine or its network, which may forward them over TLS)"
        )),
        _ => Err(format!(
            "the OTLP endpoint '{endpoint}' must be an http:// URL with a host"
        )),
    }
}

/// `key=value,key2=value2`, values percent-decoded (the format of
/// `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_EXPORTER_OTLP_HEADERS`).
fn pairs(what: &str, text: Option<&str>) -> Result<Vec<(String, String)>, String> {
    let Some(text) = text else {
        return Ok(Vec::new());
    };
    (text.split(',').map(str::trim).filter(|p| !p.is_empty()))
        .map(|pair| {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| format!("the {what} entry '{pair}' is not key=value"))?;
            let key = k.trim();
            if key.is_empty() {
                return Err(format!("the {what} entry '{pair}' has no key"));
            }
            let value = crate::util::percent_decode(v.trim())
                .ok_or_else(|| format!("the {what} entry '{key}' has a bad %-escape"))?;
            Ok((key.to_owned(), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        t: TelemetryArgs,
    }

    fn settings(args: &[&str]) -> Result<Option<Settings>, String> {
        let mut all = vec!["spike"];
        all.extend(args);
        Cli::try_parse_from(all)
            .map_err(|e| e.to_string())?
            .t
            .settings()
    }

    #[test]
    fn off_unless_an_endpoint_is_set() {
        assert!(settings(&[]).unwrap().is_none());
        let on = settings(&["--otlp-endpoint", "http://127.0.0.1:4318/"])
            .unwrap()
            .unwrap();
        assert_eq!(on.endpoint, "http://127.0.0.1:4318/v1/traces");
        assert_eq!(
            on.sampler,
            Sampler::ParentBased(crate::telemetry::Root::AlwaysOn)
        );
        let grpc = settings(&[
            "--otlp-endpoint",
            "http://collector:4317",
            "--otlp-protocol",
            "grpc",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(grpc.endpoint, "http://collector:4317");
        assert!(
            settings(&[
                "--otlp-endpoint",
                "http://x",
                "--otel-traces-exporter",
                "none"
            ])
            .unwrap()
            .is_none()
        );
    }

    #[test]
    fn bad_settings_are_named() {
        let e = settings(&["--otlp-endpoint", "https://x:4318"]).unwrap_err();
        assert!(e.contains("https"), "{e}");
        let e = settings(&["--otlp-endpoint", "x y"]).unwrap_err();
        assert!(e.contains("not a URL"), "{e}");
        let e = settings(&["--otlp-endpoint", "http://x", "--traces-sampler", "nope"]).unwrap_err();
        assert!(e.contains("unknown traces sampler 'nope'"), "{e}");
        let e =
            settings(&["--otlp-endpoint", "http://x", "--resource-attributes", "a"]).unwrap_err();
        assert!(e.contains("'a' is not key=value"), "{e}");
    }

    #[test]
    fn pairs_are_percent_decoded() {
        assert_eq!(
            pairs("x", Some("a=b%20c, d = e ,")).unwrap(),
            vec![("a".into(), "b c".into()), ("d".into(), "e".into())]
        );
        assert!(pairs("x", Some("a=%zz")).is_err());
    }
}
