//! A request router: method and path patterns with parameters, so that a
//! plugin's `handle` is a table of routes, not string slicing.
//!
//! ```ignore
//! use spike_sdk::router::{Params, Router};
//! use spike_sdk::http::{Request, Response};
//!
//! fn item(req: &Request, params: &Params) -> Result<Response, spike_sdk::router::HttpError> {
//!     let id = params.get("id").unwrap_or_default();
//!     Ok(Response::text(200, format!("item {id}")))
//! }
//!
//! Router::new()
//!     .get("/items/:id", item)
//!     .get("/files/*path", |_, p| Response::text(200, p.get("path").unwrap_or_default()))
//!     .serve(request, out);
//! ```
//!
//! Patterns are matched segment by segment: a literal matches itself,
//! `:name` any one non-empty segment (percent-decoded), and a last `*name`
//! the rest of the path (possibly empty, `/` kept, percent-decoded). The
//! first route whose pattern and method match wins. A path that no pattern
//! matches gets 404, one whose patterns match but not for this method 405
//! with `Allow`, both with a JSON error body (or whatever the router's
//! `fallback` answers, for a plugin whose errors have a shape of their
//! own). A `GET` route also answers `HEAD`.

use crate::http::{Request, Response, percent_decode_path};
use crate::wasi::http::types::{IncomingRequest, ResponseOutparam};

/// The parameters a pattern took from the path, by name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// The value of parameter `name`, if the pattern has it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An error a handler answers with: its status, a short code and a
/// message, sent as `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// The HTTP status (4xx or 5xx).
    pub status: u16,
    /// A short code a program can test, e.g. `not_found`.
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
    /// Headers the answer carries besides the JSON body (`Retry-After`,
    /// `WWW-Authenticate`).
    pub headers: Vec<(String, String)>,
}

impl HttpError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
            headers: Vec::new(),
        }
    }

    /// The same error with header `name` added to its answer.
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "bad_request", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "not_found", message)
    }
}

/// A capability's error as the status that best answers it (403, 400,
/// 413 or 500; see [`crate::Error::status`]).
impl From<crate::Error> for HttpError {
    fn from(e: crate::Error) -> Self {
        Self::new(e.status(), e.code(), e.message())
    }
}

/// A failed render as the status that best answers it: 403 for a page
/// the guard refuses (or no `render` grant), 400 for a bad option, 503
/// with `Retry-After` when every page is busy or 503 with no browser, 504
/// for a deadline, 502 for a page that failed to load, 413 for a result
/// over the host's limit.
impl From<crate::render::RenderError> for HttpError {
    fn from(e: crate::render::RenderError) -> Self {
        use crate::render::RenderError as E;
        match e {
            E::AccessDenied(m) => Self::new(403, "render_not_granted", m),
            E::InvalidInput(m) => Self::bad_request(m),
            E::Blocked(m) => Self::new(403, "blocked", m),
            E::Busy(ms) => Self::new(503, "busy", "every browser page is busy; try again shortly")
                .with_header("retry-after", ms.div_ceil(1000).max(1).to_string()),
            E::Timeout(m) => Self::new(504, "render_timeout", m),
            E::Unavailable(m) => Self::new(503, "renderer_unavailable", m),
            E::Failed(m) => Self::new(502, "render_failed", m),
            E::TooLarge(m) => Self::new(413, "too_large", m),
        }
    }
}

/// What a handler may return.
pub trait IntoResponse {
    /// The response that answers the request.
    fn into_response(self) -> Response;
}

impl IntoResponse for Response {
    fn into_response(self) -> Response {
        self
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let response = Response::error(self.status, &self.code, &self.message);
        self.headers
            .iter()
            .fold(response, |r, (name, value)| r.header(name, value))
    }
}

/// So that `?` turns an `HttpError` into the answer of a function that
/// returns `Result<_, Response>`.
impl From<HttpError> for Response {
    fn from(e: HttpError) -> Self {
        e.into_response()
    }
}

impl IntoResponse for crate::Error {
    fn into_response(self) -> Response {
        HttpError::from(self).into_response()
    }
}

impl<T: IntoResponse, E: IntoResponse> IntoResponse for Result<T, E> {
    fn into_response(self) -> Response {
        match self {
            Ok(r) => r.into_response(),
            Err(e) => e.into_response(),
        }
    }
}

/// A route's handler: one that returns its response (which the router's
/// [`Router::map_response`] may amend), or one that sends it itself.
enum Handler {
    Respond(Box<Respond>),
    Stream(Box<Stream>),
}

