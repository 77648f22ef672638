// The transpiler benchmark's peers in one process, over one corpus
// (tests/node/corpus.mjs: the TypeScript / TSX that TanStack and tRPC ship):
//
//   spike         POST /transpile (JSON mode, `Cache-Control: no-store`)
//   esbuild       npm `esbuild`, transform() (its native Go service)
//   esbuild-wasm  npm `esbuild-wasm`, transform() (spike.land's transpiler)
//   @swc/core     npm `@swc/core`, transform() (native swc)
//
// Each peer: TS / TSX to an ES module, JSX automatic, no source map, no
// minification. One pass to warm up, then a sequential pass (latency per
// file: p50, p99; files/s) and a pass with CONCURRENCY requests in flight
// (files/s). Prints one JSON line per peer.
//
//   node bench/transpile.mjs <spike base URL> [peer…]
import http from 'node:http';
import { corpus } from '../tests/node/corpus.mjs';
import * as esbuild from 'esbuild';
import esbuildWasm from 'esbuild-wasm';
import swc from '@swc/core';

const base = process.argv[2];
const only = process.argv.slice(3);
const CONCURRENCY = Number(process.env.CONCURRENCY ?? 4);
const files = corpus();

const esbuildOptions = (loader) => ({ loader, format: 'esm', target: 'es2024', jsx: 'automatic' });

// Node's `http` with kept-alive connections: a quarter of a millisecond
// per request here, where `fetch` (undici) spent half a millisecond more.
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
const url = new URL(base ?? 'http://127.0.0.1:1');

function post(path, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: url.hostname,
        port: url.port,
        path,
        method: 'POST',
        agent,
        headers: { 'content-type': 'application/json', 'cache-control': 'no-store' },
      },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

const PEERS = {
  spike: async ({ code, loader }) => {
    const { status, body } = await post('/transpile', JSON.stringify({ code, loader }));
    if (status !== 200) throw new Error(body);
    return JSON.parse(body).code;
  },
  esbuild: async ({ code, loader }) => (await esbuild.transform(code, esbuildOptions(loader))).code,
  'esbuild-wasm': async ({ code, loader }) =>
    (await esbuildWasm.transform(code, esbuildOptions(loader))).code,
  '@swc/core': async ({ code, loader }) =>
    (
      await swc.transform(code, {
        jsc: {
          parser: { syntax: 'typescript', tsx: loader === 'tsx', decorators: true },
          target: 'es2022',
          transform: { react: { runtime: 'automatic' } },
        },
        isModule: true,
      })
    ).code,
};

const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))];

async function sequential(run) {
  const times = [];
  const start = performance.now();
  for (const file of files) {
    const t = performance.now();
    await run(file);
    times.push(performance.now() - t);
  }
  const seconds = (performance.now() - start) / 1000;
  times.sort((a, b) => a - b);
  return { files_per_s: files.length / seconds, p50_ms: percentile(times, 50), p99_ms: percentile(times, 99) };
}

async function concurrent(run) {
  let next = 0;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < files.length) await run(files[next++]);
    }),
  );
  return files.length / ((performance.now() - start) / 1000);
}

await esbuildWasm.initialize({});
const bytes = files.reduce((n, f) => n + Buffer.byteLength(f.code), 0);
for (const [name, run] of Object.entries(PEERS)) {
  if (only.length && !only.includes(name)) continue;
  for (const file of files) await run(file); // warm up (and check every file passes)
  const seq = await sequential(run);
  const par = await concurrent(run);
  console.log(
    JSON.stringify({
      peer: name,
      files: files.length,
      kib: Math.round(bytes / 1024),
      files_per_s: +seq.files_per_s.toFixed(1),
      p50_ms: +seq.p50_ms.toFixed(3),
      p99_ms: +seq.p99_ms.toFixed(3),
      concurrent_files_per_s: +par.toFixed(1),
      concurrency: CONCURRENCY,
    }),
  );
}
await esbuild.stop();
await esbuildWasm.stop();
