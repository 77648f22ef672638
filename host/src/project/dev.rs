//! `spike dev`: builds a project, serves its `plugin/` folder, and builds
//! again whenever a source changes; the new component replaces the old one
//! in place, and the server's own file watch swaps it in (requests in
//! flight finish on the old version). A build that fails leaves the last
//! good version serving. Requests and guest log lines go to the log.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use super::{ProjectError, build};

/// Edits closer together than this make one build.
const SETTLE: Duration = Duration::from_millis(300);

/// Serves the project in `dir` on `listen` until interrupted.
pub async fn dev(dir: &Path, listen: SocketAddr) -> Result<(), ProjectError> {
    let dir = dir.to_owned();
    let first = dir.clone();
    tokio::task::spawn_blocking(move || build(&first, &mut say))
        .await
        .map_err(|e| tool(format!("the build task: {e}")))??;

    let mut config = crate::ServerConfig::new(dir.join("plugin"), dir.join(".spike-data"));
    config.listen = listen;
    let server = crate::start(config)
        .await
        .map_err(|e| tool(format!("spike serve: {e:#}")))?;
    say(&format!(
        "serving http://{} (edit the sources in {} and save to rebuild)",
        server.addr,
        dir.display()
    ));

    let (tx, mut changes) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && !event.kind.is_access()
        {
            for path in event.paths {
                let _ = tx.send(path);
            }
        }
    })
    .map_err(|e| tool(format!("watching the sources: {e}")))?;
    let sources = ["src", "Cargo.toml", "package.json", "app.py"].map(|p| dir.join(p));
    for watched in sources.iter().filter(|p| p.exists()) {
        let mode = match watched.is_dir() {
            true => RecursiveMode::Recursive,
            false => RecursiveMode::NonRecursive,
        };
        watcher
            .watch(watched, mode)
            .map_err(|e| tool(format!("watching {}: {e}", watched.display())))?;
    }
    while changes.recv().await.is_some() {
        while let Ok(Some(_)) = tokio::time::timeout(SETTLE, changes.recv()).await {}
        say("a source changed: building");
        let again = dir.clone();
        match tokio::task::spawn_blocking(move || build(&again, &mut say)).await {
            Ok(Ok(_)) => say("built: the server swaps it in"),
            Ok(Err(e)) => say(&format!(
                "build failed, the last good version serves on: {e}"
            )),
            Err(e) => say(&format!("the build task: {e}")),
        }
    }
    drop(server);
    Ok(())
}

fn say(line: &str) {
    eprintln!("== {line}");
}

fn tool(what: String) -> ProjectError {
    ProjectError::Tool { what, status: None }
}
