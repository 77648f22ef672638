//! The `spike` command.

use std::net::SocketAddr;
use std::path::PathBuf;

use std::time::Duration;

use clap::{Parser, Subcommand};
use spike::config::ClientLimits;

#[derive(Parser)]
#[command(
    name = "spike",
    version,
    about = "Serve WebAssembly components over HTTP, with KV and blob storage"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// How a long-running command (`serve`, `dev`) logs.
#[derive(clap::Args)]
struct LogArgs {
    /// How log lines look: `text` (colours only on a terminal) or `json`
    /// (one object per line, for log collectors).
    #[arg(long, value_enum, default_value = "text", env = "SPIKE_LOG_FORMAT")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

// Parsed once at start: the size of the big variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Serve the plugins described by the manifests in a folder.
    Serve {
        #[command(flatten)]
        log: LogArgs,
        /// Log one line per request (id, method, path, plugin, status,
        /// latency) under the target `spike::access`. Off by default, as in
        /// Caddy, Spin and workerd: formatting it costs about 5% of the CPU
        /// of a small request. `spike::access=info` in `RUST_LOG` does the
        /// same.
        #[arg(long, env = "SPIKE_ACCESS_LOG")]
        access_log: bool,
        /// Address to listen on.
        #[arg(long, default_value = spike::config::DEFAULT_LISTEN, env = "SPIKE_LISTEN")]
        listen: SocketAddr,
        /// Folder of plugin manifests (*.toml).
        #[arg(long, default_value = "plugins", env = "SPIKE_PLUGINS")]
        plugins: PathBuf,
        /// Folder for the database, blob bodies and caches.
        #[arg(long, default_value = "data", env = "SPIKE_DATA")]
        data: PathBuf,
        /// Keep KV, blobs, plugin versions and room logs on a NATS server
        /// with JetStream, shared by the nodes of a cluster:
        /// nats://host:port[,host:port…][/prefix][?replicas=N]. Without it,
        /// the embedded database in --data.
        #[arg(long, env = "SPIKE_STORAGE", value_parser = spike::storage::nats::NatsSettings::parse)]
        storage: Option<spike::storage::nats::NatsSettings>,
        /// This node's name in a cluster (unique among its nodes; the
        /// listen address by default).
        #[arg(long, env = "SPIKE_NODE")]
        node: Option<String>,
        /// Bearer token for the admin API (/_spike/*); disabled without one.
        #[arg(long, env = "SPIKE_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        /// Do not reload plugins when their component files change.
        #[arg(long)]
        no_watch: bool,
        /// Instances that may be alive at once, across all plugins.
        #[arg(long, default_value_t = 1000)]
        max_instances: u32,
        /// Largest blob object, in MiB.
        #[arg(long, default_value_t = spike::config::DEFAULT_MAX_OBJECT_BYTES >> 20)]
        max_object_mib: u64,
        /// Serve `GET /metrics` (Prometheus) on this address, without a
        /// token; otherwise metrics are at `/_spike/metrics` with the admin
        /// token.
        #[arg(long, env = "SPIKE_METRICS_LISTEN")]
        metrics_listen: Option<SocketAddr>,
        /// Linear memory all plugin instances together may hold, in MiB
        /// (default: half the machine's or the cgroup's memory).
        #[arg(long)]
        memory_budget_mib: Option<u64>,
        /// Open client connections; beyond it new ones get a 503.
        #[arg(long, default_value_t = ClientLimits::default().max_connections)]
        max_connections: usize,
        /// Room WebSockets open, all rooms together; beyond it joins get a
        /// 503. Shares the open-file limit with --max-connections.
        #[arg(long, default_value_t = ClientLimits::default().max_room_connections)]
        max_room_connections: usize,
        /// Room WebSockets one client address may hold open; beyond it
        /// joins get a 429.
        #[arg(long, default_value_t = ClientLimits::default().max_room_connections_per_client)]
        max_room_connections_per_client: usize,
        /// Seconds a client has to send a request head, and that a kept-alive
        /// connection may stay idle.
        #[arg(long, default_value_t = ClientLimits::default().header_timeout.as_secs())]
        header_timeout_secs: u64,
        /// Seconds a request body may stall while a plugin waits for it (408).
        #[arg(long, default_value_t = ClientLimits::default().body_timeout.as_secs())]
        body_timeout_secs: u64,
        /// Seconds a client may leave a response unread before the
        /// connection is closed.
        #[arg(long, default_value_t = ClientLimits::default().send_timeout.as_secs())]
        send_timeout_secs: u64,
        /// Seconds requests in flight get to finish at a stop (SIGTERM or
        /// Ctrl-C) before they are cut.
        #[arg(long, default_value_t = ClientLimits::default().drain_timeout.as_secs())]
        drain_timeout_secs: u64,
        /// The secrets file (TOML, name = "value"); missing is fine.
        /// `SPIKE_SECRET_<NAME>` environment variables are secrets too, and
        /// win over the file.
        #[arg(long, default_value = "secrets.toml", env = "SPIKE_SECRETS")]
        secrets: PathBuf,
        /// Rate limit of routes whose manifest sets none, per client
        /// address: requests/seconds, e.g. 100/60. Off by default.
        #[arg(long, env = "SPIKE_RATE_LIMIT")]
        rate_limit: Option<spike::caps::rate_limit::Rule>,
        /// A proxy (address or CIDR) whose --client-ip-header is believed;
        /// repeat or separate with commas.
        #[arg(long, env = "SPIKE_TRUSTED_PROXIES", value_delimiter = ',',
              value_parser = spike::config::parse_proxy)]
        trusted_proxy: Vec<ipnet::IpNet>,
        /// The header a trusted proxy puts the client's address in.
        #[arg(
            long,
            default_value = "x-forwarded-for",
            env = "SPIKE_CLIENT_IP_HEADER"
        )]
        client_ip_header: http::HeaderName,
        /// Verified tokens the auth hook keeps (0: verify every request).
        #[arg(long, default_value_t = spike::runtime::auth::DEFAULT_CACHE_ENTRIES)]
        auth_cache_entries: usize,
        /// A static site: [HOST]PREFIX=DIR (e.g. /=site/dist), served where
        /// no plugin route matches; repeat for more.
        #[arg(long, env = "SPIKE_SITES", value_delimiter = ',')]
        site: Vec<spike::assets::SiteConfig>,
        #[command(flatten)]
        render: RenderArgs,
    },
    /// Start a plugin project with its manifest: a Rust crate on the SDK,
    /// a JavaScript package for componentize-js, or a Python app for
    /// componentize-py.
    New {
        /// The plugin's name (lower case letters, digits and dashes).
        name: String,
        /// The language of the project.
        #[arg(long, value_enum, default_value = "rust")]
        lang: spike::project::Lang,
        /// The folder to make it in.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Build the plugin project in a folder into its component
    /// (`plugin/<name>.wasm`, beside its manifest).
    Build {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Serve a plugin project, building it again and swapping it in on
    /// every save; each request and guest log line is printed.
    Dev {
        #[command(flatten)]
        log: LogArgs,
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = spike::config::DEFAULT_LISTEN)]
        listen: SocketAddr,
    },
    /// Manage the plugins of a running server through its admin API.
    /// `--server`, `--token`, `--config` and `--json` go before or after
    /// the command (`spike plugins list --json`).
    Plugins {
        /// The server's URL [default: the config file's, else
        /// http://127.0.0.1:8787].
        #[arg(long, global = true, env = "SPIKE_SERVER")]
        server: Option<String>,
        /// The admin token the server was started with [default: the config
        /// file's].
        #[arg(long, global = true, env = "SPIKE_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// A file with `server = "URL"` and `token = "…"` [default:
        /// ~/.config/spike/cli.toml, if it exists].
        #[arg(long, global = true, env = "SPIKE_CLI_CONFIG")]
        config: Option<PathBuf>,
        /// Print the server's JSON instead of a table.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: spike::operator::PluginsCommand,
    },
    /// Check that a component fits the plugin world, and time its loading:
    /// a fresh compile against a load from the compile cache.
    Check {
        /// The component (.wasm).
        component: PathBuf,
    },
}

