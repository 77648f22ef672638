//! Plugin manifests: one TOML file per plugin in the plugins folder.
//!
//! ```toml
//! # plugins/hello.toml; the plugin's name is the file's stem unless `name` says otherwise
//! component = "hello.wasm"            # relative to this file
//!
//! [[routes]]
//! prefix = "/hello"                   # matches /hello and /hello/...
//! methods = ["GET", "POST", "PUT"]    # optional; all methods if absent
//!
//! [grants]                            # deny by default: only what is listed
//! kv = ["hello"]
//! blob = ["hello-files"]
//! outbound = ["api.example.com", "127.0.0.1:9000"]
//! secrets = []
//!
//! [limits]                            # all optional
//! memory_mib = 128                    # linear memory of one instance
//! cpu_ms = 5000                       # time spent running wasm per request
//! timeout_ms = 30000                  # wall time until the response headers
//! max_duration_ms = 120000            # wall time for the whole request, bodies included
//!                                     # (default: 120000, or timeout_ms if longer)
//! max_body_mib = 16                   # request body
//! max_concurrent = 64                 # requests at once (default: half the instance pool)
//! ```
//!
//! A malformed manifest is refused with its file, line and reason.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::caps::outbound::HostPattern;
use crate::caps::{Grants, Kind};

/// Default linear memory per instance.
pub const DEFAULT_MEMORY_MIB: u64 = 128;
/// Default CPU time per request.
pub const DEFAULT_CPU_MS: u64 = 5_000;
/// Default wall time until response headers.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Default wall time for a whole request, streamed bodies included.
pub const DEFAULT_MAX_DURATION_MS: u64 = 120_000;
/// Default request body limit.
pub const DEFAULT_MAX_BODY_MIB: u64 = 16;

/// Paths no plugin may claim: the host's own endpoints.
pub const RESERVED_PREFIXES: &[&str] = &["/_spike", "/healthz", "/readyz"];

/// A parsed, validated manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub name: String,
    /// The manifest file.
    pub path: PathBuf,
    /// SHA-256 of the manifest's text: which edit of it is in force.
    pub sha256: String,
    /// The component file, resolved against the manifest's folder.
    pub component: PathBuf,
    pub routes: Vec<Route>,
    pub grants: Grants,
    pub limits: Limits,
}

/// A path prefix the plugin serves, and the methods (empty: all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub prefix: String,
    pub methods: BTreeSet<String>,
}

/// Per-request limits of a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: u64,
    pub cpu: Duration,
    /// Until the response headers.
    pub timeout: Duration,
    /// For the whole request: reading its body, running, streaming the
    /// response. Never shorter than `timeout`.
    pub max_duration: Duration,
    pub max_body_bytes: u64,
    /// Requests of this plugin running at once; `None` leaves it to the
    /// host (a share of the instance pool, see `PluginRegistry`), so that one
    /// plugin's slow clients cannot take every instance.
    pub max_concurrent: Option<u32>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: DEFAULT_MEMORY_MIB << 20,
            cpu: Duration::from_millis(DEFAULT_CPU_MS),
            timeout: Duration::from_millis(DEFAULT_TIMEOUT_MS),
            max_duration: Duration::from_millis(DEFAULT_MAX_DURATION_MS),
            max_body_bytes: DEFAULT_MAX_BODY_MIB << 20,
            max_concurrent: None,
        }
    }
}

/// Why a manifest was refused: the file, the line (when known) and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.path.display(), self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for ManifestError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: Option<Spanned<String>>,
    component: Spanned<String>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    grants: RawGrants,
    #[serde(default)]
    limits: RawLimits,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    prefix: Spanned<String>,
    methods: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGrants {
    #[serde(default)]
    kv: Vec<Spanned<String>>,
    #[serde(default)]
    blob: Vec<Spanned<String>>,
    #[serde(default)]
    outbound: Vec<Spanned<String>>,
    #[serde(default)]
    secrets: Vec<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    memory_mib: Option<Spanned<u64>>,
    cpu_ms: Option<Spanned<u64>>,
    timeout_ms: Option<Spanned<u64>>,
    max_duration_ms: Option<Spanned<u64>>,
    max_body_mib: Option<Spanned<u64>>,
    max_concurrent: Option<Spanned<u32>>,
}

