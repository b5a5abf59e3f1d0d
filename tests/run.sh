#!/usr/bin/env bash
# run.sh — installs what is missing, then runs every test:
#   1. the optimised build (-march=native) with -Wall -Wextra -Werror: all of CTest but `cluster`;
#   2. the same build: the `cluster` tests (a private one-node Slurm, two network-namespace hosts;
#      they install slurm-wlm and munge if missing; root, else skipped);
#   3. an ASan + UBSan build: the unit tests and the MPI integration tests (label mpi: dp, resume, the
#      checkpoint tests), LeakSanitizer on; Open MPI's own leaks are suppressed by function
#      (tests/lsan_openmpi.supp, set by tests/CMakeLists.txt);
#   4. a portable build (no AVX-512, which valgrind cannot run): a training run under valgrind.
#   bash tests/run.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=${BUILD:-$ROOT/build-test}
bash "$ROOT/jobs/setup.sh" "$B" -DSMALLMIND_WERROR=ON
status=0
t=$SECONDS
stage_time() { echo "== stage $1: $((SECONDS - t)) s"; t=$SECONDS; }
echo "== 1/4 all tests but the cluster ones (optimised build, -Werror)"
(cd "$B" && ctest --output-on-failure --timeout 900 -LE cluster) || status=1
stage_time 1
echo "== 2/4 Slurm and multi-node: a private one-node Slurm, two network-namespace hosts over TCP"
(cd "$B" && ctest --output-on-failure --timeout 900 -L cluster) || status=1
stage_time 2
echo "== 3/4 unit and MPI integration tests under AddressSanitizer + UndefinedBehaviorSanitizer, leaks on"
bash "$ROOT/jobs/setup.sh" "$B-sanitize" -DSMALLMIND_WERROR=ON -DSMALLMIND_SANITIZE=ON
(cd "$B-sanitize" && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -L 'unit|mpi') || status=1
stage_time 3
echo "== 4/4 a training run under valgrind (portable build)"
bash "$ROOT/jobs/setup.sh" "$B-portable" -DSMALLMIND_WERROR=ON -DSMALLMIND_NATIVE=OFF
(cd "$B-portable" && ctest --output-on-failure -L valgrind) || status=1
stage_time 4
exit $status
