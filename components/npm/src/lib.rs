//! The npm plugin: `GET /npm/{name}@{version-or-range}[/{subpath}]`
//! answers an ES module a browser imports, built from the package as the
//! registry publishes it, as esm.sh does but on the operator's own server
//! and registry.
//!
//! - A range or tag is resolved against the package's document and
//!   redirected to the exact version (`/npm/react@^19` → `/npm/react@19.1.0`);
//!   an exact URL never changes, and is cached `immutable` for a year.
//! - The tarball comes from the registry (`REGISTRY`, reached through the
//!   manifest's `grants.outbound` only), its SHA-512 checked against the
//!   document's `integrity`, unpacked under limits and kept
//!   (`archive.rs`); its install scripts are never run.
//! - The file is chosen as bundlers choose it (`package.rs`); its imports
//!   are pointed at the module URLs of the same package's files and of its
//!   dependencies at the versions their ranges pick (`resolve.rs`), so
//!   that two packages share one React; CommonJS is converted (`build/`).
//! - The request that builds a module builds the files of the same package
//!   it imports too, and keeps them together in blob storage under a hash
//!   of what decides them (`pack.rs`): the browser's next requests, and
//!   any later one, are a blob read each, and keep working when the
//!   registry is down.

pub mod archive;
pub mod build;
pub mod config;
pub mod memo;
pub mod pack;
pub mod package;
pub mod registry;
pub mod request;
pub mod resolve;

use std::collections::BTreeSet;

use spike_sdk::blob::Bucket;
use spike_sdk::exports::wasi::http::incoming_handler::Guest;
use spike_sdk::http::{Request, Response, copy, start_response};
use spike_sdk::kv::Namespace;
use spike_sdk::router::{HttpError, IntoResponse, Params, Router};
use spike_sdk::telemetry;
use spike_sdk::wasi::http::types::{IncomingRequest, OutgoingBody, ResponseOutparam};

use archive::Package;
use config::Config;
use pack::{Kept, Packs};
use package::{File, Manifest};
use registry::Registry;
use request::{BuildOptions, ModuleRequest};
use resolve::{Build, package_url, unbuildable};

/// Part of every built module's cache name: a change to how modules are
/// built changes it, so that no module built the old way is served.
const BUILDER_VERSION: &str = "npm-2";

/// An exact module URL's answer never changes.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

struct Npm;

impl Guest for Npm {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        Router::new()
            .get("/npm/_/empty.js", |_, _| {
                module_response(build::EMPTY_MODULE.as_bytes(), None)
            })
            .streaming("GET", "/npm/*path", serve)
            .serve(request, out);
    }
}

spike_sdk::export!(Npm);

/// What a module request is answered with.
enum Answer {
    /// To the exact version, or to the options' one spelling.
    Redirect(String),
    /// A module built before.
    Kept(Kept),
    /// A module built now (and kept).
    Built(Vec<u8>),
}

fn serve(req: &Request, _: &Params, out: ResponseOutparam) {
    // Read once per instance: its environment never changes.
    static CONFIG: std::sync::OnceLock<Config> = std::sync::OnceLock::new();
    let config = CONFIG.get_or_init(Config::from_env);
    let started = std::time::Instant::now();
    let answered = answer(req, config);
    // `/metrics`: spike_guest_npm_modules{plugin, result} (kept modules
    // are the cache's hits), and how long the built ones took.
    let result = match &answered {
        Ok(Answer::Redirect(_)) => "redirect",
        Ok(Answer::Kept(_)) => "kept",
        Ok(Answer::Built(..)) => {
            let seconds = started.elapsed().as_secs_f64();
            telemetry::histogram_seconds("npm_build_seconds", seconds, &[]);
            "built"
        }
        Err(e) if e.status == 422 => "refused",
        Err(e) if e.status == 503 => "unavailable",
        Err(_) => "error",
    };
    telemetry::count("npm_modules", 1, &[("result", result)]);
    match answered {
        Ok(Answer::Redirect(location)) => Response::new(302)
            .header("location", location)
            .header(
                "cache-control",
                format!("public, max-age={}", config.packument_ttl_s),
            )
            .header("access-control-allow-origin", "*")
            .send(out),
        Ok(Answer::Built(code)) => module_response(&code, None).send(out),
        Ok(Answer::Kept(body)) => stream(body, out),
        Err(e) => e
            .with_header("access-control-allow-origin", "*")
            .with_header("cache-control", "no-store")
            .into_response()
            .send(out),
    }
}

