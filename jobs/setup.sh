#!/usr/bin/env bash
# setup.sh — installs what smallmind needs on a bare Debian 12 (as root, or with sudo) and
# builds it. Safe to re-run: packages already present are not reinstalled.
#   bash jobs/setup.sh [BUILD_DIR] [extra cmake args...]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build}; shift || true
PKGS="build-essential cmake pkgconf openmpi-bin libopenmpi-dev libhdf5-openmpi-dev hdf5-tools libcunit1-dev libxxhash-dev
      python3 python3-numpy python3-h5py python3-torch libopenblas0-pthread valgrind gnuplot-nox"
missing=""
for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
# node/npm (for the Moby Dick data) often come from outside Debian; install Debian's only if absent
command -v npm >/dev/null 2>&1 || missing="$missing nodejs npm"
if [ -n "$missing" ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  echo "setup: installing$missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build "$BUILD" -j "$(nproc)"
