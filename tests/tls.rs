//! HTTPS for the tests: a certificate authority made in the test (rcgen)
//! and a client that speaks to one connection on purpose: the ALPN it
//! offers, the protocol it got, the certificate it was shown, requests over
//! HTTP/1.1 or HTTP/2 on that same connection.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A CA that issues leaf certificates.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub root_pem: String,
}

/// A leaf certificate and its key, PEM.
pub struct Leaf {
    pub chain_pem: String,
    pub key_pem: String,
    /// Its DER, to tell which certificate a handshake showed.
    pub der: Vec<u8>,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let root = params.self_signed(&key).unwrap();
        Self {
            root_pem: root.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A leaf for `names` (DNS names or addresses).
    pub fn issue(&self, names: &[&str]) -> Leaf {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        Leaf {
            chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// Writes the leaf's files at `dir/{cert,key}.pem`.
    pub fn write(leaf: &Leaf, dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        // Written beside and renamed in, as certbot swaps its files.
        for (path, text) in [(&key, &leaf.key_pem), (&cert, &leaf.chain_pem)] {
            let fresh = path.with_extension("new");
            std::fs::write(&fresh, text).unwrap();
            std::fs::rename(&fresh, path).unwrap();
        }
        (cert, key)
    }
}

/// Roots holding `pem`'s certificates.
pub fn roots(pem: &str) -> rustls::RootCertStore {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    roots
}

/// A TLS connection to `addr` as `name`, offering `alpn`.
pub async fn connect(
    addr: SocketAddr,
    name: &str,
    roots: &rustls::RootCertStore,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots.clone())
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_string()).unwrap();
    connector.connect(name, tcp).await
}

/// The leaf certificate a connection was shown.
pub fn peer_leaf(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// The protocol ALPN chose.
pub fn alpn(stream: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

/// Requests over one HTTP/1.1 or HTTP/2 connection.
pub enum Conn {
    Http1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    Http2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

impl Conn {
    /// HTTP over `stream`, as ALPN chose (HTTP/1.1 without ALPN).
    pub async fn over(stream: TlsStream<TcpStream>) -> Self {
        let h2 = alpn(&stream).as_deref() == Some(b"h2");
        let io = TokioIo::new(stream);
        if h2 {
            let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(conn);
            Conn::Http2(send)
        } else {
            let (send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            Conn::Http1(send)
        }
    }

    /// `GET path` of `authority`: status, headers and body.
    pub async fn get(&mut self, authority: &str, path: &str) -> (u16, http::HeaderMap, String) {
        self.get_as(authority, path, None).await
    }

    /// The same, with `token` as a bearer token.
    pub async fn get_as(
        &mut self,
        authority: &str,
        path: &str,
        token: Option<&str>,
    ) -> (u16, http::HeaderMap, String) {
        let mut request = http::Request::get(format!("https://{authority}{path}"));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        // HTTP/2 names the authority in the URI, never in `host`. Each
        // waits until its connection takes a request (HTTP/1.1's after the
        // answer before has ended).
        let response = match self {
            Conn::Http1(send) => {
                let request = request
                    .header("host", authority)
                    .body(Empty::new())
                    .unwrap();
                send.ready().await.unwrap();
                send.send_request(request).await
            }
            Conn::Http2(send) => {
                send.ready().await.unwrap();
                send.send_request(request.body(Empty::new()).unwrap()).await
            }
        }
        .unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (
            parts.status.as_u16(),
            parts.headers,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }
}
