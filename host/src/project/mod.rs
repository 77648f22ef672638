//! A third party's plugin project: `spike new` scaffolds one, `spike build`
//! builds it, `spike dev` serves it and builds it again on every save.
//!
//! A Rust project is a Cargo crate on the SDK, with the SDK and the WIT
//! package copied in (`spike-sdk/`, from this binary: the project builds
//! from crates.io's `wit-bindgen` alone, and matches the host that made
//! it). A JavaScript project is an npm package built by componentize-js, a
//! Python one an `app.py` built by componentize-py (in the project's own
//! `.venv`), both with the WIT package in `wit/`. Each has its manifest in
//! `plugin/`. `spike build` puts the component
//! beside the manifest, so `spike serve --plugins plugin` (or
//! `spike plugins push <name> plugin/<name>.wasm --manifest
//! plugin/<name>.toml`) runs it.

mod dev;
mod files;

pub use dev::dev;

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::runtime::manifest::check_name;

/// Why a project command failed, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error("'{name}' cannot name a plugin: {reason}")]
    BadName { name: String, reason: String },
    #[error("{0} already exists: pick another name, or remove it")]
    Exists(PathBuf),
    #[error(
        "{0} is not a spike project (no Cargo.toml, package.json or app.py with a plugin/ manifest): run `spike new` first, or pass --dir"
    )]
    NotAProject(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} failed{}", status.map_or(String::new(), |s| format!(" (exit status {s})")))]
    Tool { what: String, status: Option<i32> },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ProjectError + '_ {
    move |source| ProjectError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The languages a project may be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// A Cargo crate on the SDK.
    Rust,
    /// JavaScript, componentized by componentize-js (npm).
    Js,
    /// Python, componentized by componentize-py (PyPI).
    Python,
}

/// Writes a new plugin project `name` in `lang` in `parent/name`; its
/// folder.
pub fn new(parent: &Path, name: &str, lang: Lang) -> Result<PathBuf, ProjectError> {
    check_name(name).map_err(|reason| ProjectError::BadName {
        name: name.to_owned(),
        reason,
    })?;
    let dir = parent.join(name);
    if dir.exists() {
        return Err(ProjectError::Exists(dir));
    }
    let files = match lang {
        Lang::Rust => files::rust_project(name),
        Lang::Js => files::js_project(name),
        Lang::Python => files::python_project(name),
    };
    for (path, text) in files {
        let path = dir.join(path);
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder).map_err(io(folder))?;
        }
        std::fs::write(&path, text).map_err(io(&path))?;
    }
    Ok(dir)
}

/// Builds the project in `dir`, telling `progress` each step; the
/// component's path.
pub fn build(dir: &Path, progress: &mut dyn FnMut(&str)) -> Result<PathBuf, ProjectError> {
    let (name, lang) = project_name(dir)?;
    // Written beside the component and renamed over it: a server watching
    // the file (`spike dev`, `spike serve`) never reads half a component.
    let component = dir.join("plugin").join(format!("{name}.wasm"));
    let part = dir.join("plugin").join(format!(".{name}.wasm.part"));
    match lang {
        Lang::Rust => build_rust(dir, &name, &part, progress)?,
        Lang::Js => build_js(dir, &name, &part, progress)?,
        Lang::Python => build_python(dir, &name, &part, progress)?,
    }
    std::fs::rename(&part, &component).map_err(io(&component))?;
    progress(&format!("component: {}", component.display()));
    Ok(component)
}

