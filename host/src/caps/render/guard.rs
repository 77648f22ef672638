//! The renderer's network guard against server-side request forgery: every
//! request a page makes (the page itself, each redirect, each image, script,
//! frame, fetch and WebSocket) goes through a proxy of the host's, one per
//! render, set on that render's browser context. The proxy resolves the
//! name once, refuses internal addresses (loopback, private, link-local,
//! metadata) unless the operator's allow-list names them, and connects to
//! exactly the addresses it checked. Chromium never resolves a name itself,
//! so a second DNS answer cannot swap an internal address in after the
//! check (DNS rebinding), and nothing the page does can go around the proxy
//! (`<-loopback>` takes loopback off Chromium's implicit bypass list).
//!
//! The checks are the outbound capability's (`outbound::destinations`),
//! with the allow-list where a plugin has its grants, and this server's
//! own public listener allowed: a page reaches what any client of the
//! server may (a plain `spike serve` renders the editor's previews, whose
//! modules the server serves), never the metrics listener. Whatever the
//! allow-list says, the renderer's own loopback ports are never reached:
//! Chromium's DevTools port (which drives the browser: any page that
//! reached it could read every other render) and the per-render proxies
//! (`Reserved`). `--render-allow 127.0.0.1` without a port once let a page
//! reach both.
//!
//! Chromium's UDP (WebRTC) cannot take the proxy: the browser is started
//! with `--force-webrtc-ip-handling-policy=disable_non_proxied_udp`
//! (`browser::FLAGS`), so a page's peer connections use TCP through the
//! proxy or nothing. Without it, a page's TURN server at 127.0.0.1 got
//! STUN datagrams while the proxy refused every request of the same page.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use wasmtime_wasi_http::Error as HttpError;

use crate::caps::outbound::{self, HostPattern, Resolver};

/// How long connecting to a page's server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most refusals one render keeps to report (a page may try thousands).
const MAX_BLOCKED_KEPT: usize = 20;

type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// What the guard lets through: public addresses, this server's own
/// public listener, and the internal addresses the operator allows.
#[derive(Clone)]
pub struct Guard {
    allow: Arc<[HostPattern]>,
    resolver: Arc<dyn Resolver>,
    /// The renderer's own loopback ports, refused whatever `allow` says.
    reserved: Reserved,
    /// The server's public listener, once it listens: a page may load
    /// what any client on the internet may (the editor's previews import
    /// the site's modules from it). Never the metrics listener.
    own: Arc<std::sync::OnceLock<SocketAddr>>,
}

/// Loopback ports of the renderer itself (DevTools, the proxies), with how
/// many holders each has.
#[derive(Clone, Default)]
pub struct Reserved(Arc<Mutex<HashMap<u16, usize>>>);

/// A port held in `Reserved` until dropped.
pub struct Reservation {
    reserved: Reserved,
    port: u16,
}

impl Reserved {
    pub fn hold(&self, port: u16) -> Reservation {
        if let Ok(mut ports) = self.0.lock() {
            *ports.entry(port).or_default() += 1;
        }
        Reservation {
            reserved: self.clone(),
            port,
        }
    }

    fn contains(&self, port: u16) -> bool {
        self.0.lock().is_ok_and(|ports| ports.contains_key(&port))
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Ok(mut ports) = self.reserved.0.lock()
            && let Some(n) = ports.get_mut(&self.port)
        {
            *n -= 1;
            if *n == 0 {
                ports.remove(&self.port);
            }
        }
    }
}

/// One render's proxy: its address for Chromium, and what it refused.
/// Dropping it closes the proxy and every connection through it.
pub struct RenderProxy {
    pub url: String,
    _port: Reservation,
    blocked: Arc<Mutex<Blocked>>,
    activity: Arc<Activity>,
    task: JoinHandle<()>,
    /// Dropped with the proxy: ends the tunnels and upstream connections
    /// that outlive their request (a server that never closes).
    _closed: watch::Sender<()>,
}

/// The page's network activity as the proxy sees it, for "network idle".
struct Activity {
    /// Requests whose answer has not begun (tunnels: until connected).
    in_flight: std::sync::atomic::AtomicUsize,
    /// When a request last began or was answered.
    last: Mutex<tokio::time::Instant>,
}

impl Activity {
    fn touch(&self) {
        if let Ok(mut last) = self.last.lock() {
            *last = tokio::time::Instant::now();
        }
    }
}

/// Counts one request in flight until dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.touch();
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.touch();
    }
}

#[derive(Default)]
struct Blocked {
    kept: Vec<String>,
    /// A refused page document (`Sec-Fetch-Dest: document`: the page
    /// itself or a redirect of it), which fails the render.
    document: Option<String>,
}

