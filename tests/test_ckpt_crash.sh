#!/usr/bin/env bash
# test_ckpt_crash.sh MPIEXEC NPFLAG TEST_BIN WORKDIR — kill -9 a 2-rank save mid-commit, then recover.
# At each stage of the save (laid out, no data; async: copied into the buffer, no data; data written but file not closed; closed but not renamed; renamed
# but `latest` not rewritten) rank 0 is killed; then the previous checkpoint (or, past the rename, the new complete
# one, which --resume auto takes because its parent is the one `latest` names — not because it is the newest
# file: an unrelated newer checkpoint is ignored) must verify and load, `latest` must be intact, and the next save
# must succeed. The same again with the save made through --ckpt-async's path (the data written, synced and
# committed by a thread while the caller waits in ckpt_async_poll).
set -uo pipefail
mpiexec=$1 npflag=$2 bin=$3 work=$4
rm -rf "$work"; mkdir -p "$work"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fail=0
for mode in crash-save crash-save-async; do
stages="layout write rename latest"; [ $mode = crash-save-async ] && stages="layout copy write rename latest"
for stage in $stages; do
  dir=$work/$mode-$stage pidf=$work/$mode-$stage.pid log=$work/$mode-$stage.log
  SMALLMIND_TEST_CKPT_PAUSE_FILE=$pidf "$mpiexec" "$npflag" 2 "$bin" --$mode "$dir" "$stage" >"$log" 2>&1 &
  job=$!
  for _ in $(seq 1 600); do [ -s "$pidf" ] && break; kill -0 "$job" 2>/dev/null || break; sleep 0.1; done
  if [ ! -s "$pidf" ]; then
    echo "FAIL $mode $stage: the save never paused"; cat "$log"; kill -9 "$job" 2>/dev/null; wait "$job"; fail=1; continue
  fi
  kill -9 "$(cat "$pidf")"
  wait "$job"; rc=$?
  echo "$mode: killed rank 0 mid-save at '$stage' (mpiexec exit $rc)"
  if "$mpiexec" "$npflag" 2 "$bin" --check-crash "$dir" "$stage"; then echo "ok   $mode $stage"; else echo "FAIL $mode $stage"; fail=1; fi
done
done
exit $fail
