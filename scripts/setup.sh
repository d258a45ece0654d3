#!/usr/bin/env bash
# Installs what narcache needs on a fresh Debian 12 machine (as root) and builds it:
# Nix from Debian's packages (for closures and the tests), the npm packages, the
# native core (Rust, through @napi-rs/cli) and the TypeScript library.
set -euo pipefail
cd "$(dirname "$0")/.."

# nix-bin: closures and the tests against real Nix; ceph-*/radosgw: the S3 tests' local gateway;
# python3, strace: the --db tests' lock holder, independent SQLite reader and system-call trace.
apt_packages=(nix-bin ceph-mon ceph-osd radosgw ceph-common python3 strace)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]} from Debian's packages" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null || {
  echo "setup: cargo not found: building the native core needs a Rust toolchain (rustup)" >&2
  exit 1
}

npm ci --no-audit --no-fund --loglevel=error
npm run --silent build
