//! The operator's commands against a running server (`spike plugins ...`):
//! list, status, push, rollback, activate, remove, logs; and its SQL
//! databases (`spike sql ...`, in `sql`). Tables for people by default,
//! the server's JSON with `--json`.

pub mod certs;
mod client;
mod config;
pub mod sql;

use std::fmt::Write as _;
use std::path::Path;

use bytes::Bytes;
use http::Method;
use serde_json::Value;

pub use client::{ClientError, Target};
pub use config::{ConfigError, target};
pub use sql::SqlCommand;

/// One operator command (`spike plugins <command>`).
#[derive(Debug, Clone, clap::Subcommand)]
pub enum PluginsCommand {
    /// Every plugin: state, active version, requests in flight, routes.
    List,
    /// One plugin: state, version, error, routes, its versions.
    Status { name: String },
    /// Upload a new component for a plugin; it serves once it compiled.
    Push {
        name: String,
        /// The component (.wasm).
        component: std::path::PathBuf,
        /// A manifest (TOML) to apply first: adds the plugin, or changes it.
        #[arg(long)]
        manifest: Option<std::path::PathBuf>,
    },
    /// Go back to the version before the active one; the newer ones stay
    /// kept (`status` lists them, `activate` serves one again).
    Rollback { name: String },
    /// Serve a kept version, back or forward: the start of its hash (at
    /// least four digits), as `status` lists it.
    Activate { name: String, version: String },
    /// Stop serving a plugin and remove its manifest (on every node of a
    /// cluster); its kept versions and data stay.
    Remove { name: String },
    /// What the plugin's guests printed lately (the last 200 lines).
    Logs {
        name: String,
        /// Then print new lines as they come, until interrupted.
        #[arg(long, short)]
        follow: bool,
    },
}

/// Why a command failed: the server's answer, or a file it needed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("no plugin '{0}' on this server (`spike plugins list` shows them)")]
    NoSuchPlugin(String),
    #[error(
        "no plugin '{0}' on this server: to add it, push its manifest with it (`spike plugins push {0} COMPONENT.wasm --manifest {0}.toml`)"
    )]
    NewWithoutManifest(String),
    /// The server's words on a manifest, for the file they are about.
    #[error("{path}: {message}")]
    BadManifest { path: String, message: String },
}

/// Runs `command`; what to print.
pub async fn run(
    target: &Target,
    command: &PluginsCommand,
    json: bool,
) -> Result<String, CommandError> {
    let answer = match command {
        PluginsCommand::List => {
            let answer = target.call(Method::GET, "/_spike/plugins", None).await?;
            if !json {
                return Ok(list_table(&answer));
            }
            answer
        }
        PluginsCommand::Status { name } => {
            let answer = target.call(Method::GET, "/_spike/plugins", None).await?;
            let plugin = find(&answer, name)?;
            if !json {
                return Ok(status_text(&plugin));
            }
            plugin
        }
        PluginsCommand::Push {
            name,
            component,
            manifest,
        } => return push(target, name, component, manifest.as_deref(), json).await,
        PluginsCommand::Rollback { name } => {
            let path = format!("/_spike/plugins/{name}/rollback");
            let answer = post(target, &path, name).await?;
            return Ok(swapped(answer, json, name, "back to"));
        }
        PluginsCommand::Activate { name, version } => {
            let path = format!("/_spike/plugins/{name}/versions/{version}/activate");
            let answer = post(target, &path, name).await?;
            return Ok(swapped(answer, json, name, "now serving"));
        }
        PluginsCommand::Remove { name } => {
            let path = format!("/_spike/plugins/{name}");
            let answer = target
                .call(Method::DELETE, &path, None)
                .await
                .map_err(|e| no_such_plugin(e, name))?;
            if !json {
                return Ok(format!("{name}: removed\n"));
            }
            answer
        }
        PluginsCommand::Logs { name, follow } => return logs(target, name, *follow, json).await,
    };
    Ok(format!(
        "{}\n",
        serde_json::to_string_pretty(&answer).unwrap_or_default()
    ))
}