fn answer(req: &Request, config: &Config) -> Result<Answer, HttpError> {
    let rest = req.path().strip_prefix("/npm/").unwrap_or_default();
    let wanted = request::parse_path(rest)?;
    let options = BuildOptions::parse(req.query())?;
    let kv = Namespace::open("npm")?;
    let bucket = Bucket::open("npm")?;
    let registry = Registry { config, kv: &kv };
    let exact = nodejs_semver::Version::parse(&wanted.version)
        .ok()
        .map(|v| v.to_string());
    let canonical_query = options.query();
    let given_query = req.query().map(|q| format!("?{q}")).unwrap_or_default();
    let Some(version) = exact.filter(|v| *v == wanted.version && canonical_query == given_query)
    else {
        let version = registry.resolve(&wanted.name, &wanted.version)?;
        return Ok(Answer::Redirect(package_url(
            &wanted.name,
            &version,
            &wanted.subpath,
            &canonical_query,
        )));
    };
    let packs = Packs::new(
        &bucket,
        &[
            BUILDER_VERSION.as_bytes(),
            wanted.name.as_bytes(),
            version.as_bytes(),
            canonical_query.as_bytes(),
        ],
    );
    if let Some(kept) = packs.find(&wanted.subpath) {
        return Ok(Answer::Kept(kept));
    }
    let mut graph = build_graph(
        &registry,
        &bucket,
        &packs,
        &wanted,
        &version,
        &options,
        &canonical_query,
    )?;
    // Kept before the answer goes out: the browser asks for the rest of
    // the graph a moment later, and reads it rather than building it. One
    // not kept is built again when asked for: the answer itself is good.
    let _ = packs.keep(&graph);
    Ok(Answer::Built(graph.swap_remove(0).1))
}

/// How long a request goes on building the modules its module imports:
/// any left are built when asked for.
const GRAPH_TIME: std::time::Duration = std::time::Duration::from_secs(3);
/// How many modules one request builds at most.
const GRAPH_MODULES: usize = 4096;

/// The module `wanted` names (first), then those of the same package it
/// imports whatever happens, and theirs, that are not kept yet: what the
/// browser asks for next, each under its own URL still. A module of them
/// that cannot be built is left for its own request to explain.
fn build_graph(
    registry: &Registry,
    bucket: &Bucket,
    packs: &Packs,
    wanted: &ModuleRequest,
    version: &str,
    options: &BuildOptions,
    // `options.query()`, as every URL the build writes carries them.
    query: &str,
) -> Result<Vec<(String, Vec<u8>)>, HttpError> {
    let started = std::time::Instant::now();
    let label = format!("{}@{version}", wanted.name);
    let dist = dist_of(registry, &wanted.name, version)?;
    let files = Package::open(bucket, registry.config, &dist, &label)?;
    let digest = memo::digest(&files.key, || digest(&files, &label))?;
    let manifest = &digest.manifest;
    let build = Build {
        config: registry.config,
        registry,
        files: &files,
        manifest,
        name: &wanted.name,
        version,
        options,
        query,
        exported: digest.exported(options.dev),
        reached: Default::default(),
    };
    let native = manifest.gypfile == Some(true)
        || files
            .index
            .files
            .keys()
            .any(|f| f == "binding.gyp" || f.ends_with(".node"));
    if native {
        return Err(build::native_addon(&build));
    }
    let file = manifest
        .entry(&files, &wanted.subpath, options.dev)
        .map_err(|why| {
            let what = if wanted.subpath.is_empty() {
                label.clone()
            } else {
                format!("{label}/{}", wanted.subpath)
            };
            HttpError::new(404, "module_not_found", format!("no module {what}: {why}"))
        })?;
    let mut graph = vec![(
        wanted.subpath.clone(),
        build::module(&build, &file)?.into_bytes(),
    )];
    build_reached(&build, packs, &mut graph, started);
    Ok(graph)
}

