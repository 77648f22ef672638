//! `POST /whisper` (and `/v1/audio/transcriptions`): a multipart upload
//! with an audio `file`, passed to the provider's
//! `/audio/transcriptions` in OpenAI's audio API format, streamed: only the
//! form's first fields are read (to route by their `model`); the file goes
//! on as it arrives, copied by the host, never held whole.
//!
//! The upload cannot be replayed, so a transcription is tried once (the
//! breaker still counts it); the model is the form's `model` if it comes
//! before the file, else `AUDIO_MODEL`.

use spike_sdk::http::{Request, Response};
use spike_sdk::kv::Namespace;
use spike_sdk::wasi::http::types::{Method, ResponseOutparam};
use spike_sdk::wasi::io::streams::StreamError;

use crate::breaker::Breaker;
use crate::call::{self, scrub};
use crate::chat::Exchange;
use crate::config::{Format, Settings};
use crate::errors::{ApiError, Kind};
use crate::logs::Call;
use crate::upstream;

/// How much of the form is read, at most, looking for its `model`.
const MAX_PREFIX: usize = 64 * 1024;

/// The largest transcription read back.
const MAX_ANSWER: usize = 8 * 1024 * 1024;

pub fn handle(
    req: &Request,
    settings: &Settings,
    ns: Option<&Namespace>,
    out: ResponseOutparam,
    log: &mut Call,
) -> Option<Exchange> {
    let result = transcribe(req, settings, ns, log);
    crate::answer(out, log, result, Format::OpenAi);
    None
}

fn transcribe(
    req: &Request,
    settings: &Settings,
    ns: Option<&Namespace>,
    log: &mut Call,
) -> Result<Response, ApiError> {
    let content_type = req.header("content-type").unwrap_or_default();
    let boundary = boundary(&content_type).ok_or_else(|| {
        ApiError::invalid("send the audio as multipart/form-data with a `file` field")
    })?;
    crate::quota::check(settings, 1)?;
    let (_body, stream) = req
        .body_stream()
        .ok_or_else(|| ApiError::invalid("the request has no body"))?;
    let mut prefix = Vec::new();
    let model = loop {
        match scan(&prefix, &boundary) {
            Scan::Model(m) => break m,
            Scan::NoModel => break settings.audio_model.clone(),
            Scan::NeedMore if prefix.len() >= MAX_PREFIX => break settings.audio_model.clone(),
            Scan::NeedMore => match stream.blocking_read(16 * 1024) {
                Ok(chunk) => prefix.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break settings.audio_model.clone(),
                Err(StreamError::LastOperationFailed(_)) => {
                    return Err(ApiError::invalid("the upload ended before it was complete"));
                }
            },
        }
    };
    log.model = model.clone();
    let provider = settings.provider_for(&model).ok_or_else(|| {
        ApiError::new(
            Kind::NotFound,
            format!("The model `{model}` does not exist"),
        )
    })?;
    log.provider = provider.name.clone();
    if provider.kind != Format::OpenAi {
        return Err(ApiError::invalid(format!(
            "model `{model}` is served by '{}', which has no audio API",
            provider.name
        )));
    }
    let breaker = Breaker::new(ns, &provider.name, settings.breaker);
    let admission = breaker.admit_call()?;
    let key = call::upstream_key(provider, &crate::chat::caller_headers(req))?;
    let mut headers = vec![("content-type".to_string(), content_type.into_bytes())];
    if let Some(len) = req.header("content-length") {
        headers.push(("content-length".into(), len.into_bytes()));
    }
    if let Some(key) = &key {
        headers.push(("authorization".into(), format!("Bearer {key}").into_bytes()));
    }
    let url = call::url(provider, "/audio/transcriptions");
    let deadline = upstream::after_ms(settings.deadline_ms);
    log.attempts = 1;
    let sent = upstream::request(
        Method::Post,
        &url,
        &headers,
        deadline,
        settings.stream_idle_ms,
    )
    .and_then(|fetch| fetch.body(prefix).start_streaming(&stream));
    let response = match sent {
        Ok(r) => r,
        Err(e) => {
            breaker.unanswered(admission, &e);
            return Err(ApiError::unanswered(
                &format!("provider '{}'", provider.name),
                &e,
            ));
        }
    };
    breaker.answered(admission, response.status);
    let answer = response
        .read_all(MAX_ANSWER, deadline)
        .map_err(|f| ApiError::new(Kind::Upstream, format!("reading the transcription: {f}")))?;
    if response.status >= 400 {
        return Err(ApiError::from_upstream(
            response.status,
            &scrub(&answer, key.as_deref()),
        ));
    }
    let kind = response
        .header("content-type")
        .unwrap_or("application/json")
        .to_string();
    Ok(Response::new(response.status)
        .header("content-type", kind)
        .body(scrub(&answer, key.as_deref())))
}

/// The boundary of a `multipart/form-data` content type.
fn boundary(content_type: &str) -> Option<String> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_string())
            .filter(|b| !b.is_empty())
    })
}

#[derive(Debug, PartialEq)]
enum Scan {
    Model(String),
    /// The file (or the end of the form) comes before any `model`.
    NoModel,
    NeedMore,
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// Looks through the start of a form for its `model` field.
fn scan(prefix: &[u8], boundary: &str) -> Scan {
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let Some(mut at) = find(prefix, delimiter, 0) else {
        return Scan::NeedMore;
    };
    loop {
        let after = at + delimiter.len();
        match prefix.get(after..after + 2) {
            None => return Scan::NeedMore,
            Some(b"--") => return Scan::NoModel,
            Some(_) => {}
        }
        let Some(head_end) = find(prefix, b"\r\n\r\n", after) else {
            return Scan::NeedMore;
        };
        let head = String::from_utf8_lossy(&prefix[after..head_end]).to_ascii_lowercase();
        let value_start = head_end + 4;
        if head.contains("filename=") || head.contains("name=\"file\"") {
            return Scan::NoModel;
        }
        let mut end_marker = b"\r\n".to_vec();
        end_marker.extend_from_slice(delimiter);
        let Some(value_end) = find(prefix, &end_marker, value_start) else {
            return Scan::NeedMore;
        };
        if head.contains("name=\"model\"") {
            let value = String::from_utf8_lossy(&prefix[value_start..value_end]);
            return Scan::Model(value.trim().to_string());
        }
        at = value_end + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_is_read_before_the_file() {
        let form = b"--XX\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-large\r\n--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nRIFF";
        assert_eq!(scan(form, "XX"), Scan::Model("whisper-large".into()));
        assert_eq!(scan(&form[..30], "XX"), Scan::NeedMore);
        let file_first = b"--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nRIFF";
        assert_eq!(scan(file_first, "XX"), Scan::NoModel);
        let other_then_model = b"--XX\r\nContent-Disposition: form-data; name=\"language\"\r\n\r\nen\r\n--XX\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nm\r\n--XX--";
        assert_eq!(scan(other_then_model, "XX"), Scan::Model("m".into()));
        assert_eq!(scan(b"--XX--\r\n", "XX"), Scan::NoModel);
    }

    #[test]
    fn boundaries() {
        assert_eq!(
            boundary("multipart/form-data; boundary=----abc").as_deref(),
            Some("----abc")
        );
        assert_eq!(
            boundary("Multipart/Form-Data; charset=utf-8; boundary=\"q\"").as_deref(),
            Some("q")
        );
        assert_eq!(boundary("application/json"), None);
        assert_eq!(boundary("multipart/form-data"), None);
    }
}
