#!/usr/bin/env bash
# The main job on a small built-in example: build a closure with Nix, turn it
# into a binary cache with narcache, then let real Nix substitute the closure
# from that cache into a fresh store and verify every path.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

work=${1:-$(mktemp -d /tmp/narcache-example.XXXXXX)}
mkdir -p "$work"
# The settings of scripts/nix.conf (no substituters, no sandbox, no build users), for this
# script's nix commands only: the machine's Nix configuration is left as it is.
NIX_CONFIG=$(cat scripts/nix.conf)
export NIX_CONFIG

root=$(nix-build examples/hello.nix --no-out-link)
echo "== closure of $root:"
nix-store --query --requisites "$root"

echo "== narcache build"
node dist/cli.js build "$root" -o "$work/cache" --compression zstd

echo "== nix copy from file://$work/cache into the fresh store $work/store"
nix copy --from "file://$work/cache" --no-check-sigs --to "$work/store" "$root"
nix store verify --store "$work/store" --all --no-trust
echo "== ok: Nix substituted and verified the closure from the cache in $work/cache"
