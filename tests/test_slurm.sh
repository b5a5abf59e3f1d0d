#!/usr/bin/env bash
# test_slurm.sh SMALLMIND SRC_DIR WORKDIR — the Slurm jobs on a real one-node Slurm
# (tests/slurm_local.sh: private config and ports, torn down at the end, pass or fail):
#  - `sbatch --wait -n 2 -c 1 jobs/train.sbatch ...` exits 0 and leaves checkpoints and a log;
#    the job log names the run directory; 1 thread per rank, from SLURM_CPUS_PER_TASK;
#  - preemption: `scancel --signal=USR1 --batch` mid-run -> the ranks checkpoint, smallmind exits
#    75, the job requeues itself, is released at once (`scontrol update StartTime=now`),
#    resumes from that checkpoint (named in the job log) and finishes: its losses, val losses and
#    final checkpoint (every dataset, h5py) equal the uninterrupted job's bit for bit. Both with
#    srun (train.sbatch) and with mpirun (train-mpirun.sbatch); and `scontrol requeue` mid-run
#    (what a preemption does: SIGTERM to all) -> checkpoint within KillWait, Slurm requeues it;
#  - never requeued: a failure (exit 2), a finished --stop-at (exit 0), a user's scancel;
#  - `srun -n 2` without -c on the node: rank 0 warns that the ranks run more threads than CPUs.
# Needs root (daemons); exits 77 (skipped) otherwise.
set -uo pipefail
bin=$1 src=$2 work=$3
if [ "$(id -u)" != 0 ]; then echo "slurm: SKIP: a local Slurm needs root"; exit 77; fi
# one cluster test at a time on this machine (ports, namespace names and munged are machine-wide)
exec 9>/tmp/smallmind-cluster-tests.lock
flock -w 900 9 || { echo "slurm: another run's cluster test held the lock for 15 minutes"; exit 1; }
rm -rf "$work"; mkdir -p "$work"; cd "$work"
C=$work/cluster
trap 'bash "$src/tests/slurm_local.sh" stop "$C" >/dev/null 2>&1 || true' EXIT
bash "$src/tests/slurm_local.sh" start "$C" || { echo "slurm: cannot start a local Slurm"; exit 1; }
export SLURM_CONF=$C/slurm.conf SMALLMIND=$bin OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
unset OMP_NUM_THREADS   # sbatch passes the environment on: the job must find its threads itself
pass=0 fail=0
ok()  { pass=$((pass+1)); echo "ok   $1"; }
bad() { fail=$((fail+1)); echo "FAIL $1"; }
job_field() { scontrol show job "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1; }
wait_until() {   # wait_until SECONDS CMD...: poll every 0.2 s
  local end=$(( $(date +%s) + $1 )); shift
  until "$@"; do [ "$(date +%s)" -ge "$end" ] && return 1; sleep 0.2; done
}
in_queue() { [ -n "$(squeue -h -j "$1" -o %i 2>/dev/null)" ]; }
not_in_queue() { ! in_queue "$1"; }
at_step() { grep -q "\"event\":\"step\",\"step\":$2," "$1/log.jsonl" 2>/dev/null; }
# sbatch, then wait for the job to leave the queue (polling at 0.2 s: sbatch --wait's own polling
# backs off to 30 s); JOB is set to its id; returns the batch script's exit status
run_job() {
  JOB=$(sbatch --parsable "$@") || return 99
  wait_until 300 not_in_queue "$JOB" || return 98
  local code; code=$(job_field "$JOB" ExitCode); return "${code%%:*}"
}

python3 -c "
import random; random.seed(17)
w=['the','whale','is','a','fish','and','ahab','hunts','it','across','every','sea']
print(' '.join(random.choice(w) for _ in range(30000)))" > text.txt
"$bin" prepare --input text.txt --out d >/dev/null
# ~10-40 ms a step here: long enough to signal a job in the middle of its 200 steps
M="--data d --layers 2 --heads 4 --embd 128 --seq 64 --batch 4 --steps 200 --lr 1e-3 --min-lr 1e-4 --warmup 10 --eval-every 50 --val-batches 2 --ckpt-every 50"

# 1. the uninterrupted job: sbatch --wait, checkpoints and a log
sbatch --wait -n 2 -c 1 -o "ref-%j.out" "$src/jobs/train.sbatch" $M --run-dir ref >/dev/null; rc=$?
out=$(ls ref-*.out 2>/dev/null | head -1)
n_steps=$(grep -c '"event":"step"' ref/log.jsonl 2>/dev/null)
if [ $rc -eq 0 ] && [ -f ref/ckpt_00000200.h5 ] && [ -f ref/ckpt_00000050.h5 ] && [ "$n_steps" = 200 ]; then
  ok "sbatch --wait -n 2 jobs/train.sbatch: exit 0, checkpoints 50..200 and 200 step events"
else bad "reference job (exit $rc, $n_steps steps): $(tail -5 "$out" 2>/dev/null)"; fi
grep -q "train.sbatch: run directory ref" "$out" && grep -q "no checkpoint in the run directory yet" "$out" \
  && ok "the job log names the run directory and says it starts fresh" || bad "job log: $(head -5 "$out")"
grep -q "^topology: 2 ranks on 1 node (2 per node), 1 OpenMP thread per rank (SLURM_CPUS_PER_TASK)" "$out" && ! grep -q "warning" "$out" \
  && ok "-c 1: one thread per rank from SLURM_CPUS_PER_TASK, no warning" || bad "threads under -c 1: $(grep -E 'topology|warning' "$out")"

compare_runs() {   # compare_runs A B: losses, val losses and the final checkpoint bit for bit
  /usr/bin/python3 - "$1" "$2" <<'PY'
import json, sys, h5py
a, b = sys.argv[1:]
def events(d):
    return [(e['event'], e['step'], e.get('loss', e.get('val_loss'))) for e in map(json.loads, open(f'{d}/log.jsonl'))
            if e['event'] in ('step', 'val')]
ea, eb = events(a), events(b)
assert len([e for e in ea if e[0] == 'step']) == 200 and len([e for e in ea if e[0] == 'val']) == 4, len(ea)
assert ea == eb, [(x, y) for x, y in zip(ea, eb) if x != y][:3] or (len(ea), len(eb))
fa, fb = h5py.File(f'{a}/ckpt_00000200.h5', 'r'), h5py.File(f'{b}/ckpt_00000200.h5', 'r')
n = 0
for g in ('model', 'optim/m', 'optim/v'):
    assert list(fa[g].keys()) == list(fb[g].keys())
    for k in fa[g]:
        assert fa[g][k][...].tobytes() == fb[g][k][...].tobytes(), f'{g}/{k} differs'
        n += 1
assert n == 48
print(f'{b}: {len(eb)} loss events and {n} datasets equal {a} bit for bit')
PY
}

# 2. preemption: USR1 to the batch shell mid-run -> checkpoint, exit 75, requeue, resume, finish
preempt() {   # preempt SCRIPT DIR usr1|requeue
  local script=$1 dir=$2 how=$3 id k
  id=$(sbatch --parsable -n 2 -c 1 -o "$dir-%j.out" "$src/jobs/$script" $M --run-dir "$dir")
  if ! wait_until 120 at_step "$dir" 10; then bad "$script: job $id never reached step 10"; return; fi
  if [ "$how" = usr1 ]; then scancel --signal=USR1 --batch "$id"; else scontrol requeue "$id"; fi
  if wait_until 60 bash -c "squeue -h -j $id -o '%T %r' | grep -q 'PENDING BeginTime'"; then
    # Slurm would hold a requeued job for ~120 s. Not at once either: slurmd revoked the first
    # start's credential, with a resolution of 1 s, and a start within that second is refused
    # ("Job credential revoked": the job fails)
    sleep 2
    scontrol update JobId="$id" StartTime=now
  else bad "$script ($how): job $id was not requeued ($(squeue -h -j "$id" -o '%T %r'))"; fi
  wait_until 180 not_in_queue "$id" || bad "$script ($how): job $id did not finish"
  local out=$dir-$id.out said
  k=$(sed -n "s|^resumed from $dir/ckpt_\([0-9]*\)\.h5.*|\1|p" "$out" | head -1)
  k=$((10#${k:-0}))
  if [ "$how" = usr1 ]; then said="got SIGUSR1.*stopped by a signal after writing a checkpoint (exit 75): requeueing"
  else said="got SIGTERM.*stopped by SIGTERM after writing a checkpoint (exit 75): left to Slurm"; fi
  if [ "$(job_field "$id" JobState)" = COMPLETED ] && [ "$(job_field "$id" Restarts)" = 1 ] && [ "$k" -ge 10 ] && [ "$k" -lt 200 ] && tr '\n' ' ' < "$out" | grep -q "$said" && \
     grep -q "finished (exit 0)" "$out"; then
    ok "$script ($how): stopped at step >= 10 with checkpoint $k, exit 75, requeued once, resumed from it, finished"
  else bad "$script ($how): state $(job_field "$id" JobState), restarts $(job_field "$id" Restarts), resumed '$k': $(grep -v '^step' "$out" | tail -8)"; fi
  grep -q "\"event\":\"checkpoint\",\"step\":$k,.*\"save_s\"" "$dir/log.jsonl" \
    && ok "$script ($how): log.jsonl has the stop checkpoint's save_s (LEAD sizing)" || bad "$script ($how): no checkpoint event for step $k"
  compare_runs ref "$dir" && ok "$script ($how): stopped + requeued == uninterrupted, bit for bit" || bad "$script ($how): the run differs"
}
preempt train.sbatch pre_srun usr1
preempt train-mpirun.sbatch pre_mpirun usr1
preempt train.sbatch pre_requeue requeue   # Slurm's own requeue (a preemption): SIGTERM, KillWait 10 s
bash "$src/jobs/lead.sh" pre_srun > lead.txt && grep -q "#SBATCH --signal=B:USR1@[0-9]" lead.txt \
  && ok "jobs/lead.sh sizes LEAD from the log: $(tail -1 lead.txt)" || bad "lead.sh: $(cat lead.txt)"

# 3. never requeued: a failure, a finished --stop-at, a user's scancel
run_job -n 2 -c 1 -o "bad-%j.out" "$src/jobs/train.sbatch" --data nosuch --run-dir bad; rc=$?
id=$JOB
[ $rc -eq 2 ] && [ "$(job_field "$id" Restarts)" = 0 ] && grep -q "smallmind failed (exit 2): not requeued" "bad-$id.out" \
  && ok "bad input: job exit 2, not requeued" || bad "bad input (exit $rc, restarts $(job_field "$id" Restarts))"
run_job -n 2 -c 1 -o "stop-%j.out" "$src/jobs/train.sbatch" $M --run-dir stop --stop-at 5; rc=$?
id=$JOB
[ $rc -eq 0 ] && [ "$(job_field "$id" Restarts)" = 0 ] && [ -f stop/ckpt_00000005.h5 ] \
  && ok "--stop-at 5: exit 0, checkpoint 5, not requeued" || bad "--stop-at (exit $rc, restarts $(job_field "$id" Restarts))"
id=$(sbatch --parsable -n 2 -c 1 -o "cancel-%j.out" "$src/jobs/train.sbatch" $M --run-dir cancel)
if wait_until 120 at_step cancel 5; then
  scancel "$id"
  wait_until 60 not_in_queue "$id"
  sleep 3   # a requeue would show up as a new pending job
  if [ "$(job_field "$id" JobState)" = CANCELLED ] && [ "$(job_field "$id" Restarts)" = 0 ] && not_in_queue "$id"; then
    ok "scancel: the job stays cancelled (smallmind's checkpoint-on-TERM does not resurrect it)"
  else bad "scancel: state $(job_field "$id" JobState), restarts $(job_field "$id" Restarts)"; fi
else bad "job $id never reached step 5"; fi

# 4. the issue's first trap: srun -n 2 without -c, each rank's mask every CPU of the node. Without
# --threads or -c the ranks now share the node's CPUs (nproc / 2 threads each), so none oversubscribes
run_job -n 2 -o "warn-%j.out" --wrap "srun --mpi=pmix $bin train $M --steps 2 --ckpt-every 0 --run-dir warn"
share=$(( $(nproc) / 2 > 0 ? $(nproc) / 2 : 1 ))
grep -q "topology: 2 ranks.* $share OpenMP threads\? per rank (the node's CPUs shared by its ranks)" warn-*.out \
  && ! grep -q "OpenMP threads in all" warn-*.out \
  && ok "srun -n 2 without -c: each rank takes its share of the node's $(nproc) CPUs ($share), no oversubscription" \
  || bad "srun -n 2 without -c: $(grep -E 'topology|warning' warn-*.out)"

bash "$src/tests/slurm_local.sh" stop "$C" >/dev/null
if ! pgrep -F "$C/slurmctld.pid" >/dev/null 2>&1 && ! pgrep -F "$C/slurmd.pid" >/dev/null 2>&1; then ok "Slurm daemons stopped"
else bad "Slurm daemons still running"; fi
trap - EXIT
echo "slurm: $pass passed, $fail failed"
[ $fail -eq 0 ]
