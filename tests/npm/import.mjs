// `import(name)` as from this folder: Node resolves it in tests/npm's
// node_modules with the conditions of an import (tests/node/npm-probe.mjs).
export const importHere = (name) => import(name);
