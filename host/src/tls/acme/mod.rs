//! Certificates obtained and renewed by ACME (RFC 8555), with instant-acme
//! (chosen over rustls-acme because spike must run the order itself: keep
//! the account and certificates in its own storage backend, order under a
//! cluster lease, and answer challenges on whichever node the CA reaches).
//!
//! One `Manager` per server looks every `check_every` at the certificate
//! for its names: it serves what the store holds (another node may have
//! renewed it), and once it is missing or two thirds through its lifetime
//! it orders a new one, holding the cluster's lease for those names so
//! that one node orders at a time. A failed order is retried with backoff
//! (from `retry_after`, doubling, up to six hours) while the old
//! certificate is served.

mod order;
pub mod store;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use instant_acme::{Account, NewAccount};
use rustls::ServerConfig;
use serde::Serialize;

use super::{ACME_TLS, CertStore, Certificate, Source};
use crate::metrics::Metrics;
use crate::storage::{Cluster, KvBackend, LeaseClaim};
use crate::util::{AbortOnDrop, unpoisoned};
use store::Store;

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// How long a node may hold the lease of an order.
const LEASE_TTL: Duration = Duration::from_secs(600);
/// The longest a failed order waits before the next try.
const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);

/// The challenge the CA validates with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ChallengeKind {
    /// On the TLS port itself: no other port needed.
    #[value(name = "tls-alpn-01")]
    TlsAlpn01,
    /// At `/.well-known/acme-challenge/` on `--listen-http` (port 80).
    #[value(name = "http-01")]
    Http01,
}

impl ChallengeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChallengeKind::TlsAlpn01 => "tls-alpn-01",
            ChallengeKind::Http01 => "http-01",
        }
    }
}

#[derive(Debug, Clone)]
pub struct AcmeSettings {
    /// The names of the one certificate ordered (its first is its name).
    pub domains: Vec<String>,
    pub email: Option<String>,
    pub directory: String,
    /// A root to trust for the directory's HTTPS (a private or test CA).
    pub ca_root: Option<PathBuf>,
    pub challenge: ChallengeKind,
    pub check_every: Duration,
    pub retry_after: Duration,
}

/// Where ACME keeps its state, and the cluster it shares it with.
#[derive(Clone)]
pub struct Storage {
    pub kv: Arc<dyn KvBackend>,
    pub cluster: Option<Arc<dyn Cluster>>,
}

/// Answers validations: TLS-ALPN-01 handshakes, HTTP-01 requests.
#[derive(Clone)]
pub struct Challenges {
    store: Store,
}

impl Challenges {
    /// The TLS config answering a TLS-ALPN-01 validation of `name`, if
    /// one is in progress.
    pub async fn tls_alpn_config(&self, name: &str) -> Option<Arc<ServerConfig>> {
        let challenge = match self.store.alpn_challenge(name).await {
            Ok(challenge) => challenge?,
            Err(e) => {
                tracing::warn!(name, "reading a TLS-ALPN-01 challenge: {e:#}");
                return None;
            }
        };
        let cert = Certificate::from_pem(
            challenge.cert_pem.as_bytes(),
            challenge.key_pem.as_bytes(),
            Source::Acme,
        );
        let cert = match cert {
            Ok(cert) => cert,
            Err(e) => {
                tracing::warn!(name, "a stored TLS-ALPN-01 challenge does not load: {e}");
                return None;
            }
        };
        let mut config = super::server_config(Arc::new(Fixed(cert.key.clone()))).ok()?;
        config.alpn_protocols = vec![ACME_TLS.to_vec()];
        Some(Arc::new(config))
    }

    /// The key authorization answering HTTP-01's `token`.
    pub async fn http_answer(&self, token: &str) -> Option<String> {
        self.store.http_challenge(token).await.ok()?
    }
}

