// The renderer and the AI routes, for the toolbar's Screenshot and
// "Explain this code".

/** A PNG of `html` (a whole page) from the renderer, as a blob. */
export async function screenshot(html) {
  const resp = await fetch('/render/screenshot', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ html, width: 800, height: 600, waitForSelector: 'html[data-rendered]', cache: 'no' }),
  });
  if (!resp.ok) {
    const body = await resp.json().catch(() => null);
    throw new Error(body?.error?.message ?? `the renderer answered ${resp.status}`);
  }
  return resp.blob();
}

/**
 * Streams an explanation of `code` from the AI routes (OpenAI's chat
 * completions with `stream: true`), calling `onText` with each piece.
 */
export async function explain(code, onText, signal) {
  const resp = await fetch('/v1/chat/completions', {
    method: 'POST',
    signal,
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      model: 'gpt-4o-mini',
      stream: true,
      messages: [
        { role: 'system', content: 'Explain what this React component does, briefly, for its author.' },
        { role: 'user', content: code },
      ],
    }),
  });
  if (!resp.ok) {
    const body = await resp.json().catch(() => null);
    const message = body?.error?.message ?? `the AI routes answered ${resp.status}`;
    throw new Error(resp.status === 503 ? `No AI provider is configured here: ${message}` : message);
  }
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split('\n')) {
        if (!line.startsWith('data:')) continue;
        const data = line.slice(5).trim();
        if (data === '[DONE]') return;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message ?? 'the provider failed');
        const piece = chunk.choices?.[0]?.delta?.content;
        if (piece) onText(piece);
      }
    }
  }
}
