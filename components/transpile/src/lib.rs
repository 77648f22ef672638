//! `transpile`: TypeScript / TSX to JavaScript with swc, compiled into
//! this component, on the wire contract of spike.land's transpiler
//! (`js.spike.land`, which ran esbuild-wasm):
//!
//! | request                  | answer                                               |
//! |--------------------------|------------------------------------------------------|
//! | `POST /transpile`        | the body (TSX source) as an ES module of JavaScript  |
//! | `OPTIONS /transpile`     | 204 with CORS headers                                |
//! | `GET /transpile/health`  | `{"status":"ok",…}` with the swc version             |
//!
//! A syntax error is a 400 whose text is `<file>:<line>:<column>: error:
//! <message>`, as clients parse it (`/:(\d+):(\d+):\s*error:\s*(.+)/`); an
//! empty body is a 400 `Empty code body`.
//!
//! Settings (the manifest's `[env]`): `JSX_IMPORT_SOURCE` (default
//! `react`), `ALLOWED_ORIGINS` (comma-separated origins echoed in
//! `Access-Control-Allow-Origin`; `*` for any), `MAX_SOURCE_KIB` (default
//! 5120; a larger body is a 413).

mod swc;

use spike_sdk::exports::wasi::http::incoming_handler::Guest;
use spike_sdk::http::{BodyError, Request, Response};
use spike_sdk::wasi::http::types::{IncomingRequest, ResponseOutparam};

struct Transpile;

impl Guest for Transpile {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let req = Request::new(request);
        let method = req.method();
        let response = match (method.as_str(), req.path()) {
            ("POST", "/transpile") => transpile(&req),
            ("OPTIONS", "/transpile" | "/transpile/health") => Response::new(204),
            ("GET", "/transpile/health") => health(),
            (_, "/transpile" | "/transpile/health") => Response::error(
                405,
                "method_not_allowed",
                "POST /transpile, GET /transpile/health",
            ),
            (_, path) => Response::error(404, "not_found", &format!("no transpiler at {path}")),
        };
        with_cors(&req, response).send(out);
    }
}

spike_sdk::export!(Transpile);

/// A setting from the manifest's `[env]`.
fn setting(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn transpile(req: &Request) -> Response {
    let max_kib = setting("MAX_SOURCE_KIB")
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(5120);
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
    if body.is_empty() {
        return Response::text(400, "Empty code body");
    }
    let Ok(source) = String::from_utf8(body) else {
        return Response::text(400, "input.tsx:1:1: error: the source is not UTF-8");
    };
    let options = swc::Options {
        file: "input.tsx".into(),
        jsx_import_source: setting("JSX_IMPORT_SOURCE").unwrap_or_else(|| "react".into()),
    };
    match swc::transpile(source, &options) {
        Ok(code) => Response::new(200)
            .header("content-type", "application/javascript; charset=utf-8")
            .header("cache-control", "public, max-age=86400, immutable")
            .body(code.into_bytes()),
        Err(e) => Response::text(
            400,
            format!(
                "{}:{}:{}: error: {}",
                options.file, e.line, e.column, e.message
            ),
        ),
    }
}

fn health() -> Response {
    Response::json(
        200,
        format!(
            r#"{{"status":"ok","transpiler":"swc","version":{}}}"#,
            spike_sdk::http::json_string(swc::SWC_VERSION)
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
        .header("access-control-allow-headers", "Content-Type, TR_ORIGIN")
        .header("access-control-max-age", "86400")
}
