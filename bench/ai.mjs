// One client, one request at a time, against an OpenAI-compatible chat
// endpoint: `node bench/ai.mjs <url> <latency|ttfb> <count> [key]`.
// `latency`: whole non-streaming answers; `ttfb`: streamed answers, timed
// to their first body bytes and to their end. Prints one JSON line with
// p50 and p99 in ms. A keep-alive agent, so that connecting is not timed.
import http from 'node:http';

const [url, mode, countArg, key = 'unused'] = process.argv.slice(2);
const count = Number(countArg);
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const stream = mode === 'ttfb';
const body = JSON.stringify({
  model: 'gpt-4o', stream,
  messages: [{ role: 'user', content: 'hello there, how are you today?' }],
});

function once() {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    let first = null;
    const req = http.request(url, {
      method: 'POST', agent,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), authorization: `Bearer ${key}` },
    }, (res) => {
      let bytes = 0;
      res.on('data', (chunk) => {
        if (first === null) first = process.hrtime.bigint();
        bytes += chunk.length;
      });
      res.on('end', () => {
        const end = process.hrtime.bigint();
        if (res.statusCode !== 200) return reject(new Error(`status ${res.statusCode}`));
        resolve({ first: Number(first - started) / 1e6, total: Number(end - started) / 1e6, bytes });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

for (let i = 0; i < Math.min(200, count); i++) await once();
const firsts = [], totals = [];
for (let i = 0; i < count; i++) {
  const r = await once();
  firsts.push(r.first);
  totals.push(r.total);
}
const round = (x) => Math.round(x * 1000) / 1000;
console.log(JSON.stringify({
  mode, count,
  p50: round(pct(stream ? firsts : totals, 50)),
  p99: round(pct(stream ? firsts : totals, 99)),
  end_p50: round(pct(totals, 50)),
}));
agent.destroy();
