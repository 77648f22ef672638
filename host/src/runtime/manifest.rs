//! Plugin manifests: one TOML file per plugin in the plugins folder.
//!
//! ```toml
//! # plugins/hello.toml; the plugin's name is the file's stem unless `name` says otherwise
//! component = "hello.wasm"            # relative to this file
//!
//! [[routes]]
//! prefix = "/hello"                   # matches /hello and /hello/...
//! methods = ["GET", "POST", "PUT"]    # optional; all methods if absent
//! auth = "required"                   # or "optional"; absent: no authentication
//! authenticator = "auth"              # the plugin that authenticates (default "auth")
//! rate_limit = { requests = 100, per_s = 60, key = "ip" }  # or key = "user";
//!                                     # false: none, even if the server sets a default
//!
//! [grants]                            # deny by default: only what is listed
//! kv = ["hello"]
//! blob = ["hello-files"]
//! outbound = ["api.example.com", "127.0.0.1:9000"]
//! secrets = ["openai-api-key"]
//!
//! [quotas.ai-calls]                   # limits the plugin keeps through rate-limit
//! requests = 1000
//! per_s = 3600
//!
//! [env]                               # the guest's environment variables
//! ISSUER = "https://clerk.example.com"
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

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::caps::outbound::HostPattern;
use crate::caps::rate_limit::Rule;
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

/// The authenticator a route names when it names none.
pub const DEFAULT_AUTHENTICATOR: &str = "auth";

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
    /// The guest's environment variables.
    pub env: Vec<(String, String)>,
}

/// A path prefix the plugin serves, the methods (empty: all), and what
/// the host does before the plugin runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub prefix: String,
    pub methods: BTreeSet<String>,
    pub auth: Option<RouteAuth>,
    pub rate_limit: RouteLimit,
}

/// A route that asks who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteAuth {
    /// `required`: no verified caller, no plugin (401). `optional`: the
    /// plugin runs either way, with the caller if there is one.
    pub required: bool,
    /// The plugin that authenticates.
    pub authenticator: String,
}

/// A route's rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteLimit {
    /// The server's default, if it has one.
    Default,
    /// None, whatever the server's default.
    Off,
    Rule {
        rule: Rule,
        key: LimitKey,
    },
}

