//! The WASI standards spike links besides WASI 0.2 itself (`wit/standards.wit`,
//! `wasi:otel`): which versions, onto what, and what of the manifest each
//! needs. The loader names the versions when a component imports one spike
//! does not link; `spike check` lists what a component imports of them and
//! whether its manifest grants what they need.

use serde::Serialize;

use super::manifest::Manifest;
use crate::caps::Kind;

/// One standard package and the versions linked.
struct Standard {
    package: &'static str,
    versions: &'static [&'static str],
    /// What spike serves it with.
    onto: &'static str,
    needs: Needs,
}

/// What of the manifest a standard's calls need.
#[derive(Clone, Copy)]
enum Needs {
    /// Granted names of this kind: a bucket or container is one.
    Grant(Kind),
    /// The `[config]` table.
    Config,
    Nothing,
}

const LINKED: &[Standard] = &[
    Standard {
        package: "wasi:keyvalue",
        versions: &["0.2.0-draft", "0.2.0-draft2"],
        onto: "spike:host/kv",
        needs: Needs::Grant(Kind::Kv),
    },
    Standard {
        package: "wasi:config",
        versions: &["0.2.0-draft", "0.2.0-draft-2024-09-27", "0.2.0-rc.1"],
        onto: "the manifest's [config]",
        needs: Needs::Config,
    },
    Standard {
        package: "wasi:logging",
        versions: &["0.1.0-draft"],
        onto: "the plugin's log",
        needs: Needs::Nothing,
    },
    Standard {
        package: "wasi:blobstore",
        versions: &["0.2.0-draft"],
        onto: "spike:host/blob",
        needs: Needs::Grant(Kind::Blob),
    },
    Standard {
        package: "wasi:otel",
        versions: &["0.2.0-rc.2"],
        onto: "spike's telemetry",
        needs: Needs::Nothing,
    },
];

/// `wasi:keyvalue/store@0.2.0-draft` as (package, version).
fn split(import: &str) -> Option<(&str, &str)> {
    let (path, version) = import.split_once('@')?;
    let (package, _interface) = path.split_once('/')?;
    Some((package, version))
}

fn standard_of(import: &str) -> Option<(&'static Standard, &str)> {
    let (package, version) = split(import)?;
    let standard = LINKED.iter().find(|s| s.package == package)?;
    Some((standard, version))
}

/// Why `imports` cannot link, if one of them is a standard at a version
/// spike does not link: a sentence naming the import and the versions
/// that are.
pub fn unlinked_version<'a>(imports: impl IntoIterator<Item = &'a str>) -> Option<String> {
    imports.into_iter().find_map(|import| {
        let (standard, version) = standard_of(import)?;
        (!standard.versions.contains(&version)).then(|| {
            format!(
                "it imports {import}, a version spike does not link: spike links {} at {} \
                 (see docs/authoring.md)",
                standard.package,
                standard.versions.join(", ")
            )
        })
    })
}

/// One standard interface a component imports, as `spike check` lists it.
#[derive(Debug, Serialize)]
pub struct StandardImport {
    pub import: String,
    /// What spike serves it with.
    pub onto: &'static str,
    /// What of the manifest it needs (`null`: nothing).
    pub needs: Option<&'static str>,
    /// With a manifest: what it grants of that (names, or `[config]`'s
    /// keys); empty means every call that needs it fails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub granted: Option<Vec<String>>,
}

/// The standard interfaces among `imports`, with what `manifest` grants
/// each.
pub fn listing<'a>(
    imports: impl IntoIterator<Item = &'a str>,
    manifest: Option<&Manifest>,
) -> Vec<StandardImport> {
    imports
        .into_iter()
        .filter_map(|import| {
            let (standard, _) = standard_of(import)?;
            let needs = match standard.needs {
                Needs::Grant(Kind::Kv) => Some("grants.kv: a bucket is a granted namespace"),
                Needs::Grant(_) => Some("grants.blob: a container is a granted bucket"),
                Needs::Config => Some("[config]: the strings it reads"),
                Needs::Nothing => None,
            };
            let granted = manifest.and_then(|m| match standard.needs {
                Needs::Grant(kind) => Some(m.grants.names(kind).map(str::to_string).collect()),
                Needs::Config => Some(m.config.iter().map(|(k, _)| k.clone()).collect()),
                Needs::Nothing => None,
            });
            Some(StandardImport {
                import: import.to_string(),
                onto: standard.onto,
                needs,
                granted,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_import_and_the_linked_versions() {
        let imports = ["wasi:io/poll@0.2.12", "wasi:keyvalue/store@0.2.0-draft3"];
        let why = unlinked_version(imports).unwrap();
        assert!(why.contains("wasi:keyvalue/store@0.2.0-draft3"), "{why}");
        assert!(why.contains("0.2.0-draft, 0.2.0-draft2"), "{why}");
        let linked = [
            "wasi:keyvalue/store@0.2.0-draft2",
            "wasi:config/store@0.2.0-rc.1",
        ];
        assert_eq!(unlinked_version(linked), None);
        let listed = listing(linked, None);
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[1].onto, "the manifest's [config]");
    }
}
