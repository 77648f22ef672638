//! Requests from one format to the other: messages, the system prompt,
//! images, tools, tool calls and their results, limits and stops.

use serde_json::{Map, Value, json};

use crate::errors::ApiError;

/// Anthropic requires `max_tokens`; OpenAI's callers often leave it out.
const DEFAULT_MAX_TOKENS: u64 = 4096;

fn object(v: &Value, what: &str) -> Result<Map<String, Value>, ApiError> {
    v.as_object()
        .cloned()
        .ok_or_else(|| ApiError::invalid(format!("{what} must be an object")))
}

/// The text of an OpenAI `content` (a string or text parts).
fn openai_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// An OpenAI user `content` as Anthropic content blocks.
fn openai_user_blocks(content: &Value) -> Result<Vec<Value>, ApiError> {
    match content {
        Value::String(s) => Ok(vec![json!({"type": "text", "text": s})]),
        Value::Array(parts) => parts
            .iter()
            .map(|part| match part.get("type").and_then(Value::as_str) {
                Some("text") => Ok(
                    json!({"type": "text", "text": part.get("text").cloned().unwrap_or(json!(""))}),
                ),
                Some("image_url") => {
                    let url = part
                        .pointer("/image_url/url")
                        .and_then(Value::as_str)
                        .ok_or_else(|| {
                            ApiError::invalid("an image_url part needs image_url.url")
                        })?;
                    Ok(json!({"type": "image", "source": image_source(url)}))
                }
                other => Err(ApiError::invalid(format!(
                    "content parts of type {} cannot be sent to this model",
                    other.unwrap_or("(none)")
                ))),
            })
            .collect(),
        Value::Null => Ok(Vec::new()),
        _ => Err(ApiError::invalid(
            "content must be a string or an array of parts",
        )),
    }
}

/// A data URL as a base64 source, any other URL as a URL source.
fn image_source(url: &str) -> Value {
    if let Some(rest) = url.strip_prefix("data:")
        && let Some((media_type, data)) = rest.split_once(";base64,")
    {
        return json!({"type": "base64", "media_type": media_type, "data": data});
    }
    json!({"type": "url", "url": url})
}

/// Appends `blocks` as a message of `role`, merged into the last message if
/// it has the same role (Anthropic wants the roles to alternate).
fn push_message(messages: &mut Vec<Value>, role: &str, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    if let Some(last) = messages.last_mut()
        && last["role"] == role
        && let Some(content) = last["content"].as_array_mut()
    {
        content.extend(blocks);
        return;
    }
    messages.push(json!({"role": role, "content": blocks}));
}

