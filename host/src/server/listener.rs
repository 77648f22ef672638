//! Accepting connections: how many may be open, how long a client may take
//! to send a request head (checked by the runtime's watchdog, not by a timer
//! per request), and stopping without cutting requests short.
//!
//! Plain connections speak HTTP/1.1 (WebSocket upgrades included): browsers
//! speak HTTP/2 only over TLS, and plain-text HTTP/2 (h2c) would only add
//! a way in. TLS connections (`crate::tls`) speak what ALPN chose: HTTP/2
//! or HTTP/1.1. WebSockets stay on HTTP/1.1: extended CONNECT (RFC 8441)
//! is not offered, so a browser opens an HTTP/1.1 connection for them.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::connection::{Answering, Secure, drive, http2_builder};
use crate::config::{ClientLimits, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_ROOM_CONNECTIONS};
use crate::metrics::Metrics;
use crate::runtime::watchdog::{self, Watchdog, Watched};
use crate::tls::Protocol;

/// File descriptors kept for everything that is not a client connection:
/// the database, blob bodies being streamed, compile-cache files, outbound
/// connections, the file watcher.
const RESERVED_FDS: u64 = 256;

/// What a connection beyond the cap gets before it is closed.
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 100\r\n\
\r\n\
{\"error\":{\"code\":\"too_many_connections\",\"message\":\"the server is at its limit of open connections\"}}";

/// The caps of HTTP connections and room sockets that the open-file limit
/// allows: the soft limit is raised to the hard one first (the default
/// soft limit, 1024 on many systems, is too low for a server); then, if
/// the two caps do not fit with a reserve for the host's own files, both
/// are lowered in proportion. An HTTP connection is counted as two files
/// (it may hold a blob body or an outbound socket while it is served), a
/// room socket as one.
pub fn connection_caps(http: usize, rooms: usize) -> (usize, usize) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if let (Some(soft), Some(hard)) = (limit.current, limit.maximum)
        && soft < hard
    {
        limit.current = Some(hard);
        if setrlimit(Resource::Nofile, limit).is_err() {
            limit.current = Some(soft);
        }
    }
    let Some(files) = limit.current else {
        return (http, rooms); // unlimited
    };
    let (fitted_http, fitted_rooms) = fit_caps(files, http, rooms);
    if (fitted_http, fitted_rooms) != (http, rooms) {
        // Asked for, it deserves a warning; the defaults just adapt.
        let defaults = http == DEFAULT_MAX_CONNECTIONS && rooms == DEFAULT_MAX_ROOM_CONNECTIONS;
        let message = "connection caps fitted to the open-file limit (raise it with ulimit -n)";
        if defaults {
            tracing::info!(
                max_connections = fitted_http,
                max_room_connections = fitted_rooms,
                open_file_limit = files,
                "{message}"
            );
        } else {
            tracing::warn!(
                max_connections = fitted_http,
                max_room_connections = fitted_rooms,
                open_file_limit = files,
                "{message}"
            );
        }
    }
    (fitted_http, fitted_rooms)
}

/// `connection_caps` with `files` descriptors.
fn fit_caps(files: u64, http: usize, rooms: usize) -> (usize, usize) {
    let available = files.saturating_sub(RESERVED_FDS);
    let needed = 2 * http as u64 + rooms as u64;
    if needed <= available {
        return (http, rooms);
    }
    let scale = |n: usize| ((n as u128 * available as u128 / needed as u128) as usize).max(1);
    (scale(http), scale(rooms))
}

/// At a stop, how long a kept-alive connection may take to send one more
/// request (answered with `connection: close`) before it is closed.
pub(super) const LAST_REQUEST_GRACE: Duration = Duration::from_millis(250);

/// What a listener serves: an app answering hyper's requests, cloned per
/// connection, its futures run on any thread.
pub trait HttpApp:
    tower::Service<
        http::Request<hyper::body::Incoming>,
        Response = axum::response::Response,
        Error = std::convert::Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S> HttpApp for S where
    S: tower::Service<
            http::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// Serves `app` on `listener` until `stop` fires, then lets open
