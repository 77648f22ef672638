//! The `spike` command's arguments, as clap reads them: each command's
//! flags a struct of its own, turned into the settings the library takes
//! (`ServeArgs::into_config`). `main.rs` runs them.

mod render;
mod serve;
mod telemetry;
mod tls;

pub use render::RenderArgs;
pub use serve::ServeArgs;
pub use telemetry::TelemetryArgs;
pub use tls::TlsArgs;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "spike",
    version,
    about = "Serve WebAssembly components over HTTP, with KV and blob storage"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// How a long-running command (`serve`, `dev`) logs.
#[derive(Args)]
pub struct LogArgs {
    /// How log lines look: `text` (colours only on a terminal) or `json`
    /// (one object per line, for log collectors).
    #[arg(long, value_enum, default_value = "text", env = "SPIKE_LOG_FORMAT")]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where the admin API is and how to be let in, for the commands that use
/// it; before or after the command.
#[derive(Args)]
pub struct AdminArgs {
    /// The server's URL [default: the config file's, else
    /// http://127.0.0.1:8787].
    #[arg(long, global = true, env = "SPIKE_SERVER")]
    pub server: Option<String>,
    /// The admin token the server was started with [default: the config
    /// file's].
    #[arg(long, global = true, env = "SPIKE_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file with `server = "URL"` and `token = "…"` [default:
    /// ~/.config/spike/cli.toml, if it exists].
    #[arg(long, global = true, env = "SPIKE_CLI_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the server's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum Command {
    /// Serve the plugins described by the manifests in a folder.
    Serve(Box<ServeArgs>),
    /// Start a plugin project with its manifest: a Rust crate on the SDK,
    /// a JavaScript package for componentize-js, or a Python app for
    /// componentize-py.
    New {
        /// The plugin's name (lower case letters, digits and dashes).
        name: String,
        /// The language of the project.
        #[arg(long, value_enum, default_value = "rust")]
        lang: crate::project::Lang,
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
        #[arg(long, default_value = crate::config::DEFAULT_LISTEN)]
        listen: SocketAddr,
    },
    /// Manage the plugins of a running server through its admin API.
    /// `--server`, `--token`, `--config` and `--json` go before or after
    /// the command (`spike plugins list --json`).
    Plugins {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: crate::operator::PluginsCommand,
    },
    /// The certificates a running server serves over HTTPS, through its
    /// admin API.
    Certs {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: crate::operator::certs::CertsCommand,
    },
    /// The SQL databases of a running server, through its admin API: list
    /// them, run statements, export and import, restore to a point in
    /// time, apply migrations.
    Sql {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: crate::operator::SqlCommand,
    },
    /// Check that a component fits the plugin world, and time its loading:
    /// a fresh compile against a load from the compile cache. Given a
    /// plugin manifest, check its component, and list whether the manifest
    /// grants what the WASI standards it imports need.
    Check {
        /// The component (.wasm), or a plugin manifest (.toml).
        component: PathBuf,
    },
}