type Respond = dyn Fn(&Request, &Params) -> Response;
type Stream = dyn Fn(&Request, &Params, ResponseOutparam);

type MapResponse = Box<dyn Fn(&Request, Response) -> Response>;

struct Route {
    method: &'static str,
    pattern: Vec<Segment>,
    handler: Handler,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    Rest(String),
}

/// Routes, tried in the order they were added.
#[derive(Default)]
pub struct Router {
    routes: Vec<Route>,
    map_response: Option<MapResponse>,
    fallback: Option<Box<Fallback>>,
}

type Fallback = dyn Fn(&Request, ResponseOutparam);

impl Router {
    /// A router with no routes (every request gets 404).
    pub fn new() -> Self {
        Self::default()
    }

    /// A route for `method` (upper case) whose handler returns a response.
    pub fn route<R: IntoResponse>(
        self,
        method: &'static str,
        pattern: &str,
        handler: impl Fn(&Request, &Params) -> R + 'static,
    ) -> Self {
        let handler = move |req: &Request, params: &Params| handler(req, params).into_response();
        self.add(method, pattern, Handler::Respond(Box::new(handler)))
    }

    /// A route whose handler sends the response itself, for a body it
    /// streams (see [`crate::http::start_response`]). `map_response` does
    /// not see its response.
    pub fn streaming(
        self,
        method: &'static str,
        pattern: &str,
        handler: impl Fn(&Request, &Params, ResponseOutparam) + 'static,
    ) -> Self {
        self.add(method, pattern, Handler::Stream(Box::new(handler)))
    }

    fn add(mut self, method: &'static str, pattern: &str, handler: Handler) -> Self {
        self.routes.push(Route {
            method,
            pattern: parse(pattern),
            handler,
        });
        self
    }

    /// Amends every response the router sends but those of streaming
    /// routes: the handlers' answers and its own 404 and 405. For headers
    /// every answer carries (CORS, `Cache-Control`).
    pub fn map_response(mut self, f: impl Fn(&Request, Response) -> Response + 'static) -> Self {
        self.map_response = Some(Box::new(f));
        self
    }

    /// Answers what no route takes (a path no pattern matches, or a method
    /// no route of the path allows) instead of the router's 404 and 405:
    /// for a plugin whose errors have a shape of their own (an API it
    /// stands in for).
    pub fn fallback(mut self, f: impl Fn(&Request, ResponseOutparam) + 'static) -> Self {
        self.fallback = Some(Box::new(f));
        self
    }

    /// A `GET` route.
    pub fn get<R: IntoResponse>(
        self,
        pattern: &str,
        handler: impl Fn(&Request, &Params) -> R + 'static,
    ) -> Self {
        self.route("GET", pattern, handler)
    }

    /// A `POST` route.
    pub fn post<R: IntoResponse>(
        self,
        pattern: &str,
        handler: impl Fn(&Request, &Params) -> R + 'static,
    ) -> Self {
        self.route("POST", pattern, handler)
    }

    /// A `PUT` route.
    pub fn put<R: IntoResponse>(
        self,
        pattern: &str,
        handler: impl Fn(&Request, &Params) -> R + 'static,
    ) -> Self {
        self.route("PUT", pattern, handler)
    }

    /// A `DELETE` route.
    pub fn delete<R: IntoResponse>(
        self,
        pattern: &str,
        handler: impl Fn(&Request, &Params) -> R + 'static,
    ) -> Self {
        self.route("DELETE", pattern, handler)
    }

    /// Answers `request` with the first matching route's handler, or 404 /
    /// 405.
    pub fn serve(&self, request: IncomingRequest, out: ResponseOutparam) {
        let req = Request::new(request);
        let response = match self.find(&req.method(), req.path()) {
            Found::Route(route, params) => match &route.handler {
                Handler::Respond(handler) => handler(&req, &params),
                Handler::Stream(handler) => return handler(&req, &params, out),
            },
            _ if self.fallback.is_some() => {
                let fallback = self.fallback.as_ref().expect("checked");
                return fallback(&req, out);
            }
            Found::MethodNotAllowed(allowed) => HttpError::new(
                405,
                "method_not_allowed",
                format!("{} is not allowed here; allowed: {allowed}", req.method()),
            )
            .with_header("allow", allowed)
            .into_response(),
            Found::Nothing => {
                HttpError::not_found(format!("nothing at {}", req.path())).into_response()
            }
        };
        match &self.map_response {
            Some(map) => map(&req, response),
            None => response,
        }
        .send(out)
    }

