//! The `spike` command: its arguments are `spike::cli`'s; this runs them.

use std::process::ExitCode;

use clap::Parser;
use spike::cli::{Cli, Command, LogFormat, ServeArgs};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // `spike dev` prints each request; the commands that end by
    // themselves log as text.
    let log = match &cli.command {
        Command::Serve(args) => args
            .telemetry
            .settings()
            .map_err(anyhow::Error::msg)
            .and_then(|traces| {
                let node =
                    (args.node.clone()).unwrap_or_else(|| spike::server::default_node(args.listen));
                let traces = traces.as_ref().map(|t| (t, node.as_str()));
                init_logging(args.log.log_format, args.access_log, traces)
            }),
        Command::Dev { log, .. } => init_logging(log.log_format, true, None),
        _ => init_logging(LogFormat::Text, false, None),
    };
    let log = match log {
        Ok(log) => log,
        Err(e) => {
            eprintln!("error: {}", told(&e));
            return ExitCode::FAILURE;
        }
    };
    let result = run(cli.command).await;
    // The log's last lines are written before the error is told (a
    // `process::exit` would lose them).
    drop(log);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", told(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each cause once: most of spike's
/// errors already name their cause in their own message.
fn told(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
    }
    text
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve(*args).await,
        Command::New { name, lang, dir } => {
            let project = spike::project::new(&dir, &name, lang)?;
            println!("created {}", project.display());
            println!("next: spike build --dir {}", project.display());
            Ok(())
        }
        Command::Build { dir } => {
            let component = spike::project::build(&dir, &mut |step| eprintln!("== {step}"))?;
            let plugins = component.parent().unwrap_or(&dir);
            println!("built {}", component.display());
            println!("serve it: spike serve --plugins {}", plugins.display());
            Ok(())
        }
        Command::Dev { dir, listen, .. } => Ok(spike::project::dev(&dir, listen).await?),
        Command::Plugins { admin, command } => {
            let target =
                spike::operator::target(admin.server, admin.token, admin.config.as_deref())?;
            print!(
                "{}",
                spike::operator::run(&target, &command, admin.json).await?
            );
            Ok(())
        }
        Command::Certs { admin, command } => {
            let target =
                spike::operator::target(admin.server, admin.token, admin.config.as_deref())?;
            print!(
                "{}",
                spike::operator::certs::run(&target, &command, admin.json).await?
            );
            Ok(())
        }
        Command::Sql { admin, command } => {
            let target =
                spike::operator::target(admin.server, admin.token, admin.config.as_deref())?;
            print!(
                "{}",
                spike::operator::sql::run(&target, &command, admin.json).await?
            );
            Ok(())
        }
        Command::Check { component } => {
            let report = spike::runtime::check::check_component(&component).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
    }
}

/// Serves until SIGTERM or Ctrl-C, then stops cleanly.
async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // What a server writes (the database, blobs, caches, Chromium's
    // profiles, pushed manifests) is this user's alone. (Not `dev`: it
    // runs the author's own builds, whose files are theirs to share.)
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let config = args.into_config()?;
    if config.admin_token.is_none() {
        tracing::info!("no admin token: the /_spike admin API is disabled");
    }
    let server = spike::start(config).await?;
    shutdown_signal().await;
    tracing::info!("shutting down: finishing requests in flight");
    server.stop().await;
    spike::telemetry::finish(std::time::Duration::from_secs(5)).await;
    // The last line: a reader (or a supervisor) knows the stop was clean,
    // and that the lines before it were written.
    tracing::info!("spike stopped");
    Ok(())
}

/// Logs to stdout through `LogSink`; what is buffered is written when the
/// returned guard drops. With `traces` (settings, node name), spans go to
/// the OTLP collector too.
fn init_logging(
    format: LogFormat,
    access_log: bool,
    traces: Option<(&spike::telemetry::Settings, &str)>,
) -> anyhow::Result<spike::log_sink::FlushOnDrop> {
    use std::io::IsTerminal;
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // chromiumoxide warns of each DevTools message its protocol definitions
    // (older than Debian's Chromium) cannot parse; it skips them, and so
    // does the log.
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        "info,spike::access=off,wasmtime=warn,cranelift=warn,chromiumoxide=error".into()
    });
    if access_log {
        filter = filter.add_directive("spike::access=info".parse().expect("a valid directive"));
    }
    // The spans of traces are the trace layer's; the log's lines do not
    // carry them (a JSON line names its trace and span by id instead).
    let filter = filter.add_directive("spike::trace=off".parse().expect("a valid directive"));
    let (sink, flush) = spike::log_sink::LogSink::stdout();
    let logs = tracing_subscriber::fmt::layer().with_writer(sink);
    let logs = match format {
        // Colour codes are for people at a terminal, not for files.
        LogFormat::Text => logs.with_ansi(std::io::stdout().is_terminal()).boxed(),
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .map_event_format(spike::telemetry::WithTraceIds)
            .boxed(),
    };
    let registry = tracing_subscriber::registry()
        .with(logs.with_filter(spike::telemetry::fresh_filter::Fresh(filter)));
    let traces = match traces {
        Some((settings, node)) => Some(spike::telemetry::install(settings, node)?),
        None => None,
    };
    registry.with(traces).init();
    Ok(flush)
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
