//! W3C trace context: the `traceparent` (and `tracestate`) a request brings,
//! honoured as the operator says, and the one an outgoing request carries.

use http::{HeaderMap, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;

/// Whose `traceparent` a request may continue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Honour {
    /// Any client's: a browser's trace continues on the server. A client
    /// can then choose to be sampled.
    Always,
    /// Only a request from a `--trusted-proxy` address (a gateway that
    /// traces, or strips what clients send).
    Trusted,
    /// Every request starts a trace of its own.
    Never,
}

/// The caller's span that `headers` name, if there is a valid one.
pub fn incoming(headers: &HeaderMap) -> Option<SpanContext> {
    headers.get("traceparent")?;
    let cx = TraceContextPropagator::new().extract(&Headers(headers));
    let span = cx.span().span_context().clone();
    span.is_valid().then_some(span)
}

/// The `traceparent` and `tracestate` headers that make the receiver of a
/// request a child of `span`.
pub fn outgoing(span: &SpanContext) -> Vec<(&'static str, HeaderValue)> {
    let mut headers = Outgoing(Vec::with_capacity(2));
    let cx = opentelemetry::Context::new().with_remote_span_context(span.clone());
    TraceContextPropagator::new().inject_context(&cx, &mut headers);
    headers.0
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct Outgoing(Vec<(&'static str, HeaderValue)>);

impl Injector for Outgoing {
    fn set(&mut self, key: &str, value: String) {
        let name = match key {
            "traceparent" => "traceparent",
            "tracestate" => "tracestate",
            _ => return,
        };
        if let Ok(value) = HeaderValue::from_str(&value) {
            self.0.push((name, value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_is_read_and_written_back() {
        let mut headers = HeaderMap::new();
        let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        headers.insert("traceparent", HeaderValue::from_static(parent));
        headers.insert("tracestate", HeaderValue::from_static("vendor=x"));
        let span = incoming(&headers).expect("a valid parent");
        assert!(span.is_sampled() && span.is_remote());
        let out = outgoing(&span);
        assert_eq!(out[0], ("traceparent", HeaderValue::from_static(parent)));
        assert_eq!(out[1], ("tracestate", HeaderValue::from_static("vendor=x")));
    }

    #[test]
    fn a_malformed_traceparent_is_no_parent() {
        for bad in [
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "zz",
        ] {
            let mut headers = HeaderMap::new();
            headers.insert("traceparent", HeaderValue::from_str(bad).unwrap());
            assert!(incoming(&headers).is_none(), "{bad}");
        }
        assert!(incoming(&HeaderMap::new()).is_none());
    }
}
