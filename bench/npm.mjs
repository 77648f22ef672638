// The npm plugin's cold builds against esbuild's, one package at a time:
// each package's module graph fetched from spike's /npm/ as a browser
// fetches it (every import followed, 6 requests at a time), the build
// options made new for the run (`?external=<tag>`, a name no package
// imports) so that every module is built again while the package's
// unpacked tarball is kept (the registry's fetch is not in the figure);
// and esbuild bundling the same entry from tests/npm/node_modules
// (`bundle: true, format: 'esm'`, production), the best of 3 after a
// warm-up. Prints a JSON line per package.
//
//   node bench/npm.mjs http://127.0.0.1:PORT TAG [package ...]
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const { build } = createRequire(join(here, '..', 'tests', 'node', 'package.json'))('esbuild');
const [base, tag, ...only] = process.argv.slice(2);

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
        fetch(url).then(async (resp) => {
          const text = await resp.text();
          if (!resp.ok) throw new Error(`${url}: ${resp.status} ${text}`);
          bytes += text.length;
          for (const m of text.matchAll(/\bfrom\s*"([^"]+)"|\bimport\s*\(?\s*"([^"]+)"/g)) {
            const spec = m[1] ?? m[2];
            if (!spec.startsWith('/') && !spec.startsWith('.')) continue;
            const next = new URL(spec, resp.url).href;
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

for (const [name, spec] of packages) {
  if (only.length && !only.includes(name)) continue;
  const entry = `${base}/npm/${spec}?external=${tag}`;
  const t = performance.now();
  const { modules, bytes } = await crawl(entry);
  const spikeMs = performance.now() - t;
  const esbuild = await esbuildMs(name);
  console.log(JSON.stringify({
    package: name, modules, bytes, spike_ms: +spikeMs.toFixed(1), esbuild_ms: +esbuild.toFixed(1),
    ratio: +(spikeMs / esbuild).toFixed(2),
  }));
}
