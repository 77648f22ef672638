//! `ai`: AI routing in front of the providers an operator configures, as
//! spike.land's AI integration served them, reaching providers only
//! through the host's outgoing HTTP (to the hosts the manifest grants).
//!
//! | route                                        | what                                         |
//! |----------------------------------------------|----------------------------------------------|
//! | `POST /openai`, `POST /v1/chat/completions`   | OpenAI chat completions (tools, streaming)    |
//! | `POST /anthropic`, `POST /v1/messages`        | Anthropic messages (tools, streaming)         |
//! | `GET /v1/models`                              | the configured models (Anthropic's shape when |
//! |                                              | the caller sends `anthropic-version`)         |
//! | `POST /summarize`                             | `{text}` → `{response}` with `DEFAULT_MODEL`   |
//! | `POST /whisper`, `POST /v1/audio/transcriptions` | audio transcription, the upload streamed  |
//! | `POST /replicate`                             | a Replicate prediction, polled until done     |
//! | `GET /ai-logs`                                | recent calls and each provider's breaker (operators) |
//!
//! A call is routed by its model (`config`), translated when its provider
//! speaks the other format (`translate`), retried and guarded by a breaker
//! (`call`, `breaker`), counted against a quota (`quota`), answered from
//! the cache when deterministic (`cache`) and logged (`logs`).

mod breaker;
mod cache;
mod call;
mod chat;
mod config;
mod errors;
mod logs;
mod quota;
mod redact;
mod replicate;
mod sse;
mod summarize;
mod translate;
mod upstream;
mod whisper;

use serde_json::{Value, json};
use spike_sdk::exports::wasi::http::incoming_handler::Guest;
use spike_sdk::http::{Request, Response};
use spike_sdk::kv::Namespace;
use spike_sdk::router::{Params, Router};
use spike_sdk::wasi::http::types::{IncomingRequest, ResponseOutparam};

use crate::config::{Format, Settings};
use crate::errors::{ApiError, Kind};
use crate::logs::Call;

/// The KV namespace the manifest grants: breakers, the cache, the log.
const NAMESPACE: &str = "ai";

struct Ai;

impl Guest for Ai {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let route = |route: Route| move |req: &Request, _: &Params, out| serve(req, route, out);
        Router::new()
            .streaming("POST", "/openai", route(Route::Chat(Format::OpenAi)))
            .streaming(
                "POST",
                "/v1/chat/completions",
                route(Route::Chat(Format::OpenAi)),
            )
            .streaming("POST", "/anthropic", route(Route::Chat(Format::Anthropic)))
            .streaming(
                "POST",
                "/v1/messages",
                route(Route::Chat(Format::Anthropic)),
            )
            .streaming("POST", "/summarize", route(Route::Summarize))
            .streaming("POST", "/whisper", route(Route::Whisper))
            .streaming("POST", "/v1/audio/transcriptions", route(Route::Whisper))
            .streaming("POST", "/replicate", route(Route::Replicate))
            .streaming("GET", "/v1/models", route(Route::Models))
            .streaming("GET", "/ai-logs", route(Route::Logs))
            // Errors in the shape of the API the caller speaks.
            .fallback(|req, out| {
                let (method, path) = (req.method(), req.path());
                let e = ApiError::new(Kind::NotFound, format!("no AI route is {method} {path}"));
                e.response(format_of(req)).send(out)
            })
            .serve(request, out)
    }
}

/// One call on `route`: settings, the namespace, the call itself, and its
/// line in the call log.
fn serve(req: &Request, route: Route, out: ResponseOutparam) {
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ai: {}", e.0);
            let e = ApiError::new(
                Kind::Unavailable,
                format!("the AI plugin is misconfigured: {}", e.0),
            );
            return e.response(format_of(req)).send(out);
        }
    };
    let ns = Namespace::open(NAMESPACE)
        .inspect_err(|e| {
            eprintln!(
                "ai: the KV namespace '{NAMESPACE}' is not granted: {}",
                e.message()
            )
        })
        .ok();
    let started = upstream::now();
    let mut span = spike_sdk::telemetry::Span::start("ai request");
    let mut log = Call {
        time_ms: spike_sdk::now_ms(),
        route: req.path().to_string(),
        ..Call::default()
    };
    let exchange = match route {
        Route::Chat(format) => chat::handle(req, format, &settings, ns.as_ref(), out, &mut log),
        Route::Summarize => summarize::handle(req, &settings, ns.as_ref(), out, &mut log),
        Route::Whisper => whisper::handle(req, &settings, ns.as_ref(), out, &mut log),
        Route::Replicate => replicate::handle(req, &settings, out, &mut log),
        Route::Models => return models(req, &settings).send(out),
        Route::Logs => return ai_logs(req, &settings, ns.as_ref()).send(out),
    };
    log.latency_ms = (upstream::now() - started) / 1_000_000;
    if let Some(ns) = &ns {
        // No key in any form reaches the log (what the caller got was
        // redacted already; an error's text and the prompt are here).
        let redactor = redact::Redactor::for_request(&settings, req);
        log.error = log.error.map(|e| redactor.text(&e));
        let kept = exchange.map(|(q, a)| (redactor.bytes(&q), redactor.bytes(&a)));
        let kept = kept.as_ref().map(|(q, a)| (&q[..], &a[..]));
        report(&mut span, &log);
        logs::record(ns, log, settings.log_ttl_s, kept);
    } else {
        report(&mut span, &log);
    }
}

