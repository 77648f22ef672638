// The live preview: the editor's TSX goes to the transpiler (POST
// /transpile, its JSON form) with an import map, and runs in an iframe.
// Every bare import is a module of the server's npm plugin (/npm/): React
// and ReactDOM at the versions the site pins (dist/vendor/importmap.json),
// any other package at its latest version with React left to the page's
// import map, so that the whole preview shares one React. The module's
// default export is the component shown.

let importMap = null;

/** The site's import map, with absolute URLs (the transpiled module and
 * the renderer's page resolve them from elsewhere than this page). */
async function vendorMap() {
  if (!importMap) {
    const resp = await fetch('/vendor/importmap.json');
    if (!resp.ok) throw new Error(`the preview's import map is missing (/vendor/importmap.json: ${resp.status})`);
    const { imports } = await resp.json();
    importMap = Object.fromEntries(
      Object.entries(imports).map(([k, v]) => [k, new URL(v, location.origin).href]),
    );
  }
  return importMap;
}

/** Where any other package is imported from: its /npm/ module, with the
 * map's packages left to the map. */
function packageUrl(imports) {
  const shared = Object.keys(imports).filter((k) => !k.endsWith('/'));
  return `${location.origin}/npm/{pkg}?external=${shared.join(',')}`;
}

/** A transpile problem: where it is and what. */
export class Problem extends Error {
  constructor(diagnostics) {
    super(diagnostics.map((d) => `${d.line}:${d.column}: ${d.message}`).join('\n'));
    this.diagnostics = diagnostics;
  }
}

/** `source` transpiled to an ES module whose imports are absolute URLs. */
export async function transpile(source) {
  const imports = await vendorMap();
  const resp = await fetch('/transpile', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      code: source,
      loader: 'tsx',
      jsx: 'automatic',
      jsxImportSource: 'react',
      importMap: { imports, cdn: packageUrl(imports) },
    }),
  });
  const body = await resp.json().catch(() => null);
  if (resp.status === 400 && body?.diagnostics?.length) throw new Problem(body.diagnostics);
  if (!resp.ok || typeof body?.code !== 'string') {
    throw new Error(body?.error?.message ?? `the transpiler answered ${resp.status}`);
  }
  return body.code;
}

/** A whole HTML page that runs `module` (its default export rendered into
 * #root), standing alone: the import map for the packages' own imports of
 * React, the module inlined as a data: URL, and errors posted to the
 * parent window, if any. An import that fails is named with the server's
 * reason (the browser's own message names only the data: URL). */
export async function page(module) {
  const imports = await vendorMap();
  const data = `data:text/javascript;base64,${btoa(unescape(encodeURIComponent(module)))}`;
  const boot = `
    const report = (message) => parent !== window && parent.postMessage({ previewError: String(message) }, '*');
    addEventListener('error', (e) => report(e.message));
    addEventListener('unhandledrejection', (e) => report(e.reason?.message ?? e.reason));
    ${whyNotImported}
    try {
      const [{ default: App }, { createRoot }, { jsx }] = await Promise.all([
        import(${JSON.stringify(data)}),
        import('react-dom/client'),
        import('react/jsx-runtime'),
      ]);
      if (typeof App !== 'function') throw new Error('export a component as the default export');
      createRoot(document.getElementById('root')).render(jsx(App, {}));
      document.documentElement.dataset.rendered = 'true';
    } catch (e) {
      report((await whyNotImported(${JSON.stringify(module)}).catch(() => null)) ?? e.message ?? e);
    }`;
  const map = JSON.stringify({ imports }).replaceAll('<', '\\u003c');
  return `<!doctype html><html><head><meta charset="utf-8">
<script type="importmap">${map}</script>
<style>body{font-family:system-ui,sans-serif;margin:16px;color:#1d2430}</style></head>
<body><div id="root"></div><script type="module">${boot.replaceAll('</script', '<\\/script')}</script></body></html>`;
}

/** Runs in the preview: the first /npm/ module that `code` imports
 * (directly or through the modules it imports) which the server refuses,
 * as "cannot import <package>: <the server's reason>"; null if none. */
const whyNotImported = `async function whyNotImported(code) {
  const seen = new Set();
  let next = [[code, undefined]];
  while (next.length && seen.size < 300) {
    const urls = next.flatMap(([text, base]) => [...text.matchAll(/["']((?:https?:\\/\\/[^"'\\/]+)?\\/npm\\/[^"']+)["']/g)]
      .map((m) => { try { return new URL(m[1], base).href; } catch { return null; } })
      .filter((url) => url));
    next = [];
    for (const url of urls) {
      if (seen.has(url)) continue;
      seen.add(url);
      const resp = await fetch(url);
      const text = await resp.text();
      if (!resp.ok) {
        let reason = 'the server answered ' + resp.status;
        try { reason = JSON.parse(text).error.message ?? reason; } catch {}
        const pkg = decodeURIComponent(new URL(url).pathname.slice('/npm/'.length)).replace(/^(@[^/]+\\/[^/@]+|[^/@]+).*$/, '$1');
        return 'cannot import ' + pkg + ': ' + reason;
      }
      next.push([text, resp.url]);
    }
  }
  return null;
}`;
