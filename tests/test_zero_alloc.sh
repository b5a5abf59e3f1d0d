#!/usr/bin/env bash
# test_zero_alloc.sh SMALLMIND ALLOC_COUNTER_SO WORKDIR — a single-rank training run under an
# LD_PRELOAD allocation counter: steps 2..N must make zero heap allocations, counted for the
# whole process (smallmind, libc, libgomp, Open MPI).
set -euo pipefail
bin=$1 so=$2 work=$3
rm -rf "$work"; mkdir -p "$work"
python3 -c "
import random; random.seed(1)
words=['whale','sea','ship','captain','the','a','of','and','white','harpoon']
print(' '.join(random.choice(words) for _ in range(40000)))" > "$work/text.txt"
"$bin" prepare --input "$work/text.txt" --out "$work/d" >/dev/null
steps=6
ALLOC_COUNTER_OUT="$work/counts.txt" LD_PRELOAD="$so" \
  "$bin" train --data "$work/d" --run-dir "$work/run" --layers 2 --heads 2 --embd 32 --seq 32 --batch 4 \
  --steps $steps --eval-every 3 --val-batches 2 --threads 2 >"$work/train.log"
cat "$work/counts.txt"
# steps 2..N: every step's interval (forward, backward, sync, optimizer, logging) must be 0;
# the evaluations and checkpoints between steps are reported as "after" lines and may allocate
bad=$(awk -v n=$steps '$1=="step" && $2>=2 && $2<=n && $3!=0' "$work/counts.txt")
seen=$(awk -v n=$steps '$1=="step" && $2>=2 && $2<=n' "$work/counts.txt" | wc -l)
if [ "$seen" -ne $((steps-1)) ]; then echo "FAIL: expected $((steps-1)) step intervals, saw $seen"; exit 1; fi
if [ -n "$bad" ]; then echo "FAIL: allocations inside training steps:"; echo "$bad"; exit 1; fi
# the counter must really count: the whole run allocates (start-up, arenas)
total=$(awk '$1=="total"{print $2}' "$work/counts.txt")
if [ "$total" -lt 10 ]; then echo "FAIL: counter saw only $total allocations in the whole run"; exit 1; fi
echo "zero_alloc: 1 passed, 0 failed (steps 2..$steps: 0 allocations; $total in the whole run)"
