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
//! render = true                       # the headless browser (screenshots, PDFs)
//! services = ["transpiler", "cms"]    # plugins it may call in-process, at
//!                                     # http://<plugin>.spike.internal/<path>
//! identity_to = ["cms"]               # of those, the ones that see this request's caller
//!
//! [quotas.ai-calls]                   # limits the plugin keeps through rate-limit
//! requests = 1000
//! per_s = 3600
//!
//! [storage]                           # what the plugin's writes may fill (0: no limit)
//! kv_mib = 1024                       # each KV namespace: keys and values
//! kv_keys = 1000000
//! blob_mib = 16384                    # each bucket: objects' bytes
//! blob_objects = 1000000
//!
//! [env]                               # the guest's environment variables
//! ISSUER = "https://clerk.example.com"
//!
//! [config]                            # strings the guest reads through wasi:config/store
//! greeting = "hello"                  # (never secrets: those are the operator's, by grant)
//!
//! [limits]                            # all optional
//! memory_mib = 128                    # linear memory of one instance
//! cpu_ms = 5000                       # time spent running wasm per request
//! timeout_ms = 30000                  # wall time until the response headers
//! max_duration_ms = 120000            # wall time for the whole request, bodies included
//!                                     # (default: 120000, or timeout_ms if longer)
//! max_body_mib = 16                   # request body
//! max_concurrent = 64                 # requests at once (default: half the instance pool)
//! max_concurrent_per_client = 4       # of those, from one client address (default: no cap)
//! instance_reuse = 1000               # requests one instance serves in turn (default 0:
//!                                     # a fresh instance each; see runtime::reuse)
//! instance_idle_ms = 30000            # how long a kept instance waits for a request
//! ```
//!
//! A malformed manifest is refused with its file, line and reason.

mod checks;
mod demo;
mod grants;
mod limits;
pub mod operator;
mod rooms;
mod routes;

