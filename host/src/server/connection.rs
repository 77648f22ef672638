//! One connection's serving, once accepted (and its TLS handshake done):
//! HTTP/1.1 or HTTP/2, each request answered with the connection's own
//! bookkeeping (its peer, the head deadline, `connection: close` in a
//! drain, HSTS), and the connection driven through a stop.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::watch;

use super::listener::{HeadDeadline, HttpApp, LAST_REQUEST_GRACE, Responding, UntilSent};
use crate::server::gate::PeerAddr;
use crate::tls::{Protocol, Tls};

/// What a TLS listener serves with.
#[derive(Clone)]
pub struct Secure {
    pub tls: Arc<Tls>,
    /// `strict-transport-security` on every answer (`--hsts-max-age`).
    pub hsts: Option<http::HeaderValue>,
}

/// HTTP/2's limits, each set on purpose rather than left to the library:
/// a client gets 128 requests at once on a connection (the per-plugin
/// concurrency caps still apply to each); headers up to 64 KiB, as HTTP/1
/// allows; at most 32 streams it reset before they were answered (the
/// rapid-reset attack, CVE-2023-44487) and 256 the server had to reset; a
/// ping every 20 s, closing a connection whose peer does not answer within
/// 20 s. Memory a connection can make the server hold is bounded like an
/// HTTP/1 socket's kernel buffers: what a client may send ahead of a
/// guest's reading (flow-control windows of 256 KiB a stream, 1 MiB the
/// connection), and what waits for a client that does not read (64 KiB a
/// stream; the send timeout ends it).
pub(super) fn http2_builder() -> hyper::server::conn::http2::Builder<TokioExecutor> {
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(128)
        .max_header_list_size(64 << 10)
        .max_pending_accept_reset_streams(32)
        .max_local_error_reset_streams(256)
        .initial_stream_window_size(256 << 10)
        .initial_connection_window_size(1 << 20)
        .max_send_buf_size(64 << 10)
        .keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

/// What answers a connection's requests: the app, with the connection's
/// own bookkeeping around each request.
pub(super) struct Answering<S> {
    pub(super) app: TowerToHyperService<S>,
    pub(super) peer: SocketAddr,
    pub(super) deadline: Arc<HeadDeadline>,
    pub(super) closing: Arc<AtomicBool>,
    /// `strict-transport-security` for every answer, on TLS with `--hsts`.
    pub(super) hsts: Option<http::HeaderValue>,
}

impl<S> Answering<S>
where
    S: HttpApp,
{
    pub(super) fn service(
        &self,
        protocol: Protocol,
    ) -> impl hyper::service::Service<
        http::Request<hyper::body::Incoming>,
        Response = http::Response<Body>,
        Error = std::convert::Infallible,
        Future = impl Future<Output = Result<http::Response<Body>, std::convert::Infallible>>
                 + Send
                 + 'static,
    > + Clone
    + Send
    + 'static {
        let (app, peer, tracking) = (self.app.clone(), self.peer, self.deadline.clone());
        let (closing, hsts) = (self.closing.clone(), self.hsts.clone());
        hyper::service::service_fn(move |mut request: http::Request<_>| {
            request.extensions_mut().insert(PeerAddr(peer));
            let responding = Responding::start(&tracking);
            let response = hyper::service::Service::call(&app, request);
            // A request begun once the drain has started is the last of its
            // connection (one in flight then is the grace period's to end).
            // HTTP/2 has no `connection` header: its GOAWAY says as much.
            let last = protocol == Protocol::Http1 && closing.load(Ordering::Relaxed);
            let hsts = hsts.clone();
            async move {
                let mut response = response.await?;
                if last {
                    let close = http::HeaderValue::from_static("close");
                    response
                        .headers_mut()
                        .insert(http::header::CONNECTION, close);
                }
                if let Some(hsts) = hsts {
                    response
                        .headers_mut()
                        .insert(http::header::STRICT_TRANSPORT_SECURITY, hsts);
                }
                Ok::<_, std::convert::Infallible>(response.map(|body| {
                    Body::new(UntilSent {
                        body,
                        _responding: responding,
                    })
                }))
            }
        })
    }
}

/// A connection hyper serves that can be asked to end gracefully.
pub(super) trait Graceful: Future<Output = Result<(), hyper::Error>> {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S, B> Graceful for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    Self: Future<Output = Result<(), hyper::Error>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper::server::conn::http1::UpgradeableConnection::graceful_shutdown(self)
    }
}

impl<I, S, B> Graceful for hyper::server::conn::http2::Connection<I, S, TokioExecutor>
where
    Self: Future<Output = Result<(), hyper::Error>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Future: Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper::server::conn::http2::Connection::graceful_shutdown(self)
    }
}

/// Serves `conn` to its end, or through the drain: between two requests a
/// kept-alive connection is idle to hyper while its client may be sending
/// the next one already: closed then, that request is reset. It gets a
/// moment for one more, answered with `connection: close` (then hyper
/// ends the connection; an HTTP/2 one gets GOAWAY); one still idle after
/// it is closed, one still busy finishes its requests first. Dropping the
/// connection (at the cut) drops its requests, and the guests serving them.
pub(super) async fn drive(
    conn: impl Graceful + Send,
    mut draining: watch::Receiver<bool>,
    mut cut: watch::Receiver<bool>,
) {
    let mut conn = std::pin::pin!(conn);
    let drain = tokio::select! {
        _ = conn.as_mut() => false,
        _ = draining.wait_for(|d| *d) => true,
    };
    if drain {
        let ended = tokio::select! {
            _ = conn.as_mut() => true,
            _ = tokio::time::sleep(LAST_REQUEST_GRACE) => false,
            _ = cut.wait_for(|c| *c) => true,
        };
        if !ended {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = cut.wait_for(|c| *c) => {}
            }
        }
    }
}