/// Reads and validates the manifest at `path`.
pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|e| ManifestError {
        path: path.to_path_buf(),
        line: None,
        message: format!("cannot read: {e}"),
    })?;
    parse(path, &text)
}

/// Parses and validates manifest `text` read from `path`.
pub fn parse(path: &Path, text: &str) -> Result<Manifest, ManifestError> {
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let err = |span: Option<std::ops::Range<usize>>, message: String| ManifestError {
        path: path.to_path_buf(),
        line: span.map(|s| line_of(s.start)),
        message,
    };
    let raw: RawManifest = toml::from_str(text).map_err(|e| {
        // toml's own message repeats the line; keep just the reason.
        err(e.span(), e.message().to_string())
    })?;

    let name = match &raw.name {
        Some(n) => {
            check_name(n.get_ref()).map_err(|m| err(Some(n.span()), m))?;
            n.get_ref().clone()
        }
        None => {
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            check_name(stem).map_err(|m| err(None, format!("file name: {m}")))?;
            stem.to_string()
        }
    };

    if raw.component.get_ref().trim().is_empty() {
        return Err(err(
            Some(raw.component.span()),
            "component must name a .wasm file".into(),
        ));
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let component = base.join(raw.component.get_ref());

    if raw.routes.is_empty() {
        return Err(err(
            None,
            "no [[routes]]: a plugin must serve at least one path prefix".into(),
        ));
    }
    let mut routes = Vec::new();
    for r in &raw.routes {
        let prefix = r.prefix.get_ref();
        check_prefix(prefix).map_err(|m| err(Some(r.prefix.span()), m))?;
        let mut methods = BTreeSet::new();
        for m in r.methods.iter().flatten() {
            let method = m.get_ref().to_ascii_uppercase();
            if http::Method::from_bytes(method.as_bytes()).is_err() || method.is_empty() {
                return Err(err(
                    Some(m.span()),
                    format!("'{}' is not an HTTP method", m.get_ref()),
                ));
            }
            methods.insert(method);
        }
        if r.methods.as_ref().is_some_and(Vec::is_empty) {
            return Err(err(
                Some(r.prefix.span()),
                "methods is empty: omit it to allow all methods".into(),
            ));
        }
        routes.push(Route {
            prefix: prefix.clone(),
            methods,
        });
    }

    let outbound = raw
        .grants
        .outbound
        .iter()
        .map(|h| {
            h.get_ref()
                .parse::<HostPattern>()
                .map_err(|m| err(Some(h.span()), m))
        })
        .collect::<Result<_, _>>()?;
    let mut grants = Grants::new(outbound);
    for (kind, list) in [
        (Kind::Kv, &raw.grants.kv),
        (Kind::Blob, &raw.grants.blob),
        (Kind::Secret, &raw.grants.secrets),
    ] {
        for n in list {
            check_resource_name(n.get_ref())
                .map_err(|m| err(Some(n.span()), format!("{}: {m}", kind.noun())))?;
            grants.grant(kind, n.get_ref().clone());
        }
    }

    let mut limits = Limits::default();
    let l = &raw.limits;
    if let Some(v) = &l.memory_mib {
        let mib = *v.get_ref();
        if !(1..=4096).contains(&mib) {
            return Err(err(
                Some(v.span()),
                "memory_mib must be between 1 and 4096".into(),
            ));
        }
        limits.memory_bytes = mib << 20;
    }
    if let Some(v) = &l.cpu_ms {
        if *v.get_ref() < 10 {
            return Err(err(Some(v.span()), "cpu_ms must be at least 10".into()));
        }
        limits.cpu = Duration::from_millis(*v.get_ref());
    }
    if let Some(v) = &l.timeout_ms {
        if *v.get_ref() < 10 {
            return Err(err(Some(v.span()), "timeout_ms must be at least 10".into()));
        }
        limits.timeout = Duration::from_millis(*v.get_ref());
    }
    if let Some(v) = &l.max_body_mib {
        if !(1..=1 << 20).contains(v.get_ref()) {
            return Err(err(
                Some(v.span()),
                "max_body_mib must be between 1 and 1048576".into(),
            ));
        }
        limits.max_body_bytes = *v.get_ref() << 20;
    }
    if let Some(v) = &l.max_duration_ms {
        if *v.get_ref() < 10 {
            return Err(err(
                Some(v.span()),
                "max_duration_ms must be at least 10".into(),
            ));
        }
        limits.max_duration = Duration::from_millis(*v.get_ref());
    }
    match &l.max_duration_ms {
        Some(v) if limits.timeout > limits.max_duration => {
            return Err(err(
                Some(v.span()),
                format!(
                    "max_duration_ms ({}) is shorter than timeout_ms ({})",
                    limits.max_duration.as_millis(),
                    limits.timeout.as_millis()
                ),
            ));
        }
        // Left to the default: never shorter than the time to headers.
        None => limits.max_duration = limits.max_duration.max(limits.timeout),
        Some(_) => {}
    }
    if let Some(v) = &l.max_concurrent {
        if *v.get_ref() == 0 {
            return Err(err(
                Some(v.span()),
                "max_concurrent must be at least 1".into(),
            ));
        }
        limits.max_concurrent = Some(*v.get_ref());
    }

    Ok(Manifest {
        name,
        path: path.to_path_buf(),
        sha256: crate::util::sha256_hex(text.as_bytes()),
        component,
        routes,
        grants,
        limits,
    })
}

/// Plugin names appear in URLs and logs: lower-case letters, digits, `-`, `_`.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "plugin name '{name}' must be 1 to 64 lower-case letters, digits, '-' or '_'"
        ))
    }
}

