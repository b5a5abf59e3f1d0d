#!/usr/bin/env bash
# test_eval_sweep.sh SMALLMIND SRC_DIR WORKDIR — evaluation sweeps over a run's checkpoints
# (jobs/eval-sweep.sh, jobs/eval-sweep.sbatch) and their plot, against `smallmind eval` run by
# hand (DESIGN.md's CLI contract: eval --ckpt PATH --data FILE --json prints
# {"loss":L,"perplexity":P,"bits_per_byte":B,"tokens":N,"tokens_per_s":R}):
#  - a run with 3 checkpoints (and a ckpt_*.h5.tmp being "written"): eval.csv has the header
#    step,tokens_seen,val_loss,perplexity,ckpt and one row per checkpoint, sorted by step; each
#    val_loss equals eval's by hand, tokens_seen the checkpoint's attribute (h5py), perplexity
#    exp(val_loss); the .tmp is skipped and no eval.csv.tmp is left;
#  - the last row reproduces the run's own val event at that step (eval --batch b*R --batches
#    val-batches, to 1e-6 relative, as DESIGN.md promises);
#  - the job-array form (a private one-node Slurm; root only) writes the same CSV;
#  - jobs/plot draws exactly the CSV's points as the sweep curve.
# Not in CTest until `smallmind eval` exists (it exits 77, skipped, without it).
set -uo pipefail
bin=$1 src=$2 work=$3
if ! "$bin" eval --help >/dev/null 2>&1; then echo "eval_sweep: SKIP: this smallmind has no eval subcommand yet"; exit 77; fi
rm -rf "$work"; mkdir -p "$work"; cd "$work"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 SMALLMIND=$bin
unset OMP_NUM_THREADS
pass=0 fail=0
ok()  { pass=$((pass+1)); echo "ok   $1"; }
bad() { fail=$((fail+1)); echo "FAIL $1"; }
python3 -c "
import random; random.seed(29)
w=['the','pequod','sails','east','from','nantucket','with','a','crew','of','thirty']
print(' '.join(random.choice(w) for _ in range(30000)))" > text.txt
"$bin" prepare --input text.txt --out d >/dev/null
mpirun -np 2 --bind-to none "$bin" train --data d --run-dir run --layers 2 --heads 2 --embd 32 --seq 32 --batch 2 \
  --steps 30 --ckpt-every 10 --eval-every 30 --val-batches 3 --threads 1 --lr 2e-3 --min-lr 2e-4 --warmup 3 >train.out 2>&1 \
  || { echo "training failed: $(tail -3 train.out)"; exit 1; }
cp run/ckpt_00000020.h5 run/ckpt_00000040.h5.tmp   # a save in progress: must be skipped
EVAL_ARGS=(--batch 4 --batches 3)   # = the run's val set: --batch 2 x 2 ranks, --val-batches 3

bash "$src/jobs/eval-sweep.sh" run d_val.bin "${EVAL_ARGS[@]}" > sweep.out 2>&1; rc=$?
[ $rc -eq 0 ] && ok "eval-sweep.sh: exit 0" || bad "eval-sweep.sh (exit $rc): $(tail -3 sweep.out)"
for k in 10 20 30; do
  "$bin" eval --ckpt "run/ckpt_000000$k.h5" --data d_val.bin --json "${EVAL_ARGS[@]}" 2>/dev/null | grep '^{' | tail -1 > "hand_$k.json"
done
/usr/bin/python3 - <<'PY' && ok "eval.csv: 3 rows sorted by step, val_loss = eval by hand, tokens_seen = the checkpoints', no .tmp" || bad "eval.csv content"
import json, math, h5py
lines = open('run/eval.csv').read().splitlines()
assert lines[0] == 'step,tokens_seen,val_loss,perplexity,ckpt', lines[0]
rows = [l.split(',') for l in lines[1:]]
assert [int(r[0]) for r in rows] == [10, 20, 30], rows
for r in rows:
    step, tokens, loss, ppl, name = int(r[0]), int(r[1]), float(r[2]), float(r[3]), r[4]
    assert name == f'ckpt_{step:08d}.h5', name
    hand = json.load(open(f'hand_{step}.json'))
    assert loss == hand['loss'] and ppl == hand['perplexity'], (r, hand)
    assert abs(ppl - math.exp(loss)) <= 1e-5 * ppl, (ppl, loss)
    assert tokens == int(h5py.File(f'run/{name}', 'r').attrs['tokens_seen']), (tokens, name)
