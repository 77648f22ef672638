// Imports real packages through spike's /npm/ modules and through Node
// from tests/npm/node_modules, runs the same probe on both, and prints one
// JSON line per case: {"case", "spike", "node", "same"} (or "error").
//
//   node npm-probe.mjs http://127.0.0.1:PORT [case ...]
//
// Modules from spike are linked as a browser links them: each import's
// URL resolved against its importer's URL (after redirects), bare names
// through the import map below; nothing else of Node is used.
import { spawnSync } from 'node:child_process';
import vm from 'node:vm';
import { importHere } from '../npm/import.mjs';

// vm.SourceTextModule needs a flag: run again with it.
if (!vm.SourceTextModule) {
  const flags = ['--experimental-vm-modules', '--no-warnings'];
  const run = spawnSync(process.execPath, [...flags, ...process.argv.slice(1)], { stdio: 'inherit' });
  process.exit(run.status ?? 1);
}

// Node then loads the production builds, as spike builds by default.
process.env.NODE_ENV = 'production';
const base = process.argv[2];
const only = process.argv.slice(3);

// [name, what to import, probe run on the module's namespace]
const cases = [
  ['react', 'react@19.3.1', (m) => [typeof m.useState, m.version, m.createElement('div', { id: 'x' }, 'hi').props.id, typeof m.default.createElement]],
  ['react-jsx-runtime', 'react@19.3.1/jsx-runtime', (m) => [m.jsx('p', { children: 'a' }).type, typeof m.Fragment]],
  ['react-dom', 'react-dom@19.3.1', (m) => [typeof m.createPortal, typeof m.flushSync, m.version]],
  ['react-dom-client', 'react-dom@19.3.1/client', (m) => [typeof m.createRoot, typeof m.hydrateRoot]],
  ['scheduler', 'scheduler@0.28.0', (m) => [typeof m.unstable_scheduleCallback, m.unstable_IdlePriority]],
  ['canvas-confetti', 'canvas-confetti@1.9.4', (m) => [typeof m.default, typeof m.default.create, typeof m.default.reset]],
  ['date-fns', 'date-fns@4.4.0', (m) => [m.format(new Date(2020, 0, 2, 3, 4), 'yyyy-MM-dd HH:mm'), m.addDays(new Date(2020, 0, 1), 3).getDate(), m.differenceInDays(new Date(2020, 1, 1), new Date(2020, 0, 1)), m.isLeapYear(new Date(2024, 0, 1))]],
  ['date-fns-locale', 'date-fns@4.4.0/locale', (m) => [m.fr.code, m.de.code, typeof m.enUS.localize.month]],
  ['lodash-es', 'lodash-es@4.18.1', (m) => [m.chunk([1, 2, 3, 4, 5], 2), m.default.sum([1, 2, 3]), m.kebabCase('Hello World'), typeof m.debounce]],
  ['nanoid', 'nanoid@6.0.2', (m) => [m.nanoid().length, m.customAlphabet('a', 5)(), typeof m.urlAlphabet]],
  ['three', 'three@0.187.0', (m) => [new m.Vector3(3, 4, 0).length(), m.REVISION, new m.Matrix4().identity().elements[15]]],
  ['zustand-vanilla', 'zustand@5.1.0/vanilla', (m) => { const s = m.createStore(() => ({ n: 1 })); s.setState({ n: 2 }); return [s.getState().n]; }],
  ['zustand', 'zustand@5.1.0', (m) => [typeof m.create, typeof m.useStore]],
  ['emotion', '@emotion/react@11.14.0', (m) => [typeof m.css, m.css({ color: 'red' }).styles, typeof m.jsx, typeof m.ThemeProvider]],
];

const imports = {};
const modules = new Map();
const fetched = new Map();

// At most 6 requests at once, as a browser makes to one HTTP/1.1 origin.
let inFlight = 0;
const waiting = [];
async function limited(url) {
  while (inFlight >= 6) await new Promise((ok) => waiting.push(ok));
  inFlight++;
  try {
    return await fetch(url);
  } finally {
    inFlight--;
    waiting.shift()?.();
  }
}

async function fetchModule(url) {
  if (!fetched.has(url)) {
    fetched.set(url, (async () => {
      const resp = await limited(url);
      const text = await resp.text();
      if (!resp.ok) throw new Error(`${url}: ${resp.status} ${text}`);
      return { url: resp.url, text };
    })());
  }
  return fetched.get(url);
}

async function load(url) {
  const { url: final, text } = await fetchModule(url);
  // The module map is keyed by the URL asked for, as browsers key it.
  if (!modules.has(url)) {
    modules.set(url, new vm.SourceTextModule(text, {
      identifier: final,
      initializeImportMeta(meta) { meta.url = final; },
      importModuleDynamically: async (specifier, referrer) => {
        const m = await load(resolveSpecifier(specifier, referrer.identifier));
        await m.link(link);
        await m.evaluate();
        return m;
      },
    }));
  }
  return modules.get(url);
}

function resolveSpecifier(specifier, from) {
  if (imports[specifier]) return imports[specifier];
  if (/^[./]/.test(specifier) || /^[a-z]+:/.test(specifier)) return new URL(specifier, from).href;
  throw new Error(`bare specifier "${specifier}" is not in the import map (from ${from})`);
}

const link = (specifier, referencing) => load(resolveSpecifier(specifier, referencing.identifier));

async function viaSpike(spec) {
  const module = await load(`${base}/npm/${spec}`);
  if (module.status === 'unlinked') await module.link(link);
  await module.evaluate();
  return module.namespace;
}

async function viaNode(spec) {
  const at = spec.indexOf('@', 1);
  const slash = spec.indexOf('/', at);
  const name = spec.slice(0, at) + (slash < 0 ? '' : spec.slice(slash));
  return importHere(name);
}

for (const [name, spec, probe] of cases) {
  if (only.length && !only.includes(name)) continue;
  let line;
  try {
    const spike = JSON.stringify(probe(await viaSpike(spec)));
    const node = JSON.stringify(probe(await viaNode(spec)));
    line = { case: name, spike, node, same: spike === node };
  } catch (e) {
    line = { case: name, error: String(e?.stack ?? e).slice(0, 2000) };
  }
  console.log(JSON.stringify(line));
}
