#!/usr/bin/env bash
# Produces the npm tarballs into DIR (default: ./pack) and prints their paths:
# the main package `narcache` and one `narcache-<platform>` package for each
# binary in native/ (here: the one `npm run build` made for this machine; a
# release pipeline collects every target's binary there first, e.g. with
# `napi artifacts --output-dir native`). Needs a finished `npm run build`.
set -euo pipefail
cd "$(dirname "$0")/.."

out=$(realpath -m "${1:-pack}")
for f in dist/index.js dist/cli.js native/index.js native/index.d.ts; do
  [ -f "$f" ] || { echo "pack: $f is missing: run npm run build first" >&2; exit 1; }
done

binaries=(native/narcache.*.node)
[ -e "${binaries[0]}" ] || { echo "pack: no native/narcache.*.node: run npm run build first" >&2; exit 1; }

mkdir -p "$out"
for binary in "${binaries[@]}"; do
  platform=${binary#native/narcache.}
  platform=${platform%.node}
  dir=npm/$platform
  [ -f "$dir/package.json" ] || {
    echo "pack: $binary has no package $dir: add its target to napi.targets in package.json and run npx napi create-npm-dirs" >&2
    exit 1
  }
  # A copy, not a move: native/ keeps the binary the repository's own loader uses.
  cp "$binary" "$dir/"
  echo "$out/$(cd "$dir" && npm pack --silent --pack-destination "$out")"
done
echo "$out/$(npm pack --silent --pack-destination "$out")"