/// connections finish their requests (up to the drain timeout).
pub async fn serve<S>(
    listener: TcpListener,
    app: S,
    limits: ClientLimits,
    tls: Option<Secure>,
    watchdog: Watchdog,
    metrics: Arc<Metrics>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) where
    S: HttpApp,
{
    let cap = limits.max_connections.max(1);
    let (draining_tx, draining) = watch::channel(false);
    // Fired when the drain timeout has passed: what is still open is cut.
    let (cut_tx, cut) = watch::channel(false);
    let connections = Connections {
        open: Arc::new(Semaphore::new(cap)),
        http: hyper::server::conn::http1::Builder::new(),
        http2: http2_builder(),
        tls,
        draining,
        cut,
        closing: Arc::new(AtomicBool::new(false)),
        header_timeout: limits.header_timeout,
        watchdog,
        metrics,
    };
    let mut refused = RefusalLog::default();
    loop {
        let Some((stream, peer)) = accept(&listener, &mut stop).await else {
            break;
        };
        let Ok(permit) = connections.open.clone().try_acquire_owned() else {
            connections.metrics.http.connections_refused.inc();
            refuse(stream, connections.tls.is_none(), &mut refused);
            continue;
        };
        connections.start(stream, peer, permit, &app);
    }
    drop(listener);
    connections.closing.store(true, Ordering::Relaxed);
    let _ = draining_tx.send(true);
    drain(&connections.open, cap, limits.drain_timeout, &cut_tx).await;
}

/// The listener's open connections, and what each is started with.
struct Connections {
    /// One permit per open connection (the connection cap).
    open: Arc<Semaphore>,
    http: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
    tls: Option<Secure>,
    /// Set when the drain starts.
    draining: watch::Receiver<bool>,
    /// Set when the drain timeout has passed.
    cut: watch::Receiver<bool>,
    /// Set when the drain starts: every request after it is answered with
    /// `connection: close`.
    closing: Arc<AtomicBool>,
    header_timeout: Duration,
    watchdog: Watchdog,
    metrics: Arc<Metrics>,
}

impl Connections {
    /// Serves one accepted connection on a task of its own, holding
    /// `permit` until it ends.
    fn start<S>(&self, stream: TcpStream, peer: SocketAddr, permit: OwnedSemaphorePermit, app: &S)
    where
        S: HttpApp,
    {
        let metrics = &self.metrics;
        metrics.http.connections_open.inc();
        let open_gauge = metrics.http.connections_open.clone();
        let _ = stream.set_nodelay(true);
        let deadline = Arc::new(HeadDeadline::new(self.header_timeout, watchdog::now_ms()));
        let watching = self.watchdog.watch(deadline.clone());
        let answering = Answering {
            app: TowerToHyperService::new(app.clone()),
            peer,
            deadline: deadline.clone(),
            closing: self.closing.clone(),
            hsts: self.tls.as_ref().and_then(|tls| tls.hsts.clone()),
        };
        let (http1, http2) = (self.http.clone(), self.http2.clone());
        let tls = (self.tls.as_ref()).map(|secure| (secure.tls.enter(), secure.tls.clone()));
        let (draining, cut) = (self.draining.clone(), self.cut.clone());
        let task = tokio::spawn(async move {
            // Dropped with the task however it ends, the watchdog's abort
            // included.
            let _counted = ConnectionClosed(open_gauge);
            match tls {
                None => {
                    let conn = http1
                        .serve_connection(TokioIo::new(stream), answering.service(Protocol::Http1));
                    drive(conn.with_upgrades(), draining, cut).await
                }
                Some((slot, tls)) => match tls.accept(slot, stream).await {
                    Some((io, Protocol::Http1)) => {
                        let conn = http1
                            .serve_connection(TokioIo::new(io), answering.service(Protocol::Http1));
                        drive(conn.with_upgrades(), draining, cut).await
                    }
                    Some((io, Protocol::Http2)) => {
                        let conn = http2
                            .serve_connection(TokioIo::new(io), answering.service(Protocol::Http2));
                        drive(conn, draining, cut).await
                    }
                    None => {}
                },
            }
            drop((permit, watching));
        });
        deadline.task.get_or_init(|| task.abort_handle());
    }
}

/// The next connection, or `None` once `stop` fires. A failed accept (out
/// of file descriptors, say) is waited out.
async fn accept(
    listener: &TcpListener,
    stop: &mut tokio::sync::oneshot::Receiver<()>,
) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => return Some(accepted),
                Err(e) => accept_failed(e).await,
            },
            _ = &mut *stop => return None,
        }
    }
}

/// Waits up to `timeout` for every connection (each holds one of `open`'s
/// `cap` permits) to end; then cuts those still open.
async fn drain(open: &Semaphore, cap: usize, timeout: Duration, cut: &watch::Sender<bool>) {
    let all = u32::try_from(cap).unwrap_or(u32::MAX);
    if tokio::time::timeout(timeout, open.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {timeout:?}; closing them");
        let _ = cut.send(true);
        let closed = open.acquire_many(all);
        let _ = tokio::time::timeout(Duration::from_secs(1), closed).await;
    }
}

/// Counts a connection closed when dropped.
struct ConnectionClosed(prometheus_client::metrics::gauge::Gauge);

