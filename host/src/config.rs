//! The host's own settings (as opposed to a plugin's, in its manifest).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::caps::outbound::{Resolver, SystemResolver};
use crate::caps::rate_limit::Rule;
use crate::caps::secrets::SecretSource;
use crate::runtime::engine::PoolSettings;

/// Default listen address: the port the Workers tooling taught users.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";
/// Largest blob object by default (R2's single-upload limit).
pub const DEFAULT_MAX_OBJECT_BYTES: u64 = 5 << 30;
/// Open connections by default (lowered to fit the open-file limit).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default cap of room WebSockets, all rooms together.
pub const DEFAULT_MAX_ROOM_CONNECTIONS: usize = 10_000;
/// How far back SQL databases can be restored by default (D1's 30 days
/// on paid plans, 7 on free).
pub const DEFAULT_SQL_RETENTION: Duration = Duration::from_secs(7 * 86_400);
/// Largest component an admin upload may carry by default.
pub const DEFAULT_MAX_COMPONENT_BYTES: u64 = 256 << 20;

/// Everything `spike serve` needs to run.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Folder of plugin manifests (`*.toml`).
    pub plugins_dir: PathBuf,
    /// Folder of the database, blob bodies and caches (with a shared
    /// store: of the caches and uploads in progress only).
    pub data_dir: PathBuf,
    /// Where KV, blobs, plugin versions and room logs are kept: the
    /// embedded database in `data_dir` (`None`), or a NATS server shared
    /// by the nodes of a cluster.
    pub storage: Option<crate::storage::nats::NatsSettings>,
    /// This node's name in a cluster (unique among its nodes); the
    /// listen address by default.
    pub node: Option<String>,
    /// Bearer token for `/_spike/*`. Without one the admin API is disabled.
    pub admin_token: Option<String>,
    /// Reload a plugin when its component file changes.
    pub watch: bool,
    pub pool: PoolSettings,
    /// Linear memory all instances together may hold; a request that would
    /// go past it is refused with 503 `busy`. Default: half the machine's
    /// (or the cgroup's) memory.
    pub memory_budget_bytes: u64,
    pub max_object_bytes: u64,
    pub max_component_bytes: u64,
    pub clients: ClientLimits,
    /// Where to serve `GET /metrics` to scrapers, without a token; off the
    /// public address. Without it, metrics are at `/_spike/metrics` behind
    /// the admin token.
    pub metrics_listen: Option<SocketAddr>,
    /// HTTPS on `listen` (certificates from files or by ACME); `None`:
    /// plain HTTP.
    pub tls: Option<crate::tls::TlsSettings>,
    /// A plain-HTTP address that redirects to HTTPS and answers ACME's
    /// HTTP-01 challenges.
    pub listen_http: Option<SocketAddr>,
    /// `strict-transport-security: max-age=N` on every HTTPS answer.
    pub hsts_max_age: Option<u64>,
    /// The admin API's own address: `listen` then does not serve it.
    pub admin_listen: Option<SocketAddr>,
    /// How outbound requests resolve host names (tests substitute their own).
    pub resolver: Arc<dyn Resolver>,
    /// How often expired KV keys are reclaimed.
    pub kv_sweep_interval: Duration,
    /// The operator's secrets for plugins.
    pub secrets: SecretSource,
    /// The rate limit of routes whose manifest sets none (per client
    /// address); none by default.
    pub default_rate_limit: Option<Rule>,
    /// Where a request comes from, behind proxies.
    pub client_addresses: ClientAddresses,
    /// The bytes of immutable plugin answers kept in memory (0: none).
    pub answer_cache_bytes: usize,
    /// Verified tokens the auth hook keeps (0: verify every time).
    pub auth_cache_entries: usize,
    /// The operator's settings for shipped plugins (`--npm-registry`).
    pub plugin_overrides: crate::runtime::manifest::operator::PluginOverrides,
    /// Static sites served where no plugin route matches.
    pub sites: Vec<crate::assets::SiteConfig>,
    /// The renderer's browser, pages and guard (`profiles_dir` is set
    /// under `data_dir` at start).
    pub render: crate::caps::render::RenderSettings,
    /// How far back a SQL database can be restored (its change log and
    /// snapshots are kept that long).
    pub sql_retention: Duration,
    /// Tests only: how long each plugin's first load waits before it starts.
    #[doc(hidden)]
    pub test_load_delay: Duration,
}

