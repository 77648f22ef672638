//! The translations, both ways, on the shapes the SDKs send and expect.

use serde_json::{Value, json};

use super::*;
use crate::config::Format;
use crate::sse::Parser;

fn weather_tool_openai() -> Value {
    json!({"type": "function", "function": {"name": "weather", "description": "Weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}})
}

#[test]
fn an_openai_request_becomes_an_anthropic_one() {
    let req = json!({
        "model": "gpt-x", "temperature": 1.5, "stop": "END", "max_tokens": 100,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                                         {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "rain"},
            {"role": "user", "content": "And tomorrow?"},
        ],
        "tools": [weather_tool_openai()], "tool_choice": "required", "parallel_tool_calls": false,
    });
    let out = openai_request_to_anthropic(&req, "claude-y").unwrap();
    assert_eq!(out["model"], "claude-y");
    assert_eq!(out["system"], "Be brief.");
    assert_eq!(out["max_tokens"], 100);
    assert_eq!(out["temperature"], 1.0);
    assert_eq!(out["stop_sequences"], json!(["END"]));
    let messages = out["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert_eq!(
        messages[0]["content"][1]["source"],
        json!({"type": "base64", "media_type": "image/png", "data": "AAAA"})
    );
    assert_eq!(
        messages[1]["content"][0],
        json!({"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Oslo"}})
    );
    // The tool result and the next user turn are one user message.
    assert_eq!(messages[2]["role"], "user");
    assert_eq!(
        messages[2]["content"][0],
        json!({"type": "tool_result", "tool_use_id": "call_1", "content": "rain"})
    );
    assert_eq!(messages[2]["content"][1]["text"], "And tomorrow?");
    assert_eq!(out["tools"][0]["input_schema"]["required"], json!(["city"]));
    assert_eq!(
        out["tool_choice"],
        json!({"type": "any", "disable_parallel_tool_use": true})
    );
}

#[test]
fn an_anthropic_request_becomes_an_openai_one() {
    let req = json!({
        "model": "claude-y", "max_tokens": 50, "system": [{"type": "text", "text": "Be brief."}],
        "stop_sequences": ["END"], "stream": true,
        "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": [{"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "rain"}]}]},
        ],
        "tools": [{"name": "weather", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "weather"},
    });
    let out = anthropic_request_to_openai(&req, "gpt-x").unwrap();
    let messages = out["messages"].as_array().unwrap();
    assert_eq!(
        messages[0],
        json!({"role": "system", "content": "Be brief."})
    );
    assert_eq!(messages[1], json!({"role": "user", "content": "Weather?"}));
    assert_eq!(messages[2]["content"], "Let me look.");
    assert_eq!(
        messages[2]["tool_calls"][0]["function"]["arguments"],
        "{\"city\":\"Oslo\"}"
    );
    assert_eq!(
        messages[3],
        json!({"role": "tool", "tool_call_id": "toolu_1", "content": "rain"})
    );
    assert_eq!(messages.len(), 4);
    assert_eq!(out["stop"], json!(["END"]));
    assert_eq!(out["stream_options"], json!({"include_usage": true}));
    assert_eq!(
        out["tool_choice"],
        json!({"type": "function", "function": {"name": "weather"}})
    );
    assert_eq!(
        out["tools"][0]["function"]["parameters"],
        json!({"type": "object"})
    );
}

#[test]
fn bad_requests_are_refused_with_a_reason() {
    let no_messages = openai_request_to_anthropic(&json!({"model": "m"}), "m").unwrap_err();
    assert_eq!(no_messages.status, 400);
    let bad_role = anthropic_request_to_openai(
        &json!({"model": "m", "max_tokens": 1, "messages": [{"role": "system", "content": "x"}]}),
        "m",
    )
    .unwrap_err();
    assert!(
        bad_role.message.contains("'system'"),
        "{}",
        bad_role.message
    );
}

#[test]
fn whole_answers_translate_both_ways() {
    let openai = json!({"id": "abc", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "Looking.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}]}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}});
    let anthropic = openai_answer_to_anthropic(&openai, "gpt-x");
    assert_eq!(anthropic["stop_reason"], "tool_use");
    assert_eq!(
        anthropic["content"][0],
        json!({"type": "text", "text": "Looking."})
    );
    assert_eq!(anthropic["content"][1]["input"], json!({"city": "Oslo"}));
    assert_eq!(
        anthropic["usage"],
        json!({"input_tokens": 12, "output_tokens": 7})
    );
    let back = anthropic_answer_to_openai(&anthropic, "claude-y");
    assert_eq!(back["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        back["choices"][0]["message"]["tool_calls"][0]["id"],
        "call_1"
    );
    assert_eq!(back["usage"]["total_tokens"], 19);
}

/// Runs `input` (SSE text) through a translator, in chunks of `step` bytes.
fn run(mut t: Translator, input: &str, step: usize) -> (String, Flow) {
    let mut parser = Parser::new(1 << 20);
    let mut out = Vec::new();
    let mut last = Flow::Continue;
    for chunk in input.as_bytes().chunks(step) {
        for event in parser.push(chunk).unwrap() {
            last = t.event(&event, &mut out);
        }
    }
    (String::from_utf8(out).unwrap(), last)
}

fn events(sse: &str) -> Vec<(Option<String>, Value)> {
    let mut parser = Parser::new(1 << 20);
    parser
        .push(sse.as_bytes())
        .unwrap()
        .into_iter()
        .map(|e| {
            (
                e.event,
                serde_json::from_str(&e.data).unwrap_or(json!(e.data)),
            )
        })
        .collect()
}

#[test]
fn an_openai_stream_becomes_anthropic_events() {
    let chunks = [
        json!({"id": "c1", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}),
        json!({"id": "c1", "choices": [{"index": 0, "delta": {"content": "Hel"}}]}),
        json!({"id": "c1", "choices": [{"index": 0, "delta": {"content": "lo"}}]}),
        json!({"id": "c1", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "weather", "arguments": ""}}]}}]}),
        json!({"id": "c1", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}}]}),
        json!({"id": "c1", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "\"Oslo\"}"}}]}}]}),
        json!({"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
        json!({"id": "c1", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 9}}),
    ];
    let mut input: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
    input.push_str("data: [DONE]\n\n");
    let t = Translator::new(Format::Anthropic, Format::OpenAi, "gpt-x", false);
    let (out, flow) = run(t, &input, 7);
    assert_eq!(flow, Flow::Done);
    let got = events(&out);
    let names: Vec<&str> = got.iter().map(|(e, _)| e.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(got[2].1["delta"]["text"], "Hel");
    assert_eq!(got[5].1["content_block"]["name"], "weather");
    assert_eq!(got[5].1["index"], 1);
    assert_eq!(got[7].1["delta"]["partial_json"], "\"Oslo\"}");
    assert_eq!(got[9].1["delta"]["stop_reason"], "tool_use");
    assert_eq!(got[9].1["usage"]["output_tokens"], 9);
}