/// `spike plugins push`: the manifest first (if given), then the component.
async fn push(
    target: &Target,
    name: &str,
    component: &Path,
    manifest: Option<&Path>,
    json: bool,
) -> Result<String, CommandError> {
    if let Some(manifest) = manifest {
        let text = read(manifest).await?;
        let path = format!("/_spike/plugins/{name}/manifest");
        target
            .call(Method::PUT, &path, Some((text, "application/toml")))
            .await
            .map_err(|e| match e {
                // The server's message names the line; the file
                // is the one pushed, not the server's copy.
                ClientError::Refused { code, message, .. } if code == "bad_manifest" => {
                    CommandError::BadManifest {
                        path: manifest.display().to_string(),
                        message,
                    }
                }
                e => e.into(),
            })?;
    }
    let bytes = read(component).await?;
    let path = format!("/_spike/plugins/{name}");
    let answer = target
        .call(Method::PUT, &path, Some((bytes, "application/wasm")))
        .await
        .map_err(|e| match (no_such_plugin(e, name), manifest) {
            (CommandError::NoSuchPlugin(name), None) => CommandError::NewWithoutManifest(name),
            (e, _) => e,
        })?;
    Ok(swapped(answer, json, name, "now serving"))
}

/// `spike plugins logs`: each line printed as it comes.
async fn logs(
    target: &Target,
    name: &str,
    follow: bool,
    json: bool,
) -> Result<String, CommandError> {
    let path = format!("/_spike/plugins/{name}/logs?follow={follow}");
    let mut printed = 0;
    target
        .lines(&path, |line| {
            printed += 1;
            match json {
                true => println!("{line}"),
                false => println!("{}", log_line(line)),
            }
        })
        .await
        .map_err(|e| no_such_plugin(e, name))?;
    // Nothing at all would look like a command that did not run.
    if printed == 0 && !json && !follow {
        return Ok(format!(
            "no log lines from {name} yet (what its guests print to stdout and stderr shows here)\n"
        ));
    }
    Ok(String::new())
}

/// `POST path` about plugin `name`.
async fn post(target: &Target, path: &str, name: &str) -> Result<Value, CommandError> {
    (target.call(Method::POST, path, None).await).map_err(|e| no_such_plugin(e, name))
}

/// What to print of a swap's answer: the server's JSON, or `name: {done}
/// <version>`.
fn swapped(answer: Value, json: bool, name: &str, done: &str) -> String {
    match json {
        true => format!(
            "{}\n",
            serde_json::to_string_pretty(&answer).unwrap_or_default()
        ),
        false => format!("{name}: {done} {}\n", version_line(&answer["version"])),
    }
}

/// A guest's log line as people read it: time (UTC), stream, text.
fn log_line(json: &str) -> String {
    let Ok(v) = serde_json::from_str::<Value>(json) else {
        return json.to_owned();
    };
    if let Some(n) = v["missed"].as_u64() {
        return format!("... {n} lines missed (this reader fell behind)");
    }
    let ms = v["at_ms"].as_u64().unwrap_or(0);
    let (s, ms) = (ms / 1000, ms % 1000);
    format!(
        "{:02}:{:02}:{:02}.{ms:03} {:6} {}",
        s / 3600 % 24,
        s / 60 % 60,
        s % 60,
        v["stream"].as_str().unwrap_or("?"),
        v["line"].as_str().unwrap_or("")
    )
}

pub(crate) async fn read(path: &Path) -> Result<Bytes, CommandError> {
    tokio::fs::read(path)
        .await
        .map(Bytes::from)
        .map_err(|source| CommandError::Read {
            path: path.display().to_string(),
            source,
        })
}

fn no_such_plugin(e: ClientError, name: &str) -> CommandError {
    match e {
        ClientError::Refused {
            status: 404, code, ..
        } if code == "not_found" => CommandError::NoSuchPlugin(name.to_owned()),
        e => e.into(),
    }
}

fn find(answer: &Value, name: &str) -> Result<Value, CommandError> {
    plugins(answer)
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
        .ok_or_else(|| CommandError::NoSuchPlugin(name.to_owned()))
}

fn plugins(answer: &Value) -> &[Value] {
    answer["plugins"].as_array().map_or(&[], Vec::as_slice)
}

/// A version as people read it: the start of its hash, and where it came
/// from.
fn version_line(version: &Value) -> String {
    match version["sha256"].as_str() {
        Some(sha) => format!(
            "{} ({})",
            &sha[..sha.len().min(12)],
            version["source"].as_str().unwrap_or("?")
        ),
        None => "-".into(),
    }
}

