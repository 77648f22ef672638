//! `transpile`: TypeScript / TSX to JavaScript with swc, compiled into
//! this component, on the wire contract of spike.land's transpiler
//! (`js.spike.land`, which ran esbuild-wasm):
//!
//! | request                  | answer                                                  |
//! |--------------------------|---------------------------------------------------------|
//! | `POST /transpile`        | a text body (TSX) as an ES module of JavaScript; a JSON  |
//! |                          | body (`options.rs`) as `{code, map?, diagnostics}`       |
//! | `POST /transpile/esm`    | as the text form, bare imports rewritten through the    |
//! |                          | configured import map (for modules that spike serves)   |
//! | `OPTIONS /transpile…`    | 204 with CORS headers                                   |
//! | `GET /transpile/health`  | `{"status":"ok",…}` with the swc version                |
//!
//! A syntax error in the text form is a 400 whose text is `<file>:<line>:
//! <column>: error: <message>`, as clients parse it (`/:(\d+):(\d+):\s*
//! error:\s*(.+)/`); an empty body is a 400 `Empty code body`. Answers are
//! cached in KV (`cache.rs`; `x-cache: hit|miss`).
//!
//! Settings (the manifest's `[env]`): `JSX_IMPORT_SOURCE` (default
//! `react`), `ALLOWED_ORIGINS` (comma-separated origins echoed in
//! `Access-Control-Allow-Origin`; `*` for any), `MAX_SOURCE_KIB` (default
//! 5120; a larger body is a 413), `IMPORT_MAP` and `CDN_URL`
//! (`import_map.rs`), `CACHE` and `CACHE_TTL_S` (`cache.rs`), `MAX_NESTING`
//! (`depth.rs`).

mod bundle;
mod cache;
mod compile;
mod const_fold;
mod depth;
mod emit;
mod import_map;
mod options;
#[cfg(test)]
mod tests;

use spike_sdk::exports::wasi::http::incoming_handler::Guest;
use spike_sdk::http::{BodyError, Request, Response, json_string};
use spike_sdk::router::{Params, Router};
use spike_sdk::telemetry;
use spike_sdk::wasi::http::types::{IncomingRequest, ResponseOutparam};
use swc_core::common::{GLOBALS, Globals};
use swc_core::ecma::ast::Program;

use crate::compile::{Diagnostic, Session};
use crate::emit::Output;
use crate::import_map::ImportMap;
use crate::options::{Input, JsonRequest, Options};

struct Transpile;

impl Guest for Transpile {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let preflight = |_: &Request, _: &Params| Response::new(204);
        Router::new()
            .post("/transpile", |req, _| transpile(req, Route::Transpile))
            .post("/transpile/esm", |req, _| transpile(req, Route::Esm))
            .get("/transpile/health", |_, _| health())
            .route("OPTIONS", "/transpile", preflight)
            .route("OPTIONS", "/transpile/esm", preflight)
            .route("OPTIONS", "/transpile/health", preflight)
            .map_response(with_cors)
            .serve(request, out);
    }
}

spike_sdk::export!(Transpile);

/// A setting from the manifest's `[env]`.
fn setting(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A numeric setting, or `default` if it is unset or not a number.
fn number_setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    setting(name)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// The swc this component is built with, as health and the cache key name it.
pub fn swc_version() -> &'static str {
    "swc_core 83.0.0"
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Transpile,
    Esm,
}

fn transpile(req: &Request, route: Route) -> Response {
    let max_kib: usize = number_setting("MAX_SOURCE_KIB", 5120);
    let body = match req.body_bytes(max_kib << 10) {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            let why = format!("the source is larger than {max_kib} KiB");
            return Response::error(413, "too_large", &why);
        }
        Err(BodyError::Stream(e)) => {
            return Response::error(400, "bad_body", &format!("the body could not be read: {e}"));
        }
    };
    let origin = req.header("tr_origin").unwrap_or_default();
    // The manifest's import map, read only by the requests that use it.
    let configured = || {
        ImportMap::configured(origin.clone()).map_err(|e| Response::error(500, "bad_config", &e))
    };
    let mut options =
        Options::defaults(setting("JSX_IMPORT_SOURCE").unwrap_or_else(|| "react".into()));
    let is_json = req.header("content-type").is_some_and(|t| {
        t.trim_start()
            .to_ascii_lowercase()
            .starts_with("application/json")
    });
    let policy = cache::Policy::for_request(req.header("cache-control").as_deref());
    if is_json && route == Route::Transpile {
        let request: JsonRequest = match serde_json::from_slice(&body) {
            Ok(request) => request,
            Err(e) => return Response::error(400, "bad_request", &format!("the JSON body: {e}")),
        };
        let map = match request.wants_configured_map().then(configured).transpose() {
            Ok(map) => map,
            Err(response) => return response,
        };
        let (input, options) = match request.resolve(options, map, &origin) {
            Ok(resolved) => resolved,
            Err(e) => return Response::error(400, "bad_request", &e),
        };
        let key = policy.used().then(|| {
            let options = format!("{options:?}");
            let head: [&[u8]; 3] = [b"json", options.as_bytes(), origin.as_bytes()];
            cache::key(&[&head[..], &input.parts()].concat())
        });
        cached(policy, key, "application/json", || {
            match run(input, &options) {
                Ok(out) => Ok(json_answer(&out)),
                Err(diagnostics) => Err(json_errors(&diagnostics)),
            }
        })
    } else {
        if body.is_empty() {
            return Response::text(400, "Empty code body");
        }
        let Ok(source) = String::from_utf8(body) else {
            return Response::text(400, "input.tsx:1:1: error: the source is not UTF-8");
        };
        if route == Route::Esm {
            options.imports = match configured() {
                Ok(map) => Some(map),
                Err(response) => return response,
            };
        }
        let key = policy.used().then(|| {
            cache::key(&[
                b"text",
                format!("{options:?}").as_bytes(),
                origin.as_bytes(),
                source.as_bytes(),
            ])
        });
        cached(
            policy,
            key,
            "application/javascript; charset=utf-8",
            || match run(Input::Module(source), &options) {
                Ok(out) => Ok(out.code.into_bytes()),
                Err(diagnostics) => Err(Response::text(400, diagnostics[0].to_text())),
            },
        )
    }
}

