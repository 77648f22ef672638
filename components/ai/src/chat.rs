//! The chat routes: `POST /openai` and `/v1/chat/completions` (OpenAI's
//! format), `POST /anthropic` and `/v1/messages` (Anthropic's). A call is
//! routed by its model to the first provider that serves it, translated if
//! that provider speaks the other format, tried again or sent to the
//! provider's fallback as `call` and the breaker decide, and answered
//! whole (cached when deterministic) or streamed event by event.

use serde_json::{Value, json};
use spike_sdk::cache::KvCache;
use spike_sdk::http::{Request, Response, start_response, write_all};
use spike_sdk::kv::Namespace;
use spike_sdk::wasi::http::types::{OutgoingBody, ResponseOutparam};

use crate::call::{self, Answer, CallerHeaders};
use crate::config::{Format, Provider, Settings};
use crate::errors::{ApiError, Kind};
use crate::logs::Call;
use crate::redact::{Redactor, TextHold};
use crate::sse::Parser;
use crate::translate::{self, Flow, Translator, Usage};
use crate::upstream::{self, FetchError, Streaming};

/// The largest answer read whole.
const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;

/// The largest single event of a stream.
const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// What a routed call produced.
pub struct Routed<'a> {
    pub provider: &'a Provider,
    /// The model that answered (a fallback's, if it did).
    pub model: String,
    pub answer: Answer,
}

/// The request as the provider of `target` takes it.
fn upstream_body(
    client: Format,
    provider: &Provider,
    request: &Value,
    raw: &[u8],
    model: &str,
    asked: &str,
) -> Result<Vec<u8>, ApiError> {
    if provider.kind == client {
        if model == asked {
            return Ok(raw.to_vec());
        }
        let mut changed = request.clone();
        changed["model"] = json!(model);
        return Ok(changed.to_string().into_bytes());
    }
    let translated = match client {
        Format::OpenAi => translate::openai_request_to_anthropic(request, model)?,
        Format::Anthropic => translate::anthropic_request_to_openai(request, model)?,
    };
    Ok(translated.to_string().into_bytes())
}

/// Routes `request` (in `client`'s format, `raw` as it came) by its model:
/// to its provider, then to that provider's fallback if it cannot answer.
pub fn route<'a>(
    settings: &'a Settings,
    ns: Option<&Namespace>,
    client: Format,
    request: &Value,
    raw: &[u8],
    caller: &CallerHeaders,
    log: &mut Call,
) -> Result<Routed<'a>, ApiError> {
    let asked = log.model.clone();
    let primary = settings
        .provider_for(&asked)
        .ok_or_else(|| unknown_model(client, &asked))?;
    let mut targets = vec![(primary, asked.clone())];
    if let Some(fallback) = &primary.fallback
        && let Some(p) = settings.provider_for(fallback)
    {
        targets.push((p, fallback.clone()));
    }
    let deadline = upstream::after_ms(settings.deadline_ms);
    let mut first_error: Option<ApiError> = None;
    for (i, (provider, model)) in targets.iter().enumerate() {
        log.provider = provider.name.clone();
        if i > 0 {
            log.fallback_from = Some(asked.clone());
            log.model = model.clone();
        }
        let body = upstream_body(client, provider, request, raw, model, &asked)?;
        match call::chat(settings, ns, provider, &body, caller, deadline) {
            Ok(answer) => {
                log.attempts += answer.attempts;
                return Ok(Routed {
                    provider,
                    model: model.clone(),
                    answer,
                });
            }
            Err(e) => {
                log.attempts += e.attempts;
                // The first provider's error is the one to fix; a
                // fallback's failure is added to it.
                first_error = Some(match first_error {
                    None => e.error,
                    Some(mut first) => {
                        first.message +=
                            &format!("; the fallback {model} failed too: {}", e.error.message);
                        first
                    }
                });
                if !e.may_fall_back {
                    break;
                }
            }
        }
    }
    Err(first_error.unwrap_or_else(|| ApiError::new(Kind::Unavailable, "no provider answered")))
}

