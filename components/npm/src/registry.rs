//! The registry: a package's document (its versions, tags and tarballs),
//! fetched through the plugin's outbound grant and kept in KV, and a
//! version or range resolved against it.
//!
//! Only what the plugin uses of the document is kept (each version's
//! tarball and integrity, the tags): a few kilobytes where the registry's
//! document is megabytes. A kept document is fresh for `packument_ttl_s`;
//! after that it is fetched again, and if the registry cannot be reached
//! the kept one still answers for versions it lists (a version, once
//! published, never changes) while a range or tag needs a fresh one.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spike_sdk::client::{Fetch, FetchError};
use spike_sdk::kv::{Namespace, SetOptions};
use spike_sdk::router::HttpError;

use crate::config::Config;

/// What the plugin keeps of a package's document.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Packument {
    /// Tag → version (`latest`, `next`, ...).
    pub tags: BTreeMap<String, String>,
    /// Version → where its tarball is and its SHA-512.
    pub versions: BTreeMap<String, Dist>,
    /// When it was fetched, in milliseconds since the Unix epoch.
    pub fetched_ms: u64,
}

/// One version's tarball.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Dist {
    pub tarball: String,
    /// `sha512-<base64>` (other algorithms are not kept: see `integrity`).
    pub integrity: Option<String>,
}

/// The registry's document, as much of it as is read.
#[derive(Deserialize)]
struct Document {
    #[serde(rename = "dist-tags", default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    versions: BTreeMap<String, VersionEntry>,
}

#[derive(Deserialize)]
struct VersionEntry {
    dist: DocumentDist,
}

#[derive(Deserialize)]
struct DocumentDist {
    tarball: String,
    integrity: Option<String>,
}

/// The registry, and the KV namespace its documents are kept in.
pub struct Registry<'a> {
    pub config: &'a Config,
    pub kv: &'a Namespace,
}

/// How long a registry call may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(20);

impl Registry<'_> {
    /// `name`'s document: the kept one if it is fresh (or `exact` is a
    /// version it lists), else the registry's, else the kept one.
    pub fn packument(&self, name: &str, exact: Option<&str>) -> Result<Packument, HttpError> {
        let key = format!("packuments/{name}");
        let kept: Option<Packument> = self
            .kv
            .get(&key)
            .ok()
            .flatten()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        if let Some(kept) = &kept {
            let fresh = spike_sdk::now_ms().saturating_sub(kept.fetched_ms)
                < self.config.packument_ttl_s * 1000;
            if fresh || exact.is_some_and(|v| kept.versions.contains_key(v)) {
                return Ok(kept.clone());
            }
        }
        match self.fetch_packument(name) {
            Ok(fetched) => {
                if let Ok(bytes) = serde_json::to_vec(&fetched) {
                    // A document not kept is fetched again next time.
                    let _ = self.kv.set(
                        &key,
                        &bytes,
                        &SetOptions {
                            ttl_ms: None,
                            metadata: None,
                        },
                    );
                }
                Ok(fetched)
            }
            Err(e) if e.status == 503 => kept.ok_or(e),
            Err(e) => Err(e),
        }
    }

    fn fetch_packument(&self, name: &str) -> Result<Packument, HttpError> {
        // A scoped name's slash is encoded, as npm's own client sends it.
        let url = format!("{}/{}", self.config.registry, name.replacen('/', "%2f", 1));
        let got = Fetch::get(&url)
            .map_err(|e| unreachable_registry(&e))?
            .header(
                "accept",
                "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8",
            )
            .timeout(FETCH_TIMEOUT)
            .max_body(self.config.max_packument_bytes)
            .send()
            .map_err(|e| unreachable_registry(&e))?;
        match got.status {
            200 => {}
            404 => {
                return Err(HttpError::new(
                    404,
                    "package_not_found",
                    format!("the registry has no package `{name}`"),
                ));
            }
            status => {
                return Err(registry_down(format!(
                    "the registry answered {status} for `{name}`"
                )));
            }
        }
        let document: Document = serde_json::from_slice(&got.body).map_err(|e| {
            registry_down(format!(
                "the registry's document for `{name}` does not read: {e}"
            ))
        })?;
        Ok(Packument {
            tags: document.tags,
            versions: document
                .versions
                .into_iter()
                .map(|(version, entry)| {
                    let integrity = entry.dist.integrity.and_then(|all| {
                        // Several hashes may be listed; SHA-512 is the one checked.
                        all.split_whitespace()
                            .find(|h| h.starts_with("sha512-"))
                            .map(str::to_string)
                    });
                    (
                        version,
                        Dist {
                            tarball: entry.dist.tarball,
                            integrity,
                        },
                    )
                })
                .collect(),
            fetched_ms: spike_sdk::now_ms(),
        })
    }

    /// The version `wanted` (exact, range, tag, or "" for `latest`) names.
    pub fn resolve(&self, name: &str, wanted: &str) -> Result<String, HttpError> {
        let exact = nodejs_semver::Version::parse(wanted)
            .ok()
            .map(|v| v.to_string());
        let packument = self.packument(name, exact.as_deref())?;
        pick(&packument, name, wanted)
    }
}

