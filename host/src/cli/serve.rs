//! `spike serve`'s flags, and the `ServerConfig` they make.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{LogArgs, RenderArgs};
use crate::ServerConfig;
use crate::config::ClientLimits;
use crate::runtime::manifest::operator::NpmRegistry;

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub log: LogArgs,
    /// Log one line per request (id, method, path, plugin, status,
    /// latency) under the target `spike::access`. Off by default, as in
    /// Caddy, Spin and workerd: formatting it costs about 5% of the CPU
    /// of a small request. `spike::access=info` in `RUST_LOG` does the
    /// same.
    #[arg(long, env = "SPIKE_ACCESS_LOG")]
    pub access_log: bool,
    /// Address to listen on.
    #[arg(long, default_value = crate::config::DEFAULT_LISTEN, env = "SPIKE_LISTEN")]
    pub listen: SocketAddr,
    /// Folder of plugin manifests (*.toml).
    #[arg(long, default_value = "plugins", env = "SPIKE_PLUGINS")]
    pub plugins: PathBuf,
    /// Folder for the database, blob bodies and caches.
    #[arg(long, default_value = "data", env = "SPIKE_DATA")]
    pub data: PathBuf,
    /// Keep KV, blobs, plugin versions and room logs on a NATS server
    /// with JetStream, shared by the nodes of a cluster:
    /// nats://host:port[,host:port…][/prefix][?replicas=N]. Without it,
    /// the embedded database in --data.
    #[arg(long, env = "SPIKE_STORAGE", value_parser = crate::storage::nats::NatsSettings::parse)]
    pub storage: Option<crate::storage::nats::NatsSettings>,
    /// This node's name in a cluster (unique among its nodes; the
    /// listen address by default).
    #[arg(long, env = "SPIKE_NODE")]
    pub node: Option<String>,
    /// Bearer token for the admin API (/_spike/*); disabled without one.
    #[arg(long, env = "SPIKE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Do not reload plugins when their component files change.
    #[arg(long)]
    pub no_watch: bool,
    /// Instances that may be alive at once, across all plugins.
    #[arg(long, default_value_t = 1000)]
    pub max_instances: u32,
    /// Largest blob object, in MiB.
    #[arg(long, default_value_t = crate::config::DEFAULT_MAX_OBJECT_BYTES >> 20)]
    pub max_object_mib: u64,
    /// Serve `GET /metrics` (Prometheus) on this address, without a
    /// token; otherwise metrics are at `/_spike/metrics` with the admin
    /// token.
    #[arg(long, env = "SPIKE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Linear memory all plugin instances together may hold, in MiB
    /// (default: half the machine's or the cgroup's memory).
    #[arg(long)]
    pub memory_budget_mib: Option<u64>,
    /// Open client connections; beyond it new ones get a 503.
    #[arg(long, default_value_t = ClientLimits::default().max_connections)]
    pub max_connections: usize,
    /// Room WebSockets open, all rooms together; beyond it joins get a
    /// 503. Shares the open-file limit with --max-connections.
    #[arg(long, default_value_t = ClientLimits::default().max_room_connections)]
    pub max_room_connections: usize,
    /// Room WebSockets one client address may hold open; beyond it
    /// joins get a 429.
    #[arg(long, default_value_t = ClientLimits::default().max_room_connections_per_client)]
    pub max_room_connections_per_client: usize,
    /// Seconds a client has to send a request head, and that a kept-alive
    /// connection may stay idle.
    #[arg(long, default_value_t = ClientLimits::default().header_timeout.as_secs())]
    pub header_timeout_secs: u64,
    /// Seconds a request body may stall while a plugin waits for it (408).
    #[arg(long, default_value_t = ClientLimits::default().body_timeout.as_secs())]
    pub body_timeout_secs: u64,
    /// Seconds a client may leave a response unread before the
    /// connection is closed.
    #[arg(long, default_value_t = ClientLimits::default().send_timeout.as_secs())]
    pub send_timeout_secs: u64,
    /// Seconds requests in flight get to finish at a stop (SIGTERM or
    /// Ctrl-C) before they are cut.
    #[arg(long, default_value_t = ClientLimits::default().drain_timeout.as_secs())]
    pub drain_timeout_secs: u64,
    /// The secrets file (TOML, name = "value"); missing is fine.
    /// `SPIKE_SECRET_<NAME>` environment variables are secrets too, and
    /// win over the file.
    #[arg(long, default_value = "secrets.toml", env = "SPIKE_SECRETS")]
    pub secrets: PathBuf,
    /// Rate limit of routes whose manifest sets none, per client
    /// address: requests/seconds, e.g. 100/60. Off by default.
    #[arg(long, env = "SPIKE_RATE_LIMIT")]
    pub rate_limit: Option<crate::caps::rate_limit::Rule>,
    /// A proxy (address or CIDR) whose --client-ip-header is believed;
    /// repeat or separate with commas.
    #[arg(long, env = "SPIKE_TRUSTED_PROXIES", value_delimiter = ',',
          value_parser = crate::config::parse_proxy)]
    pub trusted_proxy: Vec<ipnet::IpNet>,
    /// The header a trusted proxy puts the client's address in.
    #[arg(
        long,
        default_value = "x-forwarded-for",
        env = "SPIKE_CLIENT_IP_HEADER"
    )]
    pub client_ip_header: http::HeaderName,
    /// Verified tokens the auth hook keeps (0: verify every request).
    #[arg(long, default_value_t = crate::runtime::auth::DEFAULT_CACHE_ENTRIES)]
    pub auth_cache_entries: usize,
    /// Memory for answers plugins mark `public, immutable` (anonymous GETs,
    /// up to 1 MiB each), given again without running the plugin (0: off).
    #[arg(long, default_value_t = 64, env = "SPIKE_ANSWER_CACHE_MIB")]
    pub answer_cache_mib: usize,
    /// A static site: [HOST]PREFIX=DIR (e.g. /=site/dist), served where
    /// no plugin route matches; repeat for more.
    #[arg(long, env = "SPIKE_SITES", value_delimiter = ',')]
    pub site: Vec<crate::assets::SiteConfig>,
    /// The npm registry the `npm` plugin builds modules from (its REGISTRY
    /// and outbound grant; default: what plugins/npm.toml names, the
    /// public registry), e.g. a company's or a Verdaccio.
    #[arg(long, env = "SPIKE_NPM_REGISTRY", value_parser = NpmRegistry::parse)]
    pub npm_registry: Option<NpmRegistry>,
    #[command(flatten)]
    pub render: RenderArgs,
    #[command(flatten)]
    pub telemetry: super::TelemetryArgs,
    #[command(flatten)]
    pub tls: super::TlsArgs,
    /// Serve the admin API (/_spike/…) on this address only, e.g.
    /// 127.0.0.1:8788; --listen then answers it with 404.
    #[arg(long, env = "SPIKE_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// How far back a SQL database can be restored (`spike sql restore`):
    /// its change log and snapshots are kept that long. A number and a
    /// unit: 7d, 36h, 90m.
    #[arg(long, default_value = "7d", env = "SPIKE_SQL_RETENTION", value_parser = parse_retention)]
    pub sql_retention: Duration,
}