/// Adds to `graph` (its first module built) the modules of the package it
/// reaches that are not kept yet, a level at a time, its files read
/// together, until `GRAPH_TIME` from `started` or `GRAPH_MODULES`.
fn build_reached(
    build: &Build,
    packs: &Packs,
    graph: &mut Vec<(String, Vec<u8>)>,
    started: std::time::Instant,
) {
    let mut level: Vec<String> = build.reached.take().into_iter().collect();
    if level.is_empty() {
        return;
    }
    let kept = packs.known();
    let mut seen: BTreeSet<String> = graph.iter().map(|(subpath, _)| subpath.clone()).collect();
    while !level.is_empty() {
        let todo: Vec<(String, File)> = level
            .into_iter()
            .filter(|subpath| !kept.modules.contains_key(subpath) && seen.insert(subpath.clone()))
            .filter_map(|subpath| {
                let file = build
                    .manifest
                    .entry(build.files, &subpath, build.options.dev)
                    .ok()?;
                Some((subpath, file))
            })
            .collect();
        let paths: Vec<String> = todo
            .iter()
            .filter_map(|(_, file)| match file {
                File::Path(path) => Some(path.clone()),
                File::Empty => None,
            })
            .collect();
        // Should it fail, each file is read when built.
        let _ = build.files.read_ahead(&paths);
        for (subpath, file) in todo {
            if started.elapsed() > GRAPH_TIME || graph.len() >= GRAPH_MODULES {
                return;
            }
            if let Ok(code) = build::module(build, &file) {
                graph.push((subpath, code.into_bytes()));
            }
        }
        level = build.reached.take().into_iter().collect();
    }
}

/// Where the tarball of `name@version` is, and its hash.
fn dist_of(registry: &Registry, name: &str, version: &str) -> Result<registry::Dist, HttpError> {
    let label = format!("{name}@{version}");
    if let Some(dist) = memo::dist(&label) {
        return Ok(dist);
    }
    let packument = registry.packument(name, Some(version))?;
    let dist = packument.versions.get(version).cloned().ok_or_else(|| {
        HttpError::new(
            404,
            "version_not_found",
            format!("the registry has no {label}"),
        )
    })?;
    memo::keep_dist(&label, &dist);
    Ok(dist)
}

/// What is read of a package once for all its modules.
fn digest(files: &Package, label: &str) -> Result<memo::Digest, HttpError> {
    let bytes = files
        .read("package.json")?
        .ok_or_else(|| unbuildable(format!("{label} has no package.json")))?;
    let manifest = Manifest::parse(&bytes).map_err(|why| unbuildable(format!("{label}: {why}")))?;
    let exported = [
        manifest.exported_files(files, false),
        manifest.exported_files(files, true),
    ];
    Ok(memo::Digest { manifest, exported })
}

/// A module's answer: immutable, for any origin (the preview's frame has
/// an origin of its own).
fn module_response(code: &[u8], etag: Option<&str>) -> Response {
    let mut response = Response::new(200)
        .header("content-type", "text/javascript; charset=utf-8")
        .header("cache-control", IMMUTABLE)
        .header("access-control-allow-origin", "*")
        .header("cross-origin-resource-policy", "cross-origin")
        .header("x-content-type-options", "nosniff")
        .body(code.to_vec());
    if let Some(etag) = etag {
        response = response.header("etag", format!("\"{etag}\""));
    }
    response
}

/// A kept module, streamed from blob storage.
fn stream(Kept { body: kept, etag }: Kept, out: ResponseOutparam) {
    let mut headers = module_response(&[], Some(&etag)).into_headers();
    headers.push((
        "content-length".into(),
        kept.length.to_string().into_bytes(),
    ));
    let (resp, body) = start_response(200, &headers);
    ResponseOutparam::set(out, Ok(resp));
    if let Ok(sink) = body.write() {
        let _ = copy(&kept.body, &sink);
        drop(sink);
    }
    let _ = OutgoingBody::finish(body, None);
}
