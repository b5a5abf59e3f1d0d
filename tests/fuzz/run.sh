#!/usr/bin/env bash
# run.sh OUT_DIR [SECONDS] — the checkpoint fuzzers in CI (~1.5 minutes): builds them (build.sh), replays
# the committed corpora and every regression input, then fuzzes each harness for SECONDS (default 30):
#   fuzz_latest     in-process: any crash, hang or broken invariant fails the test;
#   fuzz_ckpt_file  in-process, coverage-guided, in libFuzzer's fork mode so that a crash inside libhdf5
#                   1.10.8 (which a fuzzer finds within minutes) does not end the run; each crash found is
#                   then (a) replayed as smallmind runs it, in a forked child, where it must read as a
#                   damaged checkpoint, and (b) replayed in-process, where its innermost frame must be in
#                   libhdf5 — a crash in smallmind's own code fails the test.
# Prints the executions per harness and a closing "fuzz: N passed, M failed".
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${1:?usage: run.sh OUT_DIR [SECONDS]}
SECS=${2:-30}
F=$ROOT/tests/fuzz
export LSAN_OPTIONS=suppressions=$F/lsan.supp ASAN_OPTIONS=detect_leaks=1
export SMALLMIND_CKPT_CHECK_TIMEOUT=5   # a contained check that hangs in libhdf5 is killed after 5 s here
pass=0 fail=0 t0=$SECONDS
ok()  { pass=$((pass+1)); echo "ok   $1"; }
bad() { fail=$((fail+1)); echo "FAIL $1"; }
bash "$F/build.sh" "$OUT" fuzz_ckpt_file fuzz_latest || { echo "fuzz: 0 passed, 1 failed (build)"; exit 1; }
t_build=$((SECONDS - t0))
W=$OUT/work; rm -rf "$W"; mkdir -p "$W"; cd "$W"

# 1. the corpora and the regression inputs
"$OUT/fuzz_latest" "$F"/corpus/latest/* "$F"/regressions/latest/* >replay_latest.log 2>&1 \
  && ok "fuzz_latest replays its corpus and $(ls "$F"/regressions/latest | wc -l) regression input(s)" \
  || bad "fuzz_latest replay: $(grep -m1 -E 'ERROR|runtime error' replay_latest.log)"
"$OUT/fuzz_ckpt_file" "$F"/corpus/ckpt/* >replay_ckpt.log 2>&1 \
  && ok "fuzz_ckpt_file replays its corpus ($(ls "$F"/corpus/ckpt | wc -l) files, valid and damaged)" \
  || bad "fuzz_ckpt_file replay: $(grep -m1 -E 'ERROR|runtime error' replay_ckpt.log)"
for r in "$F"/regressions/ckpt/*; do   # with the header's layout, and with /model's own listing
  FUZZ_CONTAINED=1 FUZZ_EXPECT_DAMAGED=1 "$OUT/fuzz_ckpt_file" "$r" >replay_reg.log 2>&1 \
    && FUZZ_NO_LAYOUT=1 FUZZ_CONTAINED=1 FUZZ_EXPECT_DAMAGED=1 "$OUT/fuzz_ckpt_file" "$r" >>replay_reg.log 2>&1 \
    && ok "libhdf5 crash $(basename "$r"): contained, reads as damaged" || bad "regression $(basename "$r")"
done

# 2. fuzzing
execs() { grep -Eo '^#[0-9]+' "$1" | tail -1 | tr -d '#'; }
mkdir -p corpus_latest && cp "$F"/corpus/latest/* corpus_latest/
"$OUT/fuzz_latest" -max_total_time="$SECS" -timeout=10 -print_final_stats=1 corpus_latest >fuzz_latest.log 2>&1; rc=$?
n=$(grep -Eo 'number_of_executed_units: *[0-9]+' fuzz_latest.log | grep -Eo '[0-9]+$')
[ $rc -eq 0 ] && ok "fuzz_latest: ${n:-?} executions in ${SECS} s, no crash" \
  || bad "fuzz_latest found a crash: $(grep -m1 -E 'ERROR|runtime error' fuzz_latest.log) (input in $W)"
mkdir -p corpus_ckpt && cp "$F"/corpus/ckpt/* corpus_ckpt/
"$OUT/fuzz_ckpt_file" -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 -timeout=20 -rss_limit_mb=4096 \
  -max_total_time="$SECS" corpus_ckpt >fuzz_ckpt.log 2>&1
n=$(execs fuzz_ckpt.log)
ok "fuzz_ckpt_file: ${n:-?} executions in ${SECS} s"
n_h5=0
for c in crash-* timeout-*; do
  [ -e "$c" ] || continue
  if ! FUZZ_CONTAINED=1 FUZZ_EXPECT_DAMAGED=1 "$OUT/fuzz_ckpt_file" "$c" >contained.log 2>&1; then
    bad "$c: not contained ($(grep -m1 -E 'ERROR|runtime error' contained.log))"; continue
  fi
  [ "${c%%-*}" = timeout ] && { n_h5=$((n_h5+1)); continue; }
  "$OUT/fuzz_ckpt_file" "$c" >inproc.log 2>&1
  # the innermost frame that is not the sanitizer runtime or libc's allocator
  frame=$(grep -E '^ +#[0-9]+ ' inproc.log | grep -vE 'sanitizer|asan|ubsan|__interceptor_| in (free|malloc|calloc|realloc|mem[a-z]+|str[a-z]+) |libc\.so' | head -1)
  if echo "$frame" | grep -q 'libhdf5'; then n_h5=$((n_h5+1)); else bad "$c: a crash outside libhdf5: $frame"; fi
done
ok "fuzz_ckpt_file: $n_h5 crash(es) or hang(s) inside libhdf5 found, each contained as damaged"
echo "fuzz: $pass passed, $fail failed ($((SECONDS - t0)) s in all: build $t_build s)"
[ $fail -eq 0 ]