impl Drop for RenderProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RenderProxy {
    /// The requests refused so far (`host:port: why`), at most
    /// `MAX_BLOCKED_KEPT` of them.
    pub fn blocked(&self) -> Vec<String> {
        self.blocked
            .lock()
            .map(|b| b.kept.clone())
            .unwrap_or_default()
    }

    /// Why the page's own document was refused, if it was. (Over
    /// `CONNECT` the proxy cannot tell a document from a sub-resource: a
    /// navigation that failed with refusals on record counts as refused.)
    pub fn document_refused(&self) -> Option<String> {
        self.blocked.lock().ok()?.document.clone()
    }

    /// Waits until no request of the page has been in flight for `quiet`
    /// (Puppeteer's `networkidle0`), counted by the proxy, which sees every
    /// request that leaves the browser.
    pub async fn network_idle(&self, quiet: Duration) {
        loop {
            let last = self
                .activity
                .last
                .lock()
                .map(|l| *l)
                .unwrap_or_else(|_| tokio::time::Instant::now());
            let idle_for = last.elapsed();
            if self.activity.in_flight.load(Ordering::Acquire) == 0 && idle_for >= quiet {
                return;
            }
            tokio::time::sleep(
                quiet
                    .saturating_sub(idle_for)
                    .max(Duration::from_millis(25)),
            )
            .await;
        }
    }
}

impl Guard {
    pub fn new(allow: Vec<HostPattern>, resolver: Arc<dyn Resolver>) -> Self {
        Self {
            allow: allow.into(),
            resolver,
            reserved: Reserved::default(),
            own: Arc::default(),
        }
    }

    /// Lets pages reach the server's public listener at `addr` (bound to
    /// one address, or to all of them: then through loopback).
    pub fn allow_own_listener(&self, addr: SocketAddr) {
        let _ = self.own.set(addr);
    }

    /// `host:port` as this server's own public listener, if it is.
    fn own_listener(&self, host: &str, port: u16) -> Option<SocketAddr> {
        let own = self.own.get().filter(|own| own.port() == port)?;
        let ip = match host.trim_start_matches('[').trim_end_matches(']') {
            "localhost" if own.ip().is_loopback() => own.ip(),
            "localhost" => std::net::IpAddr::from(Ipv4Addr::LOCALHOST),
            literal => literal.parse().ok()?,
        };
        // Bound to all addresses: loopback reaches it (IPv4's only, for an
        // IPv4 wildcard). Bound to one: that address exactly, so another
        // server on another loopback address and the same port is not.
        let wildcard_reaches =
            own.ip().is_unspecified() && ip.is_loopback() && (own.is_ipv6() || ip.is_ipv4());
        (ip == own.ip() || wildcard_reaches).then_some(SocketAddr::new(ip, port))
    }

    /// The renderer's own ports, to hold the DevTools port in.
    pub fn reserved(&self) -> &Reserved {
        &self.reserved
    }

    /// Where `host:port` may be reached, or why not (a refusal or a lookup
    /// that failed).
    pub async fn check(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Refusal> {
        if let Some(own) = self.own_listener(host, port) {
            return Ok(vec![own]);
        }
        let addrs = outbound::destinations(&self.allow, self.resolver.as_ref(), host, port)
            .await
            .map_err(|e| match e {
                HttpError::DestinationIpProhibited => Refusal::Blocked(format!(
                    "{host}:{port}: an internal address (loopback, private, link-local or \
                     metadata) that --render-allow does not list"
                )),
                e => Refusal::Unreachable(format!("{host}:{port}: {e}")),
            })?;
        // Loopback, or the unspecified address (which connects to it).
        let local = |a: &SocketAddr| a.ip().is_loopback() || a.ip().is_unspecified();
        if addrs
            .iter()
            .any(|a| local(a) && self.reserved.contains(a.port()))
        {
            return Err(Refusal::Blocked(format!(
                "{host}:{port}: the renderer's own DevTools or proxy port, which no page may \
                 reach whatever --render-allow lists"
            )));
        }
        Ok(addrs)
    }

    /// A proxy for one render, listening on loopback.
    pub async fn proxy(&self) -> std::io::Result<RenderProxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let url = format!("http://{addr}");
        let port = self.reserved.hold(addr.port());
        let blocked = Arc::new(Mutex::new(Blocked::default()));
        let (closed, open) = watch::channel(());
        let activity = Arc::new(Activity {
            in_flight: Default::default(),
            last: Mutex::new(tokio::time::Instant::now()),
        });
        let serving = Serving {
            guard: self.clone(),
            blocked: blocked.clone(),
            activity: activity.clone(),
            open,
        };
        let task = tokio::spawn(serving.accept(listener));
        Ok(RenderProxy {
            url,
            _port: port,
            blocked,
            activity,
            task,
            _closed: closed,
        })
    }
}

