#!/usr/bin/env bash
# test_lsan_control.sh MPIEXEC BINARY — the negative control for lsan_openmpi.supp (sanitizer build).
# Runs the 2-rank lsan_control with each rank's LeakSanitizer report in its own file (ASAN_OPTIONS
# log_path, suffixed with the pid), so the two reports cannot interleave on a shared stderr; passes only
# when there are exactly two reports, each naming own_block and summing to 64 bytes in 1 allocation
# (Open MPI's own leaks suppressed, the program's not), and the job itself failed (LSan's exit code).
set -u
mpiexec=$1 bin=$2
dir=$(mktemp -d) || exit 1
trap 'rm -rf "$dir"' EXIT
ASAN_OPTIONS="detect_leaks=1:log_path=$dir/lsan" "$mpiexec" -n 2 --bind-to none "$bin" >"$dir/out" 2>&1
rc=$?
fail() { echo "lsan_control: $*"; cat "$dir/out" "$dir"/lsan.* 2>/dev/null; exit 1; }
[ "$rc" -ne 0 ] || fail "the job exited 0: LeakSanitizer did not report the program's leak"
shopt -s nullglob
reports=("$dir"/lsan.*)
[ "${#reports[@]}" -eq 2 ] || fail "expected 2 reports (one per rank), found ${#reports[@]}"
for r in "${reports[@]}"; do
  grep -q 'in own_block ' "$r" || fail "$(basename "$r"): own_block not named"
  grep -q 'SUMMARY: AddressSanitizer: 64 byte(s) leaked in 1 allocation(s)\.' "$r" ||
    fail "$(basename "$r"): not exactly the program's 64 bytes in 1 allocation"
  n=$(grep -c 'leak of' "$r")
  [ "$n" -eq 1 ] || fail "$(basename "$r"): $n leak records, expected 1"
done
echo "lsan_control: both ranks report exactly the program's own 64-byte block"
