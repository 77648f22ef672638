// The npm plugin's cold builds against esbuild's, one package at a time:
// each package's module graph fetched from spike's /npm/ as a browser
// fetches it (every import followed, 6 requests at a time), the build
// options made new for the run (`?external=<tag>`, a name no package
// imports) so that every module is built again while the package's
// unpacked tarball is kept (the registry's fetch is not in the figure);
// and esbuild bundling the same entry from tests/npm/node_modules
// (`bundle: true, format: 'esm'`, production), the best of 3 after a
// warm-up. Prints a JSON line per package, with the server's CPU time for
// the graph if SPIKE_PID names its process.
//
//   SPIKE_PID=… node bench/npm.mjs http://127.0.0.1:PORT TAG [package ...]
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const { build } = createRequire(join(here, '..', 'tests', 'node', 'package.json'))('esbuild');
const [base, tag, ...only] = process.argv.slice(2);
const serverPid = process.env.SPIKE_PID;

export const packages = [
  ['react', 'react@19.3.1'],
  ['react-dom/client', 'react-dom@19.3.1/client'],
  ['scheduler', 'scheduler@0.28.0'],
  ['canvas-confetti', 'canvas-confetti@1.9.4'],
  ['date-fns', 'date-fns@4.4.0'],
  ['lodash-es', 'lodash-es@4.18.1'],
  ['nanoid', 'nanoid@6.0.2'],
  ['three', 'three@0.187.0'],
  ['zustand', 'zustand@5.1.0'],
  ['@emotion/react', '@emotion/react@11.14.0'],
];

// The client: node:http with 6 kept-alive connections, as a browser keeps
// per host. Node's fetch costs about a millisecond of CPU a request, which
// on these 2 cores made the client, not the server, what was measured.
const agent = new http.Agent({ keepAlive: true, maxSockets: 6 });
const get = (url) => new Promise((resolve, reject) => {
  http.get(url, { agent }, (resp) => {
    const chunks = [];
    resp.on('data', (c) => chunks.push(c));
    resp.on('end', () => resolve({ status: resp.statusCode, text: Buffer.concat(chunks).toString() }));
  }).on('error', reject);
});

/** The spike process's CPU time (user + system), in ms, if its pid is known. */
function serverCpuMs() {
  if (!serverPid) return NaN;
  const fields = readFileSync(`/proc/${serverPid}/stat`, 'utf8').split(') ')[1].split(' ');
  return ((+fields[11]) + (+fields[12])) * 10; // utime, stime in 1/100 s
}

/** Every module of `entry`'s graph, fetched; their count and bytes. */
async function crawl(entry) {
  const seen = new Set([entry]);
  const queue = [entry];
  let bytes = 0;
  let active = 0;
  await new Promise((done, fail) => {
    const pump = () => {
      if (!queue.length && !active) return done();
      while (active < 6 && queue.length) {
        const url = queue.shift();
        active++;
        get(url).then(({ status, text }) => {
          if (status !== 200) throw new Error(`${url}: ${status} ${text}`);
          bytes += text.length;
          for (const m of text.matchAll(/\bfrom\s*"([^"]+)"|\bimport\s*\(?\s*"([^"]+)"/g)) {
            const spec = m[1] ?? m[2];
            if (!spec.startsWith('/') && !spec.startsWith('.')) continue;
            const next = new URL(spec, url).href;
            if (!seen.has(next)) { seen.add(next); queue.push(next); }
          }
          active--;
          pump();
        }).catch(fail);
      }
    };
    pump();
  });
  return { modules: seen.size, bytes };
}

async function esbuildMs(name) {
  const options = {
    stdin: { contents: `export * from ${JSON.stringify(name)};`, resolveDir: join(here, '..', 'tests', 'npm'), loader: 'js' },
    bundle: true, format: 'esm', platform: 'browser', write: false, logLevel: 'silent',
    define: { 'process.env.NODE_ENV': '"production"' },
  };
  await build(options);
  let best = Infinity;
  for (let i = 0; i < 3; i++) {
    const t = performance.now();
    await build(options);
    best = Math.min(best, performance.now() - t);
  }
  return best;
}

// The first request sets up the client: not in the first package's time.
await get(`${base}/npm/_/empty.js`);

for (const [name, spec] of packages) {
  if (only.length && !only.includes(name)) continue;
  const entry = `${base}/npm/${spec}?external=${tag}`;
  const cpu = serverCpuMs();
  const t = performance.now();
  const { modules, bytes } = await crawl(entry);
  const spikeMs = performance.now() - t;
  const spikeCpuMs = serverCpuMs() - cpu;
  const esbuild = await esbuildMs(name);
  console.log(JSON.stringify({
    package: name, modules, bytes, spike_ms: +spikeMs.toFixed(1), spike_cpu_ms: spikeCpuMs, esbuild_ms: +esbuild.toFixed(1),
    ratio: +(spikeMs / esbuild).toFixed(2),
  }));
}
