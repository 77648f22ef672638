// The official OpenAI and Anthropic SDKs pointed at spike's AI routes:
// `node ai-sdk.mjs <spike url>` runs every case below and prints one JSON
// line per case: {name, value} or {name, error: {status, type, message}}.
// tests/e2e/ai.rs asserts on them. Models: gpt-* are served by the fake's
// OpenAI side, claude-* by its Anthropic side, so a call to the other
// family goes through spike's translation.

import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';

const base = process.argv[2];
const openai = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'caller-key-not-for-upstream', maxRetries: 0, timeout: 15000 });
const anthropic = new Anthropic({ baseURL: base, apiKey: 'caller-key-not-for-upstream', maxRetries: 0, timeout: 15000 });

const weatherOpenAI = [{
  type: 'function',
  function: {
    name: 'weather', description: 'The weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
}];
const weatherAnthropic = [{
  name: 'weather', description: 'The weather in a city',
  input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
}];

async function openaiPlain(model) {
  const r = await openai.chat.completions.create({ model, messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'hello there' }] });
  return { content: r.choices[0].message.content, finish: r.choices[0].finish_reason, usage: r.usage, model: r.model };
}

async function openaiStream(model) {
  const stream = await openai.chat.completions.create({
    model, stream: true, stream_options: { include_usage: true },
    messages: [{ role: 'user', content: 'stream me this' }],
  });
  let text = '', finish = null, usage = null, chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    if (chunk.usage) usage = chunk.usage;
    const c = chunk.choices[0];
    if (!c) continue;
    text += c.delta?.content ?? '';
    finish = c.finish_reason ?? finish;
  }
  return { text, finish, usage, chunks };
}

async function openaiTools(model) {
  const r = await openai.chat.completions.create({ model, messages: [{ role: 'user', content: 'weather in Oslo?' }], tools: weatherOpenAI });
  const call = r.choices[0].message.tool_calls?.[0];
  // Send the tool's result back, as an application would.
  const next = await openai.chat.completions.create({
    model, tools: weatherOpenAI,
    messages: [
      { role: 'user', content: 'weather in Oslo?' },
      r.choices[0].message,
      { role: 'tool', tool_call_id: call.id, content: 'rain' },
    ],
  });
  return { finish: r.choices[0].finish_reason, name: call.function.name, args: JSON.parse(call.function.arguments), answer: next.choices[0].message.content };
}

async function openaiStreamTools(model) {
  const stream = await openai.chat.completions.create({ model, stream: true, messages: [{ role: 'user', content: 'weather?' }], tools: weatherOpenAI });
  let name = '', args = '', finish = null;
  for await (const chunk of stream) {
    const c = chunk.choices[0];
    if (!c) continue;
    for (const t of c.delta?.tool_calls ?? []) {
      name += t.function?.name ?? '';
      args += t.function?.arguments ?? '';
    }
    finish = c.finish_reason ?? finish;
  }
  return { name, args: JSON.parse(args), finish };
}

async function anthropicPlain(model) {
  const r = await anthropic.messages.create({ model, max_tokens: 100, system: 'Be brief.', messages: [{ role: 'user', content: 'hello there' }] });
  return { text: r.content[0].text, stop: r.stop_reason, usage: r.usage, type: r.type };
}

async function anthropicStream(model) {
  const stream = anthropic.messages.stream({ model, max_tokens: 100, messages: [{ role: 'user', content: 'stream me this' }] });
  let deltas = 0;
  stream.on('text', () => { deltas++; });
  const m = await stream.finalMessage();
  return { text: m.content[0].text, stop: m.stop_reason, usage: m.usage, deltas };
}

async function anthropicTools(model) {
  const r = await anthropic.messages.create({ model, max_tokens: 100, tools: weatherAnthropic, messages: [{ role: 'user', content: 'weather in Oslo?' }] });
  const use = r.content.find((b) => b.type === 'tool_use');
  const next = await anthropic.messages.create({
    model, max_tokens: 100, tools: weatherAnthropic,
    messages: [
      { role: 'user', content: 'weather in Oslo?' },
      { role: 'assistant', content: r.content },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: 'rain' }] },
    ],
  });
  return { stop: r.stop_reason, name: use.name, input: use.input, answer: next.content[0].text };
}

async function anthropicStreamTools(model) {
  const stream = anthropic.messages.stream({ model, max_tokens: 100, tools: weatherAnthropic, messages: [{ role: 'user', content: 'weather?' }] });
  const m = await stream.finalMessage();
  const use = m.content.find((b) => b.type === 'tool_use');
  return { stop: m.stop_reason, name: use.name, input: use.input };
}

const cases = {
  'openai plain': () => openaiPlain('gpt-4o'),
  'openai stream': () => openaiStream('gpt-4o'),
  'openai tools': () => openaiTools('gpt-4o'),
  'openai stream tools': () => openaiStreamTools('gpt-4o'),
  'openai to anthropic plain': () => openaiPlain('claude-sonnet'),
  'openai to anthropic stream': () => openaiStream('claude-sonnet'),
  'openai to anthropic tools': () => openaiTools('claude-sonnet'),
  'openai to anthropic stream tools': () => openaiStreamTools('claude-sonnet'),
  'anthropic plain': () => anthropicPlain('claude-sonnet'),
  'anthropic stream': () => anthropicStream('claude-sonnet'),
  'anthropic tools': () => anthropicTools('claude-sonnet'),
  'anthropic stream tools': () => anthropicStreamTools('claude-sonnet'),
  'anthropic to openai plain': () => anthropicPlain('gpt-4o'),
  'anthropic to openai stream': () => anthropicStream('gpt-4o'),
  'anthropic to openai tools': () => anthropicTools('gpt-4o'),
  'anthropic to openai stream tools': () => anthropicStreamTools('gpt-4o'),
  'openai unknown model': () => openaiPlain('no-such-model'),
  'anthropic unknown model': () => anthropicPlain('no-such-model'),
  'openai models': async () => (await openai.models.list()).data.map((m) => m.id),
  'anthropic models': async () => (await anthropic.models.list()).data.map((m) => m.id),
};

const only = process.argv.slice(3);
for (const [name, run] of Object.entries(cases)) {
  if (only.length && !only.includes(name)) continue;
  try {
    console.log(JSON.stringify({ name, value: await run() }));
  } catch (e) {
    console.log(JSON.stringify({ name, error: { status: e.status ?? null, type: e.constructor?.name, message: String(e.message) } }));
  }
}
