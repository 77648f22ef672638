//! `spike serve`'s flags for HTTPS: certificate files or ACME, the plain
//! listener that redirects to HTTPS, HSTS, and the admin API's own
//! listener.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::Args;

use crate::tls::TlsSettings;
use crate::tls::acme::{AcmeSettings, ChallengeKind, LETS_ENCRYPT};

#[derive(Args, Debug)]
pub struct TlsArgs {
    /// Serve HTTPS on --listen with this PEM certificate chain (leaf
    /// first); reloaded when the file changes.
    #[arg(long, env = "SPIKE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1; RSA,
    /// ECDSA or Ed25519).
    #[arg(long, env = "SPIKE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Obtain and renew a certificate for this name by ACME and serve
    /// HTTPS on --listen; repeat for more names on the same certificate.
    #[arg(long, env = "SPIKE_ACME_DOMAIN", value_delimiter = ',')]
    pub acme_domain: Vec<String>,
    /// The contact address given to the certificate authority.
    #[arg(long, env = "SPIKE_ACME_EMAIL")]
    pub acme_email: Option<String>,
    /// The ACME directory [default: Let's Encrypt's production one].
    #[arg(long, env = "SPIKE_ACME_DIRECTORY", default_value = LETS_ENCRYPT)]
    pub acme_directory: String,
    /// A root certificate (PEM) to trust for the ACME directory's HTTPS:
    /// a private or test CA.
    #[arg(long, env = "SPIKE_ACME_CA_ROOT")]
    pub acme_ca_root: Option<PathBuf>,
    /// How the CA validates the names: tls-alpn-01 on --listen itself, or
    /// http-01 on --listen-http.
    #[arg(
        long,
        value_enum,
        default_value = "tls-alpn-01",
        env = "SPIKE_ACME_CHALLENGE"
    )]
    pub acme_challenge: ChallengeKind,
    /// How often the certificate is looked at (renewed from two thirds of
    /// its lifetime; on a cluster, picked up from the node that renewed).
    #[arg(long, default_value_t = 60, hide = true)]
    pub acme_check_secs: u64,
    /// The first wait after a failed order (doubling after each failure).
    #[arg(long, default_value_t = 60, hide = true)]
    pub acme_retry_secs: u64,
    /// A plain-HTTP address (port 80) that redirects to HTTPS and answers
    /// ACME's http-01 challenges.
    #[arg(long, env = "SPIKE_LISTEN_HTTP")]
    pub listen_http: Option<SocketAddr>,
    /// Send `strict-transport-security: max-age=SECS` on HTTPS answers
    /// (browsers then refuse plain HTTP for the name for that long).
    #[arg(long, env = "SPIKE_HSTS_MAX_AGE")]
    pub hsts_max_age: Option<u64>,
    /// The longest a TLS handshake may take.
    #[arg(long, default_value_t = 10)]
    pub tls_handshake_timeout_secs: u64,
    /// TLS handshakes in progress at most; a new one pushes out the oldest
    /// (a client that never finishes its handshake holds nothing).
    #[arg(long, default_value_t = 1024)]
    pub max_tls_handshakes: usize,
    /// Do not offer HTTP/2 (HTTPS connections then speak HTTP/1.1).
    #[arg(long)]
    pub no_http2: bool,
}

impl TlsArgs {
    /// The TLS settings, `None` for plain HTTP; an error for flags that
    /// make no sense together.
    pub fn settings(&self) -> anyhow::Result<Option<TlsSettings>> {
        let files = self.tls_cert.clone().zip(self.tls_key.clone());
        let acme = (!self.acme_domain.is_empty())
            .then(|| self.acme())
            .transpose()?;
        if files.is_none() && acme.is_none() {
            if self.hsts_max_age.is_some() || self.listen_http.is_some() {
                bail!(
                    "--hsts-max-age and --listen-http need HTTPS: --tls-cert and --tls-key, or --acme-domain"
                );
            }
            return Ok(None);
        }
        Ok(Some(TlsSettings {
            files,
            acme,
            handshake_timeout: Duration::from_secs(self.tls_handshake_timeout_secs.max(1)),
            max_handshakes: self.max_tls_handshakes.max(1),
            http2: !self.no_http2,
        }))
    }

    fn acme(&self) -> anyhow::Result<AcmeSettings> {
        for domain in &self.acme_domain {
            check_domain(domain)?;
        }
        if self.acme_challenge == ChallengeKind::Http01 && self.listen_http.is_none() {
            bail!("--acme-challenge http-01 needs --listen-http (the CA asks on port 80)");
        }
        let directory: http::Uri = self
            .acme_directory
            .parse()
            .map_err(|e| anyhow::anyhow!("--acme-directory {}: {e}", self.acme_directory))?;
        if directory.scheme_str() != Some("https") {
            bail!(
                "--acme-directory {}: an ACME directory is an https:// URL",
                self.acme_directory
            );
        }
        Ok(AcmeSettings {
            domains: self.acme_domain.clone(),
            email: self.acme_email.clone(),
            directory: self.acme_directory.clone(),
            ca_root: self.acme_ca_root.clone(),
            challenge: self.acme_challenge,
            check_every: Duration::from_secs(self.acme_check_secs.max(1)),
            retry_after: Duration::from_secs(self.acme_retry_secs.max(1)),
        })
    }
}

/// A name a public CA can issue for: letters, digits and hyphens in dot
/// separated labels, no wildcard (TLS-ALPN-01 and HTTP-01 cannot validate
/// one), no address.
fn check_domain(domain: &str) -> anyhow::Result<()> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    let ok = domain.len() <= 253
        && domain.contains('.')
        && domain.split('.').all(label_ok)
        && domain.parse::<std::net::IpAddr>().is_err();
    if !ok {
        bail!(
            "--acme-domain '{domain}' is not a DNS name a certificate can be ordered for (like example.com; no wildcard, no address)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acme_domains_are_dns_names() {
        assert!(check_domain("example.com").is_ok());
        assert!(check_domain("a-b.example.co.uk").is_ok());
        for bad in [
            "*.example.com",
            "localhost",
            "1.2.3.4",
            "-a.com",
            "a..com",
            "a b.com",
        ] {
            assert!(check_domain(bad).is_err(), "{bad}");
        }
    }
}
