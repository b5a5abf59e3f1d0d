#!/usr/bin/env bash
# run.sh — installs what is missing, builds with -Wall -Wextra -Werror, runs every test (CTest).
#   bash tests/run.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build-test}
bash "$ROOT/jobs/setup.sh" "$BUILD" -DSMALLMIND_WERROR=ON
cd "$BUILD"
ctest --output-on-failure --timeout 900