PY
[ ! -e run/eval.csv.tmp ] && ! ls run/.eval-sweep.* >/dev/null 2>&1 && ok "no temporary file left" || bad "temporaries left in run/"
/usr/bin/python3 - <<'PY' && ok "the step-30 row reproduces the run's val event (1e-6 relative)" || bad "sweep vs the run's val event"
import json
val = [e['val_loss'] for e in map(json.loads, open('run/log.jsonl')) if e['event'] == 'val' and e['step'] == 30][0]
row = [l.split(',') for l in open('run/eval.csv').read().splitlines()[1:] if l.startswith('30,')][0]
assert abs(float(row[2]) - val) <= 1e-6 * abs(val), (row, val)
PY
bash "$src/jobs/eval-sweep.sh" nosuch d_val.bin >/dev/null 2>&1; [ $? -eq 2 ] && ok "eval-sweep.sh on a missing run dir: exit 2" || bad "missing run dir"

"$src/jobs/plot" run > plot.out 2>&1 || bad "jobs/plot: $(cat plot.out)"
/usr/bin/python3 - <<'PY' && ok "jobs/plot: the sweep curve is the CSV's points" || bad "plot of the sweep"
pts, cur = {}, None
for line in open('run/plot/loss.table'):
    if line.startswith('# Curve title'):
        cur = pts.setdefault(line.split('"')[1], [])
    elif line.strip() and not line.startswith('#'):
        x, y, _ = line.split(); cur.append((float(x), float(y)))
rows = [l.split(',') for l in open('run/eval.csv').read().splitlines()[1:]]
got = pts['val loss (eval sweep of the checkpoints)']
assert len(got) == 3 and all(x == int(r[0]) and abs(y - float(r[2])) <= 1e-5 * abs(float(r[2])) for (x, y), r in zip(got, rows)), got
PY

# the job array, on a private one-node Slurm
if [ "$(id -u)" = 0 ]; then
  exec 9>/tmp/smallmind-cluster-tests.lock   # one cluster test at a time on this machine
  flock -w 900 9 || { echo "eval_sweep: another run's cluster test held the lock for 15 minutes"; exit 1; }
  C=$work/cluster
  trap 'bash "$src/tests/slurm_local.sh" stop "$C" >/dev/null 2>&1 || true' EXIT
  if bash "$src/tests/slurm_local.sh" start "$C" >/dev/null; then
    export SLURM_CONF=$C/slurm.conf
    cp run/eval.csv eval_serial.csv
    rm run/eval.csv
    bash "$src/jobs/eval-sweep.sbatch" --wait run d_val.bin "${EVAL_ARGS[@]}" > array.out 2>&1; rc=$?
    read -r array merge < run/eval-sweep/jobs
    if [ $rc -eq 0 ] && cmp -s eval_serial.csv run/eval.csv; then
      ok "eval-sweep.sbatch: array job $array (3 tasks) + merge job $merge wrote the same eval.csv"
    else bad "eval-sweep.sbatch (exit $rc): $(cat array.out; diff eval_serial.csv run/eval.csv)"; fi
    n_tasks=$(ls eval-sweep-"$array"_*.out 2>/dev/null | wc -l)
    [ "$n_tasks" -eq 3 ] && ok "one task per checkpoint (3 logs)" || bad "$n_tasks task logs"
    bash "$src/tests/slurm_local.sh" stop "$C" >/dev/null
  else bad "cannot start a local Slurm"; fi
  trap - EXIT
else echo "skip: the job-array form needs root (a local Slurm)"; fi

echo "eval_sweep: $pass passed, $fail failed"
[ $fail -eq 0 ]
