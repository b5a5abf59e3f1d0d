#!/usr/bin/env bash
# test_ckpt_crash.sh MPIEXEC NPFLAG TEST_BIN WORKDIR — kill -9 a 2-rank save mid-commit, then recover.
# At each stage of the commit (data written but file not closed; closed but not renamed; renamed
# but `latest` not rewritten) rank 0 is killed; then the previous checkpoint (or, past the rename, the new complete
# one, which --resume auto takes because its parent is the one `latest` names — not because it is the newest
# file: an unrelated newer checkpoint is ignored) must verify and load, `latest` must be intact, and the next save
# must succeed.
set -uo pipefail
mpiexec=$1 npflag=$2 bin=$3 work=$4
rm -rf "$work"; mkdir -p "$work"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fail=0
for stage in write rename latest; do
  dir=$work/$stage pidf=$work/$stage.pid log=$work/$stage.log
  SMALLMIND_TEST_CKPT_PAUSE_FILE=$pidf "$mpiexec" "$npflag" 2 "$bin" --crash-save "$dir" "$stage" >"$log" 2>&1 &
  job=$!
  for _ in $(seq 1 600); do [ -s "$pidf" ] && break; kill -0 "$job" 2>/dev/null || break; sleep 0.1; done
  if [ ! -s "$pidf" ]; then
    echo "FAIL $stage: the save never paused"; cat "$log"; kill -9 "$job" 2>/dev/null; wait "$job"; fail=1; continue
  fi
  kill -9 "$(cat "$pidf")"
  wait "$job"; rc=$?
  echo "killed rank 0 mid-save at '$stage' (mpiexec exit $rc)"
  if "$mpiexec" "$npflag" 2 "$bin" --check-crash "$dir" "$stage"; then echo "ok   $stage"; else echo "FAIL $stage"; fail=1; fi
done
exit $fail