/// The answer from the cache under `key` (none if the policy does not use
/// the cache), or `compile`'s (stored if it succeeded).
fn cached(
    policy: cache::Policy,
    key: Option<String>,
    content_type: &str,
    compile: impl FnOnce() -> Result<Vec<u8>, Response>,
) -> Response {
    let key = key.unwrap_or_default();
    let hit = policy.read.then(|| cache::get(&key)).flatten();
    let started = std::time::Instant::now();
    let mut span = telemetry::Span::start("transpile");
    let (body, state) = match hit {
        Some(body) => (body, "hit"),
        None => match compile() {
            Ok(body) => {
                if policy.write {
                    cache::put(&key, &body);
                }
                (body, "miss")
            }
            Err(response) => {
                span.attr("transpile.cache", "miss")
                    .error("the input did not compile");
                telemetry::count("transpile_cache", 1, &[("result", "error")]);
                return response.header("x-cache", "miss");
            }
        },
    };
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    span.attr("transpile.cache", state)
        .attr("transpile.bytes", body.len());
    drop(span);
    telemetry::count("transpile_cache", 1, &[("result", state)]);
    if state == "miss" {
        telemetry::histogram_seconds("transpile_swc_seconds", ms / 1000.0, &[]);
    }
    // How long swc took, for browsers' developer tools (and benchmarks).
    let timing = format!("swc;dur={ms:.3}");
    Response::new(200)
        .header("content-type", content_type)
        .header("cache-control", "public, max-age=86400, immutable")
        .header("x-cache", state)
        .header("server-timing", timing)
        .body(body)
}

/// Compiles `input`: one module, or a bundle of several.
fn run(input: Input, options: &Options) -> Result<Output, Vec<Diagnostic>> {
    let session = Session::new();
    GLOBALS.set(&Globals::new(), || {
        let (mut program, marks) = match input {
            Input::Module(source) => {
                let name = format!("input.{}", options.loader.extension());
                depth::check(&name, &source)?;
                let (module, _) = session.parse(&name, source, options.loader)?;
                session.lower(module, options)
            }
            Input::Bundle { files, entry } => {
                for (path, source) in &files {
                    depth::check(path, source)?;
                }
                let module = bundle::bundle(&session, files, &entry, options)?;
                // The bundle comes with no marks; resolve it afresh for the
                // minifier and the renamer.
                compile::resolve(module, false)
            }
        };
        if let (Some(map), Program::Module(module)) = (&options.imports, &mut program) {
            map.rewrite(module);
        }
        Ok(session.emit(program, marks, options))
    })
}

fn json_answer(out: &Output) -> Vec<u8> {
    // serde_json's escaping, not the SDK's character loop: this string is
    // a whole program.
    let string = |s: &str| serde_json::to_string(s).expect("a string serializes");
    let map = match &out.map {
        Some(map) => format!(r#","map":{}"#, string(map)),
        None => String::new(),
    };
    format!(r#"{{"code":{}{map},"diagnostics":[]}}"#, string(&out.code)).into_bytes()
}

/// A 400 with the first problem as the error and every problem listed.
fn json_errors(diagnostics: &[Diagnostic]) -> Response {
    let list: Vec<String> = diagnostics
        .iter()
        .map(|d| {
            format!(
                r#"{{"file":{},"line":{},"column":{},"message":{},"severity":"error"}}"#,
                json_string(&d.file),
                d.line,
                d.column,
                json_string(&d.message)
            )
        })
        .collect();
    let message = diagnostics[0].to_text();
    Response::json(
        400,
        format!(
            r#"{{"error":{{"code":"transpile_error","message":{}}},"diagnostics":[{}]}}"#,
            json_string(&message),
            list.join(",")
        ),
    )
}

fn health() -> Response {
    Response::json(
        200,
        format!(
            r#"{{"status":"ok","transpiler":"swc","version":{}}}"#,
            json_string(swc_version())
        ),
    )
}

/// CORS for browsers calling from the origins the manifest allows.
fn with_cors(req: &Request, response: Response) -> Response {
    let Some(origin) = req.header("origin") else {
        return response;
    };
    let allowed = setting("ALLOWED_ORIGINS").unwrap_or_default();
    let allows = allowed
        .split(',')
        .map(str::trim)
        .any(|a| a == "*" || a == origin);
    let response = response.header("vary", "Origin");
    if !allows {
        return response;
    }
    response
        .header("access-control-allow-origin", &origin)
        .header("access-control-allow-methods", "POST, GET, OPTIONS")
        .header(
            "access-control-allow-headers",
            "Content-Type, TR_ORIGIN, Cache-Control",
        )
        .header("access-control-expose-headers", "x-cache, server-timing")
        .header("access-control-max-age", "86400")
}
