#!/usr/bin/env bash
# Builds the editor spike serves at / (site/ -> site/dist): its npm
# packages from site/package-lock.json (npm's cache is outside the clone),
# Vite for the page (assets named by content hash, which spike serves as
# immutable), then scripts/vendor.mjs for the import map previews use
# (site/dist/vendor/importmap.json: React from the server's /npm/
# modules). The build goes to a new folder that replaces site/dist whole,
# so a watching spike never scans half a build.
set -euo pipefail
cd "$(dirname "$0")/../site"
if ! command -v npm >/dev/null 2>&1; then
  echo "build-site: npm is missing: run scripts/setup.sh (it installs Node.js and npm)" >&2
  exit 1
fi
# `npm ci` when the lock changed since the last install (it is exact and
# starts clean); otherwise the installed packages are the lock's.
stamp=node_modules/.spike-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" >"$stamp"
fi
rm -rf .dist-new
npx --no-install vite build --outDir .dist-new --emptyOutDir --logLevel warn
node scripts/vendor.mjs .dist-new/vendor
rm -rf .dist-old
[ -d dist ] && mv dist .dist-old
mv .dist-new dist
rm -rf .dist-old
echo "site built in site/dist"
