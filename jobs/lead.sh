#!/usr/bin/env bash
# lead.sh RUN_DIR — how early Slurm should warn a training job before its time limit, from what
# the run's log.jsonl measured: on the warning (#SBATCH --signal=B:USR1@LEAD) smallmind finishes
# the step it is in, evaluates if that step is an --eval-every step, and writes one checkpoint,
# so LEAD must cover the longest step (the `step` events' ms), the longest val pass (estimated:
# one step's forward per val batch is less than a step: taken as one more step) and the longest
# save (the `checkpoint` events' save_s), with a safety factor of 2 (the filesystem's speed
# varies) and 30 s for the start of the save and the exit. Slurm may send the signal up to 60 s
# early, never late, so nothing is added for it.
#   jobs/lead.sh runs/book      ->  ... #SBATCH --signal=B:USR1@LEAD
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: jobs/lead.sh RUN_DIR" >&2; exit 2; }
log=$1/log.jsonl
[ -r "$log" ] || { echo "lead.sh: error: cannot read $log (run a few steps with --ckpt-every first)" >&2; exit 2; }
awk '
  function num(key,   m) { return match($0, "\"" key "\":[0-9.eE+-]+") ? substr($0, RSTART + length(key) + 3, RLENGTH - length(key) - 3) + 0 : -1 }
  /"event":"step"/       { s = num("ms") / 1000; if (s > step) step = s; n_steps++ }
  /"event":"checkpoint"/ { s = num("save_s"); if (s > save) save = s; n_saves++ }
  END {
    if (n_steps == 0) { print "lead.sh: error: no step events in " FILENAME > "/dev/stderr"; exit 2 }
    if (n_saves == 0) print "lead.sh: no checkpoint events yet: the save time is unknown, counted as 0 (run with --ckpt-every N to measure it)" > "/dev/stderr"
    lead = int(2 * (2 * step + save) + 30 + 0.999)
    printf "longest step %.3f s (%d steps), longest checkpoint save %.3f s (%d saves)\n", step, n_steps, save, n_saves
    printf "LEAD >= 2 x (2 x %.3f + %.3f) + 30 = %d s:  #SBATCH --signal=B:USR1@%d\n", step, save, lead, lead
  }' "$log"