/// `7d`, `36h`, `90m`, `30s` as a duration.
fn parse_retention(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let seconds = match unit {
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" => 1,
        _ => {
            return Err(format!(
                "'{text}' is not a number of days, hours, minutes or seconds (7d, 36h, 90m, 30s)"
            ));
        }
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' does not start with a whole number"))?;
    Ok(Duration::from_secs(n.saturating_mul(seconds)))
}

impl ServeArgs {
    /// The server's settings (the logging flags are `main`'s).
    pub fn into_config(self) -> anyhow::Result<ServerConfig> {
        let mut config = ServerConfig::new(self.plugins, self.data);
        config.listen = self.listen;
        config.storage = self.storage;
        config.node = self.node;
        config.admin_token = self.admin_token.filter(|t| !t.is_empty());
        config.watch = !self.no_watch;
        config.pool.max_instances = self.max_instances;
        config.max_object_bytes = self.max_object_mib << 20;
        config.metrics_listen = self.metrics_listen;
        if let Some(mib) = self.memory_budget_mib {
            config.memory_budget_bytes = mib << 20;
        }
        config.clients = ClientLimits {
            max_connections: self.max_connections,
            max_room_connections: self.max_room_connections,
            max_room_connections_per_client: self.max_room_connections_per_client.max(1),
            header_timeout: Duration::from_secs(self.header_timeout_secs.max(1)),
            body_timeout: Duration::from_secs(self.body_timeout_secs.max(1)),
            send_timeout: Duration::from_secs(self.send_timeout_secs.max(1)),
            drain_timeout: Duration::from_secs(self.drain_timeout_secs),
            ..ClientLimits::default()
        };
        config.secrets = crate::caps::secrets::SecretSource::from_process(Some(self.secrets));
        config.default_rate_limit = self.rate_limit;
        config.client_addresses = crate::config::ClientAddresses {
            trusted_proxies: self.trusted_proxy,
            header: self.client_ip_header,
        };
        config.auth_cache_entries = self.auth_cache_entries;
        config.answer_cache_bytes = self.answer_cache_mib << 20;
        config.sites = self.site;
        config.plugin_overrides.npm_registry = self.npm_registry;
        config.render = self.render.settings()?;
        config.sql_retention = self.sql_retention;
        config.tls = self.tls.settings()?;
        config.listen_http = self.tls.listen_http;
        config.hsts_max_age = self.tls.hsts_max_age;
        config.admin_listen = self.admin_listen;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_is_a_number_and_a_unit() {
        assert_eq!(parse_retention("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_retention("90m"), Ok(Duration::from_secs(5_400)));
        assert!(parse_retention("7").unwrap_err().contains("7d, 36h"));
        assert!(parse_retention("d").unwrap_err().contains("whole number"));
    }
}