/// What one call was, as the span of its request and the plugin's
/// metrics (`spike_guest_ai_*` in `/metrics`): provider, model, tokens in
/// and out, cache hit, retries. Error texts were redacted already.
fn report(span: &mut spike_sdk::telemetry::Span, log: &Call) {
    use spike_sdk::telemetry;
    span.attr("ai.route", log.route.as_str())
        .attr("ai.provider", log.provider.as_str())
        .attr("ai.model", log.model.as_str())
        .attr("ai.status", u64::from(log.status))
        .attr("ai.tokens_in", log.tokens_in)
        .attr("ai.tokens_out", log.tokens_out)
        .attr("ai.cache_hit", log.cache_hit)
        .attr("ai.attempts", log.attempts)
        .attr("ai.stream", log.stream);
    if let Some(error) = &log.error {
        span.error(error);
    }
    let provider = log.provider.as_str();
    let cache = if log.cache_hit { "hit" } else { "miss" };
    let outcome = if log.status < 400 { "ok" } else { "error" };
    telemetry::count(
        "ai_requests",
        1,
        &[
            ("provider", provider),
            ("cache", cache),
            ("outcome", outcome),
        ],
    );
    for (direction, tokens) in [("in", log.tokens_in), ("out", log.tokens_out)] {
        if tokens > 0 {
            let labels = [("provider", provider), ("direction", direction)];
            telemetry::count("ai_tokens", tokens, &labels);
        }
    }
    if log.attempts > 1 {
        let retries = u64::from(log.attempts - 1);
        telemetry::count("ai_retries", retries, &[("provider", provider)]);
    }
    let seconds = log.latency_ms as f64 / 1000.0;
    let labels = [("provider", provider), ("cache", cache)];
    telemetry::histogram_seconds("ai_latency_seconds", seconds, &labels);
}

spike_sdk::export!(Ai);

/// Sends `result` (an error in `format`'s shape), noting its status and
/// any error in `log`.
fn answer(
    out: ResponseOutparam,
    log: &mut Call,
    result: Result<Response, ApiError>,
    format: Format,
) {
    match result {
        Ok(resp) => {
            log.status = 200;
            resp.send(out);
        }
        Err(e) => {
            log.status = e.status;
            log.error = Some(e.message.clone());
            e.response(format).send(out);
        }
    }
}

#[derive(Clone, Copy)]
enum Route {
    Chat(Format),
    Summarize,
    Whisper,
    Replicate,
    Models,
    Logs,
}

/// The format of errors for a request that reached no handler: Anthropic's
/// for callers that say they speak it.
fn format_of(req: &Request) -> Format {
    if req.header("anthropic-version").is_some() || req.path().starts_with("/anthropic") {
        Format::Anthropic
    } else {
        Format::OpenAi
    }
}

/// `GET /v1/models`: every model a provider names exactly.
fn models(req: &Request, settings: &Settings) -> Response {
    let models: Vec<(&str, &str)> = settings
        .providers
        .iter()
        .flat_map(|p| p.listed_models().map(move |m| (m, p.name.as_str())))
        .collect();
    let body = if format_of(req) == Format::Anthropic {
        let data: Vec<Value> = models
            .iter()
            .map(|(id, _)| json!({"type": "model", "id": id, "display_name": id, "created_at": "1970-01-01T00:00:00Z"}))
            .collect();
        json!({"data": data, "has_more": false,
               "first_id": models.first().map(|m| m.0), "last_id": models.last().map(|m| m.0)})
    } else {
        let data: Vec<Value> = models
            .iter()
            .map(
                |(id, owner)| json!({"id": id, "object": "model", "created": 0, "owned_by": owner}),
            )
            .collect();
        json!({"object": "list", "data": data})
    };
    Response::json(200, body.to_string())
}

/// `GET /ai-logs?limit=N`: the newest calls (100 by default, at most
/// 1000) and the state of each provider's breaker; for the operator (its
/// route says `auth = "operator"`) and the subjects `LOG_READERS` lists.
/// What every caller asked is no other caller's to read.
fn ai_logs(req: &Request, settings: &Settings, ns: Option<&Namespace>) -> Response {
    let reader = spike_sdk::identity::current();
    let may_read = reader.as_ref().is_some_and(|c| {
        spike_sdk::access::is_operator(c) || settings.log_readers.contains(&c.subject)
    });
    if !may_read {
        let e = ApiError::new(
            Kind::Permission,
            "the call log is for the operator (auth = \"operator\" on its route) and the \
             subjects LOG_READERS lists",
        );
        return e.response(Format::OpenAi);
    }
    let Some(ns) = ns else {
        let e = ApiError::new(
            Kind::Unavailable,
            format!("the KV namespace '{NAMESPACE}' is not granted"),
        );
        return e.response(Format::OpenAi);
    };
    let limit = match req.query_param("limit").map(|l| l.parse::<u32>()) {
        None => 100,
        Some(Ok(n)) if (1..=1000).contains(&n) => n,
        Some(_) => {
            return ApiError::invalid("limit must be a number from 1 to 1000")
                .response(Format::OpenAi);
        }
    };
    let calls = match logs::recent(ns, limit, settings.log_prompts) {
        Ok(calls) => calls,
        Err(e) => return ApiError::new(Kind::Unavailable, e.message()).response(Format::OpenAi),
    };
    let breakers: Vec<Value> = settings
        .providers
        .iter()
        .map(|p| breaker::Breaker::new(Some(ns), &p.name, settings.breaker).state())
        .collect();
    Response::json(
        200,
        json!({"calls": calls, "breakers": breakers}).to_string(),
    )
}
