//! Outgoing HTTP (`wasi:http/outgoing-handler`), limited to granted hosts.
//!
//! A plugin may only reach hosts its manifest lists under `grants.outbound`
//! (`pattern`). The name is checked first; then it is resolved once and every
//! address is checked (`resolve`), so that a granted public name that
//! resolves to a loopback, private or link-local address is refused unless
//! the grant itself names that address and port; and the connection goes to
//! exactly the checked addresses (`send`), never to a second lookup's answer.
//! Connections are kept alive for later requests of the same plugin version
//! to the same destination (`pool`), which then need no lookup at all.
//! A request to `<plugin>.spike.internal` is a service call, dispatched
//! in-process by `caps::services` under the grant `services`.

mod pattern;
mod pool;
mod resolve;
mod send;

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use super::Grants;
use super::services::{self, Binding, CallOrigin};
use crate::metrics::{KindLabels, Metrics};
use crate::telemetry;
use futures::TryFutureExt;
pub use pattern::HostPattern;
pub use pool::ConnectionPool;
use pool::Destination;
/// The renderer's guard checks and connects the same way.
pub(crate) use resolve::destinations;
pub use resolve::{Resolver, SystemResolver};
pub(crate) use send::connect_any;
/// The operator commands reach a server's admin API the same way.
pub(crate) use send::{Timeouts, connect};

/// The host's side of outgoing HTTP: the resolver names go through, the
/// connections kept alive between requests, and the plugins service calls
/// reach.
pub struct OutboundCtx {
    pub resolver: Arc<dyn Resolver>,
    pub pool: Arc<ConnectionPool>,
    pub services: Arc<Binding>,
}

/// The `wasi:http` hooks of one request: outgoing requests go through the
/// plugin's grants.
pub struct OutboundHooks {
    grants: Arc<Grants>,
    resolver: Arc<dyn Resolver>,
    pool: Arc<ConnectionPool>,
    metrics: Arc<Metrics>,
    plugin: Arc<str>,
    services: Arc<Binding>,
    /// What the service calls of this request carry.
    origin: CallOrigin,
}

impl OutboundHooks {
    pub fn new(
        grants: Arc<Grants>,
        ctx: &OutboundCtx,
        metrics: Arc<Metrics>,
        plugin: Arc<str>,
        origin: CallOrigin,
    ) -> Self {
        Self {
            grants,
            resolver: ctx.resolver.clone(),
            pool: ctx.pool.clone(),
            metrics,
            plugin,
            services: ctx.services.clone(),
            origin,
        }
    }

    /// The request these hooks serve now (a kept instance serves several).
    pub fn set_origin(&mut self, origin: CallOrigin) {
        self.origin = origin;
    }

    /// Marks the request as made by a service call `depth` deep.
    pub fn set_depth(&mut self, depth: u8) {
        self.origin.depth = depth;
    }
}

type SendFuture = Box<dyn Future<Output = wasmtime_wasi_http::Result<send::Sent>> + Send>;

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        drop(fut);
        if let Some(service) = request.uri().host().and_then(services::service_name) {
            // The callee's request runs inside this span: its guest call
            // is this one's child, in the same trace.
            let span = telemetry::span!(
                "service call",
                otel.name = %format_args!("call {service}"),
                otel.kind = "client",
                spike.service = service,
            );
            let service = service.to_owned();
            let (grants, metrics) = (&self.grants, &self.metrics);
            let call = services::call(
                &self.services,
                grants,
                metrics,
                &self.plugin,
                &service,
                &self.origin,
                request,
            );
            return Box::new(
                telemetry::traced(span, async move {
                    let response = call.await.map_err(Failure)?;
                    let io: Box<dyn Future<Output = Result<(), HttpError>> + Send> =
                        Box::new(async { Ok(()) });
                    Ok((response, io))
                })
                .map_err(|Failure(e)| e),
            );
        }
        self.send_out(request, options)
    }
}

