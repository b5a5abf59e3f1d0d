#!/usr/bin/env bash
# test_jobs.sh SMALLMIND SRC_DIR WORKDIR — the job scripts that need no Slurm:
#  - jobs/launch.sh: the mpirun command it prints for each binding and a hostfile (ranks from
#    its slots, threads = CPUs / ranks per host), bad options exit 2 with one line, and a real
#    2-rank run through it that trains;
#  - jobs/lead.sh: its LEAD equals 2 x (2 x longest step + longest save) + 30 s computed here
#    from log.jsonl with Python;
#  - jobs/plot: a valid PNG of the size asked, and the points gnuplot drew (its `set table`
#    output) are exactly the log's step and val events and the eval.csv rows; --linear; a run
#    without a log exits 2.
set -uo pipefail
bin=$1 src=$2 work=$3
rm -rf "$work"; mkdir -p "$work"; cd "$work"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 SMALLMIND=$bin
unset OMP_NUM_THREADS
pass=0 fail=0
ok()  { pass=$((pass+1)); echo "ok   $1"; }
bad() { fail=$((fail+1)); echo "FAIL $1"; }
L=$src/jobs/launch.sh
cpus=$(nproc)

# launch.sh
out=$("$L" --dry-run -n 2 -- train --data d 2>&1)
want="mpirun -np 2 --bind-to none -x OMP_NUM_THREADS $(readlink -f "$bin") train --data d"
grep -qF "$want" <<<"$out" && grep -q "OMP_NUM_THREADS=$(( cpus / 2 > 0 ? cpus / 2 : 1 )) " <<<"$out" \
  && ok "launch.sh -n 2: $want" || bad "launch.sh -n 2 printed: $out"
out=$("$L" --dry-run -n 2 -t 1 --bind cores -x FOO=1 --mca btl tcp,self -- bench 2>&1)
grep -qF "mpirun -np 2 --map-by slot:PE=1 --bind-to core -x OMP_NUM_THREADS -x OMP_PLACES -x OMP_PROC_BIND -x FOO=1 --mca btl tcp,self" <<<"$out" \
  && grep -q "OMP_PLACES=cores OMP_PROC_BIND=close" <<<"$out" && ok "launch.sh --bind cores -x --mca" || bad "launch.sh --bind cores printed: $out"
printf 'hostA slots=2\n# a comment\nhostB slots=2 # another\n\nhostC\n' > hosts
out=$("$L" --dry-run --hostfile hosts -- train 2>&1)
grep -q "mpirun -np 5 --hostfile $work/hosts " <<<"$out" && grep -q "5 rank(s) on 3 host(s)" <<<"$out" \
  && ok "launch.sh --hostfile: 5 ranks from the slots of 3 hosts" || bad "launch.sh --hostfile printed: $out"
n_bad=0
for args in "-n 0 -- train" "-n 2" "--bind sockets -- train" "--frobnicate -- train" "-t x -- train" "--hostfile nosuch -- train"; do
  # word splitting of $args is intended
  # shellcheck disable=SC2086
  out=$("$L" --dry-run $args 2>&1); rc=$?
  if [ $rc -eq 2 ] && [ "$(wc -l <<<"$out")" -eq 1 ] && grep -q "^launch.sh: error: " <<<"$out"; then n_bad=$((n_bad + 1))
  else bad "launch.sh $args: exit $rc, '$out'"; fi
done
[ $n_bad -eq 6 ] && ok "launch.sh: 6 kinds of bad options exit 2 with one line"
python3 -c "
import random; random.seed(23)
w=['starbuck','stubb','flask','queequeg','tashtego','daggoo','pip','fedallah']
print(' '.join(random.choice(w) for _ in range(20000)))" > text.txt
"$bin" prepare --input text.txt --out d >/dev/null
"$L" -n 2 -t 1 -- train --data d --run-dir run --layers 2 --heads 2 --embd 32 --seq 32 --batch 4 --steps 30 \
  --eval-every 10 --val-batches 2 --ckpt-every 10 --lr 2e-3 --min-lr 2e-4 --warmup 3 >run.out 2>&1; rc=$?
[ $rc -eq 0 ] && grep -q "^topology: 2 ranks on 1 node (2 per node), 1 OpenMP thread per rank (OMP_NUM_THREADS)" run.out \
  && [ -f run/ckpt_00000030.h5 ] && ok "launch.sh -n 2 -t 1: trains, 1 thread per rank" || bad "launch.sh run (exit $rc): $(tail -3 run.out)"