/// The renderer's settings (plugins with `grants.render`).
#[derive(clap::Args)]
struct RenderArgs {
    /// The Chromium binary the renderer drives.
    #[arg(long, default_value = "/usr/bin/chromium", env = "SPIKE_CHROMIUM")]
    chromium: PathBuf,
    /// Renders at once (browser pages open); as many contexts are kept
    /// ready ahead of demand.
    #[arg(long, default_value_t = 2, env = "SPIKE_RENDER_PAGES")]
    render_pages: usize,
    /// Renders that may wait for a page; beyond it 503 at once.
    #[arg(long, default_value_t = 32)]
    render_queue: usize,
    /// Seconds a render may wait for a page before a 503 with Retry-After.
    #[arg(long, default_value_t = 10)]
    render_queue_wait_secs: u64,
    /// A render's deadline in seconds, queueing included (and the most a
    /// caller may ask for).
    #[arg(long, default_value_t = 30)]
    render_timeout_secs: u64,
    /// Renders after which the browser is replaced by a fresh one.
    #[arg(long, default_value_t = 500)]
    render_restart_after: u32,
    /// An internal address pages may reach: IP[:port] (e.g. 127.0.0.1:3000,
    /// [::1]:8080); repeat or separate with commas. Loopback, private,
    /// link-local and metadata addresses are refused otherwise.
    #[arg(long, env = "SPIKE_RENDER_ALLOW", value_delimiter = ',')]
    render_allow: Vec<spike::caps::outbound::HostPattern>,
    /// Largest screenshot, PDF or HTML handed to a plugin, in MiB.
    #[arg(long, default_value_t = 32)]
    render_max_mib: usize,
    /// The memory one page may hold, in MiB: a page past it is stopped
    /// and its render fails with 413 (Chromium is outside
    /// --memory-budget-mib).
    #[arg(long, default_value_t = spike::caps::render::DEFAULT_PAGE_MEMORY >> 20)]
    render_page_mib: u64,
}

