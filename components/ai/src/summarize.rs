//! `POST /summarize`: `{"text": "…"}` → `{"response": "…"}`, a summary by
//! the configured `DEFAULT_MODEL` through the same routing, retries and
//! breaker as the chat routes. Errors are in OpenAI's shape.

use serde_json::{Value, json};
use spike_sdk::http::{Request, Response};
use spike_sdk::kv::Namespace;
use spike_sdk::wasi::http::types::ResponseOutparam;

use crate::call::CallerHeaders;
use crate::chat::{self, Exchange};
use crate::config::{Format, Settings};
use crate::errors::{ApiError, Kind};
use crate::logs::Call;
use crate::translate::{self, Usage};
use crate::upstream;

const INSTRUCTION: &str =
    "Summarize the user's text concisely, keeping its key points. Answer with the summary only.";

pub fn handle(
    req: &Request,
    settings: &Settings,
    ns: Option<&Namespace>,
    out: ResponseOutparam,
    log: &mut Call,
) -> Option<Exchange> {
    let (result, kept) = match summarize(req, settings, ns, log) {
        Ok((raw, text)) => {
            let body = json!({"response": text}).to_string();
            let kept = settings
                .log_prompts
                .then(|| (raw, body.clone().into_bytes()));
            (Ok(Response::json(200, body)), kept)
        }
        Err(e) => (Err(e), None),
    };
    crate::answer(out, log, result, Format::OpenAi);
    kept
}

fn summarize(
    req: &Request,
    settings: &Settings,
    ns: Option<&Namespace>,
    log: &mut Call,
) -> Result<(Vec<u8>, String), ApiError> {
    let raw = req
        .body_bytes(settings.max_request_bytes)
        .map_err(|_| ApiError::new(Kind::TooLarge, "the text is too large"))?;
    let input: Value = spike_sdk::json::parse(&raw).map_err(ApiError::from_http)?;
    let text = input
        .get("text")
        .and_then(Value::as_str)
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| ApiError::invalid("text is required: {\"text\": \"…\"}"))?;
    let model = settings.default_model.clone().ok_or_else(|| {
        ApiError::new(
            Kind::Unavailable,
            "no model summarizes: set DEFAULT_MODEL in the manifest",
        )
    })?;
    crate::quota::check(settings, 1)?;
    log.model = model.clone();
    let request = json!({"model": model, "messages": [
        {"role": "system", "content": INSTRUCTION},
        {"role": "user", "content": text},
    ]});
    let body = request.to_string().into_bytes();
    let routed = chat::route(
        settings,
        ns,
        Format::OpenAi,
        &request,
        &body,
        &CallerHeaders::default(),
        log,
    )?;
    let deadline = upstream::after_ms(settings.deadline_ms);
    let key = routed.answer.key().map(str::to_string);
    if routed.answer.response.status >= 400 {
        return Err(routed.answer.into_error(deadline));
    }
    let answer = routed
        .answer
        .response
        .read_all(8 * 1024 * 1024, deadline)
        .map_err(|f| {
            ApiError::new(
                Kind::Upstream,
                format!("reading the provider's answer: {f}"),
            )
        })?;
    let answer: Value = serde_json::from_slice(&answer).map_err(|_| {
        ApiError::new(
            Kind::Upstream,
            "the provider sent an answer that is not JSON",
        )
    })?;
    let answer = match routed.provider.kind {
        Format::OpenAi => answer,
        Format::Anthropic => translate::anthropic_answer_to_openai(&answer, &routed.model),
    };
    let usage = Usage::read(&answer["usage"]).unwrap_or_default();
    (log.tokens_in, log.tokens_out) = (usage.input, usage.output);
    let summary = answer["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default();
    let summary = crate::redact::Redactor::new(key.as_deref()).text(summary);
    Ok((raw, summary))
}
