//! TLS's series: handshakes by outcome, those in progress, and each
//! certificate's expiry and renewal failures.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::Certificate;
use crate::metrics::series;

/// A handshake's outcome: `http1`, `h2`, `acme` (a TLS-ALPN-01
/// validation), `failed`, `timeout`, `pushed_out`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

/// A certificate by its first name and where it came from.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertLabels {
    pub name: String,
    pub source: &'static str,
}

/// A certificate ACME manages, by its first name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NameLabel {
    pub name: String,
}

series! {
    /// TLS handshakes and certificates.
    pub struct TlsMetrics {
        handshakes: Family<OutcomeLabel, Counter> = Family::default(),
            "tls_handshakes", "TLS handshakes by outcome: http1, h2, acme, failed, timeout, pushed_out";
        in_progress: Gauge = Gauge::default(),
            "tls_handshakes_in_progress", "TLS handshakes in progress";
        expiry: Family<CertLabels, Gauge> = Family::default(),
            "tls_certificate_expiry_timestamp_seconds", "When each certificate served expires (Unix time)";
        renewal_failures: Family<NameLabel, Counter> = Family::default(),
            "tls_certificate_renewal_failures", "Failed ACME orders and renewals, by certificate";
        renewals: Family<NameLabel, Counter> = Family::default(),
            "tls_certificate_renewals", "Certificates ACME issued, by certificate (the first order too)";
    }
}

impl TlsMetrics {
    pub fn handshake(&self, outcome: &'static str) {
        self.handshakes
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// `cert` is served from now on.
    pub fn served(&self, cert: &Certificate) {
        let labels = CertLabels {
            name: cert.names.first().cloned().unwrap_or_default(),
            source: cert.source.as_str(),
        };
        self.expiry
            .get_or_create(&labels)
            .set(cert.expires_unix() as i64);
    }
}