/// What one client connection may take of the server. Each bound answers an
/// attack that needs no credentials: slow headers (slowloris), idle
/// connections, request bodies that trickle or stall, responses that are
/// never read.
#[derive(Debug, Clone)]
pub struct ClientLimits {
    /// Open connections; beyond it a new connection gets a 503 and is closed.
    /// Lowered at start to what the open-file limit allows.
    pub max_connections: usize,
    /// Room WebSockets open, all rooms together (each room has its own
    /// `max_connections` too); beyond it a join gets a 503. Lowered at start
    /// with `max_connections` to what the open-file limit allows.
    pub max_room_connections: usize,
    /// Room WebSockets one client address may hold open (an IPv6 address
    /// by its /64); beyond it a join gets a 429.
    pub max_room_connections_per_client: usize,
    /// Time for a request head to arrive, counted from when the connection
    /// is ready for one: a new connection, or a kept-alive one after its last
    /// response (so this is also the idle keep-alive timeout).
    pub header_timeout: Duration,
    /// Longest wait for the next bytes of a request body a plugin is
    /// reading; then 408.
    pub body_timeout: Duration,
    /// Longest time a client may leave a response unread (the server cannot
    /// hand it the next bytes); then the connection is closed and the
    /// plugin's instance freed.
    pub send_timeout: Duration,
    /// At a stop (SIGTERM), how long requests in flight may take to finish
    /// and room members to be told (1001); then what is left is cut.
    pub drain_timeout: Duration,
    /// How long a request waits for its plugin's first load (the server
    /// listens before its plugins have loaded); then 503 `plugin_loading`.
    pub load_wait: Duration,
}

impl Default for ClientLimits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_room_connections: DEFAULT_MAX_ROOM_CONNECTIONS,
            max_room_connections_per_client: 256,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(10),
            load_wait: Duration::from_secs(10),
        }
    }
}

/// How the client's address is found: the connection's peer, or, when that
/// peer is a proxy the operator trusts, the address the proxy reports in
/// `header` (the rightmost one that is not itself a trusted proxy, since
/// a client can write anything to the left).
#[derive(Debug, Clone)]
pub struct ClientAddresses {
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `x-forwarded-for` by default; any header holding a comma-separated
    /// list of addresses (or one) will do.
    pub header: http::HeaderName,
}

/// A trusted proxy as an operator writes it: an address (`10.0.0.5`,
/// `::1`) or a network (`10.0.0.0/8`).
pub fn parse_proxy(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{s:?} is neither an IP address nor a network (CIDR)"))
}

impl Default for ClientAddresses {
    fn default() -> Self {
        Self {
            trusted_proxies: Vec::new(),
            header: http::HeaderName::from_static("x-forwarded-for"),
        }
    }
}

impl ServerConfig {
    /// Settings for `plugins_dir` and `data_dir`, defaults otherwise.
    pub fn new(plugins_dir: impl Into<PathBuf>, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            plugins_dir: plugins_dir.into(),
            data_dir: data_dir.into(),
            storage: None,
            node: None,
            admin_token: None,
            watch: true,
            pool: PoolSettings::default(),
            memory_budget_bytes: default_memory_budget(),
            max_object_bytes: DEFAULT_MAX_OBJECT_BYTES,
            max_component_bytes: DEFAULT_MAX_COMPONENT_BYTES,
            clients: ClientLimits::default(),
            metrics_listen: None,
            tls: None,
            listen_http: None,
            hsts_max_age: None,
            admin_listen: None,
            resolver: Arc::new(SystemResolver),
            kv_sweep_interval: Duration::from_secs(1),
            secrets: SecretSource::default(),
            default_rate_limit: None,
            client_addresses: ClientAddresses::default(),
            auth_cache_entries: crate::runtime::auth::DEFAULT_CACHE_ENTRIES,
            answer_cache_bytes: 64 << 20,
            plugin_overrides: Default::default(),
            sites: Vec::new(),
            render: Default::default(),
            sql_retention: DEFAULT_SQL_RETENTION,
            test_load_delay: Duration::ZERO,
        }
    }
}

/// Half of the memory this process may use: the machine's, or its cgroup's
/// limit when that is lower. Guests' linear memory is most of what a busy
/// host holds, and the rest (the host itself, page cache, redb) needs room.
pub fn default_memory_budget() -> u64 {
    let machine = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kib| kib << 10);
    // cgroup v2; "max" (no limit) does not parse.
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok());
    let total = match (machine, cgroup) {
        (Some(m), Some(c)) => m.min(c),
        (Some(m), None) => m,
        (None, Some(c)) => c,
        (None, None) => 8 << 30,
    };
    total / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_proxies_are_addresses_or_networks() {
        assert_eq!(parse_proxy("10.0.0.5").unwrap().to_string(), "10.0.0.5/32");
        assert_eq!(parse_proxy(" ::1 ").unwrap().to_string(), "::1/128");
        assert_eq!(parse_proxy("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert!(parse_proxy("proxy.local").is_err());
        assert!(parse_proxy("10.0.0.0/33").is_err());
    }
}
