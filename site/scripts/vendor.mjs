// Builds the modules a preview imports (React and ReactDOM from npm) as ES
// modules the site serves, so that no CDN is needed at run time: one bundle
// holds every React module (one React instance), and a small module per
// specifier re-exports its part. Writes dist/vendor/ and
// dist/vendor/importmap.json, the map a transpile request sends.
import { build } from 'esbuild';
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const require = createRequire(import.meta.url);
const out = process.argv[2] ?? 'dist/vendor';
mkdirSync(out, { recursive: true });

// specifier -> the name it is exported under from the bundle
const modules = {
  'react': 'React',
  'react/jsx-runtime': 'JSXRuntime',
  'react/jsx-dev-runtime': 'JSXDevRuntime',
  'react-dom': 'ReactDOM',
  'react-dom/client': 'ReactDOMClient',
};

const hashed = (name, text) => {
  const hash = createHash('sha256').update(text).digest('hex').slice(0, 10);
  const file = `${name}.${hash}.mjs`;
  writeFileSync(join(out, file), text);
  return file;
};

const entry = Object.entries(modules)
  .map(([spec, name]) => `import * as ${name} from ${JSON.stringify(spec)};`)
  .join('\n') + `\nexport { ${Object.values(modules).join(', ')} };\n`;
const bundle = await build({
  stdin: { contents: entry, resolveDir: process.cwd(), loader: 'js' },
  bundle: true, format: 'esm', minify: true, write: false, target: 'es2022',
  define: { 'process.env.NODE_ENV': '"production"' }, legalComments: 'none',
});
const all = hashed('react-all', bundle.outputFiles[0].text);

const imports = {};
for (const [spec, name] of Object.entries(modules)) {
  const names = Object.keys(require(spec)).filter((k) => k !== 'default' && /^[A-Za-z_$][\w$]*$/.test(k));
  const text = `import { ${name} as m } from './${all}';\n` +
    `export default m.default ?? m;\n` +
    (names.length ? `export const { ${names.join(', ')} } = m;\n` : '');
  const file = hashed(spec.replaceAll('/', '-'), text);
  imports[spec] = `/vendor/${file}`;
}
writeFileSync(join(out, 'importmap.json'), JSON.stringify({ imports }, null, 2) + '\n');
console.log(`vendor: ${Object.keys(imports).length} modules in ${out}`);
