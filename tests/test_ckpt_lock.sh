#!/usr/bin/env bash
# test_ckpt_lock.sh MPIEXEC NPFLAG TEST_BIN WORKDIR — one trainer per run directory (issue 13 item 5).
# A process holds RUN_DIR's lock; a second one (alone, and as 2 MPI ranks) is refused with exit 2 and
# one line naming the holder's pid and host; after kill -9 of the holder the lock is free at once (the
# kernel released it: never stale); a FIFO in place of the lock file is refused, never waited on.
set -uo pipefail
mpiexec=$1 npflag=$2 bin=$3 work=$4
rm -rf "$work"; mkdir -p "$work/run"; cd "$work"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
pass=0 fail=0
ok()  { pass=$((pass+1)); echo "ok   $1"; }
bad() { fail=$((fail+1)); echo "FAIL $1"; }

"$bin" --lock run >holder.out 2>&1 &
holder=$!
for _ in $(seq 1 100); do grep -q "^locked" holder.out && break; sleep 0.1; done
grep -q "locked pid $holder" holder.out && ok "the first process holds the lock (pid $holder)" || bad "holder: $(cat holder.out)"

timeout 30 "$bin" --try-lock run >second.out 2>&1; rc=$?
lines=$(wc -l <second.out)
if [ $rc -eq 2 ] && [ "$lines" -eq 1 ] && grep -q "pid $holder on host $(hostname)" second.out; then
  ok "a second process: exit 2, one line naming the holder ($(cat second.out))"
else bad "second process: exit $rc: $(cat second.out)"; fi

timeout 60 "$mpiexec" "$npflag" 2 "$bin" --try-lock run >mpi.out 2>&1; rc=$?
[ $rc -eq 2 ] && grep -q "pid $holder on host" mpi.out && ok "a second trainer of 2 ranks: exit 2, holder named" \
  || bad "2 ranks: exit $rc: $(head -c 400 mpi.out)"

kill -9 $holder; wait $holder 2>/dev/null
timeout 30 "$bin" --try-lock run >third.out 2>&1; rc=$?
[ $rc -eq 0 ] && ok "after kill -9 of the holder the lock is free (no stale lock)" || bad "after the kill: exit $rc: $(cat third.out)"

rm -f run/.lock; mkfifo run/.lock
timeout 30 "$bin" --try-lock run >fifo.out 2>&1; rc=$?
[ $rc -eq 2 ] && grep -q "not a regular file" fifo.out && ok "a FIFO as the lock file: exit 2, not waited on" \
  || bad "FIFO lock file: exit $rc: $(cat fifo.out)"

echo "lock: $pass passed, $fail failed"
[ $fail -eq 0 ]
