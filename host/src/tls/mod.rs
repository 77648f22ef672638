//! HTTPS: what a TLS listener serves and how it shakes hands.
//!
//! `Tls` holds the certificates (`certs`: from files, reloaded when they
//! change, and from ACME, obtained and renewed by `acme`) and accepts a
//! connection: a bounded handshake (`handshake`), ALPN choosing HTTP/2 or
//! HTTP/1.1, and ACME's TLS-ALPN-01 validation answered on the same port.
//! The listener (`server::listener`) then serves the stream as it serves
//! a plain one.

pub mod acme;
mod certs;
mod files;
pub mod handshake;
mod metrics;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

pub use certs::{CertStore, Certificate, PemError, Source};
pub use metrics::TlsMetrics;

use crate::metrics::Metrics;

/// ALPN's name of HTTP/2.
const H2: &[u8] = b"h2";
/// ALPN's name of HTTP/1.1.
const HTTP11: &[u8] = b"http/1.1";
/// ALPN's name of a TLS-ALPN-01 validation (RFC 8737).
pub const ACME_TLS: &[u8] = b"acme-tls/1";

/// The operator's TLS settings.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// A PEM certificate chain and its key, watched for changes.
    pub files: Option<(PathBuf, PathBuf)>,
    pub acme: Option<acme::AcmeSettings>,
    /// The longest a handshake may take.
    pub handshake_timeout: Duration,
    /// Handshakes in progress at most; a new one pushes out the oldest.
    pub max_handshakes: usize,
    /// Offer HTTP/2 by ALPN.
    pub http2: bool,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            files: None,
            acme: None,
            handshake_timeout: Duration::from_secs(10),
            max_handshakes: 1024,
            http2: true,
        }
    }
}

/// rustls's ring provider with AES-128-GCM preferred (the server's order,
/// not the client's): as safe as AES-256 here and cheaper to set up, its
/// key schedule on SHA-256 (in hardware on x86 and ARM) where AES-256's is
/// on SHA-384, which was a tenth of the CPU of a new connection.
fn provider() -> rustls::crypto::CryptoProvider {
    use rustls::CipherSuite::*;
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|suite| match suite.suite() {
            TLS13_AES_128_GCM_SHA256 => 0,
            TLS13_AES_256_GCM_SHA384 => 1,
            TLS13_CHACHA20_POLY1305_SHA256 => 2,
            _ => 3,
        });
    provider
}

/// A server config on `provider()` and rustls' safe protocol versions,
/// serving what `resolver` picks; the listener's and a TLS-ALPN-01
/// answer's.
fn server_config(
    resolver: Arc<dyn rustls::server::ResolvesServerCert>,
) -> Result<ServerConfig, rustls::Error> {
    Ok(ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver))
}

/// The protocol a TLS connection chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

/// A TLS listener's state.
pub struct Tls {
    pub certs: Arc<CertStore>,
    config: Arc<ServerConfig>,
    handshakes: Arc<handshake::Handshakes>,
    timeout: Duration,
    /// Where TLS-ALPN-01 challenges are, with ACME.
    challenges: Option<acme::Challenges>,
    /// How ACME's renewals fare, with ACME.
    renewal: Option<Arc<std::sync::Mutex<acme::Renewal>>>,
    metrics: Arc<Metrics>,
    /// Reloading the files, renewing by ACME; stopped with `Tls`.
    _tasks: Vec<crate::util::AbortOnDrop>,
}

impl Tls {
    /// Loads the certificate files (an error names the file and what is
    /// wrong with it), and starts watching them and running ACME.
    pub fn start(
        settings: &TlsSettings,
        storage: acme::Storage,
        metrics: &Arc<Metrics>,
    ) -> anyhow::Result<Arc<Self>> {
        let certs = Arc::new(CertStore::default());
        let mut tasks = Vec::new();
        if let Some((cert, key)) = &settings.files {
            let loaded = files::load(cert, key)?;
            metrics.tls.served(&loaded);
            certs.set_file(loaded);
            tasks.push(files::watch(cert, key, &certs, metrics));
        }
        let (mut challenges, mut renewal) = (None, None);
        if let Some(acme) = &settings.acme {
            let manager = acme::Manager::new(acme, storage, certs.clone(), metrics.clone())?;
            challenges = Some(manager.challenges());
            renewal = Some(manager.status());
            tasks.push(manager.start());
        }
        let mut config = server_config(certs.clone())?;
        // Resumption without a lookup: stateless tickets (keys rotated every
        // 6 hours), one per connection, which is what a browser uses.
        config.ticketer = rustls::crypto::ring::Ticketer::new()?;
        config.send_tls13_tickets = 1;
        config.ignore_client_order = true;
        config.alpn_protocols = match settings.http2 {
            true => vec![H2.to_vec(), HTTP11.to_vec()],
            false => vec![HTTP11.to_vec()],
        };
        Ok(Arc::new(Self {
            certs,
            config: Arc::new(config),
            handshakes: handshake::Handshakes::new(settings.max_handshakes),
            timeout: settings.handshake_timeout,
            challenges,
            renewal,
            metrics: metrics.clone(),
            _tasks: tasks,
        }))
    }