/// The highest version of `packument` that `wanted` allows.
pub fn pick(packument: &Packument, name: &str, wanted: &str) -> Result<String, HttpError> {
    let wanted = wanted.trim();
    let tag = if wanted.is_empty() { "latest" } else { wanted };
    if let Some(version) = packument.tags.get(tag) {
        return Ok(version.clone());
    }
    let range = nodejs_semver::Range::parse(wanted).map_err(|_| {
        HttpError::new(
            404,
            "version_not_found",
            format!("`{wanted}` is neither a version, a range nor a tag of `{name}`"),
        )
    })?;
    // As npm does: the `latest` tag if the range allows it, else the
    // highest version it allows, pre-releases only if asked for by name.
    if let Some(latest) = packument.tags.get("latest")
        && let Ok(v) = nodejs_semver::Version::parse(latest)
        && range.satisfies(&v)
    {
        return Ok(latest.clone());
    }
    packument
        .versions
        .keys()
        .filter_map(|v| nodejs_semver::Version::parse(v).ok())
        .filter(|v| range.satisfies(v))
        .max()
        .map(|v| v.to_string())
        .ok_or_else(|| {
            HttpError::new(
                404,
                "version_not_found",
                format!("no version of `{name}` matches `{wanted}`"),
            )
        })
}

fn unreachable_registry(e: &FetchError) -> HttpError {
    match e {
        FetchError::Denied(_) => HttpError::new(
            503,
            "registry_not_granted",
            "the plugin's manifest does not grant the registry's host (grants.outbound)",
        ),
        FetchError::TooLarge => HttpError::new(
            422,
            "too_large",
            "the registry's document is larger than MAX_PACKUMENT_MIB",
        ),
        other => registry_down(format!("the registry cannot be reached: {other:?}")),
    }
}

/// The registry did not answer: worth trying again shortly.
pub fn registry_down(message: String) -> HttpError {
    HttpError::new(503, "registry_unavailable", message).with_header("retry-after", "30")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packument(versions: &[&str], latest: &str) -> Packument {
        Packument {
            tags: [("latest".to_string(), latest.to_string())].into(),
            versions: versions
                .iter()
                .map(|v| {
                    (
                        v.to_string(),
                        Dist {
                            tarball: String::new(),
                            integrity: None,
                        },
                    )
                })
                .collect(),
            fetched_ms: 0,
        }
    }

    #[test]
    fn ranges_pick_as_npm_does() {
        let p = packument(
            &["1.0.0", "1.2.0", "1.3.0-beta.1", "2.0.0", "3.0.0-rc.1"],
            "2.0.0",
        );
        assert_eq!(pick(&p, "x", "").unwrap(), "2.0.0");
        assert_eq!(pick(&p, "x", "latest").unwrap(), "2.0.0");
        assert_eq!(pick(&p, "x", "^1").unwrap(), "1.2.0");
        assert_eq!(pick(&p, "x", "1.x || >=2").unwrap(), "2.0.0");
        assert_eq!(pick(&p, "x", ">=1.0.0 <1.2.0").unwrap(), "1.0.0");
        assert_eq!(pick(&p, "x", "*").unwrap(), "2.0.0");
        assert_eq!(pick(&p, "x", "3.0.0-rc.1").unwrap(), "3.0.0-rc.1");
        assert_eq!(pick(&p, "x", "^4").unwrap_err().status, 404);
        assert_eq!(pick(&p, "x", "next").unwrap_err().status, 404);
    }
}
