#!/usr/bin/env bash
# Builds the example site (site/src -> site/dist) the way a bundler would:
# assets get their content hash in their name (so they are served
# immutable), index.html points at the hashed names, and every file gets a
# gzip sibling (chosen by Accept-Encoding). Hashed assets are written before
# the index that names them, each file by rename, so a watching spike never
# serves an index whose assets are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
src=site/src
out=site/dist
mkdir -p "$out"

put() { # source name: writes $out/name and name.gz by rename
  cp "$1" "$out/.$2.tmp"
  gzip -9 -n -c "$1" >"$out/.$2.gz.tmp"
  mv "$out/.$2.gz.tmp" "$out/$2.gz"
  mv "$out/.$2.tmp" "$out/$2"
}

index=$(mktemp)
trap 'rm -f "$index"' EXIT
cp "$src/index.html" "$index"
for asset in app.js style.css; do
  hash=$(sha256sum "$src/$asset" | cut -c1-10)
  hashed="${asset%.*}.$hash.${asset##*.}"
  put "$src/$asset" "$hashed"
  sed -i "s|/$asset\"|/$hashed\"|" "$index"
done
put "$index" index.html
echo "site built in $out"