    /// What answers ACME's challenges, with ACME.
    pub fn challenges(&self) -> Option<acme::Challenges> {
        self.challenges.clone()
    }

    /// What `spike certs list` shows: each certificate served, and how
    /// ACME's renewal fares.
    pub fn list(&self) -> serde_json::Value {
        let renewal = self
            .renewal
            .as_ref()
            .map(|r| crate::util::unpoisoned(r.lock()).clone());
        let certificates: Vec<_> = self
            .certs
            .all()
            .iter()
            .map(|cert| {
                let managed = renewal.as_ref().filter(|r| {
                    cert.source == Source::Acme && r.names.first() == cert.names.first()
                });
                serde_json::json!({
                    "names": cert.names,
                    "source": cert.source,
                    "issuer": cert.issuer,
                    "not_before": certs::unix(cert.not_before),
                    "not_after": cert.expires_unix(),
                    "renew_at": (cert.source == Source::Acme).then(|| certs::unix(cert.renew_at())),
                    "renewal_failures": managed.map(|r| r.failures),
                    "last_error": managed.and_then(|r| r.last_error.clone()),
                })
            })
            .collect();
        serde_json::json!({ "certificates": certificates, "acme": renewal })
    }

    /// A place among the handshakes in progress, taken when a connection
    /// is accepted (so that the order of arrival decides which one makes
    /// way at the cap, not the order its task first runs in).
    pub fn enter(&self) -> handshake::Slot {
        let slot = self.handshakes.enter();
        let in_progress = self.handshakes.in_progress() as i64;
        self.metrics.tls.in_progress.set(in_progress);
        slot
    }

    /// The handshake of `stream`, in `slot`: the TLS stream and its
    /// protocol, or `None` if it failed, timed out, was pushed out, or was
    /// a TLS-ALPN-01 validation (answered and done).
    pub async fn accept(
        &self,
        mut slot: handshake::Slot,
        stream: TcpStream,
    ) -> Option<(TlsStream<TcpStream>, Protocol)> {
        let outcome = tokio::select! {
            done = tokio::time::timeout(self.timeout, self.handshake(stream)) => match done {
                Ok(Ok(Some(accepted))) => Ok(accepted),
                Ok(Ok(None)) => Err("acme"),
                Ok(Err(e)) => {
                    tracing::debug!("TLS handshake failed: {e}");
                    Err("failed")
                }
                Err(_) => Err("timeout"),
            },
            _ = slot.pushed_out() => Err("pushed_out"),
        };
        drop(slot);
        self.metrics
            .tls
            .in_progress
            .set(self.handshakes.in_progress() as i64);
        let kind = match &outcome {
            Ok((_, Protocol::Http2)) => "h2",
            Ok((_, Protocol::Http1)) => "http1",
            Err(kind) => kind,
        };
        self.metrics.tls.handshake(kind);
        outcome.ok()
    }

    async fn handshake(
        &self,
        stream: TcpStream,
    ) -> std::io::Result<Option<(TlsStream<TcpStream>, Protocol)>> {
        let acceptor = rustls::server::Acceptor::default();
        let start = tokio_rustls::LazyConfigAcceptor::new(acceptor, stream).await?;
        let hello = start.client_hello();
        let validation = hello
            .alpn()
            .is_some_and(|mut offered| offered.any(|p| p == ACME_TLS));
        if validation {
            let name = hello.server_name().map(str::to_ascii_lowercase);
            let config = match (&self.challenges, name) {
                (Some(challenges), Some(name)) => challenges.tls_alpn_config(&name).await,
                _ => None,
            };
            let Some(config) = config else {
                return Err(std::io::Error::other(
                    "no TLS-ALPN-01 challenge for this name",
                ));
            };
            // RFC 8737: the handshake is the answer; then the connection ends.
            let mut stream = start.into_stream(config).await?;
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
            return Ok(None);
        }
        let stream = start.into_stream(self.config.clone()).await?;
        let protocol = match stream.get_ref().1.alpn_protocol() {
            Some(H2) => Protocol::Http2,
            _ => Protocol::Http1,
        };
        Ok(Some((stream, protocol)))
    }
}