impl RenderArgs {
    fn settings(self) -> anyhow::Result<spike::caps::render::RenderSettings> {
        if let Some(name) = self.render_allow.iter().find_map(|p| p.host_name()) {
            anyhow::bail!(
                "--render-allow {name}: give an address (IP[:port]); names are checked by \
                 the addresses they resolve to"
            );
        }
        Ok(spike::caps::render::RenderSettings {
            chromium: self.chromium,
            pages: self.render_pages.max(1),
            queue: self.render_queue,
            queue_wait: Duration::from_secs(self.render_queue_wait_secs),
            timeout: Duration::from_secs(self.render_timeout_secs.max(1)),
            restart_after: self.render_restart_after.max(1),
            allow: self.render_allow,
            max_bytes: self.render_max_mib.max(1) << 20,
            page_memory: self.render_page_mib.max(64) << 20,
            ..Default::default()
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // `spike dev` prints each request; the commands that end by
    // themselves log as text.
    let _log = match &cli.command {
        Command::Serve {
            log, access_log, ..
        } => init_logging(log.log_format, *access_log),
        Command::Dev { log, .. } => init_logging(log.log_format, true),
        _ => init_logging(LogFormat::Text, false),
    };
    if matches!(cli.command, Command::Serve { .. }) {
        // What a server writes (the database, blobs, caches, Chromium's
        // profiles, pushed manifests) is this user's alone. (Not `dev`:
        // it runs the author's own builds, whose files are theirs to share.)
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    }
    match cli.command {
        Command::Serve {
            log: _,
            access_log: _,
            listen,
            plugins,
            data,
            storage,
            node,
            admin_token,
            no_watch,
            max_instances,
            max_object_mib,
            memory_budget_mib,
            metrics_listen,
            max_connections,
            max_room_connections,
            max_room_connections_per_client,
            header_timeout_secs,
            body_timeout_secs,
            send_timeout_secs,
            drain_timeout_secs,
            secrets,
            rate_limit,
            trusted_proxy,
            client_ip_header,
            auth_cache_entries,
            site,
            render,
        } => {
            let mut config = spike::ServerConfig::new(plugins, data);
            config.listen = listen;
            config.storage = storage;
            config.node = node;
            config.admin_token = admin_token.filter(|t| !t.is_empty());
            config.watch = !no_watch;
            config.pool.max_instances = max_instances;
            config.max_object_bytes = max_object_mib << 20;
            config.metrics_listen = metrics_listen;
            if let Some(mib) = memory_budget_mib {
                config.memory_budget_bytes = mib << 20;
            }
            config.clients = ClientLimits {
                max_connections,
                max_room_connections,
                max_room_connections_per_client: max_room_connections_per_client.max(1),
                header_timeout: Duration::from_secs(header_timeout_secs.max(1)),
                body_timeout: Duration::from_secs(body_timeout_secs.max(1)),
                send_timeout: Duration::from_secs(send_timeout_secs.max(1)),
                drain_timeout: Duration::from_secs(drain_timeout_secs),
                ..ClientLimits::default()
            };
            config.secrets = spike::caps::secrets::SecretSource::from_process(Some(secrets));
            config.default_rate_limit = rate_limit;
            config.client_addresses = spike::config::ClientAddresses {
                trusted_proxies: trusted_proxy,
                header: client_ip_header,
            };
            config.auth_cache_entries = auth_cache_entries;
            config.sites = site;
            config.render = render.settings()?;
            if config.admin_token.is_none() {
                tracing::info!("no admin token: the /_spike admin API is disabled");
            }
            let server = spike::start(config).await?;
            shutdown_signal().await;
            tracing::info!("shutting down: finishing requests in flight");
            server.stop().await;
            // The last line: a reader (or a supervisor) knows the stop
            // was clean, and that the lines before it were written.
            tracing::info!("spike stopped");
            Ok(())
        }
        Command::New { name, lang, dir } => match spike::project::new(&dir, &name, lang) {
            Ok(project) => {
                println!("created {}", project.display());
                println!("next: spike build --dir {}", project.display());
                Ok(())
            }
            Err(e) => fail(e),
        },
        Command::Build { dir } => {
            match spike::project::build(&dir, &mut |step| eprintln!("== {step}")) {
                Ok(component) => {
                    let plugins = component.parent().unwrap_or(&dir);
                    println!("built {}", component.display());
                    println!("serve it: spike serve --plugins {}", plugins.display());
                    Ok(())
                }
                Err(e) => fail(e),
            }
        }
        Command::Dev { dir, listen, .. } => match spike::project::dev(&dir, listen).await {
            Ok(()) => Ok(()),
            Err(e) => fail(e),
        },
        Command::Plugins {
            server,
            token,
            config,
            json,
            command,
        } => {
            let target = match spike::operator::target(server, token, config.as_deref()) {
                Ok(target) => target,
                Err(e) => fail(e),
            };
            match spike::operator::run(&target, &command, json).await {
                Ok(out) => {
                    print!("{out}");
                    Ok(())
                }
                Err(e) => fail(e),
            }
        }
        Command::Check { component } => {
            let report = spike::runtime::check::check_component(&component).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
    }
}

/// Logs to stdout through `LogSink`; what is buffered is written when the
/// returned guard drops.
fn init_logging(format: LogFormat, access_log: bool) -> spike::log_sink::FlushOnDrop {
    use std::io::IsTerminal;
    // chromiumoxide warns of each DevTools message its protocol definitions
    // (older than Debian's Chromium) cannot parse; it skips them, and so
    // does the log.
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        "info,spike::access=off,wasmtime=warn,cranelift=warn,chromiumoxide=error".into()
    });
    if access_log {
        filter = filter.add_directive("spike::access=info".parse().expect("a valid directive"));
    }
    let (sink, flush) = spike::log_sink::LogSink::stdout();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(sink);
    match format {
        // Colour codes are for people at a terminal, not for files.
        LogFormat::Text => logs.with_ansi(std::io::stdout().is_terminal()).init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    flush
}

/// Ends a command that failed: its reason on stderr, status 1.
fn fail(e: impl std::fmt::Display) -> ! {
    eprintln!("error: {e}");
    std::process::exit(1)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
