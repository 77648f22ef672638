//! The certificates a TLS listener serves, swapped in whole while it
//! serves: one from files (`--tls-cert` / `--tls-key`), and those ACME
//! obtained, by name. A handshake picks by the name the client sends
//! (SNI); a client that sends none, or a name no ACME certificate covers,
//! gets the file's certificate, else the first ACME one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::{ArcSwap, ArcSwapOption};
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::Serialize;

/// Where a certificate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    File,
    Acme,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::File => "file",
            Source::Acme => "acme",
        }
    }
}

/// A certificate chain with its key, ready for handshakes, and what the
/// operator is shown of it.
pub struct Certificate {
    pub key: Arc<CertifiedKey>,
    /// The DNS names (subject alternative names) it is for.
    pub names: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub issuer: String,
    pub source: Source,
}

/// Why PEM text is not a certificate to serve.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("no certificate in it (a PEM 'CERTIFICATE' block)")]
    NoCertificate,
    #[error("no private key in it (a PEM PKCS#8, PKCS#1 or SEC1 key)")]
    NoKey,
    #[error("not PEM: {0}")]
    Pem(String),
    #[error("the key is not one TLS can sign with (RSA, ECDSA P-256/P-384, Ed25519): {0}")]
    Key(String),
    #[error("the key does not belong to the certificate")]
    Mismatch,
    #[error("the certificate cannot be read: {0}")]
    X509(String),
}

impl Certificate {
    /// A chain (leaf first) and its private key, both PEM.
    pub fn from_pem(chain: &[u8], key: &[u8], source: Source) -> Result<Self, PemError> {
        let chain = CertificateDer::pem_slice_iter(chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| PemError::Pem(e.to_string()))?;
        if chain.is_empty() {
            return Err(PemError::NoCertificate);
        }
        let key = match PrivateKeyDer::from_pem_slice(key) {
            Ok(key) => key,
            Err(rustls::pki_types::pem::Error::NoItemsFound) => return Err(PemError::NoKey),
            Err(e) => return Err(PemError::Pem(e.to_string())),
        };
        let signer = any_supported_type(&key).map_err(|e| PemError::Key(e.to_string()))?;
        let certified = CertifiedKey::new(chain, signer);
        // Only a known mismatch is an error: a key whose public half
        // rustls cannot tell, or a leaf webpki will not parse (TLS-ALPN-01's
        // has an extension it does not know, marked critical), is taken on
        // trust: the client checks the certificate anyway.
        if let Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) =
            certified.keys_match()
        {
            return Err(PemError::Mismatch);
        }
        Self::describe(certified, source)
    }

    fn describe(key: CertifiedKey, source: Source) -> Result<Self, PemError> {
        use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
        let leaf = key
            .end_entity_cert()
            .map_err(|e| PemError::X509(e.to_string()))?;
        let (_, cert) =
            X509Certificate::from_der(leaf.as_ref()).map_err(|e| PemError::X509(e.to_string()))?;
        let time = |t: x509_parser::time::ASN1Time| {
            UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64)
        };
        let mut names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                if let GeneralName::DNSName(dns) = name {
                    names.push(dns.to_ascii_lowercase());
                }
            }
        }
        Ok(Self {
            names,
            not_before: time(cert.validity().not_before),
            not_after: time(cert.validity().not_after),
            issuer: cert.issuer().to_string(),
            source,
            key: Arc::new(key),
        })
    }

    /// Seconds since the epoch.
    pub fn expires_unix(&self) -> u64 {
        unix(self.not_after)
    }

    /// When a certificate is renewed: two thirds into its lifetime.
    pub fn renew_at(&self) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_before + life * 2 / 3
    }
}

pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// What handshakes are served with, swapped whole.
#[derive(Default)]
pub struct CertStore {
    file: ArcSwapOption<Certificate>,
    /// ACME certificates by each name they cover.
    acme: ArcSwap<BTreeMap<String, Arc<Certificate>>>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore").finish_non_exhaustive()
    }
}

impl CertStore {
    pub fn set_file(&self, cert: Certificate) {
        self.file.store(Some(Arc::new(cert)));
    }

    /// Serves `cert` for each of its names.
    pub fn set_acme(&self, cert: Arc<Certificate>) {
        self.acme.rcu(|current| {
            let mut next = BTreeMap::clone(current);
            for name in &cert.names {
                next.insert(name.clone(), cert.clone());
            }
            next
        });
    }

    /// Every certificate served, each once.
    pub fn all(&self) -> Vec<Arc<Certificate>> {
        let mut all: Vec<Arc<Certificate>> = self.file.load_full().into_iter().collect();
        for cert in self.acme.load().values() {
            if !all.iter().any(|c| Arc::ptr_eq(c, cert)) {
                all.push(cert.clone());
            }
        }
        all
    }

    /// The ACME certificate serving `name`, if any.
    pub fn acme(&self, name: &str) -> Option<Arc<Certificate>> {
        self.acme.load().get(name).cloned()
    }

    fn pick(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let acme = self.acme.load();
        if let Some(name) = name
            && let Some(cert) = acme.get(&name.to_ascii_lowercase())
        {
            return Some(cert.key.clone());
        }
        if let Some(file) = self.file.load().as_ref() {
            return Some(file.key.clone());
        }
        acme.values().next().map(|cert| cert.key.clone())
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_pair_is_read_with_its_names_and_lifetime() {
        let (cert, key) = self_signed(&["Example.test", "www.example.test"]);
        let cert = Certificate::from_pem(cert.as_bytes(), key.as_bytes(), Source::File).unwrap();
        assert_eq!(cert.names, ["example.test", "www.example.test"]);
        assert!(cert.not_after > cert.not_before);
        assert!(cert.renew_at() > cert.not_before && cert.renew_at() < cert.not_after);
    }

    #[test]
    fn bad_pairs_say_what_is_wrong() {
        let (cert, key) = self_signed(&["a.test"]);
        let (_, other_key) = self_signed(&["b.test"]);
        let err = |c: &str, k: &str| {
            Certificate::from_pem(c.as_bytes(), k.as_bytes(), Source::File)
                .err()
                .unwrap()
                .to_string()
        };
        assert!(err(&cert, &other_key).contains("does not belong"));
        assert!(err(&key, &key).contains("no certificate"));
        assert!(err(&cert, &cert).contains("no private key"));
    }

    #[test]
    fn a_handshake_gets_the_certificate_for_its_name() {
        let store = CertStore::default();
        assert!(store.pick(Some("a.test")).is_none(), "nothing to serve yet");
        let pair = |names: &[&str], source| {
            let (c, k) = self_signed(names);
            Certificate::from_pem(c.as_bytes(), k.as_bytes(), source).unwrap()
        };
        let acme = Arc::new(pair(&["a.test"], Source::Acme));
        store.set_acme(acme.clone());
        // Without a file certificate, an ACME one serves every name.
        assert!(Arc::ptr_eq(&store.pick(None).unwrap(), &acme.key));
        store.set_file(pair(&["file.test"], Source::File));
        assert!(Arc::ptr_eq(&store.pick(Some("A.TEST")).unwrap(), &acme.key));
        let other = store.pick(Some("b.test")).unwrap();
        assert!(
            !Arc::ptr_eq(&other, &acme.key),
            "the file's for other names"
        );
        assert_eq!(store.all().len(), 2);
    }
}
