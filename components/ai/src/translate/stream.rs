//! Streams event by event: passed through as they came (same format), or
//! translated (OpenAI's `data: {chunk}` lines ending with `data: [DONE]`
//! to and from Anthropic's `message_start` … `message_stop` events). Every
//! kind also reads the token counts and whether the stream ended properly.

use serde_json::{Value, json};

use super::response::{Usage, finish_reason, stop_reason, unix_s};
use crate::config::Format;
use crate::errors::ApiError;
use crate::sse::Event;

/// What an event did to the stream.
#[derive(Debug, PartialEq)]
pub enum Flow {
    Continue,
    /// The stream's last event went out.
    Done,
    /// The provider sent an error event (already passed on, translated).
    Failed(String),
}

/// Passes on or translates the events of one stream.
pub struct Translator {
    kind: Kind,
    pub usage: Usage,
}

enum Kind {
    Pass(Format),
    OpenAiToAnthropic(ToAnthropic),
    AnthropicToOpenAi(ToOpenAi),
}

impl Translator {
    /// For a caller speaking `client` to a provider speaking `upstream`;
    /// `model` is the name the caller asked for. `include_usage`: whether
    /// an OpenAI caller asked for the usage chunk.
    pub fn new(client: Format, upstream: Format, model: &str, include_usage: bool) -> Self {
        let kind = match (client, upstream) {
            (Format::Anthropic, Format::OpenAi) => Kind::OpenAiToAnthropic(ToAnthropic {
                model: model.into(),
                started: false,
                open: None,
                next_index: 0,
                stop: None,
            }),
            (Format::OpenAi, Format::Anthropic) => Kind::AnthropicToOpenAi(ToOpenAi {
                model: model.into(),
                id: String::new(),
                created: unix_s(),
                tools: Vec::new(),
                include_usage,
            }),
            (same, _) => Kind::Pass(same),
        };
        Self {
            kind,
            usage: Usage::default(),
        }
    }

    /// Appends to `out` what `event` becomes for the caller.
    pub fn event(&mut self, event: &Event, out: &mut Vec<u8>) -> Flow {
        match &mut self.kind {
            Kind::Pass(format) => {
                out.extend_from_slice(&event.raw);
                pass(*format, event, &mut self.usage)
            }
            Kind::OpenAiToAnthropic(t) => t.event(event, out, &mut self.usage),
            Kind::AnthropicToOpenAi(t) => t.event(event, out, &mut self.usage),
        }
    }
}

fn data_json(event: &Event) -> Option<Value> {
    serde_json::from_str(&event.data).ok()
}

/// Reads what a passed-through event tells: usage, the end, an error.
fn pass(format: Format, event: &Event, usage: &mut Usage) -> Flow {
    match format {
        Format::OpenAi => {
            if event.data == "[DONE]" {
                return Flow::Done;
            }
            // Most chunks carry neither: skip parsing them.
            if !(event.data.contains("\"usage\"") || event.data.contains("\"error\"")) {
                return Flow::Continue;
            }
            let Some(v) = data_json(event) else {
                return Flow::Continue;
            };
            if let Some(e) = v.get("error") {
                return Flow::Failed(e["message"].as_str().unwrap_or("error").to_string());
            }
            if let Some(u) = Usage::read(&v["usage"]) {
                *usage = u;
            }
            Flow::Continue
        }
        Format::Anthropic => match event.event.as_deref() {
            Some("message_stop") => Flow::Done,
            Some("error") => Flow::Failed(
                data_json(event)
                    .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                    .unwrap_or_else(|| "error".into()),
            ),
            Some("message_start") => {
                if let Some(u) = data_json(event).and_then(|v| Usage::read(&v["message"]["usage"]))
                {
                    usage.input = u.input;
                }
                Flow::Continue
            }
            Some("message_delta") => {
                if let Some(v) = data_json(event) {
                    if let Some(n) = v["usage"]["output_tokens"].as_u64() {
                        usage.output = n;
                    }
                    if let Some(n) = v["usage"]["input_tokens"].as_u64() {
                        usage.input = n;
                    }
                }
                Flow::Continue
            }
            _ => Flow::Continue,
        },
    }
}

fn write_anthropic(out: &mut Vec<u8>, name: &str, data: &Value) {
    out.extend_from_slice(format!("event: {name}\ndata: {data}\n\n").as_bytes());
}

/// The block an Anthropic stream has open.
#[derive(Clone, Copy, PartialEq)]
enum Block {
    Text(u64),
    /// Anthropic's index, and the OpenAI tool call's index.
    Tool(u64, u64),
}

impl Block {
    fn index(self) -> u64 {
        match self {
            Block::Text(i) | Block::Tool(i, _) => i,
        }
    }
}

/// OpenAI chunks to Anthropic events.
struct ToAnthropic {
    model: String,
    started: bool,
    open: Option<Block>,
    next_index: u64,
    stop: Option<&'static str>,
}

impl ToAnthropic {
    fn start(&mut self, id: &str, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        write_anthropic(
            out,
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": format!("msg_{id}"), "type": "message", "role": "assistant",
                "model": self.model, "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0}}}),
        );
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if let Some(block) = self.open.take() {
            write_anthropic(
                out,
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": block.index()}),
            );
        }
    }

    fn open(&mut self, block: Block, start: Value, out: &mut Vec<u8>) {
        self.close(out);
        write_anthropic(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": block.index(), "content_block": start}),
        );
        self.open = Some(block);
        self.next_index += 1;
    }

