//! A real OTLP receiver for the tests: what spike exports, decoded with
//! the OpenTelemetry protobuf definitions, over http/protobuf (`POST
//! /v1/traces`) or grpc (the collector's `TraceService`). It can also
//! stall (accept a connection and never answer), as a sick collector does.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;

/// One span as the receiver decoded it, ids in hex.
#[derive(Debug, Clone)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root.
    pub parent: String,
    pub name: String,
    /// 1 internal, 2 server, 3 client (the protobuf's `SpanKind`).
    pub kind: i32,
    /// 0 unset, 1 ok, 2 error.
    pub status: i32,
    pub attributes: BTreeMap<String, String>,
    pub resource: BTreeMap<String, String>,
    /// The spans it links to: (trace id, span id).
    pub links: Vec<(String, String)>,
    /// Its events' names.
    pub events: Vec<String>,
}

impl Span {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// A metric's name, and its points' attributes.
pub type Metric = (String, Vec<BTreeMap<String, String>>);

#[derive(Default)]
struct Shared {
    spans: Mutex<Vec<Span>>,
    /// Metric names exported, each with its data points' attributes.
    metrics: Mutex<Vec<Metric>>,
    stall: AtomicBool,
    requests: Mutex<Vec<String>>,
}

/// A receiver on a loopback port of its own.
pub struct Receiver {
    /// `http://127.0.0.1:<port>`: the base URL to give spike.
    pub url: String,
    shared: Arc<Shared>,
}

impl Receiver {
    /// An http/protobuf receiver.
    pub async fn http() -> Self {
        let shared = Arc::new(Shared::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/v1/traces", axum::routing::post(http_export))
            .route("/v1/metrics", axum::routing::post(http_metrics))
            .with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, shared }
    }

    /// A grpc receiver.
    pub async fn grpc() -> Self {
        let shared = Arc::new(Shared::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let service = TraceServiceServer::new(Grpc(shared.clone()));
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming),
        );
        Self { url, shared }
    }

    /// From now on, exports are accepted and never answered.
    pub fn stall(&self) {
        self.shared.stall.store(true, Ordering::SeqCst);
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.shared.spans.lock().unwrap().clone()
    }

    /// The metrics received so far: names, with their points' attributes.
    pub fn metrics(&self) -> Vec<Metric> {
        self.shared.metrics.lock().unwrap().clone()
    }

    /// The content types of the exports received.
    pub fn requests(&self) -> Vec<String> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The spans received once `done` holds of them, within `limit`.
    pub async fn wait_for(&self, limit: Duration, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "the receiver did not get the spans expected within {limit:?}; it has:\n{}",
                    describe(&spans)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// One line per span: name, kind, ids and attributes, for a failure's
/// message.
pub fn describe(spans: &[Span]) -> String {
    spans
        .iter()
        .map(|s| {
            format!(
                "{} kind={} trace={} span={} parent={} {:?}",
                s.name, s.kind, s.trace_id, s.span_id, s.parent, s.attributes
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn http_export(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
    headers: http::HeaderMap,
    body: bytes::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if shared.stall.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    shared.requests.lock().unwrap().push(content_type);
    match ExportTraceServiceRequest::decode(body) {
        Ok(request) => {
            take(&shared, request);
            let answer = ExportTraceServiceResponse::default().encode_to_vec();
            (
                [(http::header::CONTENT_TYPE, "application/x-protobuf")],
                answer,
            )
                .into_response()
        }
        Err(e) => (http::StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn http_metrics(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
    body: bytes::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    let Ok(request) = ExportMetricsServiceRequest::decode(body) else {
        return http::StatusCode::BAD_REQUEST.into_response();
    };
    let mut metrics = shared.metrics.lock().unwrap();
    for resource in request.resource_metrics {
        for scope in resource.scope_metrics {
            for metric in scope.metrics {
                let points = match metric.data {
                    Some(Data::Sum(s)) => s
                        .data_points
                        .iter()
                        .map(|p| attributes(&p.attributes))
                        .collect(),
                    Some(Data::Gauge(g)) => g
                        .data_points
                        .iter()
                        .map(|p| attributes(&p.attributes))
                        .collect(),
                    Some(Data::Histogram(h)) => h
                        .data_points
                        .iter()
                        .map(|p| attributes(&p.attributes))
                        .collect(),
                    _ => Vec::new(),
                };
                metrics.push((metric.name, points));
            }
        }
    }
    (
        [(http::header::CONTENT_TYPE, "application/x-protobuf")],
        Vec::<u8>::new(),
    )
        .into_response()
}

struct Grpc(Arc<Shared>);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        if self.0.stall.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.0.requests.lock().unwrap().push("grpc".into());
        take(&self.0, request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn take(shared: &Shared, request: ExportTraceServiceRequest) {
    let mut spans = shared.spans.lock().unwrap();
    for resource_spans in request.resource_spans {
        let resource = resource_spans
            .resource
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                spans.push(Span {
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent: hex::encode(&span.parent_span_id),
                    name: span.name,
                    kind: span.kind,
                    status: span.status.map_or(0, |s| s.code),
                    attributes: attributes(&span.attributes),
                    resource: resource.clone(),
                    links: (span.links.iter())
                        .map(|l| (hex::encode(&l.trace_id), hex::encode(&l.span_id)))
                        .collect(),
                    events: span.events.iter().map(|e| e.name.clone()).collect(),
                });
            }
        }
    }
}

fn attributes(list: &[KeyValue]) -> BTreeMap<String, String> {
    list.iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map(text).unwrap_or_default(),
            )
        })
        .collect()
}

fn text(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}
