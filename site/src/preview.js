// The live preview: the editor's TSX goes to the transpiler (POST
// /transpile, its JSON form) with an import map to the React modules this
// site serves (dist/vendor/, built from npm), and runs in an iframe. The
// module's default export is the component shown.

let importMap = null;

/** The site's import map, with absolute URLs (the transpiled module and
 * the renderer's page resolve them from elsewhere than this page). */
async function vendorMap() {
  if (!importMap) {
    const resp = await fetch('/vendor/importmap.json');
    if (!resp.ok) throw new Error(`the React modules are missing (/vendor/importmap.json: ${resp.status})`);
    const { imports } = await resp.json();
    importMap = Object.fromEntries(
      Object.entries(imports).map(([k, v]) => [k, new URL(v, location.origin).href]),
    );
  }
  return importMap;
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
      // A package the site does not serve fails to load in the preview,
      // naming it: nothing is fetched from a CDN.
      importMap: { imports, cdn: `${location.origin}/vendor/not-served/{pkg}` },
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
 * #root), standing alone: the module is inlined as a data: URL, and errors
 * are posted to the parent window, if any. */
export async function page(module) {
  const imports = await vendorMap();
  const data = `data:text/javascript;base64,${btoa(unescape(encodeURIComponent(module)))}`;
  // Packages the transpiler pointed at /vendor/not-served/: their import
  // fails (404), and the browser's message would name only the data: URL.
  const missing = [...new Set([...module.matchAll(/\/vendor\/not-served\/([^'"?#]+)/g)].map((m) => m[1]))];
  const unserved = missing.length
    ? `cannot import ${missing.join(', ')}: the preview serves only ${Object.keys(imports).filter((k) => !k.endsWith('/')).join(', ')}`
    : null;
  const boot = `
    const report = (message) => parent !== window && parent.postMessage({ previewError: String(message) }, '*');
    const unserved = ${JSON.stringify(unserved)};
    addEventListener('error', (e) => report(e.message));
    addEventListener('unhandledrejection', (e) => report(e.reason?.message ?? e.reason));
    try {
      const [{ default: App }, { createRoot }, { jsx }] = await Promise.all([
        import(${JSON.stringify(data)}),
        import(${JSON.stringify(imports['react-dom/client'])}),
        import(${JSON.stringify(imports['react/jsx-runtime'])}),
      ]);
      if (typeof App !== 'function') throw new Error('export a component as the default export');
      createRoot(document.getElementById('root')).render(jsx(App, {}));
      document.documentElement.dataset.rendered = 'true';
    } catch (e) { report(unserved ?? e.message ?? e); }`;
  return `<!doctype html><html><head><meta charset="utf-8">
<style>body{font-family:system-ui,sans-serif;margin:16px;color:#1d2430}</style></head>
<body><div id="root"></div><script type="module">${boot.replaceAll('</script', '<\\/script')}</script></body></html>`;
}
