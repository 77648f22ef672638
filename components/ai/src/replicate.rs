//! `POST /replicate`: a Replicate prediction, created and then polled until
//! it is done, within `REPLICATE_TIMEOUT_MS`.
//!
//! The body is Replicate's own: `{"version": "…", "input": {…}}`, or
//! `{"model": "owner/name", "input": {…}}` for an official model. The
//! answer is the finished prediction as Replicate describes it (its
//! `status` says whether it `succeeded`, `failed` or was `canceled`). One
//! that is not done in time is canceled and answered with a 504.

use serde_json::{Value, json};
use spike_sdk::http::{Request, Response};
use spike_sdk::wasi::http::types::{Method, ResponseOutparam};

use crate::call::scrub;
use crate::chat::Exchange;
use crate::config::{Format, Settings};
use crate::errors::{ApiError, Kind};
use crate::logs::Call;
use crate::upstream::{self, Instant};

const MAX_ANSWER: usize = 4 * 1024 * 1024;

pub fn handle(
    req: &Request,
    settings: &Settings,
    out: ResponseOutparam,
    log: &mut Call,
) -> Option<Exchange> {
    log.provider = "replicate".into();
    let result = predict(req, settings, log).map(|p| Response::json(200, p.to_string()));
    crate::answer(out, log, result, Format::OpenAi);
    None
}

struct Replicate<'a> {
    base: &'a str,
    key: Option<String>,
    idle_ms: u64,
}

impl Replicate<'_> {
    /// One exchange with Replicate; its answer as JSON, or its error.
    fn exchange(
        &self,
        method: Method,
        url: &str,
        body: &[u8],
        deadline: Instant,
    ) -> Result<Value, ApiError> {
        let mut headers = vec![("content-type".to_string(), b"application/json".to_vec())];
        if let Some(key) = &self.key {
            headers.push(("authorization".into(), format!("Bearer {key}").into_bytes()));
        }
        let response = upstream::request(method, url, &headers, deadline, self.idle_ms)
            .and_then(|fetch| fetch.body(body).start())
            .map_err(|e| ApiError::unanswered("Replicate", &e))?;
        let answer = response.read_all(MAX_ANSWER, deadline).map_err(|f| {
            ApiError::new(Kind::Upstream, format!("reading Replicate's answer: {f}"))
        })?;
        let answer = scrub(&answer, self.key.as_deref());
        if response.status >= 400 {
            let mut e = ApiError::from_upstream(response.status, &answer);
            // Replicate's errors are `{"title", "detail", "status"}`.
            if let Ok(v) = serde_json::from_slice::<Value>(&answer)
                && let Some(detail) = v["detail"].as_str()
            {
                e.message = detail.to_string();
            }
            return Err(e);
        }
        serde_json::from_slice(&answer)
            .map_err(|_| ApiError::new(Kind::Upstream, "Replicate sent an answer that is not JSON"))
    }

    fn prediction_url(&self, id: &str) -> String {
        format!("{}/predictions/{id}", self.base)
    }
}

fn predict(req: &Request, settings: &Settings, log: &mut Call) -> Result<Value, ApiError> {
    let input: Value = req
        .json(settings.max_request_bytes)
        .map_err(ApiError::from_http)?;
    let Some(fields) = input.get("input").filter(|i| i.is_object()) else {
        return Err(ApiError::invalid("input is required and must be an object"));
    };
    let config = &settings.replicate;
    let base = config.base_url.trim_end_matches('/');
    let (path, body) = match (
        input.get("version").and_then(Value::as_str),
        input.get("model").and_then(Value::as_str),
    ) {
        (Some(version), _) => {
            log.model = version.to_string();
            (
                "/predictions".to_string(),
                json!({"version": version, "input": fields}),
            )
        }
        (None, Some(model)) if model.split('/').count() == 2 && !model.contains("..") => {
            log.model = model.to_string();
            (
                format!("/models/{model}/predictions"),
                json!({"input": fields}),
            )
        }
        _ => {
            return Err(ApiError::invalid(
                "name a `version`, or a `model` as owner/name",
            ));
        }
    };
    crate::quota::check(settings, 1)?;
    let key = match &config.api_key_secret {
        None => None,
        Some(name) => Some(spike_sdk::access::secret(name).map_err(ApiError::from_http)?),
    };
    let replicate = Replicate {
        base,
        key,
        idle_ms: settings.stream_idle_ms,
    };
    let deadline = upstream::after_ms(config.timeout_ms);
    log.attempts = 1;
    let created = replicate.exchange(
        Method::Post,
        &format!("{base}{path}"),
        body.to_string().as_bytes(),
        deadline,
    )?;
    let id = created["id"]
        .as_str()
        .filter(|id| {
            !id.is_empty()
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
        .ok_or_else(|| ApiError::new(Kind::Upstream, "Replicate's prediction has no usable id"))?
        .to_string();
    let mut prediction = created;
    loop {
        if matches!(
            prediction["status"].as_str(),
            Some("succeeded" | "failed" | "canceled")
        ) {
            return Ok(prediction);
        }
        if upstream::ms_until(deadline) <= config.poll_ms {
            // Not done in time: stop paying for it.
            let cancel = format!("{}/cancel", replicate.prediction_url(&id));
            let _ = replicate.exchange(Method::Post, &cancel, b"", upstream::after_ms(5_000));
            return Err(ApiError::new(
                Kind::Timeout,
                format!(
                    "the prediction {id} did not finish within {} ms and was canceled",
                    config.timeout_ms
                ),
            ));
        }
        upstream::sleep_ms(config.poll_ms);
        prediction =
            replicate.exchange(Method::Get, &replicate.prediction_url(&id), b"", deadline)?;
    }
}
