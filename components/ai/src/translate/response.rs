//! Whole (non-streaming) answers from one format to the other: the text,
//! tool calls, the stop reason and the token counts.

use serde_json::{Value, json};

/// Tokens in and out, as either API counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
}

impl Usage {
    /// The usage of an answer in either format (`prompt_tokens` /
    /// `completion_tokens`, or `input_tokens` / `output_tokens`).
    pub fn read(usage: &Value) -> Option<Self> {
        let n = |a: &str, b: &str| {
            usage
                .get(a)
                .or_else(|| usage.get(b))
                .and_then(Value::as_u64)
        };
        let input = n("prompt_tokens", "input_tokens");
        let output = n("completion_tokens", "output_tokens");
        (input.is_some() || output.is_some()).then(|| Self {
            input: input.unwrap_or(0),
            output: output.unwrap_or(0),
        })
    }

    pub fn openai(self) -> Value {
        json!({"prompt_tokens": self.input, "completion_tokens": self.output,
               "total_tokens": self.input + self.output})
    }
}

/// OpenAI's `finish_reason` as Anthropic's `stop_reason`.
pub fn stop_reason(finish: &str) -> &'static str {
    match finish {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// Anthropic's `stop_reason` as OpenAI's `finish_reason`.
pub fn finish_reason(stop: &str) -> &'static str {
    match stop {
        "max_tokens" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

/// The seconds since the Unix epoch, for `created`.
pub fn unix_s() -> u64 {
    spike_sdk::now_ms() / 1000
}

/// Parses a tool call's arguments; what is not a JSON object becomes an
/// empty input rather than failing the whole answer.
pub fn tool_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({}),
    }
}

/// An OpenAI chat completion as an Anthropic message.
pub fn openai_to_anthropic(answer: &Value, model: &str) -> Value {
    let choice = &answer["choices"][0];
    let message = &choice["message"];
    let mut content = Vec::new();
    if let Some(text) = message["content"].as_str().filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": text}));
    }
    for call in message["tool_calls"].as_array().into_iter().flatten() {
        content.push(json!({
            "type": "tool_use",
            "id": call["id"],
            "name": call["function"]["name"],
            "input": tool_input(call["function"]["arguments"].as_str().unwrap_or("{}")),
        }));
    }
    let usage = Usage::read(&answer["usage"]).unwrap_or_default();
    let id = answer["id"].as_str().unwrap_or("unknown");
    json!({
        "id": format!("msg_{id}"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(choice["finish_reason"].as_str().unwrap_or("stop")),
        "stop_sequence": null,
        "usage": {"input_tokens": usage.input, "output_tokens": usage.output},
    })
}

/// An Anthropic message as an OpenAI chat completion.
pub fn anthropic_to_openai(answer: &Value, model: &str) -> Value {
    let blocks = answer["content"].as_array().cloned().unwrap_or_default();
    let text: String = blocks
        .iter()
        .filter(|b| b["type"] == "text")
        .filter_map(|b| b["text"].as_str())
        .collect();
    let calls: Vec<Value> = blocks
        .iter()
        .filter(|b| b["type"] == "tool_use")
        .map(|b| {
            json!({"id": b["id"], "type": "function",
                   "function": {"name": b["name"], "arguments": b["input"].to_string()}})
        })
        .collect();
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) },
        "refusal": null,
    });
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    let usage = Usage::read(&answer["usage"]).unwrap_or_default();
    json!({
        "id": answer["id"].as_str().map_or_else(|| "chatcmpl-unknown".into(), |id| format!("chatcmpl-{id}")),
        "object": "chat.completion",
        "created": unix_s(),
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(answer["stop_reason"].as_str().unwrap_or("end_turn")),
        }],
        "usage": usage.openai(),
    })
}