/// Why the guard did not let a request through.
#[derive(Debug)]
pub enum Refusal {
    /// The policy refused the address.
    Blocked(String),
    /// The name did not resolve.
    Unreachable(String),
}

#[derive(Clone)]
struct Serving {
    guard: Guard,
    blocked: Arc<Mutex<Blocked>>,
    activity: Arc<Activity>,
    /// Changes (errs) when the render's proxy is dropped.
    open: watch::Receiver<()>,
}

impl Serving {
    /// Runs `work` on its own task until it ends or the render does.
    fn spawn_for_render(&self, work: impl Future<Output = ()> + Send + 'static) {
        let mut open = self.open.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = work => {}
                _ = open.changed() => {}
            }
        });
    }

    /// Serves Chromium's connections until the render ends (the task is
    /// aborted, and the `JoinSet` with it ends every connection).
    async fn accept(self, listener: TcpListener) {
        let mut connections = JoinSet::new();
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!("render proxy: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let serving = self.clone();
            connections.spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let serving = serving.clone();
                    async move { Ok::<_, Infallible>(serving.handle(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
            // Reap finished connections so the set does not grow.
            while connections.try_join_next().is_some() {}
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        let _in_flight = InFlight::new(&self.activity);
        let https = req.method() == Method::CONNECT;
        let Some((host, port)) = target(&req, https) else {
            return text(
                StatusCode::BAD_REQUEST,
                "spike's renderer fetches only http and https",
            );
        };
        let addrs = match self.guard.check(&host, port).await {
            Ok(addrs) => addrs,
            Err(Refusal::Blocked(why)) => {
                tracing::info!("render: refused {why}");
                let document = req
                    .headers()
                    .get("sec-fetch-dest")
                    .is_some_and(|d| d == "document");
                if let Ok(mut b) = self.blocked.lock() {
                    if document && b.document.is_none() {
                        b.document = Some(why.clone());
                    }
                    if b.kept.len() < MAX_BLOCKED_KEPT {
                        b.kept.push(why.clone());
                    }
                }
                return text(StatusCode::FORBIDDEN, &format!("blocked by spike: {why}"));
            }
            Err(Refusal::Unreachable(why)) => return text(StatusCode::BAD_GATEWAY, &why),
        };
        let upstream = match outbound::connect_any(&addrs, CONNECT_TIMEOUT).await {
            Ok(tcp) => tcp,
            Err(e) => return text(StatusCode::BAD_GATEWAY, &format!("{host}:{port}: {e}")),
        };
        if https {
            // A tunnel (TLS, or a WebSocket): bytes both ways once hyper
            // hands the connection over.
            self.spawn_for_render(async move {
                if let Ok(upgraded) = hyper::upgrade::on(req).await {
                    let mut upstream = upstream;
                    let _ =
                        tokio::io::copy_bidirectional(&mut TokioIo::new(upgraded), &mut upstream)
                            .await;
                }
            });
            return Response::new(empty());
        }
        forward(req, upstream, self).await
    }
}

/// The host and port a proxied request goes to: the authority of a
/// `CONNECT`, or of an absolute `http://` URI.
fn target(req: &Request<Incoming>, connect: bool) -> Option<(String, u16)> {
    let uri = req.uri();
    if !connect && uri.scheme() != Some(&http::uri::Scheme::HTTP) {
        return None;
    }
    let authority = uri.authority()?;
    let port = authority
        .port_u16()
        .unwrap_or(if connect { 443 } else { 80 });
    Some((authority.host().to_string(), port))
}

/// Sends a plain-HTTP request on to its server over `upstream` and streams
/// the answer back.
async fn forward(
    mut req: Request<Incoming>,
    upstream: tokio::net::TcpStream,
    serving: &Serving,
) -> Response<ProxyBody> {
    let Ok((mut sender, conn)) =
        hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await
    else {
        return text(
            StatusCode::BAD_GATEWAY,
            "the page's server closed the connection",
        );
    };
    serving.spawn_for_render(async move {
        let _ = conn.await;
    });
    // On the wire to the server the request line has only the path.
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    *req.uri_mut() = path.parse().unwrap_or_else(|_| http::Uri::from_static("/"));
    let headers = req.headers_mut();
    headers.remove("proxy-connection");
    headers.remove(http::header::PROXY_AUTHORIZATION);
    match sender.send_request(req).await {
        Ok(response) => response.map(BodyExt::boxed),
        Err(e) => text(
            StatusCode::BAD_GATEWAY,
            &format!("the page's server failed: {e}"),
        ),
    }
}

fn empty() -> ProxyBody {
    Full::new(Bytes::new()).map_err(|e| match e {}).boxed()
}

fn text(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(message.to_string()))
            .map_err(|e| match e {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::future::BoxFuture;
    use std::net::IpAddr;

    /// Every name resolves to loopback.
    #[derive(Debug)]
    struct ToLoopback;

    impl Resolver for ToLoopback {
        fn lookup<'a>(&'a self, _: &'a str, _: u16) -> BoxFuture<'a, std::io::Result<Vec<IpAddr>>> {
            Box::pin(async { Ok(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]) })
        }
    }

    #[tokio::test]
    async fn internal_addresses_need_the_allow_list() {
        let guard = Guard::new(
            vec!["127.0.0.1:9000".parse().unwrap()],
            Arc::new(ToLoopback),
        );
        assert!(guard.check("127.0.0.1", 9000).await.is_ok());
        assert!(guard.check("rebind.example", 9000).await.is_ok());
        for (host, port) in [
            ("127.0.0.1", 9001),
            ("rebind.example", 80),
            ("169.254.169.254", 80),
            ("10.1.2.3", 80),
            ("[::1]", 80),
            ("[::ffff:127.0.0.1]", 80),
            ("0.0.0.0", 80),
        ] {
            match guard.check(host, port).await {
                Err(Refusal::Blocked(why)) => assert!(why.starts_with(&format!("{host}:{port}"))),
                other => panic!("{host}:{port} was not refused: {other:?}"),
            }
        }
        assert!(guard.check("93.184.216.34", 443).await.is_ok());
    }

    #[tokio::test]
    async fn this_servers_own_listener_is_reached_and_nothing_beside_it() {
        let own = |addr: &str| {
            let guard = Guard::new(Vec::new(), Arc::new(ToLoopback));
            guard.allow_own_listener(addr.parse().unwrap());
            guard
        };
        let reached = |guard: &Guard, host: &'static str, port: u16| {
            let guard = guard.clone();
            async move { guard.check(host, port).await.is_ok() }
        };
        // Bound to one loopback address: that address, by IP or name.
        let one = own("127.0.0.1:8787");
        assert!(reached(&one, "127.0.0.1", 8787).await);
        assert!(reached(&one, "localhost", 8787).await);
        assert!(!reached(&one, "127.0.0.1", 8788).await, "another port");
        assert!(!reached(&one, "127.0.0.2", 8787).await, "another address");
        assert!(!reached(&one, "[::1]", 8787).await);
        assert!(
            !reached(&one, "rebind.example", 8787).await,
            "names resolve"
        );
        // Bound to every IPv4 address: through IPv4's loopback.
        let all = own("0.0.0.0:8787");
        assert!(reached(&all, "127.0.0.1", 8787).await);
        assert!(!reached(&all, "[::1]", 8787).await);
        assert!(!reached(&all, "10.0.0.1", 8787).await);
        // Before the server listens, nothing.
        let none = Guard::new(Vec::new(), Arc::new(ToLoopback));
        assert!(!reached(&none, "127.0.0.1", 8787).await);
    }

    #[tokio::test]
    async fn the_renderers_own_ports_are_refused_whatever_is_allowed() {
        // All of loopback allowed, as `--render-allow 127.0.0.1` does.
        let guard = Guard::new(vec!["127.0.0.1".parse().unwrap()], Arc::new(ToLoopback));
        assert!(guard.check("127.0.0.1", 9222).await.is_ok());
        let devtools = guard.reserved().hold(9222);
        let again = guard.reserved().hold(9222);
        for host in ["127.0.0.1", "rebind.example"] {
            match guard.check(host, 9222).await {
                Err(Refusal::Blocked(why)) => assert!(why.contains("DevTools"), "{why}"),
                other => panic!("{host}: {other:?}"),
            }
        }
        drop(devtools);
        assert!(
            guard.check("127.0.0.1", 9222).await.is_err(),
            "still held once"
        );
        drop(again);
        assert!(guard.check("127.0.0.1", 9222).await.is_ok());
        // Each proxy holds its own port while it lives.
        let proxy = guard.proxy().await.unwrap();
        let port: u16 = proxy.url.rsplit(':').next().unwrap().parse().unwrap();
        assert!(guard.check("127.0.0.1", port).await.is_err());
        drop(proxy);
        assert!(guard.check("127.0.0.1", port).await.is_ok());
    }
}
