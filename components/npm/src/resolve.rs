//! Where an import or `require` of a package's file leads, as the URL the
//! built module imports: a file of the same package under its one URL, a
//! dependency at the exact version the package's range (or `?deps`) picks,
//! a package left to the page's import map (`?external`), nothing (the
//! `browser` field's `false`), or a Node built-in, which browsers lack.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use spike_sdk::router::HttpError;

use crate::archive::Package;
use crate::config::Config;
use crate::package::{File, Manifest, normalize};
use crate::registry::Registry;
use crate::request::{BuildOptions, check_name, split_bare};

/// What a specifier leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// A module URL (root-relative: `/npm/react@19.1.0`).
    Url(String),
    /// A package the page's import map resolves: written as it was.
    Bare(String),
    /// An empty module.
    Empty,
    /// A Node built-in (`fs`, `node:path`) the package does not replace.
    Builtin(String),
}

/// One version of a package being built, with what resolving needs.
pub struct Build<'a> {
    pub config: &'a Config,
    pub registry: &'a Registry<'a>,
    pub files: &'a Package<'a>,
    pub manifest: &'a Manifest,
    pub name: &'a str,
    pub version: &'a str,
    pub options: &'a BuildOptions,
    /// `options` as every URL the build writes carries them.
    pub query: &'a str,
    /// File → the exported subpath it is served under.
    pub exported: &'a BTreeMap<String, String>,
    /// The subpaths of this package the modules built so far import
    /// whatever happens (not `import()`): what a browser asks for next.
    pub reached: RefCell<BTreeSet<String>>,
}

/// A package that cannot be built: 422 and why.
pub fn unbuildable(message: impl Into<String>) -> HttpError {
    HttpError::new(422, "cannot_build", message)
}

impl Build<'_> {
    /// `name@version`, for messages.
    pub fn label(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// The one URL file `path` of this package is served under.
    pub fn file_url(&self, path: &str) -> String {
        let subpath = self.exported.get(path).map_or(path, String::as_str);
        package_url(self.name, self.version, subpath, self.query)
    }

    /// Notes that the module being built imports `resolved` whatever
    /// happens: if it is a module of this package, it is `reached`.
    pub fn reach(&self, resolved: &Resolved) {
        let Resolved::Url(url) = resolved else {
            return;
        };
        let own = url
            .strip_prefix(&package_url(self.name, self.version, "", ""))
            .and_then(|rest| rest.strip_suffix(self.query));
        let subpath = match own {
            Some("") => Some(""),
            Some(rest) => rest.strip_prefix('/'),
            None => None,
        };
        if let Some(subpath) = subpath {
            self.reached.borrow_mut().insert(subpath.to_string());
        }
    }

    /// Where `specifier`, written in file `importer`, leads.
    pub fn resolve(&self, importer: &str, specifier: &str) -> Result<Resolved, HttpError> {
        let dir = importer.rsplit_once('/').map_or("", |(d, _)| d);
        let dir = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let fail = |why: String| {
            unbuildable(format!(
                "{}: {importer}: `{specifier}`: {why}",
                self.label()
            ))
        };
        if specifier.starts_with("./")
            || specifier.starts_with("../")
            || specifier == "."
            || specifier == ".."
        {
            let path = normalize(&dir, specifier).map_err(fail)?;
            return match self.manifest.file(self.files, &path).map_err(fail)? {
                File::Path(p) => Ok(Resolved::Url(self.file_url(&p))),
                File::Empty => Ok(Resolved::Empty),
            };
        }
        if specifier.starts_with('/') || specifier.contains("://") || specifier.starts_with("data:")
        {
            return Err(fail("an absolute path or URL".into()));
        }
        if specifier.starts_with('#') {
            return match self.manifest.import(specifier, self.options.dev) {
                Some(Some(target)) if target.starts_with("./") => {
                    self.resolve("package.json", &target)
                }
                Some(Some(package)) => self.resolve(importer, &package),
                Some(None) => Ok(Resolved::Empty),
                None => Err(fail("not in the package's imports".into())),
            };
        }
        self.bare(specifier).map_err(|e| match e.status {
            422 => fail(e.message),
            _ => e,
        })
    }

    /// A package's name, maybe with a path in it.
    fn bare(&self, specifier: &str) -> Result<Resolved, HttpError> {
        if let Some(replacement) = self.manifest.replaced_module(specifier) {
            return match replacement {
                None => Ok(Resolved::Empty),
                Some(r) if r.starts_with("./") => self.resolve("package.json", &r),
                Some(other) if other != specifier => self.bare(&other),
                Some(_) => Err(unbuildable("its `browser` field maps it to itself")),
            };
        }
        let builtin = specifier.strip_prefix("node:").unwrap_or(specifier);
        let (name, subpath) = split_bare(builtin);
        if specifier.starts_with("node:")
            || (is_builtin(builtin) && self.manifest.range_of(name).is_none())
        {
            return Ok(Resolved::Builtin(builtin.to_string()));
        }
        check_name(name).map_err(|e| unbuildable(e.message))?;
        if self.options.external.contains(name) {
            return Ok(Resolved::Bare(specifier.to_string()));
        }
        let version = if name == self.name {
            self.version.to_string()
        } else if let Some(pinned) = self.options.deps.get(name) {
            pinned.clone()
        } else {
            let range = self.manifest.range_of(name).unwrap_or("latest");
            // `npm:other@range` aliases are not followed: a rare form.
            let range = if range.contains(':') || range.contains('/') {
                "latest"
            } else {
                range
            };
            self.registry.resolve(name, range)?
        };
        Ok(Resolved::Url(package_url(
            name, &version, subpath, self.query,
        )))
    }
}

/// `/npm/{name}@{version}[/{subpath}]{query}`.
/// `query` is `BuildOptions::query`'s.
pub fn package_url(name: &str, version: &str, subpath: &str, query: &str) -> String {
    let slash = if subpath.is_empty() { "" } else { "/" };
    format!("/npm/{name}@{version}{slash}{subpath}{query}")
}

/// Node's built-in modules (`fs`, `fs/promises`), which a browser has not.
pub fn is_builtin(specifier: &str) -> bool {
    const BUILTINS: &[&str] = &[
        "assert",
        "async_hooks",
        "buffer",
        "child_process",
        "cluster",
        "console",
        "constants",
        "crypto",
        "dgram",
        "diagnostics_channel",
        "dns",
        "domain",
        "events",
        "fs",
        "http",
        "http2",
        "https",
        "inspector",
        "module",
        "net",
        "os",
        "path",
        "perf_hooks",
        "process",
        "punycode",
        "querystring",
        "readline",
        "repl",
        "stream",
        "string_decoder",
        "sys",
        "timers",
        "tls",
        "trace_events",
        "tty",
        "url",
        "util",
        "v8",
        "vm",
        "wasi",
        "worker_threads",
        "zlib",
    ];
    let (name, _) = specifier.split_once('/').unwrap_or((specifier, ""));
    BUILTINS.contains(&name)
}
