#!/usr/bin/env bash
# Sets up a fresh machine (see setup.sh) and runs every test: the Rust core's
# unit tests, then the end-to-end tests against real Nix.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npm test