# lead.sh against the same formula in Python
out=$(bash "$src/jobs/lead.sh" run); rc=$?
want=$(/usr/bin/python3 - <<'PY'
import json, math
ev = [json.loads(l) for l in open('run/log.jsonl')]
step = max(e['ms'] for e in ev if e['event'] == 'step') / 1000
save = max(e['save_s'] for e in ev if e['event'] == 'checkpoint')
print(math.ceil(2 * (2 * step + save) + 30 - 1e-9))
PY
)
[ $rc -eq 0 ] && grep -q "#SBATCH --signal=B:USR1@$want\$" <<<"$out" && ok "lead.sh: LEAD $want s" || bad "lead.sh printed '$out', expected $want"
bash "$src/jobs/lead.sh" nosuch >/dev/null 2>&1; [ $? -eq 2 ] && ok "lead.sh: no log -> exit 2" || bad "lead.sh without a log"

# plot: the points drawn are the log's and the CSV's
printf 'step,tokens_seen,val_loss,perplexity,ckpt\n10,2560,3.25,25.79,ckpt_00000010.h5\n20,5120,2.5,12.18,ckpt_00000020.h5\n30,7680,2.125,8.37,ckpt_00000030.h5\n' > run/eval.csv
for mode in "" --linear; do
  # shellcheck disable=SC2086
  if ! "$src/jobs/plot" run $mode > plot.out 2>&1; then bad "jobs/plot run $mode: $(cat plot.out)"; continue; fi
  /usr/bin/python3 - "$mode" <<'PY' && ok "jobs/plot $mode: valid 1100x650 PNG; drew the log's 30 steps and 3 val points and the CSV's 3 rows" || bad "jobs/plot $mode"
import json, struct, sys, zlib
png = open('run/loss.png', 'rb').read()
assert png[:8] == b'\x89PNG\r\n\x1a\n', 'not a PNG'
w, h = struct.unpack('>II', png[16:24])
assert png[12:16] == b'IHDR' and (w, h) == (1100, 650), (w, h)
assert b'IEND' in png[-12:], 'truncated PNG'
# the image is not blank: more than a handful of distinct bytes in the decompressed pixels
idat = b''.join(png[i + 8:i + 8 + struct.unpack('>I', png[i:i + 4])[0]] for i in range(8, len(png) - 12)
                if png[i + 4:i + 8] == b'IDAT')
assert len(set(zlib.decompress(idat))) > 16, 'blank image'
curves, cur = [], None
for line in open('run/plot/loss.table'):
    if line.startswith('# Curve title'):
        cur = []; curves.append((line.split('"')[1], cur))
    elif line.strip() and not line.startswith('#') and cur is not None:
        x, y, _ = line.split()
        cur.append((float(x), float(y)))
ev = [json.loads(l) for l in open('run/log.jsonl')]
want = {
    'training loss': [(e['step'], e['loss']) for e in ev if e['event'] == 'step'],
    'val loss (during training)': [(e['step'], e['val_loss']) for e in ev if e['event'] == 'val'],
    'val loss (eval sweep of the checkpoints)': [(int(r.split(',')[0]), float(r.split(',')[2]))
                                                 for r in open('run/eval.csv').read().split('\n')[1:] if r],
}
assert [c[0] for c in curves] == list(want), [c[0] for c in curves]
for title, pts in curves:
    ref = want[title]
    assert len(pts) == len(ref) and len(ref) > 0, (title, len(pts), len(ref))
    for (x, y), (rx, ry) in zip(pts, ref):   # the table prints 6 significant digits
        assert x == rx and abs(y - ry) <= 1e-5 * abs(ry), (title, x, y, rx, ry)
assert len(want['training loss']) == 30 and len(want['val loss (during training)']) == 3
PY
  if [ -z "$mode" ]; then grep -q "^set logscale x$" run/plot/loss.gp; else ! grep -q "^set logscale x$" run/plot/loss.gp; fi \
    && ok "jobs/plot $mode: step axis ${mode:-logarithmic}" || bad "jobs/plot $mode: wrong axis scale"
done
mkdir -p empty; "$src/jobs/plot" empty >/dev/null 2>&1; rc=$?
[ $rc -eq 2 ] && ok "jobs/plot on a run without a log: exit 2" || bad "jobs/plot without a log: exit $rc"

echo "jobs: $pass passed, $fail failed"
[ $fail -eq 0 ]
