//! Sends one outgoing request: over a connection from the pool, or a new
//! one to an address that `resolve::destinations` checked (no second
//! lookup happens here). TLS still verifies the certificate against the
//! name the guest asked for (SNI), so pinning the address does not weaken
//! it.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody};

use super::pool::{ConnectionPool, Destination};
use crate::caps::Grants;

/// Bounds when the guest sets none. Every phase has one: a guest's request
/// must not wait forever on a silent upstream.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(60);
const BETWEEN_BYTES_TIMEOUT: Duration = Duration::from_secs(60);

/// The upstream's response, and the future that drives its connection
/// until the body is read (wasmtime spawns it).
pub type Sent = (
    http::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
);

trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// Timeouts for one exchange, from the guest's options or the defaults.
#[derive(Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    pub between_bytes: Duration,
}

impl Timeouts {
    pub fn from(options: Option<RequestOptions>) -> Self {
        let options = options.unwrap_or_default();
        Self {
            connect: options.connect_timeout.unwrap_or(CONNECT_TIMEOUT),
            first_byte: options.first_byte_timeout.unwrap_or(FIRST_BYTE_TIMEOUT),
            between_bytes: options
                .between_bytes_timeout
                .unwrap_or(BETWEEN_BYTES_TIMEOUT)
                .max(Duration::from_millis(1)),
        }
    }
}

/// Where a connection goes back to once its response has been read.
pub struct Return {
    pub pool: Arc<ConnectionPool>,
    pub to: Destination,
    pub grants: Arc<Grants>,
}

/// Opens a connection to the first of `addrs` that accepts one (TLS for
/// `https`, verified against `host`), its driver spawned.
pub async fn connect(
    addrs: &[SocketAddr],
    https: bool,
    host: &str,
    timeouts: Timeouts,
) -> Result<SendRequest<WasiBody>, HttpError> {
    let tcp = connect_any(addrs, timeouts.connect).await?;
    let stream: Box<dyn Stream> = if https {
        let name = server_name(host)?;
        let tls = tokio::time::timeout(timeouts.connect, tls_connector().connect(name, tcp))
            .await
            .map_err(|_| HttpError::ConnectionTimeout)?
            .map_err(HttpError::Tls)?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let (sender, conn) = tokio::time::timeout(
        timeouts.connect,
        hyper::client::conn::http1::handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| HttpError::ConnectionTimeout)??;
    // The connection lives as long as its sender: in a request, then in
    // the pool, and ends when the last holder drops it.
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("outbound connection: {e}");
        }
    });
    Ok(sender)
}

/// Sends `request` on `sender` (waiting for it to be free, within the
/// connect timeout). The response's body gives the connection back to the
/// pool when it has been read to its end.
pub async fn exchange(
    mut sender: SendRequest<WasiBody>,
    mut request: http::Request<WasiBody>,
    timeouts: Timeouts,
    back: Return,
) -> Result<Sent, HttpError> {
    tokio::time::timeout(timeouts.connect, sender.ready())
        .await
        .map_err(|_| HttpError::ConnectionTimeout)??;
    // The URI carries scheme and authority; on the wire the request line
    // has only the path (the authority travels in `Host`).
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .map_err(|_| HttpError::HttpRequestUriInvalid)?;
    *request.uri_mut() = path;
    let response = tokio::time::timeout(timeouts.first_byte, sender.send_request(request))
        .await
        .map_err(|_| HttpError::ConnectionReadTimeout)??;
    let response = response.map(|body| {
        PooledBody {
            inner: TimedBody {
                inner: body,
                idle: timeouts.between_bytes,
                timer: None,
            },
            back: Some((back, sender)),
        }
        .boxed_unsync()
    });
    // The connection's driver is its own task (see `connect`).
    let io = async { Ok(()) };
    Ok((response, Box::new(io)))
}

pub(crate) async fn connect_any(
    addrs: &[SocketAddr],
    timeout: Duration,
) -> Result<TcpStream, HttpError> {
    let mut last = HttpError::DestinationNotFound;
    for addr in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = HttpError::ConnectionRefused;
            }
            Ok(Err(e)) => last = HttpError::Connect(e),
            Err(_) => last = HttpError::ConnectionTimeout,
        }
    }
    Err(last)
}

fn server_name(host: &str) -> Result<rustls::pki_types::ServerName<'static>, HttpError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return Ok(ip.into());
    }
    Ok(rustls::pki_types::ServerName::try_from(bare.to_string())?)
}

/// One TLS configuration for the process: building the root store is not
/// free, and it never changes. It trusts Mozilla's roots (webpki-roots)
/// and the system's store, so that a CA the machine's operator installed
/// (a company's, an egress proxy's) is trusted as curl and npm trust it.
fn tls_connector() -> tokio_rustls::TlsConnector {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.into(),
        };
        // A store that cannot be read, or a certificate in it that does not
        // parse, leaves Mozilla's roots: never fewer than before.
        let system = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(system.certs);
        tracing::debug!(
            added,
            errors = system.errors.len(),
            "outbound TLS: the system's roots"
        );
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        Arc::new(config)
    });
    tokio_rustls::TlsConnector::from(config.clone())
}

/// A response body that gives its connection back to the pool once read to
/// its end. One dropped before that (its reader went away) takes the
/// connection with it: a half-read response cannot be reused.
struct PooledBody {
    inner: TimedBody,
    back: Option<(Return, SendRequest<WasiBody>)>,
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        match &frame {
            Poll::Ready(None) => {
                if let Some((back, sender)) = self.back.take() {
                    back.pool.checkin(back.to, back.grants, sender);
                }
            }
            Poll::Ready(Some(Err(_))) => self.back = None,
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that fails when the upstream sends nothing for `idle`.
struct TimedBody {
    inner: hyper::body::Incoming,
    idle: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                self.timer = None;
                Poll::Ready(frame.map(|f| f.map_err(HttpError::from)))
            }
            Poll::Pending => {
                let idle = self.idle;
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(HttpError::ConnectionReadTimeout))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