fn unknown_model(client: Format, model: &str) -> ApiError {
    let message = match client {
        Format::OpenAi => {
            format!("The model `{model}` does not exist or you do not have access to it.")
        }
        Format::Anthropic => format!("model: {model}"),
    };
    ApiError::new(Kind::NotFound, message)
}

/// The caller's key and Anthropic headers.
pub fn caller_headers(req: &Request) -> CallerHeaders {
    let key = req
        .header("x-api-key")
        .or_else(|| {
            req.header("authorization")
                .and_then(|a| a.strip_prefix("Bearer ").map(str::to_string))
        })
        .filter(|k| !k.is_empty());
    CallerHeaders {
        key,
        anthropic_version: req.header("anthropic-version"),
        anthropic_beta: req.header("anthropic-beta"),
    }
}

/// Checks what each format requires before anything is sent.
fn validate(client: Format, request: &Value) -> Result<String, ApiError> {
    if !request.is_object() {
        return Err(ApiError::invalid("the request body must be a JSON object"));
    }
    let model = match request.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(_) => return Err(ApiError::invalid("model must be a non-empty string")),
        None => {
            return Err(ApiError::invalid(match client {
                Format::OpenAi => "you must provide a model parameter",
                Format::Anthropic => "model: Field required",
            }));
        }
    };
    if !request.get("messages").is_some_and(Value::is_array) {
        return Err(ApiError::invalid(match client {
            Format::OpenAi => "messages: a list of messages is required",
            Format::Anthropic => "messages: Field required",
        }));
    }
    if client == Format::Anthropic && !request.get("max_tokens").is_some_and(Value::is_u64) {
        return Err(ApiError::invalid("max_tokens: Field required"));
    }
    Ok(model)
}

/// A request and its answer, as `/ai-logs` keeps them with `LOG_PROMPTS`.
pub type Exchange = (Vec<u8>, Vec<u8>);

/// Serves one chat call, filling in `log`. Returns the exchange when
/// prompts are logged.
pub fn handle(
    req: &Request,
    client: Format,
    settings: &Settings,
    ns: Option<&Namespace>,
    out: ResponseOutparam,
    log: &mut Call,
) -> Option<Exchange> {
    let (raw, request) = match read_request(req, settings) {
        Ok(read) => read,
        Err(e) => return finish_error(e, client, out, log),
    };
    let model = match validate(client, &request) {
        Ok(m) => m,
        Err(e) => return finish_error(e, client, out, log),
    };
    log.model = model.clone();
    log.stream = request.get("stream").and_then(Value::as_bool) == Some(true);
    if let Err(e) = crate::quota::check(settings, 1) {
        return finish_error(e, client, out, log);
    }
    let cache_key = (settings.cache_ttl_s > 0 && crate::cache::cacheable(&request))
        .then(|| crate::cache::key(client, &model, &raw));
    let cache = ns.map(|ns| KvCache::new(ns, settings.cache_ttl_s));
    if let (Some(cache), Some(key)) = (&cache, &cache_key)
        && let Some((answer, usage)) = crate::cache::get(cache, key)
    {
        log.cache_hit = true;
        log.status = 200;
        (log.tokens_in, log.tokens_out) = (usage.input, usage.output);
        log.provider = settings
            .provider_for(&model)
            .map(|p| p.name.clone())
            .unwrap_or_default();
        Response::json(200, String::new())
            .body(answer.clone())
            .header("x-cache", "hit")
            .send(out);
        return settings.log_prompts.then_some((raw, answer));
    }
    let caller = caller_headers(req);
    let routed = match route(settings, ns, client, &request, &raw, &caller, log) {
        Ok(r) => r,
        Err(e) => return finish_error(e, client, out, log),
    };
    let upstream_kind = routed.provider.kind;
    // A provider may echo its key anywhere in an answer (`redact`).
    let key = routed.answer.key().map(str::to_string);
    if routed.answer.response.status >= 400 {
        let e = routed
            .answer
            .into_error(upstream::after_ms(settings.deadline_ms));
        return finish_error(e, client, out, log);
    }
    let response = routed.answer.response;
    if log.stream {
        let include_usage = request
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true);
        let translator = Translator::new(client, upstream_kind, &routed.model, include_usage);
        let redactor = Redactor::new(key.as_deref());
        let sent = stream(
            response,
            translator,
            (&redactor, upstream_kind),
            client,
            settings,
            out,
            log,
        );
        return settings.log_prompts.then_some((raw, sent));
    }
    let deadline = upstream::after_ms(settings.deadline_ms);
    let body = match response.read_all(MAX_ANSWER_BYTES, deadline) {
        Ok(b) => b,
        Err(f) => return finish_error(read_failure(f), client, out, log),
    };
    let (body, usage) = match in_callers_format(body, client, upstream_kind, &routed.model) {
        Ok(translated) => translated,
        Err(e) => return finish_error(e, client, out, log),
    };
    (log.tokens_in, log.tokens_out) = (usage.input, usage.output);
    let body = Redactor::new(key.as_deref()).bytes(&body);
    log.status = 200;
    if let (Some(cache), Some(key)) = (&cache, &cache_key) {
        crate::cache::put(cache, key, &body, usage);
    }
    let kept = settings.log_prompts.then(|| (raw, body.clone()));
    let mut resp = Response::json(200, String::new()).body(body);
    if cache_key.is_some() {
        resp = resp.header("x-cache", "miss");
    }
    resp.send(out);
    kept
}