/// One certificate for every handshake.
#[derive(Debug)]
struct Fixed(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for Fixed {
    fn resolve(
        &self,
        _: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// What `spike certs list` shows of a managed certificate besides the
/// certificate itself.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Renewal {
    pub names: Vec<String>,
    pub failures: u32,
    pub last_error: Option<String>,
    /// Unix time of the next order, if one is due.
    pub next_try: Option<u64>,
}

pub struct Manager {
    settings: AcmeSettings,
    store: Store,
    cluster: Option<Arc<dyn Cluster>>,
    certs: Arc<CertStore>,
    metrics: Arc<Metrics>,
    /// The names' key in the store and the lease's.
    id: String,
    status: Arc<Mutex<Renewal>>,
}

impl Manager {
    pub fn new(
        settings: &AcmeSettings,
        storage: Storage,
        certs: Arc<CertStore>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        if let Some(root) = &settings.ca_root {
            anyhow::ensure!(
                root.is_file(),
                "--acme-ca-root {}: no such file",
                root.display()
            );
        }
        let mut names: Vec<String> = settings
            .domains
            .iter()
            .map(|d| d.to_ascii_lowercase())
            .collect();
        names.dedup();
        Ok(Self {
            id: names.join(","),
            status: Arc::new(Mutex::new(Renewal {
                names: names.clone(),
                ..Renewal::default()
            })),
            settings: AcmeSettings {
                domains: names,
                ..settings.clone()
            },
            store: Store::new(storage.kv),
            cluster: storage.cluster,
            certs,
            metrics,
        })
    }

    pub fn challenges(&self) -> Challenges {
        Challenges {
            store: self.store.clone(),
        }
    }

    pub fn status(&self) -> Arc<Mutex<Renewal>> {
        self.status.clone()
    }

    pub fn start(self) -> AbortOnDrop {
        AbortOnDrop(tokio::spawn(self.run()))
    }

    async fn run(self) {
        let label = super::metrics::NameLabel {
            name: self.settings.domains[0].clone(),
        };
        // Both series exist from the start, at 0, for alerts on increase.
        let _ = self.metrics.tls.renewals.get_or_create(&label);
        let _ = self.metrics.tls.renewal_failures.get_or_create(&label);
        let mut failures = 0u32;
        let mut next_try = SystemTime::now();
        loop {
            let served = self.adopt_stored().await;
            let due = served
                .as_ref()
                .is_none_or(|c| SystemTime::now() >= c.renew_at());
            if due && SystemTime::now() >= next_try {
                match self.renew().await {
                    Ok(ordered) => {
                        failures = 0;
                        if ordered {
                            self.metrics.tls.renewals.get_or_create(&label).inc();
                        }
                        self.note(0, None, None);
                        // Serve it (or what the lease's holder stored) now.
                        if ordered {
                            continue;
                        }
                    }
                    Err(e) => {
                        failures += 1;
                        self.metrics
                            .tls
                            .renewal_failures
                            .get_or_create(&label)
                            .inc();
                        let wait = backoff(self.settings.retry_after, failures);
                        next_try = SystemTime::now() + wait;
                        tracing::warn!(
                            names = ?self.settings.domains,
                            failures,
                            retry_in_secs = wait.as_secs(),
                            "ACME order failed{}: {e:#}",
                            if served.is_some() { ", the current certificate still served" } else { "" }
                        );
                        self.note(failures, Some(format!("{e:#}")), Some(next_try));
                    }
                }
            }
            tokio::time::sleep(self.settings.check_every).await;
        }
    }

    fn note(&self, failures: u32, error: Option<String>, next_try: Option<SystemTime>) {
        let mut status = unpoisoned(self.status.lock());
        status.failures = failures;
        if error.is_some() || failures == 0 {
            status.last_error = error;
        }
        status.next_try = next_try.map(super::certs::unix);
    }

    /// Serves the stored certificate if it is not the one served; the
    /// certificate served after.
    async fn adopt_stored(&self) -> Option<Arc<Certificate>> {
        let served = self.certs.acme(&self.settings.domains[0]);
        let stored = match self.store.cert(&self.id).await {
            Ok(stored) => stored?,
            Err(e) => {
                tracing::warn!("reading the ACME certificate from storage: {e:#}");
                return served;
            }
        };
        let fresh = served.as_ref().is_none_or(|served| {
            served.key.end_entity_cert().ok() != first_der(&stored.chain_pem).as_ref()
        });
        if !fresh {
            return served;
        }
        match Certificate::from_pem(
            stored.chain_pem.as_bytes(),
            stored.key_pem.as_bytes(),
            Source::Acme,
        ) {
            Ok(cert) => {
                tracing::info!(
                    names = ?cert.names,
                    expires = cert.expires_unix(),
                    issuer = %cert.issuer,
                    "serving the ACME certificate"
                );
                self.metrics.tls.served(&cert);
                let cert = Arc::new(cert);
                self.certs.set_acme(cert.clone());
                Some(cert)
            }
            Err(e) => {
                tracing::warn!("the stored ACME certificate does not load: {e:#}");
                served
            }
        }
    }

    /// Orders a certificate if this node holds the lease (or is alone);
    /// whether it did.
    async fn renew(&self) -> anyhow::Result<bool> {
        let lease = format!("tls/{}", self.id);
        let revision = match &self.cluster {
            None => None,
            Some(cluster) => match cluster.claim_lease(&lease, LEASE_TTL).await? {
                LeaseClaim::Ours(revision) => Some(revision),
                LeaseClaim::Theirs(node) => {
                    tracing::debug!(node, "another node orders the certificate");
                    return Ok(false);
                }
            },
        };
        let result = self.order_unless_stored().await;
        if let (Some(cluster), Some(revision)) = (&self.cluster, revision) {
            let _ = cluster.release_lease(&lease, revision).await;
        }
        result
    }

    async fn order_unless_stored(&self) -> anyhow::Result<bool> {
        // The lease's previous holder may have just stored a new one.
        if let Some(stored) = self.store.cert(&self.id).await?
            && let Ok(cert) = Certificate::from_pem(
                stored.chain_pem.as_bytes(),
                stored.key_pem.as_bytes(),
                Source::Acme,
            )
            && SystemTime::now() < cert.renew_at()
        {
            return Ok(false);
        }
        tracing::info!(
            names = ?self.settings.domains,
            directory = %self.settings.directory,
            challenge = self.settings.challenge.as_str(),
            "ordering a certificate"
        );
        let account = self.account().await?;
        let ordering = order::obtain(
            &account,
            &self.settings.domains,
            self.settings.challenge,
            &self.store,
        );
        let issued = tokio::time::timeout(LEASE_TTL / 2, ordering)
            .await
            .context("the order took too long")??;
        self.store.put_cert(&self.id, &issued).await?;
        Ok(true)
    }

    /// The account at the directory: the stored one, else a new one.
    async fn account(&self) -> anyhow::Result<Account> {
        let directory = &self.settings.directory;
        let builder = || match &self.settings.ca_root {
            Some(root) => Account::builder_with_root(root),
            None => Account::builder(),
        };
        if let Some(credentials) = self.store.account(directory).await? {
            let credentials = serde_json::from_value(credentials)?;
            return Ok(builder()?.from_credentials(credentials).await?);
        }
        let contact = self.settings.email.as_ref().map(|e| format!("mailto:{e}"));
        let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
        let (account, credentials) = builder()?
            .create(
                &NewAccount {
                    contact: &contacts,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                directory.clone(),
                None,
            )
            .await
            .with_context(|| format!("creating an account at {directory}"))?;
        self.store
            .put_account(directory, &serde_json::to_value(&credentials)?)
            .await?;
        tracing::info!(directory, "ACME account created");
        Ok(account)
    }
}

/// The leaf certificate of a PEM chain.
fn first_der(chain: &str) -> Option<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(chain.as_bytes())
        .next()?
        .ok()
}

/// The wait after `failures` failed orders in a row.
fn backoff(first: Duration, failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(20));
    first.saturating_mul(factor).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_back_off_doubling_up_to_six_hours() {
        let first = Duration::from_secs(60);
        assert_eq!(backoff(first, 1), first);
        assert_eq!(backoff(first, 2), first * 2);
        assert_eq!(backoff(first, 4), first * 8);
        assert_eq!(backoff(first, 40), MAX_BACKOFF);
    }
}