/// Its HTTP routes' prefixes and its rooms' paths (`/chat/{id}`).
fn routes(plugin: &Value) -> String {
    let field = |list: &str, key: &'static str| {
        (plugin[list].as_array().into_iter().flatten()).filter_map(move |r| r[key].as_str())
    };
    let prefixes: Vec<&str> = field("routes", "prefix")
        .chain(field("rooms", "path"))
        .collect();
    match prefixes.is_empty() {
        true => "-".into(),
        false => prefixes.join(" "),
    }
}

fn list_table(answer: &Value) -> String {
    let mut rows = vec![[
        "NAME".to_string(),
        "STATE".into(),
        "VERSION".into(),
        "IN FLIGHT".into(),
        "ROUTES".into(),
    ]];
    for p in plugins(answer) {
        rows.push([
            p["name"].as_str().unwrap_or("?").into(),
            p["state"].as_str().unwrap_or("?").into(),
            version_line(&p["version"]),
            format!("{}/{}", p["in_flight"], p["max_concurrent"]),
            routes(p),
        ]);
    }
    let mut out = table(&rows);
    for refused in answer["refused_manifests"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "refused manifest {}: {}",
            refused["path"].as_str().unwrap_or("?"),
            refused["reason"].as_str().unwrap_or("?")
        );
    }
    out
}

fn status_text(p: &Value) -> String {
    let mut out = String::new();
    let field = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    };
    let _ = writeln!(out, "plugin     {}", field(&p["name"]));
    let _ = writeln!(out, "state      {}", field(&p["state"]));
    let _ = writeln!(out, "version    {}", version_line(&p["version"]));
    if !p["error"].is_null() {
        let _ = writeln!(out, "error      {}", field(&p["error"]));
    }
    let _ = writeln!(out, "in flight  {}/{}", p["in_flight"], p["max_concurrent"]);
    let _ = writeln!(out, "routes     {}", routes(p));
    let _ = writeln!(out, "manifest   {}", field(&p["manifest"]["path"]));
    let component = field(&p["component"]);
    let uploaded = p["version"]["source"] == "upload";
    let component = match (p["component_exists"].as_bool(), uploaded) {
        (Some(false), true) => {
            format!("an upload, kept in the data folder ({component} would replace it)")
        }
        (Some(false), false) => format!("{component} (missing)"),
        (_, true) => format!("an upload, kept in the data folder (not {component})"),
        _ => component,
    };
    let _ = writeln!(out, "component  {component}");
    let history = p["history"].as_array().map_or(&[][..], Vec::as_slice);
    if !history.is_empty() {
        let _ = writeln!(out, "versions, newest first (* serving):");
        for v in history.iter().rev() {
            let mark = match v["sha256"] == p["version"]["sha256"] {
                true => '*',
                false => ' ',
            };
            let _ = writeln!(out, "{mark} {}", version_line(v));
        }
    }
    out
}

/// Left-aligned columns, two spaces apart.
pub(crate) fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let pad = if i + 1 == N {
                0
            } else {
                widths[i] - cell.chars().count() + 2
            };
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_list_is_a_table() {
        let answer = json!({
            "plugins": [
                {"name": "hello", "state": "ready", "in_flight": 0, "max_concurrent": 500,
                 "version": {"sha256": "0123456789abcdef", "source": "file"},
                 "routes": [{"prefix": "/hello"}, {"prefix": "/api/hello"}]},
                {"name": "chat", "state": "failed", "in_flight": 0, "max_concurrent": 8,
                 "version": null, "routes": []},
                {"name": "yjs", "state": "ready", "in_flight": 0, "max_concurrent": 8,
                 "version": null, "routes": [], "rooms": [{"path": "/yjs/{doc}"}]}
            ],
            "refused_manifests": [{"path": "plugins/x.toml", "reason": "x.toml:3: bad"}]
        });
        assert_eq!(
            list_table(&answer),
            "NAME   STATE   VERSION              IN FLIGHT  ROUTES\n\
             hello  ready   0123456789ab (file)  0/500      /hello /api/hello\n\
             chat   failed  -                    0/8        -\n\
             yjs    ready   -                    0/8        /yjs/{doc}\n\
             refused manifest plugins/x.toml: x.toml:3: bad\n"
        );
    }
}