/// The request's body, and it read as JSON.
fn read_request(req: &Request, settings: &Settings) -> Result<(Vec<u8>, Value), ApiError> {
    let raw = req.body_bytes(settings.max_request_bytes).map_err(|_| {
        let kib = settings.max_request_bytes / 1024;
        ApiError::new(
            Kind::TooLarge,
            format!("the request is larger than {kib} KiB"),
        )
    })?;
    let request = serde_json::from_slice(&raw)
        .map_err(|e| ApiError::invalid(format!("the body is not valid JSON: {e}")))?;
    Ok((raw, request))
}

/// A provider's whole answer in the caller's format, and its usage.
fn in_callers_format(
    body: Vec<u8>,
    client: Format,
    upstream: Format,
    model: &str,
) -> Result<(Vec<u8>, Usage), ApiError> {
    let answer: Value = serde_json::from_slice(&body).map_err(|_| {
        ApiError::new(
            Kind::Upstream,
            "the provider sent an answer that is not JSON",
        )
    })?;
    let usage = Usage::read(&answer["usage"]).unwrap_or_default();
    let body = match (client, upstream) {
        (a, b) if a == b => body,
        (Format::OpenAi, _) => translate::anthropic_answer_to_openai(&answer, model)
            .to_string()
            .into_bytes(),
        (Format::Anthropic, _) => translate::openai_answer_to_anthropic(&answer, model)
            .to_string()
            .into_bytes(),
    };
    Ok((body, usage))
}

/// The stream's next chunk, due by `event_by`; or why there is none.
fn next_chunk(
    response: &Streaming,
    event_by: u64,
    settings: &Settings,
) -> Result<Vec<u8>, ApiError> {
    match response.next_chunk_by(event_by) {
        Ok(Some(chunk)) => Ok(chunk),
        Ok(None) => Err(ApiError::new(
            Kind::Upstream,
            "the provider's stream ended before its last event",
        )),
        Err(FetchError::Timeout) => Err(ApiError::new(
            Kind::Timeout,
            format!(
                "the provider's stream sent no whole event for {} ms",
                settings.stream_idle_ms
            ),
        )),
        Err(f) => Err(ApiError::new(
            Kind::Upstream,
            format!("the provider's stream broke off: {f}"),
        )),
    }
}

fn read_failure(f: FetchError) -> ApiError {
    match f {
        FetchError::Timeout => ApiError::new(
            Kind::Timeout,
            "the provider's answer did not arrive in time",
        ),
        FetchError::TooLarge => ApiError::new(Kind::Upstream, "the provider's answer is too large"),
        other => ApiError::new(
            Kind::Upstream,
            format!("reading the provider's answer: {other}"),
        ),
    }
}

fn finish_error(
    e: ApiError,
    client: Format,
    out: ResponseOutparam,
    log: &mut Call,
) -> Option<Exchange> {
    crate::answer(out, log, Err(e), client);
    None
}