/// Whom a route's rate limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKey {
    /// The client's address (an IPv6 client by its /64).
    Ip,
    /// The verified caller; the client's address when there is none (an
    /// `optional` route).
    User,
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
    #[serde(default)]
    quotas: BTreeMap<String, Spanned<RawQuota>>,
    #[serde(default)]
    env: BTreeMap<Spanned<String>, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    prefix: Spanned<String>,
    methods: Option<Vec<Spanned<String>>>,
    auth: Option<Spanned<String>>,
    authenticator: Option<Spanned<String>>,
    rate_limit: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuota {
    requests: u32,
    per_s: u32,
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
        let auth = match &r.auth {
            None => None,
            Some(a) => match a.get_ref().as_str() {
                "required" | "optional" => Some(RouteAuth {
                    required: a.get_ref() == "required",
                    authenticator: match &r.authenticator {
                        Some(n) => {
                            check_name(n.get_ref()).map_err(|m| err(Some(n.span()), m))?;
                            n.get_ref().clone()
                        }
                        None => DEFAULT_AUTHENTICATOR.into(),
                    },
                }),
                other => {
                    return Err(err(
                        Some(a.span()),
                        format!("auth = \"{other}\": write \"required\" or \"optional\""),
                    ));
                }
            },
        };
        if let (None, Some(n)) = (&auth, &r.authenticator) {
            return Err(err(
                Some(n.span()),
                "authenticator is set but auth is not: add auth = \"required\" or \"optional\""
                    .into(),
            ));
        }
        let rate_limit = match &r.rate_limit {
            None => RouteLimit::Default,
            Some(v) => route_limit(v.get_ref()).map_err(|m| err(Some(v.span()), m))?,
        };
        if let (
            RouteLimit::Rule {
                key: LimitKey::User,
                ..
            },
            None,
            Some(v),
        ) = (rate_limit, &auth, &r.rate_limit)
        {
            return Err(err(
                Some(v.span()),
                "key = \"user\" needs a caller: add auth = \"required\" or \"optional\" to the route"
                    .into(),
            ));
        }
        routes.push(Route {
            prefix: prefix.clone(),
            methods,
            auth,
            rate_limit,
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
    for (name, quota) in &raw.quotas {
        let at = Some(quota.span());
        check_resource_name(name).map_err(|m| err(at.clone(), format!("quota: {m}")))?;
        let q = quota.get_ref();
        let rule = Rule::new(q.requests, q.per_s)
            .map_err(|m| err(at.clone(), format!("quota '{name}': {m}")))?;
        grants.quotas.insert(name.clone(), rule);
    }
    let mut env = Vec::new();
    for (name, value) in &raw.env {
        check_env_name(name.get_ref()).map_err(|m| err(Some(name.span()), m))?;
        env.push((name.get_ref().clone(), value.clone()));
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
        env,
    })
}

/// A route's `rate_limit`: `false`, or `{ requests, per_s, key }`.
fn route_limit(value: &toml::Value) -> Result<RouteLimit, String> {
    const FORM: &str = "rate_limit must be false or { requests = 100, per_s = 60, key = \"ip\" }";
    let table = match value {
        toml::Value::Boolean(false) => return Ok(RouteLimit::Off),
        toml::Value::Table(t) => t,
        _ => return Err(FORM.into()),
    };
    let number = |field: &str| -> Result<u32, String> {
        match table.get(field) {
            Some(toml::Value::Integer(n)) => {
                u32::try_from(*n).map_err(|_| format!("rate_limit.{field} is out of range"))
            }
            Some(_) => Err(format!("rate_limit.{field} must be a number")),
            None => Err(format!("rate_limit needs {field}: {FORM}")),
        }
    };
    if let Some(unknown) = table
        .keys()
        .find(|k| !["requests", "per_s", "key"].contains(&k.as_str()))
    {
        return Err(format!(
            "rate_limit has an unknown field '{unknown}': {FORM}"
        ));
    }
    let rule =
        Rule::new(number("requests")?, number("per_s")?).map_err(|m| format!("rate_limit: {m}"))?;
    let key = match table.get("key").map(|k| k.as_str()) {
        None | Some(Some("ip")) => LimitKey::Ip,
        Some(Some("user")) => LimitKey::User,
        _ => return Err("rate_limit.key must be \"ip\" or \"user\"".into()),
    };
    Ok(RouteLimit::Rule { rule, key })
}

/// Environment variable names: a letter or `_`, then letters, digits, `_`.
fn check_env_name(name: &str) -> Result<(), String> {
    let ok = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 128;
    if ok {
        Ok(())
    } else {
        Err(format!(
            "env: '{name}' must be a letter or '_' followed by letters, digits or '_'"
        ))
    }
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
    fn auth_rate_limits_quotas_and_env() {
        let m = parse_str(
            r#"
component = "x.wasm"
[[routes]]
prefix = "/a"
auth = "required"
rate_limit = { requests = 5, per_s = 60, key = "user" }
[[routes]]
prefix = "/b"
auth = "optional"
authenticator = "clerk"
rate_limit = false
[[routes]]
prefix = "/c"
rate_limit = { requests = 100, per_s = 60 }
[[routes]]
prefix = "/d"
[quotas.ai-calls]
requests = 1000
per_s = 3600
[env]
ISSUER = "https://issuer.example"
_X1 = ""
"#,
        )
        .unwrap();
        let r = &m.routes;
        assert_eq!(
            r[0].auth,
            Some(RouteAuth {
                required: true,
                authenticator: "auth".into()
            })
        );
        assert_eq!(
            r[0].rate_limit,
            RouteLimit::Rule {
                rule: Rule::new(5, 60).unwrap(),
                key: LimitKey::User
            }
        );
        assert_eq!(r[1].auth.as_ref().unwrap().authenticator, "clerk");
        assert!(!r[1].auth.as_ref().unwrap().required);
        assert_eq!(r[1].rate_limit, RouteLimit::Off);
        assert!(matches!(
            r[2].rate_limit,
            RouteLimit::Rule {
                key: LimitKey::Ip,
                ..
            }
        ));
        assert_eq!((&r[3].auth, r[3].rate_limit), (&None, RouteLimit::Default));
        assert_eq!(m.grants.quotas["ai-calls"], Rule::new(1000, 3600).unwrap());
        assert_eq!(
            m.env,
            [
                ("ISSUER".to_string(), "https://issuer.example".to_string()),
                ("_X1".to_string(), String::new())
            ]
        );
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
            (
                "routes = [{ prefix = \"/x\", auth = \"maybe\" }]",
                "auth = \"maybe\"",
            ),
            (
                "routes = [{ prefix = \"/x\", authenticator = \"auth\" }]",
                "auth is not",
            ),
            (
                "routes = [{ prefix = \"/x\", auth = \"required\", authenticator = \"A\" }]",
                "plugin name",
            ),
            (
                "routes = [{ prefix = \"/x\", rate_limit = { requests = 5, per_s = 60, key = \"user\" } }]",
                "needs a caller",
            ),
            (
                "routes = [{ prefix = \"/x\", rate_limit = { requests = 0, per_s = 60 } }]",
                "requests must be at least 1",
            ),
            (
                "routes = [{ prefix = \"/x\", rate_limit = { requests = 5 } }]",
                "needs per_s",
            ),
            (
                "routes = [{ prefix = \"/x\", rate_limit = { requests = 5, per_s = 1, key = \"host\" } }]",
                "rate_limit.key",
            ),
            (
                "routes = [{ prefix = \"/x\", rate_limit = { requests = 5, per_s = 1, burst = 2 } }]",
                "unknown field 'burst'",
            ),
            (
                "routes = [{ prefix = \"/x\", rate_limit = true }]",
                "must be false or",
            ),
            (
                "routes = [{ prefix = \"/x\" }]\nquotas.q = { requests = 1, per_s = 0 }",
                "per_s must be at least 1",
            ),
            (
                "routes = [{ prefix = \"/x\" }]\nquotas.q = { requests = 1 }",
                "per_s",
            ),
            (
                "routes = [{ prefix = \"/x\" }]\nenv.\"A-B\" = \"x\"",
                "env: 'A-B'",
            ),
            ("routes = [{ prefix = \"/x\" }]\nenv.A = 1", "string"),
        ] {
            let e = parse_str(&format!("component = \"x.wasm\"\n{text}\n")).unwrap_err();
            assert!(e.message.contains(needle), "{text}: {e}");
            assert!(e.line.is_some(), "{text}: {e}");
        }
    }
}