/// An OpenAI chat completions request as an Anthropic messages request
/// for `model`.
pub fn openai_to_anthropic(req: &Value, model: &str) -> Result<Value, ApiError> {
    let req = object(req, "the request")?;
    let input = req
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::invalid("messages is required and must be an array"))?;
    if req.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Err(ApiError::invalid("n > 1 is not supported by this model"));
    }
    let mut system = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    for m in input {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::invalid("each message needs a role"))?;
        let content = m.get("content").unwrap_or(&Value::Null);
        match role {
            "system" | "developer" => system.push(openai_text(content)),
            "user" => push_message(&mut messages, "user", openai_user_blocks(content)?),
            "assistant" => {
                let mut blocks = Vec::new();
                let text = openai_text(content);
                if !text.is_empty() {
                    blocks.push(json!({"type": "text", "text": text}));
                }
                for call in m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let arguments = call
                        .pointer("/function/arguments")
                        .and_then(Value::as_str)
                        .unwrap_or("{}");
                    let input: Value =
                        serde_json::from_str(arguments).unwrap_or_else(|_| json!({}));
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": call.get("id").cloned().unwrap_or(json!("")),
                        "name": call.pointer("/function/name").cloned().unwrap_or(json!("")),
                        "input": input,
                    }));
                }
                push_message(&mut messages, "assistant", blocks);
            }
            "tool" => {
                let id = m
                    .get("tool_call_id")
                    .cloned()
                    .ok_or_else(|| ApiError::invalid("a tool message needs tool_call_id"))?;
                let block = json!({"type": "tool_result", "tool_use_id": id, "content": openai_text(content)});
                push_message(&mut messages, "user", vec![block]);
            }
            other => {
                return Err(ApiError::invalid(format!(
                    "messages of role '{other}' are not supported"
                )));
            }
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    out.insert("messages".into(), Value::Array(messages));
    let system = system.join("\n\n");
    if !system.is_empty() {
        out.insert("system".into(), json!(system));
    }
    let max_tokens = req
        .get("max_completion_tokens")
        .or_else(|| req.get("max_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_MAX_TOKENS);
    out.insert("max_tokens".into(), json!(max_tokens));
    if let Some(t) = req.get("temperature").and_then(Value::as_f64) {
        // OpenAI's range is 0 to 2, Anthropic's 0 to 1.
        out.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    }
    if let Some(p) = req.get("top_p") {
        out.insert("top_p".into(), p.clone());
    }
    match req.get("stop") {
        Some(Value::String(s)) => {
            out.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(list)) => {
            out.insert("stop_sequences".into(), json!(list));
        }
        _ => {}
    }
    if req.get("stream").and_then(Value::as_bool) == Some(true) {
        out.insert("stream".into(), json!(true));
    }
    if let Some(tools) = req.get("tools").and_then(Value::as_array) {
        let tools = tools
            .iter()
            .map(|t| {
                let f = t
                    .get("function")
                    .ok_or_else(|| ApiError::invalid("only function tools are supported"))?;
                let mut tool = Map::new();
                tool.insert("name".into(), f.get("name").cloned().unwrap_or(json!("")));
                if let Some(d) = f.get("description") {
                    tool.insert("description".into(), d.clone());
                }
                let schema = f
                    .get("parameters")
                    .cloned()
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
                tool.insert("input_schema".into(), schema);
                Ok(Value::Object(tool))
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        out.insert("tools".into(), Value::Array(tools));
    }
    let parallel = req.get("parallel_tool_calls").and_then(Value::as_bool);
    let choice = match req.get("tool_choice") {
        None => None,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Some(json!({"type": "auto"})),
            "none" => Some(json!({"type": "none"})),
            "required" => Some(json!({"type": "any"})),
            other => {
                return Err(ApiError::invalid(format!(
                    "tool_choice '{other}' is not known"
                )));
            }
        },
        Some(c) => {
            let name = c
                .pointer("/function/name")
                .ok_or_else(|| ApiError::invalid("tool_choice must name a function"))?;
            Some(json!({"type": "tool", "name": name}))
        }
    };
    let choice = match (choice, parallel) {
        (Some(mut c), Some(false)) if c["type"] != "none" => {
            c["disable_parallel_tool_use"] = json!(true);
            Some(c)
        }
        (None, Some(false)) if out.contains_key("tools") => {
            Some(json!({"type": "auto", "disable_parallel_tool_use": true}))
        }
        (c, _) => c,
    };
    if let Some(c) = choice {
        out.insert("tool_choice".into(), c);
    }
    if let Some(user) = req.get("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    Ok(Value::Object(out))
}

/// The text of Anthropic content (a string or blocks).
fn anthropic_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter(|b| b["type"] == "text")
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// An Anthropic messages request as an OpenAI chat completions request
/// for `model`.
pub fn anthropic_to_openai(req: &Value, model: &str) -> Result<Value, ApiError> {
    let req = object(req, "the request")?;
    let input = req
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::invalid("messages: Field required"))?;
    let mut messages = Vec::new();
    if let Some(system) = req.get("system") {
        let text = anthropic_text(system);
        if !text.is_empty() {
            messages.push(json!({"role": "system", "content": text}));
        }
    }
    for m in input {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::invalid("each message needs a role"))?;
        let content = m.get("content").unwrap_or(&Value::Null);
        let blocks = match content {
            Value::String(s) => vec![json!({"type": "text", "text": s})],
            Value::Array(b) => b.clone(),
            _ => {
                return Err(ApiError::invalid(
                    "content must be a string or an array of blocks",
                ));
            }
        };
        match role {
            "user" => {
                let mut parts = Vec::new();
                for b in &blocks {
                    match b.get("type").and_then(Value::as_str) {
                        Some("tool_result") => messages.push(json!({
                            "role": "tool",
                            "tool_call_id": b.get("tool_use_id").cloned().unwrap_or(json!("")),
                            "content": anthropic_text(b.get("content").unwrap_or(&Value::Null)),
                        })),
                        Some("text") => parts.push(json!({"type": "text", "text": b["text"]})),
                        Some("image") => {
                            let source = &b["source"];
                            let url = match source["type"].as_str() {
                                Some("base64") => format!(
                                    "data:{};base64,{}",
                                    source["media_type"].as_str().unwrap_or("image/png"),
                                    source["data"].as_str().unwrap_or_default()
                                ),
                                _ => source["url"].as_str().unwrap_or_default().to_string(),
                            };
                            parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
                        }
                        other => {
                            return Err(ApiError::invalid(format!(
                                "content blocks of type {} cannot be sent to this model",
                                other.unwrap_or("(none)")
                            )));
                        }
                    }
                }
                if parts.is_empty() {
                    continue;
                }
                let all_text = parts.iter().all(|p| p["type"] == "text");
                let content = if all_text {
                    json!(anthropic_text(&Value::Array(parts)))
                } else {
                    Value::Array(parts)
                };
                messages.push(json!({"role": "user", "content": content}));
            }
            "assistant" => {
                let text = anthropic_text(&Value::Array(blocks.clone()));
                let calls: Vec<Value> = blocks
                    .iter()
                    .filter(|b| b["type"] == "tool_use")
                    .map(|b| {
                        json!({
                            "id": b["id"],
                            "type": "function",
                            "function": {"name": b["name"], "arguments": b.get("input").unwrap_or(&json!({})).to_string()},
                        })
                    })
                    .collect();
                let mut msg = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text) }});
                if !calls.is_empty() {
                    msg["tool_calls"] = Value::Array(calls);
                }
                messages.push(msg);
            }
            other => {
                return Err(ApiError::invalid(format!(
                    "messages.role: Input should be 'user' or 'assistant', not '{other}'"
                )));
            }
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    out.insert("messages".into(), Value::Array(messages));
    if let Some(n) = req.get("max_tokens") {
        out.insert("max_tokens".into(), n.clone());
    }
    for key in ["temperature", "top_p"] {
        if let Some(v) = req.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(stops) = req.get("stop_sequences") {
        out.insert("stop".into(), stops.clone());
    }
    if req.get("stream").and_then(Value::as_bool) == Some(true) {
        out.insert("stream".into(), json!(true));
        // The usage comes last, for the closing `message_delta`.
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(tools) = req.get("tools").and_then(Value::as_array) {
        let tools = tools
            .iter()
            .map(|t| {
                if t.get("input_schema").is_none() {
                    return Err(ApiError::invalid(
                        "only custom tools (with input_schema) can be sent to this model",
                    ));
                }
                let mut function = Map::new();
                function.insert("name".into(), t.get("name").cloned().unwrap_or(json!("")));
                if let Some(d) = t.get("description") {
                    function.insert("description".into(), d.clone());
                }
                function.insert("parameters".into(), t["input_schema"].clone());
                Ok(json!({"type": "function", "function": function}))
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        out.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = req.get("tool_choice") {
        let mapped = match choice["type"].as_str() {
            Some("auto") => json!("auto"),
            Some("any") => json!("required"),
            Some("none") => json!("none"),
            Some("tool") => json!({"type": "function", "function": {"name": choice["name"]}}),
            _ => {
                return Err(ApiError::invalid(
                    "tool_choice.type must be auto, any, tool or none",
                ));
            }
        };
        out.insert("tool_choice".into(), mapped);
        if choice["disable_parallel_tool_use"] == true {
            out.insert("parallel_tool_calls".into(), json!(false));
        }
    }
    if let Some(user) = req.get("metadata").and_then(|m| m.get("user_id")) {
        out.insert("user".into(), user.clone());
    }
    Ok(Value::Object(out))
}
