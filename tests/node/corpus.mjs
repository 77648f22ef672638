// The transpiler's corpus: the TypeScript / TSX sources that npm packages
// ship in their `src/` (installed by scripts/setup.sh from package.json),
// shared by the corpus test (transpile-corpus.mjs) and the benchmark
// (bench/transpile.mjs).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const modules = path.join(path.dirname(fileURLToPath(import.meta.url)), 'node_modules');

export const PACKAGES = [
  '@tanstack/query-core',
  '@tanstack/react-query',
  '@tanstack/router-core',
  '@tanstack/react-router',
  '@tanstack/store',
  '@tanstack/react-store',
  '@tanstack/history',
  '@trpc/server',
];

/// A package's source files, by path from its `src/`; tests left out.
export function sources(pkg) {
  const root = path.join(modules, pkg, 'src');
  const files = {};
  const walk = (dir) => {
    for (const name of fs.readdirSync(dir).sort()) {
      const file = path.join(dir, name);
      if (fs.statSync(file).isDirectory()) {
        if (name !== '__tests__' && name !== 'tests') walk(file);
      } else if (/\.tsx?$/.test(name) && !/\.d\.ts$|\.test\.|\.spec\.|\.bench\./.test(name)) {
        files['/' + path.relative(root, file)] = fs.readFileSync(file, 'utf8');
      }
    }
  };
  walk(root);
  return files;
}

/// Every file of every package: [{name, code, loader}].
export function corpus() {
  return PACKAGES.flatMap((pkg) =>
    Object.entries(sources(pkg)).map(([file, code]) => ({
      name: `${pkg}/src${file}`,
      code,
      loader: file.endsWith('.tsx') ? 'tsx' : 'ts',
    })),
  );
}
