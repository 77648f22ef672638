//! What a plugin may touch: the grants of its manifest, checked by every
//! capability before it does anything. Deny by default: an empty grant list
//! refuses everything.

use std::collections::{BTreeMap, BTreeSet};

use super::CapError;
use super::outbound::HostPattern;
use super::rate_limit::Rule;
use crate::storage::Quota;

/// A kind of named resource a manifest grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A KV namespace (`grants.kv`).
    Kv,
    /// A blob bucket (`grants.blob`).
    Blob,
    /// A secret (`grants.secrets`).
    Secret,
    /// A plugin this one may call in-process (`grants.services`).
    Service,
    /// A SQL database (`grants.sql`).
    Sql,
}

impl Kind {
    /// What a resource of this kind is called, in messages.
    pub fn noun(self) -> &'static str {
        match self {
            Kind::Kv => "kv namespace",
            Kind::Blob => "blob bucket",
            Kind::Secret => "secret",
            Kind::Service => "service",
            Kind::Sql => "sql database",
        }
    }
}

/// The capabilities a plugin's manifest grants.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    names: BTreeMap<Kind, BTreeSet<String>>,
    /// Hosts the plugin may send HTTP requests to.
    pub outbound: Vec<HostPattern>,
    /// The quotas the plugin keeps through `rate-limit`, by name
    /// (`[quotas.<name>]`).
    pub quotas: BTreeMap<String, Rule>,
    /// Whether the plugin may use the headless browser (`render`).
    pub render: bool,
    /// The services that see the caller of the request that calls them
    /// (`grants.identity_to`); the others are called anonymously.
    pub identity_to: BTreeSet<String>,
    /// What the plugin's writes may fill (`[storage]`).
    pub storage: StorageQuotas,
}

/// The quotas of a plugin's writes: each KV namespace's and each bucket's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageQuotas {
    pub kv: Quota,
    pub blob: Quota,
}

impl Grants {
    /// Grants outbound requests to `outbound`, and no named resource yet.
    pub fn new(outbound: Vec<HostPattern>) -> Self {
        Self {
            names: BTreeMap::new(),
            outbound,
            quotas: BTreeMap::new(),
            render: false,
            identity_to: BTreeSet::new(),
            storage: StorageQuotas::default(),
        }
    }

    /// Grants the resource `name` of `kind`.
    pub fn grant(&mut self, kind: Kind, name: impl Into<String>) {
        self.names.entry(kind).or_default().insert(name.into());
    }

    /// The granted resources of `kind`.
    pub fn names(&self, kind: Kind) -> impl Iterator<Item = &str> {
        self.names
            .get(&kind)
            .into_iter()
            .flatten()
            .map(String::as_str)
    }

    /// Whether the resource `name` of `kind` is granted.
    pub fn check(&self, kind: Kind, name: &str) -> Result<(), CapError> {
        if self.names.get(&kind).is_some_and(|n| n.contains(name)) {
            Ok(())
        } else {
            Err(CapError::AccessDenied(format!(
                "{} '{name}' is not granted to this plugin",
                kind.noun()
            )))
        }
    }

    /// Whether an outgoing request to `host` on `port` may carry the
    /// trace context: a grant that covers it says `trace = true`.
    pub fn traces_to(&self, host: &str, port: u16) -> bool {
        (self.outbound.iter()).any(|p| p.trace && p.matches(host, port))
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
        let mut g = Grants::new(vec![
            "api.example.com".parse().unwrap(),
            "*.cdn.example.com:8443".parse().unwrap(),
        ]);
        g.grant(Kind::Kv, "counters");
        g.grant(Kind::Blob, "files");
        g
    }

    #[test]
    fn empty_grants_deny_everything() {
        let g = Grants::default();
        for kind in [Kind::Kv, Kind::Blob, Kind::Secret] {
            assert!(matches!(g.check(kind, "x"), Err(CapError::AccessDenied(_))));
        }
        assert!(matches!(
            g.check_outbound("example.com", 443),
            Err(CapError::AccessDenied(_))
        ));
    }

    #[test]
    fn only_named_resources_of_their_kind_are_granted() {
        let g = grants();
        assert!(g.check(Kind::Kv, "counters").is_ok());
        assert!(g.check(Kind::Kv, "counters2").is_err());
        assert!(g.check(Kind::Kv, "").is_err());
        assert!(g.check(Kind::Blob, "files").is_ok());
        let denied = g.check(Kind::Blob, "counters").unwrap_err();
        assert!(
            denied.to_string().contains("blob bucket 'counters'"),
            "{denied}"
        );
        assert_eq!(g.names(Kind::Kv).collect::<Vec<_>>(), ["counters"]);
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