impl OutboundHooks {
    /// A request to a host outside: the grant, a kept-alive connection or
    /// a checked new one, the exchange; its client span records how it went.
    fn send_out(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> SendFuture {
        let span = client_span(&request);
        let (grants, resolver) = (self.grants.clone(), self.resolver.clone());
        let pool = self.pool.clone();
        let (metrics, plugin) = (self.metrics.clone(), self.plugin.clone());
        let count = move |kind| Metrics::count(&metrics.outbound.requests, &plugin, kind, 1);
        let traced = span.clone();
        let send = async move {
            let mut request = request;
            let uri = request.uri();
            let host = uri.host().unwrap_or_default().to_string();
            let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
            let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
            if let Err(e) = grants.check_outbound(&host, port) {
                tracing::warn!("{e}");
                count("denied");
                return Err(HttpError::HttpRequestDenied);
            }
            // Only a destination whose grant says `trace = true` learns
            // the trace (a guest's own `traceparent` is left as it is).
            if grants.traces_to(&host, port) && !request.headers().contains_key("traceparent") {
                for (name, value) in telemetry::propagation_headers(&traced) {
                    request.headers_mut().insert(name, value);
                }
            }
            let timeouts = send::Timeouts::from(options);
            let to = Destination::new(&grants, https, &host, port);
            // A kept-alive connection opened under these grants went to an
            // address they allowed: no new lookup is needed for it. One the
            // server has closed meanwhile is passed over.
            let mut reused = None;
            while let Some(mut sender) = pool.checkout(&to, &grants) {
                if let Ok(Ok(())) = tokio::time::timeout(timeouts.connect, sender.ready()).await {
                    reused = Some(sender);
                    break;
                }
            }
            let sender = match reused {
                Some(sender) => {
                    count("reused");
                    sender
                }
                None => {
                    let addrs =
                        resolve::destinations(&grants.outbound, resolver.as_ref(), &host, port)
                            .await
                            .inspect_err(|e| match e {
                                HttpError::DestinationIpProhibited => count("denied"),
                                _ => count("failed"),
                            })?;
                    let sender = send::connect(&addrs, https, &host, timeouts)
                        .await
                        .inspect_err(|_| count("failed"))?;
                    count("connected");
                    sender
                }
            };
            let back = send::Return { pool, to, grants };
            let sent = send::exchange(sender, request, timeouts, back).await?;
            if !traced.is_none() {
                traced.record("http.response.status_code", sent.0.status().as_u16());
            }
            Ok(sent)
        };
        Box::new(telemetry::traced(span, send.map_err(Failure)).map_err(|Failure(e)| e))
    }
}

/// The client span of an outgoing request (the HTTP semantic
/// conventions' attributes; the URL without its query, which may carry
/// keys).
fn client_span(request: &http::Request<WasiBody>) -> tracing::Span {
    let uri = request.uri();
    telemetry::span!(
        "outbound",
        otel.name = %request.method(),
        otel.kind = "client",
        http.request.method = %request.method(),
        server.address = uri.host().unwrap_or_default(),
        server.port = uri.port_u16(),
        url.full = %format_args!(
            "{}://{}{}",
            uri.scheme_str().unwrap_or("http"),
            uri.authority().map_or("", |a| a.as_str()),
            uri.path()
        ),
        http.response.status_code = tracing::field::Empty,
    )
}

/// An outgoing request's failure, named for its span.
struct Failure(HttpError);

impl telemetry::ErrorType for Failure {
    fn error_type(&self) -> &'static str {
        match &self.0 {
            HttpError::HttpRequestDenied | HttpError::DestinationIpProhibited => "denied",
            HttpError::DnsTimeout | HttpError::DnsError { .. } => "dns",
            HttpError::DestinationNotFound => "not_found",
            HttpError::ConnectionRefused => "connection_refused",
            HttpError::ConnectionTimeout
            | HttpError::ConnectionReadTimeout
            | HttpError::ConnectionWriteTimeout
            | HttpError::HttpResponseTimeout => "timeout",
            HttpError::LoopDetected => "loop_detected",
            HttpError::TlsProtocolError
            | HttpError::TlsCertificateError
            | HttpError::TlsAlertReceived { .. } => "tls",
            _ => "http_error",
        }
    }
}

crate::metrics::series! {
    /// Outgoing HTTP's series.
    pub struct OutboundMetrics {
        /// Outgoing HTTP requests, by plugin and how each went out:
        /// `reused` (a kept-alive connection), `connected` (a new one),
        /// `denied` (not granted, or an internal address), `failed` (no
        /// connection).
        requests: Family<KindLabels, Counter> = Family::default(),
            "outbound_requests",
            "Outgoing HTTP requests, by plugin and connection (reused, connected, denied, failed)";
    }
}