use checks::check_env_name;
pub use checks::check_name;
pub use demo::warn_of_demo_settings;
pub use grants::{DEFAULT_BLOB_MIB, DEFAULT_BLOB_OBJECTS, DEFAULT_KV_KEYS, DEFAULT_KV_MIB};
pub use rooms::{RoomLimits, RoomProtocol, RoomRoute};

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::caps::Grants;
use crate::caps::rate_limit::Rule;

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
/// The most requests `instance_reuse` lets one instance serve.
pub const MAX_INSTANCE_REUSE: u32 = 1_000_000;
/// How long a kept instance waits for a request before it is dropped.
pub const DEFAULT_INSTANCE_IDLE_MS: u64 = 30_000;
pub const MAX_INSTANCE_IDLE_MS: u64 = 3_600_000;

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
    /// The component file, resolved against the manifest's folder; `None`
    /// for a plugin that only declares rooms (they relay without a
    /// handler).
    pub component: Option<PathBuf>,
    pub routes: Vec<Route>,
    pub rooms: Vec<RoomRoute>,
    pub grants: Grants,
    pub limits: Limits,
    /// The guest's environment variables.
    pub env: Vec<(String, String)>,
    /// What `wasi:config/store` answers, sorted by key.
    pub config: Vec<(String, String)>,
    /// `demo = "…"`: why this plugin is for development only (the
    /// development token issuer says so); warned of at start.
    pub demo: Option<String>,
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
pub enum RouteAuth {
    /// A caller the authenticator plugin verifies. `required`: no verified
    /// caller, no plugin (401). `optional`: the plugin runs either way,
    /// with the caller if there is one.
    Caller {
        required: bool,
        /// The plugin that authenticates.
        authenticator: String,
    },
    /// `auth = "operator"`: the server's operator only, who sends the
    /// admin token as the bearer token (the host checks it, as for the
    /// admin API); the plugin sees the caller `operator` of issuer
    /// `spike`.
    Operator,
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
    /// Requests of this plugin one client address may have running at
    /// once (until their answers begin); `None`: no cap of its own.
    pub max_concurrent_per_client: Option<u32>,
    /// Requests one instance may serve, one after another; 0 (the
    /// default): a fresh instance for every request. See `runtime::reuse`.
    pub instance_reuse: u32,
    /// How long a kept instance may wait for its next request.
    pub instance_idle: Duration,
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
            max_concurrent_per_client: None,
            instance_reuse: 0,
            instance_idle: Duration::from_millis(DEFAULT_INSTANCE_IDLE_MS),
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
    demo: Option<String>,
    component: Option<Spanned<String>>,
    #[serde(default)]
    routes: Vec<routes::RawRoute>,
    #[serde(default)]
    rooms: Vec<rooms::RawRoom>,
    #[serde(default)]
    grants: grants::RawGrants,
    #[serde(default)]
    limits: limits::RawLimits,
    #[serde(default)]
    quotas: BTreeMap<String, Spanned<grants::RawQuota>>,
    #[serde(default)]
    storage: grants::RawStorage,
    #[serde(default)]
    env: BTreeMap<Spanned<String>, String>,
    #[serde(default)]
    config: BTreeMap<Spanned<String>, String>,
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

/// Parses and validates manifest `text` read from `path`, a section at a
/// time.
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
    let name = name_of(&raw, path, &err)?;
    let component = component_of(&raw, path, &err)?;
    if raw.routes.is_empty() && raw.rooms.is_empty() {
        return Err(err(
            None,
            "no [[routes]] and no [[rooms]]: a plugin must serve at least one path prefix".into(),
        ));
    }
    let routes = (raw.routes.iter())
        .map(|r| routes::parse_route(r, &err))
        .collect::<Result<Vec<_>, _>>()?;
    let rooms = (raw.rooms.iter())
        .map(|r| rooms::parse_room(r, &err))
        .collect::<Result<Vec<_>, _>>()?;
    let grants = grants::parse(&raw.grants, &raw.quotas, &raw.storage, &err)?;
    let mut env = Vec::new();
    for (name, value) in &raw.env {
        check_env_name(name.get_ref()).map_err(|m| err(Some(name.span()), m))?;
        env.push((name.get_ref().clone(), value.clone()));
    }
    let mut config = Vec::new();
    for (key, value) in &raw.config {
        checks::check_config(key.get_ref(), value).map_err(|m| err(Some(key.span()), m))?;
        config.push((key.get_ref().clone(), value.clone()));
    }
    config.sort();
    Ok(Manifest {
        name,
        path: path.to_path_buf(),
        sha256: crate::util::sha256_hex(text.as_bytes()),
        component,
        routes,
        rooms,
        grants,
        limits: limits::parse(&raw.limits, &err)?,
        env,
        config,
        demo: raw.demo.filter(|d| !d.trim().is_empty()),
    })
}

/// Makes an error at a span of the manifest's text (its line).
pub(super) type ErrAt<'a> = &'a dyn Fn(Option<std::ops::Range<usize>>, String) -> ManifestError;

/// `name`, else the file's name.
fn name_of(raw: &RawManifest, path: &Path, err: ErrAt<'_>) -> Result<String, ManifestError> {
    match &raw.name {
        Some(n) => {
            check_name(n.get_ref()).map_err(|m| err(Some(n.span()), m))?;
            Ok(n.get_ref().clone())
        }
        None => {
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            check_name(stem).map_err(|m| err(None, format!("file name: {m}")))?;
            Ok(stem.to_string())
        }
    }
}

/// `component`, resolved against the manifest's folder; none only for a
/// plugin of rooms alone.
fn component_of(
    raw: &RawManifest,
    path: &Path,
    err: ErrAt<'_>,
) -> Result<Option<PathBuf>, ManifestError> {
    let base = path.parent().unwrap_or(Path::new("."));
    match &raw.component {
        Some(c) if c.get_ref().trim().is_empty() => Err(err(
            Some(c.span()),
            "component must name a .wasm file".into(),
        )),
        Some(c) => Ok(Some(base.join(c.get_ref()))),
        None if raw.routes.is_empty() && !raw.rooms.is_empty() => Ok(None),
        None => Err(err(
            None,
            "no component: a plugin with [[routes]] needs component = \"<file>.wasm\"".into(),
        )),
    }
}

#[cfg(test)]
mod tests;
