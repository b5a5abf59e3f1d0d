#!/usr/bin/env bash
# eval-sweep.sh — the validation loss of every checkpoint of a run, as RUN_DIR/eval.csv:
#
#   jobs/eval-sweep.sh RUN_DIR VAL_FILE [EVAL_ARGS...]
#   jobs/eval-sweep.sh runs/book data/book_val.bin --batch 8 --batches 20
#
# runs `smallmind eval --ckpt CKPT --data VAL_FILE --json EVAL_ARGS` on each RUN_DIR/ckpt_*.h5
# (checkpoints still being written, *.h5.tmp, are not matched; one that --keep deletes while the
# sweep runs is skipped) and writes RUN_DIR/eval.csv, one row per checkpoint sorted by step:
#   step,tokens_seen,val_loss,perplexity,ckpt
# (step and tokens_seen from `smallmind inspect --json`, which also verifies the checksums;
# val_loss and perplexity from eval; ckpt is the file name). The file is replaced atomically
# (eval.csv.tmp, then rename), so a reader, jobs/plot say, never sees half of it.
# $SMALLMIND or `smallmind` on PATH; EVAL_LAUNCHER (e.g. "mpirun -np 4 --bind-to none") is put
# before it for eval. `jobs/plot RUN_DIR` draws the result. Exit 1 if a checkpoint that still
# exists could not be evaluated (the others are written), 2 for bad usage.
#
# Two building blocks, also used by jobs/eval-sweep.sbatch (one array task per checkpoint):
#   eval-sweep.sh --row CKPT VAL_FILE [EVAL_ARGS...]   one CSV row to stdout (exit 3: CKPT is gone)
#   eval-sweep.sh --merge RUN_DIR ROWS_DIR             RUN_DIR/eval.csv from ROWS_DIR/*.csv
set -euo pipefail
HEADER="step,tokens_seen,val_loss,perplexity,ckpt"
die() { echo "eval-sweep: error: $*" >&2; exit 2; }

smallmind_bin() {
  local b=${SMALLMIND:-$(command -v smallmind || true)}
  [ -n "$b" ] && [ -x "$b" ] || die "no smallmind binary: set SMALLMIND=/path/to/smallmind or put it on PATH"
  echo "$b"
}
# the first value of "key": in a one-line JSON object (numbers only)
json_num() { grep -o "\"$1\":[-0-9.eE+]*" <<<"$2" | head -1 | cut -d: -f2; }

row() {   # row CKPT VAL_FILE [EVAL_ARGS...]
  local ckpt=$1 val=$2; shift 2
  local bin meta out step tokens loss ppl
  bin=$(smallmind_bin)
  [ -e "$ckpt" ] || return 3
  if ! meta=$("$bin" inspect "$ckpt" --json 2>&1); then
    [ -e "$ckpt" ] || return 3   # deleted (--keep) while we looked
    echo "eval-sweep: $ckpt: inspect failed: $(tail -1 <<<"$meta")" >&2
    return 1
  fi
  step=$(json_num step "$meta")
  tokens=$(json_num tokens_seen "$meta")
  # word splitting of EVAL_LAUNCHER is intended ("mpirun -np 4")
  # shellcheck disable=SC2086
  if ! out=$(${EVAL_LAUNCHER:-} "$bin" eval --ckpt "$ckpt" --data "$val" --json "$@" 2>&1); then
    [ -e "$ckpt" ] || return 3
    echo "eval-sweep: $ckpt: eval failed: $(tail -1 <<<"$out")" >&2
    return 1
  fi
  out=$(grep '^{.*"loss"' <<<"$out" | tail -1)
  loss=$(json_num loss "$out")
  ppl=$(json_num perplexity "$out")
  if [ -z "$step" ] || [ -z "$tokens" ] || [ -z "$loss" ] || [ -z "$ppl" ]; then
    echo "eval-sweep: $ckpt: no step/tokens_seen from inspect or loss/perplexity from eval --json" >&2
    return 1
  fi
  echo "$step,$tokens,$loss,$ppl,$(basename "$ckpt")"
}

merge() {   # merge RUN_DIR ROWS_DIR: header + every row, sorted by step, atomically
  local run_dir=$1 rows=$2 tmp=$1/eval.csv.tmp
  {
    echo "$HEADER"
    find "$rows" -maxdepth 1 -name '*.csv' -exec cat {} + | sort -t, -k1,1n
  } > "$tmp"
  sync "$tmp" 2>/dev/null || true
  mv -f "$tmp" "$run_dir/eval.csv"
  echo "eval-sweep: $run_dir/eval.csv: $(($(wc -l < "$run_dir/eval.csv") - 1)) checkpoint(s)" >&2
}

sweep() {   # sweep RUN_DIR VAL_FILE [EVAL_ARGS...]
  local run_dir=$1 val=$2; shift 2
  [ -d "$run_dir" ] || die "no run directory '$run_dir'"
  [ -r "$val" ] || die "cannot read the val file '$val'"
  local failed=0 ckpt rc n=0
  rows=$(mktemp -d "$run_dir/.eval-sweep.XXXXXX")   # global: the EXIT trap removes it
  trap 'rm -rf "$rows"' EXIT
  for ckpt in "$run_dir"/ckpt_*.h5; do
    [ -e "$ckpt" ] || continue
    rc=0
    row "$ckpt" "$val" "$@" > "$rows/$(basename "$ckpt" .h5).csv" || rc=$?
    case $rc in
      0) n=$((n + 1)); echo "eval-sweep: $(basename "$ckpt"): $(cut -d, -f3 < "$rows/$(basename "$ckpt" .h5).csv")" >&2 ;;
      3) rm -f "$rows/$(basename "$ckpt" .h5).csv"; echo "eval-sweep: $(basename "$ckpt") was deleted meanwhile: skipped" >&2 ;;
      *) rm -f "$rows/$(basename "$ckpt" .h5).csv"; failed=1 ;;
    esac
  done
  [ "$n" -gt 0 ] || [ "$failed" = 1 ] || die "no checkpoint (ckpt_*.h5) in '$run_dir'"
  merge "$run_dir" "$rows"
  return $failed
}

case "${1:-}" in
  --row) shift; [ $# -ge 2 ] || die "usage: eval-sweep.sh --row CKPT VAL_FILE [EVAL_ARGS...]"; row "$@" ;;
  --merge) shift; [ $# -eq 2 ] || die "usage: eval-sweep.sh --merge RUN_DIR ROWS_DIR"; merge "$@" ;;
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
  *) [ $# -ge 2 ] || die "usage: eval-sweep.sh RUN_DIR VAL_FILE [EVAL_ARGS...]"; sweep "$@" ;;
esac