    fn event(&mut self, event: &Event, out: &mut Vec<u8>, usage: &mut Usage) -> Flow {
        if event.data == "[DONE]" {
            self.start("stream", out);
            self.close(out);
            write_anthropic(
                out,
                "message_delta",
                &json!({"type": "message_delta",
                        "delta": {"stop_reason": self.stop.unwrap_or("end_turn"), "stop_sequence": null},
                        "usage": {"input_tokens": usage.input, "output_tokens": usage.output}}),
            );
            write_anthropic(out, "message_stop", &json!({"type": "message_stop"}));
            return Flow::Done;
        }
        let Some(chunk) = data_json(event) else {
            return Flow::Continue;
        };
        if let Some(e) = chunk.get("error") {
            let message = e["message"].as_str().unwrap_or("the provider failed");
            let error = ApiError::new(crate::errors::Kind::Upstream, message);
            out.extend_from_slice(error.stream_event(Format::Anthropic).as_bytes());
            return Flow::Failed(message.to_string());
        }
        self.start(chunk["id"].as_str().unwrap_or("stream"), out);
        if let Some(u) = Usage::read(&chunk["usage"]) {
            *usage = u;
        }
        let choice = &chunk["choices"][0];
        let delta = &choice["delta"];
        if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
            let index = match self.open {
                Some(Block::Text(i)) => i,
                _ => {
                    let i = self.next_index;
                    self.open(Block::Text(i), json!({"type": "text", "text": ""}), out);
                    i
                }
            };
            write_anthropic(
                out,
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index,
                        "delta": {"type": "text_delta", "text": text}}),
            );
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            let tool = call["index"].as_u64().unwrap_or(0);
            let index = match self.open {
                Some(Block::Tool(i, t)) if t == tool && call.get("id").is_none() => i,
                _ => {
                    let i = self.next_index;
                    let start = json!({"type": "tool_use", "id": call["id"],
                                       "name": call["function"]["name"], "input": {}});
                    self.open(Block::Tool(i, tool), start, out);
                    i
                }
            };
            if let Some(args) = call["function"]["arguments"]
                .as_str()
                .filter(|a| !a.is_empty())
            {
                write_anthropic(
                    out,
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index,
                            "delta": {"type": "input_json_delta", "partial_json": args}}),
                );
            }
        }
        if let Some(finish) = choice["finish_reason"].as_str() {
            self.stop = Some(stop_reason(finish));
            self.close(out);
        }
        Flow::Continue
    }
}

/// Anthropic events to OpenAI chunks.
struct ToOpenAi {
    model: String,
    id: String,
    created: u64,
    /// Anthropic block index → OpenAI tool call index.
    tools: Vec<u64>,
    include_usage: bool,
}

impl ToOpenAi {
    fn chunk(&self, out: &mut Vec<u8>, delta: Value, finish: Option<&str>) {
        let chunk = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        out.extend_from_slice(format!("data: {chunk}\n\n").as_bytes());
    }

    fn tool_index(&self, block: u64) -> Option<usize> {
        self.tools.iter().position(|&b| b == block)
    }

    fn event(&mut self, event: &Event, out: &mut Vec<u8>, usage: &mut Usage) -> Flow {
        let Some(name) = event.event.as_deref() else {
            return Flow::Continue;
        };
        let v = data_json(event).unwrap_or(Value::Null);
        match name {
            "message_start" => {
                let message = &v["message"];
                self.id = format!("chatcmpl-{}", message["id"].as_str().unwrap_or("stream"));
                if let Some(u) = Usage::read(&message["usage"]) {
                    usage.input = u.input;
                }
                self.chunk(out, json!({"role": "assistant", "content": ""}), None);
            }
            "content_block_start" => {
                let block = &v["content_block"];
                let index = v["index"].as_u64().unwrap_or(0);
                match block["type"].as_str() {
                    Some("tool_use") => {
                        self.tools.push(index);
                        let t = self.tools.len() - 1;
                        self.chunk(
                            out,
                            json!({"tool_calls": [{"index": t, "id": block["id"], "type": "function",
                                                   "function": {"name": block["name"], "arguments": ""}}]}),
                            None,
                        );
                    }
                    Some("text") => {
                        if let Some(text) = block["text"].as_str().filter(|t| !t.is_empty()) {
                            self.chunk(out, json!({"content": text}), None);
                        }
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let delta = &v["delta"];
                match delta["type"].as_str() {
                    Some("text_delta") => {
                        self.chunk(out, json!({"content": delta["text"]}), None);
                    }
                    Some("input_json_delta") => {
                        let index = v["index"].as_u64().unwrap_or(0);
                        if let Some(t) = self.tool_index(index) {
                            self.chunk(
                                out,
                                json!({"tool_calls": [{"index": t,
                                                       "function": {"arguments": delta["partial_json"]}}]}),
                                None,
                            );
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(n) = v["usage"]["output_tokens"].as_u64() {
                    usage.output = n;
                }
                if let Some(n) = v["usage"]["input_tokens"].as_u64() {
                    usage.input = n;
                }
                if let Some(stop) = v["delta"]["stop_reason"].as_str() {
                    self.chunk(out, json!({}), Some(finish_reason(stop)));
                }
            }
            "message_stop" => {
                if self.include_usage {
                    let chunk = json!({
                        "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                        "model": self.model, "choices": [], "usage": usage.openai(),
                    });
                    out.extend_from_slice(format!("data: {chunk}\n\n").as_bytes());
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
                return Flow::Done;
            }
            "error" => {
                let message = v["error"]["message"]
                    .as_str()
                    .unwrap_or("the provider failed");
                let error = ApiError::new(crate::errors::Kind::Upstream, message);
                out.extend_from_slice(error.stream_event(Format::OpenAi).as_bytes());
                return Flow::Failed(message.to_string());
            }
            _ => {}
        }
        Flow::Continue
    }
}