/// Passes the provider's stream on event by event (translated if need be,
/// the key redacted from its bytes and from its text across events, which
/// come in the `upstream` format) until its last event, an error, `STREAM_IDLE_MS`
/// without a whole event (bytes that make none, a `:` at a time, do not
/// count) or the caller going away (which drops the provider's
/// connection: the provider sees the cancel). Returns what the caller got.
fn stream(
    response: Streaming,
    mut translator: Translator,
    (redactor, upstream): (&Redactor, Format),
    client: Format,
    settings: &Settings,
    out: ResponseOutparam,
    log: &mut Call,
) -> Vec<u8> {
    let headers = [
        (
            "content-type".to_string(),
            b"text/event-stream; charset=utf-8".to_vec(),
        ),
        ("cache-control".to_string(), b"no-cache".to_vec()),
        ("x-accel-buffering".to_string(), b"no".to_vec()),
    ];
    let (resp, body) = start_response(200, &headers);
    ResponseOutparam::set(out, Ok(resp));
    log.status = 200;
    let mut sent = Vec::new();
    let Ok(stream) = body.write() else {
        return sent;
    };
    let mut parser = Parser::new(MAX_EVENT_BYTES);
    let mut text = TextHold::new(redactor, upstream);
    let mut bytes = redactor.stream();
    let idle = settings.stream_idle_ms.saturating_mul(1_000_000);
    let mut event_by = upstream::now() + idle;
    let ended: Result<(), ApiError> = loop {
        let chunk = match next_chunk(&response, event_by, settings) {
            Ok(chunk) => chunk,
            Err(e) => break Err(e),
        };
        let events = match parser.push(&chunk) {
            Ok(events) => events,
            Err(_) => {
                break Err(ApiError::new(
                    Kind::Upstream,
                    "the provider sent an event too large to pass on",
                ));
            }
        };
        if !events.is_empty() {
            event_by = upstream::now() + idle;
        }
        let (ready_bytes, flow) = pass_on(events, &mut text, &mut translator, &mut bytes);
        if !ready_bytes.is_empty() {
            if write_all(&stream, &ready_bytes).is_err() {
                // The caller went away: returning drops the provider's
                // response, and with it the connection.
                log.status = 499;
                log.error = Some("the client went away".into());
                break Ok(());
            }
            if settings.log_prompts {
                sent.extend_from_slice(&ready_bytes);
            }
        }
        match flow {
            Flow::Continue => {}
            Flow::Done => {
                response.finish();
                break Ok(());
            }
            Flow::Failed(message) => {
                log.error = Some(message);
                break Ok(());
            }
        }
    };
    if let Err(e) = ended {
        // What was held back goes before the error, redacted.
        log.error = Some(e.message.clone());
        let mut last = Vec::new();
        for event in text.finish() {
            translator.event(&event, &mut last);
        }
        let mut out = bytes.push(&last);
        out.extend(bytes.finish());
        out.extend(redactor.bytes(e.stream_event(client).as_bytes()));
        let _ = write_all(&stream, &out);
    }
    log.tokens_in = translator.usage.input;
    log.tokens_out = translator.usage.output;
    drop(stream);
    let _ = OutgoingBody::finish(body, None);
    sent
}

/// One chunk's whole events on their way to the caller: released by the
/// text hold, translated until one ends the stream, redacted; the bytes
/// to send, and whether the stream goes on.
fn pass_on(
    events: Vec<crate::sse::Event>,
    text: &mut TextHold<'_>,
    translator: &mut Translator,
    bytes: &mut crate::redact::Stream<'_>,
) -> (Vec<u8>, Flow) {
    let mut flow = Flow::Continue;
    let mut translated = Vec::new();
    let ready: Vec<_> = events.into_iter().flat_map(|e| text.take(e)).collect();
    for event in &ready {
        flow = translator.event(event, &mut translated);
        if flow != Flow::Continue {
            break;
        }
    }
    let mut ready_bytes = bytes.push(&translated);
    if flow != Flow::Continue {
        ready_bytes.extend(bytes.finish());
    }
    (ready_bytes, flow)
}