fn check_resource_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{name}' must be 1 to 128 letters, digits, '-', '_', '.' or ':'"
        ))
    }
}

fn check_prefix(prefix: &str) -> Result<(), String> {
    if !prefix.starts_with('/') {
        return Err(format!("route prefix '{prefix}' must start with '/'"));
    }
    if prefix.len() > 1 && prefix.ends_with('/') {
        return Err(format!("route prefix '{prefix}' must not end with '/'"));
    }
    if prefix.contains(['?', '#', '*', ' ']) || prefix.contains("//") {
        return Err(format!("route prefix '{prefix}' must be a plain path"));
    }
    // A broader prefix (even "/") is fine: the host's own routes are
    // matched before any plugin's.
    for reserved in RESERVED_PREFIXES {
        if super::routes::prefix_matches(reserved, prefix) {
            return Err(format!(
                "route prefix '{prefix}' overlaps the host's own '{reserved}'"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Manifest, ManifestError> {
        parse(Path::new("/p/hello.toml"), text)
    }

    #[test]
    fn full_manifest() {
        let m = parse_str(
            r#"
component = "hello.wasm"
[[routes]]
prefix = "/hello"
methods = ["get", "POST"]
[[routes]]
prefix = "/api/hello"
[grants]
kv = ["hello"]
blob = ["files"]
outbound = ["api.example.com", "127.0.0.1:9000"]
[limits]
memory_mib = 64
cpu_ms = 100
timeout_ms = 2000
max_duration_ms = 5000
max_body_mib = 1024
max_concurrent = 7
"#,
        )
        .unwrap();
        assert_eq!(m.name, "hello");
        assert_eq!(m.component, Path::new("/p/hello.wasm"));
        assert_eq!(
            m.routes[0].methods,
            ["GET", "POST"].map(String::from).into()
        );
        assert!(m.routes[1].methods.is_empty());
        assert!(m.grants.check(Kind::Kv, "hello").is_ok());
        assert!(m.grants.check_outbound("127.0.0.1", 9000).is_ok());
        assert_eq!(m.limits.memory_bytes, 64 << 20);
        assert_eq!(m.limits.cpu, Duration::from_millis(100));
        assert_eq!(m.limits.max_body_bytes, 1024 << 20);
        assert_eq!(m.limits.max_duration, Duration::from_millis(5000));
        assert_eq!(m.limits.max_concurrent, Some(7));
    }

    #[test]
    fn max_duration_is_never_shorter_than_the_time_to_headers() {
        let m = parse_str(
            "component = \"x.wasm\"\nroutes = [{ prefix = \"/x\" }]\nlimits.timeout_ms = 600000\n",
        )
        .unwrap();
        assert_eq!(m.limits.max_duration, Duration::from_millis(600_000));
    }

    #[test]
    fn defaults_deny_everything() {
        let m = parse_str("component = \"x.wasm\"\nroutes = [{ prefix = \"/x\" }]\n").unwrap();
        assert!(m.grants.names(Kind::Kv).next().is_none());
        assert!(m.grants.names(Kind::Blob).next().is_none());
        assert!(m.grants.outbound.is_empty());
        assert_eq!(m.limits, Limits::default());
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = parse_str("component = \"x.wasm\"\n[[routes]]\nprefix = \"nope\"\n").unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(e.to_string().starts_with("/p/hello.toml:3: "), "{e}");
        assert!(e.message.contains("must start with '/'"), "{e}");

        let e = parse_str(
            "component = \"x.wasm\"\nroutes = [{ prefix = \"/x\" }]\n[limits]\nmemroy_mib = 3\n",
        )
        .unwrap_err();
        assert_eq!(e.line, Some(4));
        assert!(e.message.contains("memroy_mib"), "{e}");

        let e = parse_str("component = \"x.wasm\"\nroutes = [{ prefix = \"/x\" }\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");

        let e = parse_str("routes = [{ prefix = \"/x\" }]\n").unwrap_err();
        assert!(e.message.contains("component"), "{e}");

        let e = parse_str("component = \"x.wasm\"\n").unwrap_err();
        assert!(e.message.contains("routes"), "{e}");
    }

    #[test]
    fn refuses_bad_values() {
        for (text, needle) in [
            ("routes = [{ prefix = \"/_spike/x\" }]", "overlaps"),
            ("routes = [{ prefix = \"/healthz\" }]", "overlaps"),
            ("routes = [{ prefix = \"/x/\" }]", "must not end"),
            (
                "routes = [{ prefix = \"/x\", methods = [\"GE T\"] }]",
                "not an HTTP method",
            ),
            (
                "routes = [{ prefix = \"/x\", methods = [] }]",
                "methods is empty",
            ),
            (
                "routes = [{ prefix = \"/x\" }]\ngrants.kv = [\"a b\"]",
                "kv namespace",
            ),
            (
                "routes = [{ prefix = \"/x\" }]\ngrants.outbound = [\"http://x\"]",
                "not a URL",
            ),
            (
                "routes = [{ prefix = \"/x\" }]\nlimits.memory_mib = 0",
                "memory_mib",
            ),
            (
                "routes = [{ prefix = \"/x\" }]\nname = \"Bad\"",
                "plugin name",
            ),
            (
                "routes = [{ prefix = \"/x\" }]\nlimits.timeout_ms = 6000\nlimits.max_duration_ms = 5000",
                "shorter than timeout_ms",
            ),
            (
                "routes = [{ prefix = \"/x\" }]\nlimits.max_concurrent = 0",
                "max_concurrent",
            ),
        ] {
            let e = parse_str(&format!("component = \"x.wasm\"\n{text}\n")).unwrap_err();
            assert!(e.message.contains(needle), "{text}: {e}");
            assert!(e.line.is_some(), "{text}: {e}");
        }
    }
}