fn build_rust(
    dir: &Path,
    name: &str,
    part: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<(), ProjectError> {
    ensure_wasm_target(progress)?;
    progress(&format!(
        "building {name} (cargo build --release --target {TARGET})"
    ));
    run(
        Command::new("cargo")
            .args(["build", "--release", "--target", TARGET])
            .current_dir(dir),
        "cargo build",
    )?;
    // Cargo takes a relative CARGO_TARGET_DIR from the project's folder.
    let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => dir.join(d),
        None => dir.join("target"),
    };
    let built = target_dir
        .join(TARGET)
        .join("release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    std::fs::copy(&built, part).map_err(io(&built))?;
    Ok(())
}

/// `npm install` if componentize-js is not there yet, then componentize.
fn build_js(
    dir: &Path,
    name: &str,
    part: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<(), ProjectError> {
    // Absolute: it runs with the project as its working directory.
    let componentize = dir.join("node_modules/.bin/componentize-js");
    let componentize = std::path::absolute(&componentize).map_err(io(&componentize))?;
    let part = std::path::absolute(part).map_err(io(part))?;
    if !componentize.exists() {
        progress("installing componentize-js (npm install)");
        run(
            Command::new("npm")
                .args(["install", "--no-audit", "--no-fund"])
                .current_dir(dir),
            "npm install (Node.js and npm must be installed)",
        )?;
    }
    progress(&format!("building {name} (componentize-js src/plugin.js)"));
    run(
        Command::new(&componentize)
            .args([
                "src/plugin.js",
                "--wit",
                "wit",
                "--world-name",
                "spike:host/plugin",
                "-o",
            ])
            .arg(&part)
            .current_dir(dir),
        "componentize-js",
    )
}

/// The componentize-py `spike build` installs.
const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";

/// A virtual environment with componentize-py if there is none yet, then
/// componentize.
fn build_python(
    dir: &Path,
    name: &str,
    part: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<(), ProjectError> {
    let venv = std::path::absolute(dir.join(".venv")).map_err(io(dir))?;
    let componentize = venv.join("bin/componentize-py");
    if !componentize.exists() {
        progress(&format!(
            "installing {COMPONENTIZE_PY} (python3 -m venv .venv, pip install)"
        ));
        run(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            "python3 -m venv (on Debian it needs the python3-venv package)",
        )?;
        run(
            Command::new(venv.join("bin/pip")).args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                COMPONENTIZE_PY,
            ]),
            "pip install componentize-py",
        )?;
    }
    let part = std::path::absolute(part).map_err(io(part))?;
    progress(&format!("building {name} (componentize-py app.py)"));
    run(
        Command::new(&componentize)
            .args([
                "-d",
                "wit",
                "-w",
                "spike:host/plugin",
                "componentize",
                "app",
                "-o",
            ])
            .arg(&part)
            .current_dir(dir),
        "componentize-py",
    )
}

/// Runs `command`; its failure named `what`.
fn run(command: &mut Command, what: &str) -> Result<(), ProjectError> {
    let status = command.status().map_err(io(Path::new(what)))?;
    match status.success() {
        true => Ok(()),
        false => Err(ProjectError::Tool {
            what: what.into(),
            status: status.code(),
        }),
    }
}

const TARGET: &str = "wasm32-wasip2";

/// The plugin's name (its manifest's in `plugin/`) and the project's
/// language (a `Cargo.toml`, a `package.json` or an `app.py`).
fn project_name(dir: &Path) -> Result<(String, Lang), ProjectError> {
    let not_one = || ProjectError::NotAProject(dir.to_owned());
    let lang = if dir.join("Cargo.toml").is_file() {
        Lang::Rust
    } else if dir.join("package.json").is_file() {
        Lang::Js
    } else if dir.join("app.py").is_file() {
        Lang::Python
    } else {
        return Err(not_one());
    };
    let manifests: Vec<String> = std::fs::read_dir(dir.join("plugin"))
        .map_err(|_| not_one())?
        .filter_map(|e| {
            let path = e.ok()?.path();
            (path.extension()? == "toml").then(|| path.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect();
    match manifests.as_slice() {
        [name] => Ok((name.clone(), lang)),
        _ => Err(not_one()),
    }
}

/// Installs the wasm target with rustup if it is missing.
fn ensure_wasm_target(progress: &mut dyn FnMut(&str)) -> Result<(), ProjectError> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(io(Path::new("rustup")))?;
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == TARGET)
    {
        return Ok(());
    }
    progress(&format!(
        "installing the {TARGET} target (rustup target add {TARGET})"
    ));
    run(
        Command::new("rustup").args(["target", "add", TARGET]),
        &format!("rustup target add {TARGET}"),
    )
}