#[test]
fn an_anthropic_stream_becomes_openai_chunks() {
    let input = [
        ("message_start", json!({"type": "message_start", "message": {"id": "m1", "usage": {"input_tokens": 4, "output_tokens": 1}}})),
        ("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})),
        ("ping", json!({"type": "ping"})),
        ("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}})),
        ("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
        ("content_block_start", json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}}})),
        ("content_block_delta", json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"city\":\"Oslo\"}"}})),
        ("content_block_stop", json!({"type": "content_block_stop", "index": 1})),
        ("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 11}})),
        ("message_stop", json!({"type": "message_stop"})),
    ]
    .iter()
    .map(|(e, d)| format!("event: {e}\ndata: {d}\n\n"))
    .collect::<String>();
    let t = Translator::new(Format::OpenAi, Format::Anthropic, "claude-y", true);
    let (out, flow) = run(t, &input, 5);
    assert_eq!(flow, Flow::Done);
    let got: Vec<Value> = events(&out).into_iter().map(|(_, d)| d).collect();
    assert_eq!(got[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(got[1]["choices"][0]["delta"]["content"], "Hi");
    assert_eq!(
        got[2]["choices"][0]["delta"]["tool_calls"][0]["id"],
        "toolu_1"
    );
    assert_eq!(got[2]["choices"][0]["delta"]["tool_calls"][0]["index"], 0);
    assert_eq!(
        got[3]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
        "{\"city\":\"Oslo\"}"
    );
    assert_eq!(got[4]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        got[5]["usage"],
        json!({"prompt_tokens": 4, "completion_tokens": 11, "total_tokens": 15})
    );
    assert_eq!(got[6], json!("[DONE]"));
    assert_eq!(got.len(), 7);
}

#[test]
fn passed_through_streams_report_usage_and_their_end() {
    let input = "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n";
    let mut t = Translator::new(Format::OpenAi, Format::OpenAi, "gpt-x", false);
    let mut parser = Parser::new(1 << 20);
    let mut out = Vec::new();
    let mut flow = Flow::Continue;
    for e in parser.push(input.as_bytes()).unwrap() {
        flow = t.event(&e, &mut out);
    }
    assert_eq!(flow, Flow::Done);
    assert_eq!(out, input.as_bytes());
    assert_eq!(
        t.usage,
        Usage {
            input: 3,
            output: 2
        }
    );
}
