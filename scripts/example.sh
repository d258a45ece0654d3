#!/usr/bin/env bash
# The main job on a small built-in example: build a closure with Nix, turn it
# into a binary cache with narcache, then let real Nix substitute the closure
# from that cache into a fresh store and verify every path.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

work=${1:-$(mktemp -d /tmp/narcache-example.XXXXXX)}
mkdir -p "$work"
export NIX_CONFIG=$'substituters =\nexperimental-features = nix-command'

root=$(nix-build examples/hello.nix --no-out-link)
echo "== closure of $root:"
nix-store --query --requisites "$root"

echo "== narcache build"
node dist/cli.js build "$root" -o "$work/cache" --compression zstd

echo "== nix copy from file://$work/cache into the fresh store $work/store"
nix copy --from "file://$work/cache" --no-check-sigs --to "$work/store" "$root"
nix store verify --store "$work/store" --all --no-trust
echo "== ok: Nix substituted and verified the closure from the cache in $work/cache"