    fn find(&self, method: &str, path: &str) -> Found<'_> {
        let mut allowed: Vec<&str> = Vec::new();
        for route in &self.routes {
            let Some(params) = matches(&route.pattern, path) else {
                continue;
            };
            // A `GET` route answers `HEAD` too (the server sends no body).
            if route.method == method || (method == "HEAD" && route.method == "GET") {
                return Found::Route(route, params);
            }
            let head = (route.method == "GET").then_some("HEAD");
            for m in std::iter::once(route.method).chain(head) {
                if !allowed.contains(&m) {
                    allowed.push(m);
                }
            }
        }
        match allowed.is_empty() {
            true => Found::Nothing,
            false => Found::MethodNotAllowed(allowed.join(", ")),
        }
    }
}

enum Found<'a> {
    Route(&'a Route, Params),
    MethodNotAllowed(String),
    Nothing,
}

fn parse(pattern: &str) -> Vec<Segment> {
    pattern
        .trim_start_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| match (s.strip_prefix(':'), s.strip_prefix('*')) {
            (Some(name), _) => Segment::Param(name.into()),
            (_, Some(name)) => Segment::Rest(name.into()),
            _ => Segment::Literal(s.into()),
        })
        .collect()
}

/// The parameters if `path` matches `pattern`.
fn matches(pattern: &[Segment], path: &str) -> Option<Params> {
    let mut rest = path.trim_start_matches('/');
    let mut params = Vec::new();
    for (i, segment) in pattern.iter().enumerate() {
        if let Segment::Rest(name) = segment {
            debug_assert_eq!(i + 1, pattern.len(), "*{name} must be last");
            params.push((name.clone(), percent_decode_path(rest)?));
            return Some(Params(params));
        }
        let (part, after) = rest.split_once('/').unwrap_or((rest, ""));
        match segment {
            Segment::Literal(l) if l == part => {}
            Segment::Param(name) if !part.is_empty() => {
                params.push((name.clone(), percent_decode_path(part)?));
            }
            _ => return None,
        }
        rest = after;
    }
    rest.is_empty().then_some(Params(params))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Option<Params> {
        Some(Params(
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        ))
    }

    #[test]
    fn patterns() {
        let p = parse("/items/:id");
        assert_eq!(matches(&p, "/items/42"), params(&[("id", "42")]));
        assert_eq!(matches(&p, "/items/a%20b"), params(&[("id", "a b")]));
        assert_eq!(matches(&p, "/items/"), None);
        assert_eq!(matches(&p, "/items"), None);
        assert_eq!(matches(&p, "/items/42/more"), None);
        assert_eq!(matches(&p, "/other/42"), None);

        let p = parse("/files/*path");
        assert_eq!(
            matches(&p, "/files/a/b.txt"),
            params(&[("path", "a/b.txt")])
        );
        assert_eq!(matches(&p, "/files/"), params(&[("path", "")]));
        assert_eq!(matches(&p, "/files"), params(&[("path", "")]));

        let p = parse("/");
        assert_eq!(matches(&p, "/"), params(&[]));
        assert_eq!(matches(&p, "/x"), None);
    }

    #[test]
    fn method_and_order() {
        let router = Router::new()
            .get("/a/:x", |_, _| Response::new(200))
            .put("/a/:x", |_, _| Response::new(200))
            .get("/a/special", |_, _| Response::new(200));
        match router.find("GET", "/a/special") {
            Found::Route(route, p) => {
                assert_eq!(route.method, "GET");
                assert_eq!(p.get("x"), Some("special"), "the first route wins");
            }
            _ => panic!("no route"),
        }
        match router.find("POST", "/a/1") {
            Found::MethodNotAllowed(allowed) => assert_eq!(allowed, "GET, HEAD, PUT"),
            _ => panic!("not a 405"),
        }
        assert!(
            matches!(router.find("HEAD", "/a/1"), Found::Route(r, _) if r.method == "GET"),
            "HEAD is answered by the GET route"
        );
        assert!(matches!(router.find("GET", "/b"), Found::Nothing));
    }

    #[test]
    fn errors_become_statuses() {
        let e: HttpError = crate::Error::TooLarge("big".into()).into();
        assert_eq!((e.status, e.code.as_str()), (413, "too_large"));
    }
}
