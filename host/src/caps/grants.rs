//! What a plugin may touch: the grants of its manifest, checked by every
//! capability before it does anything. Deny by default: an empty grant list
//! refuses everything.

use std::collections::BTreeSet;

use super::CapError;
use super::outbound::HostPattern;

/// The capabilities a plugin's manifest grants.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// KV namespaces the plugin may open.
    pub kv: BTreeSet<String>,
    /// Blob buckets the plugin may open.
    pub blob: BTreeSet<String>,
    /// Hosts the plugin may send HTTP requests to.
    pub outbound: Vec<HostPattern>,
    /// Secrets the plugin may read (the `secrets` interface comes later; the
    /// grant is parsed now so manifests need not change then).
    pub secrets: BTreeSet<String>,
}

impl Grants {
    /// Whether the KV namespace `name` is granted.
    pub fn check_kv(&self, name: &str) -> Result<(), CapError> {
        if self.kv.contains(name) {
            Ok(())
        } else {
            Err(CapError::AccessDenied(format!(
                "kv namespace '{name}' is not granted to this plugin"
            )))
        }
    }

    /// Whether the blob bucket `name` is granted.
    pub fn check_blob(&self, name: &str) -> Result<(), CapError> {
        if self.blob.contains(name) {
            Ok(())
        } else {
            Err(CapError::AccessDenied(format!(
                "blob bucket '{name}' is not granted to this plugin"
            )))
        }
    }

    /// Whether an outgoing request to `host` on `port` is granted.
    pub fn check_outbound(&self, host: &str, port: u16) -> Result<(), CapError> {
        if self.outbound.iter().any(|p| p.matches(host, port)) {
            Ok(())
        } else {
            Err(CapError::AccessDenied(format!(
                "outbound requests to '{host}:{port}' are not granted to this plugin"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants() -> Grants {
        Grants {
            kv: ["counters".to_string()].into(),
            blob: ["files".to_string()].into(),
            outbound: vec![
                "api.example.com".parse().unwrap(),
                "*.cdn.example.com:8443".parse().unwrap(),
            ],
            secrets: BTreeSet::new(),
        }
    }

    #[test]
    fn empty_grants_deny_everything() {
        let g = Grants::default();
        assert!(matches!(g.check_kv("x"), Err(CapError::AccessDenied(_))));
        assert!(matches!(g.check_blob("x"), Err(CapError::AccessDenied(_))));
        assert!(matches!(
            g.check_outbound("example.com", 443),
            Err(CapError::AccessDenied(_))
        ));
    }

    #[test]
    fn only_named_resources_are_granted() {
        let g = grants();
        assert!(g.check_kv("counters").is_ok());
        assert!(g.check_kv("counters2").is_err());
        assert!(g.check_kv("").is_err());
        assert!(g.check_blob("files").is_ok());
        assert!(g.check_blob("counters").is_err());
    }

    #[test]
    fn outbound_hosts_and_ports() {
        let g = grants();
        assert!(g.check_outbound("api.example.com", 443).is_ok());
        assert!(g.check_outbound("api.example.com", 80).is_ok());
        assert!(g.check_outbound("API.EXAMPLE.COM", 443).is_ok());
        assert!(g.check_outbound("evil.example.com", 443).is_err());
        assert!(g.check_outbound("img.cdn.example.com", 8443).is_ok());
        assert!(g.check_outbound("img.cdn.example.com", 443).is_err());
        assert!(g.check_outbound("cdn.example.com", 8443).is_err());
    }
}
