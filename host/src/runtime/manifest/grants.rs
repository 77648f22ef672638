//! A manifest's `[grants]`, `[quotas]` and `[storage]`: what the plugin may
//! use, how often, and how much it may store.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::checks::check_resource_name;
use super::{ErrAt, ManifestError, check_name};
use crate::caps::grants::StorageQuotas;
use crate::caps::outbound::HostPattern;
use crate::caps::rate_limit::Rule;
use crate::caps::{Grants, Kind};
use crate::storage::Quota;

/// What a manifest that says nothing of `[storage]` may fill: enough for
/// any plugin of the seed system, and a bound on what anonymous writers
/// can put on a public server's disk.
pub const DEFAULT_KV_MIB: u64 = 1024;
pub const DEFAULT_KV_KEYS: u64 = 1_000_000;
pub const DEFAULT_BLOB_MIB: u64 = 16 << 10;
pub const DEFAULT_BLOB_OBJECTS: u64 = 1_000_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawQuota {
    requests: u32,
    per_s: u32,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGrants {
    #[serde(default)]
    kv: Vec<Spanned<String>>,
    #[serde(default)]
    blob: Vec<Spanned<String>>,
    /// Host strings, or `{ host = "...", trace = true }` tables.
    #[serde(default)]
    outbound: Vec<Spanned<toml::Value>>,
    #[serde(default)]
    secrets: Vec<Spanned<String>>,
    #[serde(default)]
    render: bool,
    #[serde(default)]
    services: Vec<Spanned<String>>,
    #[serde(default)]
    identity_to: Vec<Spanned<String>>,
    #[serde(default)]
    sql: Vec<Spanned<String>>,
}

/// `[storage]`: quotas of what the plugin writes (0: no limit).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStorage {
    kv_mib: Option<u64>,
    kv_keys: Option<u64>,
    blob_mib: Option<u64>,
    blob_objects: Option<u64>,
}

/// The quota for a `[storage]` value: the default if absent, none if 0.
fn storage_limit(value: Option<u64>, default: u64, scale: u32) -> Option<u64> {
    match value.unwrap_or(default) {
        0 => None,
        n => Some(n.saturating_mul(1 << scale)),
    }
}

/// One `grants.outbound` entry: `"host[:port]"`, or `{ host = "host[:port]",
/// trace = true }` for a destination that may see the request's trace
/// context (`traceparent`).
fn outbound_entry(value: &toml::Value) -> Result<HostPattern, String> {
    let table = match value {
        toml::Value::String(host) => return host.parse(),
        toml::Value::Table(table) => table,
        _ => {
            return Err(
                "an outbound entry is a host string or { host = \"...\", trace = true }".into(),
            );
        }
    };
    if let Some(unknown) = table
        .keys()
        .find(|k| !matches!(k.as_str(), "host" | "trace"))
    {
        return Err(format!(
            "outbound entry: unknown key '{unknown}' (expected host, trace)"
        ));
    }
    let host = match table.get("host") {
        Some(toml::Value::String(host)) => host,
        Some(_) => return Err("outbound entry: host must be a string".into()),
        None => return Err("outbound entry: a table needs host = \"...\"".into()),
    };
    let trace = match table.get("trace") {
        None => false,
        Some(toml::Value::Boolean(trace)) => *trace,
        Some(_) => return Err("outbound entry: trace must be true or false".into()),
    };
    Ok(host.parse::<HostPattern>()?.traced(trace))
}

/// The grants, with the quotas and storage limits they carry.
pub(super) fn parse(
    raw: &RawGrants,
    quotas: &BTreeMap<String, Spanned<RawQuota>>,
    storage: &RawStorage,
    err: ErrAt<'_>,
) -> Result<Grants, ManifestError> {
    let outbound = (raw.outbound.iter())
        .map(|h| outbound_entry(h.get_ref()).map_err(|m| err(Some(h.span()), m)))
        .collect::<Result<_, _>>()?;
    let mut grants = Grants::new(outbound);
    grants.render = raw.render;
    for (kind, list) in [
        (Kind::Kv, &raw.kv),
        (Kind::Blob, &raw.blob),
        (Kind::Secret, &raw.secrets),
    ] {
        for n in list {
            check_resource_name(n.get_ref())
                .map_err(|m| err(Some(n.span()), format!("{}: {m}", kind.noun())))?;
            grants.grant(kind, n.get_ref().clone());
        }
    }
    for db in &raw.sql {
        // A database's name is its file's: letters, digits, `-`, `_`, `.`.
        if !spike_sql::valid_name(db.get_ref()) {
            let m = format!(
                "sql database: '{}' must be 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'",
                db.get_ref()
            );
            return Err(err(Some(db.span()), m));
        }
        grants.grant(Kind::Sql, db.get_ref().clone());
    }
    for service in &raw.services {
        check_name(service.get_ref())
            .map_err(|m| err(Some(service.span()), format!("service: {m}")))?;
        grants.grant(Kind::Service, service.get_ref().clone());
    }
    for service in &raw.identity_to {
        let name = service.get_ref();
        if grants.check(Kind::Service, name).is_err() {
            let m = format!("identity_to: '{name}' is not one of this plugin's services");
            return Err(err(Some(service.span()), m));
        }
        grants.identity_to.insert(name.clone());
    }
    for (name, quota) in quotas {
        let at = Some(quota.span());
        check_resource_name(name).map_err(|m| err(at.clone(), format!("quota: {m}")))?;
        let q = quota.get_ref();
        let rule = Rule::new(q.requests, q.per_s)
            .map_err(|m| err(at.clone(), format!("quota '{name}': {m}")))?;
        grants.quotas.insert(name.clone(), rule);
    }
    grants.storage = StorageQuotas {
        kv: Quota {
            bytes: storage_limit(storage.kv_mib, DEFAULT_KV_MIB, 20),
            items: storage_limit(storage.kv_keys, DEFAULT_KV_KEYS, 0),
        },
        blob: Quota {
            bytes: storage_limit(storage.blob_mib, DEFAULT_BLOB_MIB, 20),
            items: storage_limit(storage.blob_objects, DEFAULT_BLOB_OBJECTS, 0),
        },
    };
    Ok(grants)
}
