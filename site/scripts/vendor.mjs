// Writes dist/vendor/importmap.json: where a preview imports React and
// ReactDOM from, the server's own npm modules (/npm/, the npm plugin) at
// the versions this site pins, so that every preview and every package it
// imports share one React. Other packages go to /npm/ too (preview.js),
// with React and ReactDOM left to this map (`?external=`).
import { createRequire } from 'node:module';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const require = createRequire(import.meta.url);
const out = process.argv[2] ?? 'dist/vendor';
mkdirSync(out, { recursive: true });

const imports = {};
for (const name of ['react', 'react-dom']) {
  const { version } = require(`${name}/package.json`);
  imports[name] = `/npm/${name}@${version}`;
  imports[`${name}/`] = `/npm/${name}@${version}/`;
}
writeFileSync(join(out, 'importmap.json'), JSON.stringify({ imports }, null, 2) + '\n');
console.log(`vendor: ${Object.keys(imports).length} entries in ${out}/importmap.json`);
