// The transpiler against real TypeScript: every .ts / .tsx source file that
// some npm packages ship (installed by scripts/setup.sh) through spike's
// `POST /transpile` (JSON mode), each answer parsed by Node as an ES module;
// then, on a sample of packages, the package bundled by spike (`files` and
// `entry`) and by esbuild (npm), both bundles imported, and their exports
// and the results of a few calls compared.
//
//   node --experimental-vm-modules transpile-corpus.mjs <spike base URL>
//
// Prints one JSON line: {files, bytes, failures, samples}.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import vm from 'node:vm';
import * as esbuild from 'esbuild';
import { corpus, modules, sources } from './corpus.mjs';

const base = process.argv[2];
async function transpile(body) {
  const res = await fetch(`${base}/transpile`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'cache-control': 'no-store' },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

/// Whether Node parses `code` as an ES module (its imports are not loaded).
function parses(code) {
  try {
    new vm.SourceTextModule(code);
    return null;
  } catch (e) {
    return String(e);
  }
}

const failures = [];
let files = 0;
let bytes = 0;
for (const { name, code, loader } of corpus()) {
  files += 1;
  bytes += Buffer.byteLength(code);
  const { status, body } = await transpile({ code, loader });
  const why = status !== 200 ? `${status} ${JSON.stringify(body).slice(0, 300)}` : parses(body.code);
  if (why) failures.push({ file: name, why });
}

// The sample: a package bundled from its entry, with probes whose results
// must be the same for both bundles.
const SAMPLES = [
  {
    pkg: '@tanstack/query-core',
    probes: (m) => {
      const client = new m.QueryClient();
      client.setQueryData(['todos', 1], { done: false });
      return [
        m.hashKey(['todos', { b: 1, a: [2, { d: 3, c: 4 }] }]),
        m.replaceEqualDeep({ a: 1, b: [1, 2] }, { a: 1, b: [1, 3] }),
        m.partialMatchKey(['todos', 1], ['todos']),
        client.getQueryData(['todos', 1]),
        client.getQueryCache().findAll().map((q) => q.queryHash),
      ];
    },
  },
  {
    pkg: '@tanstack/store',
    probes: (m) => {
      const store = new m.Store({ n: 1 });
      const seen = [];
      store.subscribe(() => seen.push(store.state.n));
      store.setState((s) => ({ n: s.n + 1 }));
      store.setState((s) => ({ n: s.n * 10 }));
      return [store.state, seen];
    },
  },
  {
    pkg: '@tanstack/history',
    probes: (m) => {
      const history = m.createMemoryHistory({ initialEntries: ['/a?x=1#h'] });
      history.push('/b/c?y=2');
      history.back();
      return [history.location.pathname, history.location.search, history.location.hash, history.length];
    },
  },
];

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spike-corpus-'));
const samples = [];
for (const { pkg, probes } of SAMPLES) {
  const files = sources(pkg);
  const name = pkg.replace(/[@/]/g, '_');
  const { status, body } = await transpile({ files, entry: '/index.ts' });
  if (status !== 200) {
    samples.push({ pkg, error: JSON.stringify(body).slice(0, 500) });
    continue;
  }
  const ours = path.join(dir, `${name}.spike.mjs`);
  fs.writeFileSync(ours, body.code);
  const theirs = path.join(dir, `${name}.esbuild.mjs`);
  await esbuild.build({
    entryPoints: [path.join(modules, pkg, 'src/index.ts')],
    bundle: true,
    format: 'esm',
    platform: 'neutral',
    packages: 'external',
    target: 'es2024',
    outfile: theirs,
    logLevel: 'silent',
  });
  const a = await import(ours);
  const b = await import(theirs);
  const shape = (m) => Object.keys(m).sort().map((k) => `${k}:${typeof m[k]}`);
  const results = (m) => {
    try {
      return JSON.stringify(probes(m));
    } catch (e) {
      return `threw ${e}`;
    }
  };
  samples.push({
    pkg,
    files: Object.keys(files).length,
    exports: Object.keys(a).length,
    same_exports: JSON.stringify(shape(a)) === JSON.stringify(shape(b)),
    missing: shape(b).filter((x) => !shape(a).includes(x)),
    extra: shape(a).filter((x) => !shape(b).includes(x)),
    spike: results(a),
    esbuild: results(b),
  });
}
fs.rmSync(dir, { recursive: true, force: true });
console.log(JSON.stringify({ files, bytes, failures, samples }));
