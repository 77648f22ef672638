// The editor's build: hashed assets in dist/ (spike serves names with a
// content hash as immutable), public/ (the service worker, which must keep
// its name) copied as it is. scripts/vendor.mjs then adds dist/vendor/.
import { defineConfig } from 'vite';

export default defineConfig({
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    // CodeMirror and Yjs are most of it; one file is one request.
    chunkSizeWarningLimit: 1200,
  },
});