impl Drop for ConnectionClosed {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A connection's one deadline: a request head within `header_timeout` of
/// the moment it became ready for one (accepted, or its last response
/// sent). That bounds a slow head (slowloris) and an idle kept-alive
/// connection alike. The watchdog checks it every tick and closes the
/// connection (aborts its task) once it passes. Times are the watchdog's
/// `now_ms`.
pub(super) struct HeadDeadline {
    header_timeout: u64,
    /// Requests whose responses are not yet sent.
    responding: AtomicU32,
    /// When the connection last became ready for a request head.
    ready_since: AtomicU64,
    task: OnceLock<tokio::task::AbortHandle>,
    closed: AtomicBool,
}

impl HeadDeadline {
    fn new(header_timeout: Duration, now: u64) -> Self {
        Self {
            header_timeout: header_timeout.as_millis().try_into().unwrap_or(u64::MAX),
            responding: AtomicU32::new(0),
            ready_since: AtomicU64::new(now),
            task: OnceLock::new(),
            closed: AtomicBool::new(false),
        }
    }

    fn passed(&self, now: u64) -> bool {
        self.responding.load(Ordering::Relaxed) == 0
            && now.saturating_sub(self.ready_since.load(Ordering::Relaxed)) >= self.header_timeout
    }
}

impl Watched for HeadDeadline {
    fn check(&self, now: u64) {
        if self.passed(now)
            && !self.closed.swap(true, Ordering::Relaxed)
            && let Some(task) = self.task.get()
        {
            task.abort();
        }
    }
}

/// One request being answered on a connection; when it drops (its response
/// sent, or abandoned), the connection is ready for the next head.
pub(super) struct Responding(Arc<HeadDeadline>);

impl Responding {
    pub(super) fn start(deadline: &Arc<HeadDeadline>) -> Self {
        deadline.responding.fetch_add(1, Ordering::Relaxed);
        Self(deadline.clone())
    }
}

impl Drop for Responding {
    fn drop(&mut self) {
        let deadline = &self.0;
        deadline
            .ready_since
            .store(watchdog::now_ms(), Ordering::Relaxed);
        deadline.responding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that holds its request's `Responding` until the server
/// has sent it (and dropped it).
pub(super) struct UntilSent {
    pub(super) body: Body,
    pub(super) _responding: Responding,
}

impl hyper::body::Body for UntilSent {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Answers a connection beyond the cap with a 503 and closes it (a TLS
/// one is just closed: plain text there is noise to its client). The
/// response is small enough for an empty socket buffer, so this never
/// waits: a flood of connections costs no task each, and one log line a
/// second at most.
fn refuse(stream: TcpStream, plain: bool, refused: &mut RefusalLog) {
    if plain {
        let _ = stream.try_write(TOO_MANY_CONNECTIONS);
    }
    refused.unlogged += 1;
    if refused
        .logged_at
        .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
    {
        tracing::warn!(
            refused = refused.unlogged,
            "connections refused: at the limit of open connections"
        );
        refused.unlogged = 0;
        refused.logged_at = Some(Instant::now());
    }
}

/// Refusals not yet logged, and when the last line went out.
#[derive(Default)]
struct RefusalLog {
    unlogged: u64,
    logged_at: Option<Instant>,
}

/// An accept that failed. Out of file descriptors (EMFILE) does not pass
/// by retrying at once: back off so that open connections can finish.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
    ) {
        return;
    }
    tracing::error!("accepting a connection: {e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn caps_share_the_open_files() {
        use super::fit_caps;
        assert_eq!(fit_caps(100_000, 10_000, 10_000), (10_000, 10_000));
        // 20,000 files, 256 kept: 19,744 for 2 x 10,000 + 10,000 wanted.
        assert_eq!(fit_caps(20_000, 10_000, 10_000), (6_581, 6_581));
        assert_eq!(fit_caps(20_000, 2_000, 12_000), (2_000, 12_000));
        assert_eq!(fit_caps(100, 10, 10), (1, 1));
    }

    use super::*;

    #[test]
    fn the_head_deadline_runs_only_while_no_response_is_owed() {
        let deadline = Arc::new(HeadDeadline::new(Duration::from_secs(10), 1_000));
        assert!(!deadline.passed(10_999));
        assert!(deadline.passed(11_000), "no head within 10 s of the accept");
        // A request in progress, however long: not idle.
        let responding = Responding::start(&deadline);
        assert!(!deadline.passed(1_000_000));
        // Its response sent: the clock starts again from then.
        drop(responding);
        let sent = deadline.ready_since.load(Ordering::Relaxed);
        assert!(!deadline.passed(sent + 9_999));
        assert!(deadline.passed(sent + 10_000));
    }

    #[test]
    fn the_refusal_is_well_formed() {
        let text = std::str::from_utf8(TOO_MANY_CONNECTIONS).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(length, body.len());
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "too_many_connections");
    }
}
