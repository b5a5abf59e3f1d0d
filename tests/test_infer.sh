#!/usr/bin/env bash
# test_infer.sh MODE SMALLMIND PYTHON WORKDIR [ALLOC_COUNTER_SO] — `smallmind eval` and
# `smallmind generate` (issue 11) against independent truths. One script, one CTest test per MODE:
#   setup     writes a Moby-Dick-like text, prepares byte shards and trains a small model (L=2, H=4,
#             C=64, context 256, seq 64, 80 steps, val events at 40 and 80): WORKDIR/run1. The
#             fixture every other mode reads.
#   cache     KV cache vs --no-cache (the training forward over the whole prefix): logits at every
#             position of 100-token generations, greedy and sampled, and batches of prompts
#   pytorch   eval's loss vs pytorch_eval.py, greedy generation vs pytorch_generate.py (KV cache)
#   ranks     eval at 1 and 2 ranks; eval reproduces a run's val events; 1 rank at --batch 8 and
#             2 ranks at --batch 4 see the same val windows
#   sampling  --seed, --top-k 1 vs greedy (the sampler's distribution: test_sampler.c)
#   alloc     zero heap allocations per generated token (tokens 2..N, whole process, LD_PRELOAD)
#   bad       bad input: one line on stderr, exit 2
# Each check prints "ok" or "FAIL"; the exit status is the number of failures (0: passed).
set -uo pipefail
mode=$1 bin=$2 py=$3 root=$4 so=${5:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
here=$(cd "$(dirname "$0")" && pwd)
MPIRUN=${MPIRUN:-mpirun}
pass=0 fail=0
ok()  { pass=$((pass+1)); echo "ok   $1"; }
bad() { fail=$((fail+1)); echo "FAIL $1"; }
finish() { echo "infer_$mode: $pass passed, $fail failed"; exit $((fail > 0)); }
G() { timeout 120 "$bin" generate --ckpt "$root/run1" --threads 2 "$@"; }   # never a hang

# The model every mode uses. The text: sentences of Moby-Dick's first chapters (public domain) in a
# seeded random order, ~60 KB; the model learns its spelling in a few dozen steps.
if [ "$mode" = setup ]; then
  rm -rf "$root"; mkdir -p "$root"; cd "$root"
  "$py" - <<'PY' > text.txt
import random
random.seed(11)
S = ["Call me Ishmael.",
     "Some years ago, never mind how long precisely, having little or no money in my purse, and nothing "
     "particular to interest me on shore, I thought I would sail about a little and see the watery part of the world.",
     "It is a way I have of driving off the spleen and regulating the circulation.",
     "Whenever I find myself growing grim about the mouth; whenever it is a damp, drizzly November in my soul; "
     "then, I account it high time to get to sea as soon as I can.",
     "This is my substitute for pistol and ball.",
     "There now is your insular city of the Manhattoes, belted round by wharves as Indian isles by coral reefs; "
     "commerce surrounds it with her surf.",
     "The whale! The white whale!", "Towards thee I roll, thou all-destroying but unconquering whale.",
     "Captain Ahab stood upon the quarter-deck and gazed at the sea.",
     "Queequeg was a native of Rokovoko, an island far away to the West and South."]
out, n = [], 0
while n < 60000:
    para = " ".join(random.choice(S) for _ in range(random.randint(2, 5)))
    out.append(para)
    n += len(para) + 2
print("\n\n".join(out))
PY
  "$bin" prepare --input text.txt --out d >/dev/null && ok "prepare" || bad "prepare"
  timeout 300 "$bin" train --data d --run-dir run1 --layers 2 --heads 4 --embd 64 --seq 64 --context 256 \
    --batch 8 --steps 80 --eval-every 40 --val-batches 2 --lr 3e-3 --warmup 5 --threads 2 >train1.log 2>&1 \
    && [ -s run1/latest ] && ok "train run1 (1 rank, --batch 8, 80 steps)" || { bad "train run1"; cat train1.log; }
  finish
fi

[ -s "$root/run1/latest" ] || { echo "FAIL the setup fixture ($root/run1) is missing"; exit 1; }
work=$root/$mode
rm -rf "$work"; mkdir -p "$work"; cd "$work"
ckpt=$root/run1/$(cat "$root/run1/latest")

# compare_logits NAME A B: two --dump-logits files (V float32 per generated token) agree to
# |a - b| <= 1e-5 + 1e-5 |b| at every position. The paths differ only in how attention reaches the
# keys and values (the cache, or the whole prefix recomputed) and in how many rows each matrix
# product has: both are fp32 over the same C=64 / 4C=256-long dot products, so even a reordered sum
# would stay ~1e-6 on logits of magnitude < 10; 1e-5 is that with a margin. The smallest gap
# between a greedy choice and the runner-up is printed (~1e-4 to 1e-2 here): the tolerance must stay
# below it for "the same tokens" to follow from "the same logits".
compare_logits() {
  "$py" - "$@" <<'PY'
import sys
import numpy as np
name, fa, fb = sys.argv[1:4]
V = 256
a, b = np.fromfile(fa, "<f4"), np.fromfile(fb, "<f4")
if a.size != b.size or a.size == 0 or a.size % V:
    print(f"FAIL {name}: {a.size} vs {b.size} floats"); sys.exit(1)
a, b = a.reshape(-1, V), b.reshape(-1, V)
err = np.abs(a - b) - (1e-5 + 1e-5 * np.abs(b))
i = np.unravel_index(np.argmax(err), err.shape)
s = np.sort(b, axis=1)
print(f"     {name}: {a.shape[0]} positions, max |a-b| {np.abs(a - b).max():.3g} (worst at token {i[0]}, id {i[1]}: "
      f"{a[i]:.8g} vs {b[i]:.8g}); smallest top-2 gap {(s[:, -1] - s[:, -2]).min():.3g}")
sys.exit(0 if err.max() <= 0 else 1)
PY
}
# tokens FILE: the token ids of every row, from generate --json's stderr line, one row per line
tokens() { "$py" -c "import json,sys; [print(' '.join(map(str,r))) for r in json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])['tokens']]" "$1"; }

case $mode in
cache)
  P="Call me Ishmael. Some years ago"
  G --prompt "$P" --max-new 100 --temperature 0 --json --dump-logits c.bin >c.out 2>c.json
  G --prompt "$P" --max-new 100 --temperature 0 --json --dump-logits n.bin --no-cache >n.out 2>n.json
  [ "$(tokens c.json)" = "$(tokens n.json)" ] && [ "$(tokens c.json | wc -w)" -eq 100 ] \
    && cmp -s c.out n.out && ok "greedy, 100 tokens: cache and --no-cache give the same tokens and text" \
    || bad "greedy tokens differ: $(tokens c.json | head -c 200) / $(tokens n.json | head -c 200)"
  compare_logits "greedy logits" c.bin n.bin && ok "greedy: logits equal to 1e-5 at all 100 positions" \
    || bad "greedy logits, cache vs --no-cache"
  # the one-token step runs in one OpenMP region, each thread its share of every product's columns
  # and of the heads: the logits have the same bits at 1, 2 and 3 threads (3: uneven shares; and the
  # batch-1 decode has the bits of a batch row, checked below at 1e-5 against --no-cache)
  thr_ok=1
  for t in 1 3; do
    timeout 120 "$bin" generate --ckpt "$root/run1" --threads $t --prompt "$P" --max-new 100 --temperature 0 \
      --dump-logits "t$t.bin" >/dev/null 2>&1 && cmp -s "t$t.bin" c.bin || thr_ok=0
  done
  [ $thr_ok = 1 ] && ok "greedy: logits identical, bit for bit, at 1, 2 and 3 threads" \
    || bad "logits differ between thread counts"
  # sampled: the same draws from (nearly) the same logits, over a less repetitive prefix
  G --prompt "$P" --max-new 100 --temperature 1 --seed 7 --json --dump-logits cs.bin >cs.out 2>cs.json
  G --prompt "$P" --max-new 100 --temperature 1 --seed 7 --json --dump-logits ns.bin --no-cache >ns.out 2>ns.json
  [ "$(tokens cs.json)" = "$(tokens ns.json)" ] && ok "sampled (T=1, seed 7): the same 100 tokens" \
    || bad "sampled tokens differ, cache vs --no-cache"
  compare_logits "sampled logits" cs.bin ns.bin && ok "sampled: logits equal to 1e-5 at all 100 positions" \
    || bad "sampled logits, cache vs --no-cache"

  # a batch of prompts of different lengths (1 to 130 bytes; the longest + 100 fits the context of
  # 256): each row equals its prompt generated alone, the text is printed in prompt order
  "$py" - <<'PY' > prompts.txt
print("W")
print("The whale! The white")
print("It is a way I have of driving off the spleen")
print("Whenever I find myself growing grim about the mouth; whenever it is a damp, drizzly November in my soul; then, I account it high")
PY
  : > expect.out; : > alone.tok; r=0
  while IFS= read -r line; do
    G --prompt "$line" --max-new 100 --temperature 0 --json --dump-logits "alone$r.bin" >"alone$r.out" 2>"alone$r.json"
    tokens "alone$r.json" >> alone.tok
    [ $r -gt 0 ] && echo >> expect.out
    cat "alone$r.out" >> expect.out   # the prompt and its continuation, then a newline
    r=$((r+1))
  done < prompts.txt
  G --prompt-file prompts.txt --max-new 100 --temperature 0 --json --dump-logits batch.bin >batch.out 2>batch.json
  tokens batch.json > batch.tok
  G --prompt-file prompts.txt --max-new 100 --temperature 0 --json --no-cache >batchn.out 2>batchn.json
  tokens batchn.json > batchn.tok
  cmp -s alone.tok batch.tok && [ "$(wc -l < batch.tok)" -eq 4 ] \
    && ok "batch of 4 prompts (1..130 bytes): each row's tokens equal its prompt generated alone" \
    || { bad "batch rows differ from single-prompt runs"; diff alone.tok batch.tok | head -c 600; }
  cmp -s batch.tok batchn.tok && ok "batch with --no-cache: the same tokens" || bad "batch --no-cache differs"
  cmp -s expect.out batch.out && ok "batch output: each row's text in prompt order, separated by a blank line" \
    || bad "batch stdout differs from the single-prompt texts (cmp: $(cmp expect.out batch.out 2>&1))"
  compare_logits "batch row 0 logits" batch.bin alone0.bin && ok "batch: row 0's logits equal its single run's" \
    || bad "batch row 0 logits"
  # a prompt file with CRLF line ends: the same prompts (the CR is the line end's, not the prompt's)
  sed 's/$/\r/' prompts.txt > prompts_crlf.txt
  G --prompt-file prompts_crlf.txt --max-new 100 --temperature 0 >batch_crlf.out 2>/dev/null
  cmp -s batch.out batch_crlf.out && ok "a CRLF prompt file gives the LF file's output" \
    || bad "CRLF prompt file: output differs ($(cmp batch.out batch_crlf.out 2>&1))"

  # the context: a 250-byte prompt stops after 7 new tokens (the model reads at most 256 = the
  # context, and the token it predicts from a full context is printed: the text holds 257); a
  # batch holding a prompt as long as the context leaves the other rows' text intact
  long=$("$py" -c "print(('Call me Ishmael. ' * 20)[:250])")
  G --prompt "$long" --max-new 100 --temperature 0 --json >ctx.out 2>ctx.json; rc=$?
  n=$(tokens ctx.json | wc -w)
  [ $rc -eq 0 ] && [ "$n" -eq 7 ] && ok "a 250-token prompt stops at the context of 256 (7 new tokens)" \
    || bad "250-token prompt: exit $rc, $n new tokens (expected 7)"
  { "$py" -c "print(('Call me Ishmael. ' * 20)[:256])"; echo "The white whale"; } > full.txt
  G --prompt-file full.txt --max-new 5 --temperature 0 --json >full.out 2>full.json; rc=$?
  G --prompt "The white whale" --max-new 5 --temperature 0 >whale.out 2>/dev/null
  [ $rc -eq 0 ] && tail -n 1 full.out | cmp -s - whale.out \
    && ok "a prompt filling the context in a batch: the other row's text intact" \
    || bad "a prompt of exactly the context (256) corrupts the next row: it prints '$(tail -n 1 full.out)', \
alone '$(cat whale.out)' (exit $rc)"
  ;;

pytorch)
  # (a) loss over every window of the val shard (seq = the context, 256, and seq 64), 1e-5 relative,
  # the same token count; perplexity and bits per byte follow from the loss by their definitions
  for seq in 256 64; do
    timeout 120 "$bin" eval --ckpt "$root/run1" --data "$root/d_val.bin" --seq $seq --json --threads 2 >ours$seq.json \
      || bad "eval --seq $seq failed"
    timeout 300 "$py" "$here/pytorch_eval.py" --ckpt "$ckpt" --data "$root/d_val.bin" --seq $seq >torch$seq.json \
      || bad "pytorch_eval.py --seq $seq failed"
    # 1e-5: both are fp32 forwards summed in double; they differ by rounding (~1e-7 per logit), not
    # by a window or a token (one window more or less moves the mean by ~1e-3 here)
    "$py" - ours$seq.json torch$seq.json <<'PY' && ok "eval --seq $seq equals PyTorch's loss (1e-5 rel), token count, ppl, bpb" \
      || bad "eval --seq $seq vs PyTorch"
import json, math, sys
o, t = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
print(f"     ours {o['loss']:.9f} over {o['tokens']} tokens, PyTorch {t['loss']:.9f} over {t['tokens']}: "
      f"rel diff {abs(o['loss'] - t['loss']) / t['loss']:.2e}")
assert o["tokens"] == t["tokens"] and o["windows"] == t["windows"], "token or window count"
assert abs(o["loss"] - t["loss"]) <= 1e-5 * abs(t["loss"]), "loss"
# the byte tokenizer: one byte per token, so bits per byte = loss / ln 2
assert abs(o["perplexity"] - math.exp(o["loss"])) <= 1e-6 * o["perplexity"], "perplexity = exp(loss)"
assert abs(o["bits_per_byte"] - o["loss"] / math.log(2)) <= 1e-6 * o["bits_per_byte"], "bpb = loss / ln 2"
PY
  done
  # (b) greedy generation of 50 tokens, token for token, from prompts of 1, 16 and 60 bytes; the
  # logits each token was chosen from agree to 1e-4 (fp32 GEMMs and softmaxes of two libraries:
  # ~1e-6 seen; the runner-up is ~1e-3 below the choice)
  for P in "C" "Call me Ishmael." "Whenever I find myself growing grim about the mouth; whenever"; do
    G --prompt "$P" --max-new 50 --temperature 0 --json --dump-logits ours.bin >/dev/null 2>ours.json
    timeout 300 "$py" "$here/pytorch_generate.py" --ckpt "$ckpt" --prompt "$P" --max-new 50 \
      --dump-logits torch.bin >torch.tok || bad "pytorch_generate.py failed"
    "$py" - ours.json torch.tok ours.bin torch.bin "$P" <<'PY' && ok "greedy 50 tokens from '$P' equal PyTorch's KV-cache generation" \
      || bad "greedy generation from '$P' vs PyTorch"
import json, sys
import numpy as np
ours = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])["tokens"][0]
ref = [int(x) for x in open(sys.argv[2]).read().split()]
a, b = np.fromfile(sys.argv[3], "<f4").reshape(-1, 256), np.fromfile(sys.argv[4], "<f4").reshape(-1, 256)
n = min(len(a), len(b))
d = np.abs(a[:n] - b[:n]).max()
s = np.sort(b, axis=1)
print(f"     {len(ours)} vs {len(ref)} tokens; logits max |diff| {d:.3g}; smallest top-2 gap {(s[:, -1] - s[:, -2]).min():.3g}")
if ours != ref:
    k = next(i for i in range(min(len(ours), len(ref)) + 1) if i == min(len(ours), len(ref)) or ours[i] != ref[i])
    print(f"     first difference at new token {k}: ours {ours[k:k+5]}, PyTorch {ref[k:k+5]}")
    sys.exit(1)
assert len(ours) == 50
assert np.all(np.abs(a - b) <= 1e-4 + 1e-4 * np.abs(b)), "logits"
PY
  done
  # the script's other paths (the bench's baseline): --no-cache recomputes the prefix, from
  # --prompt-tokens, timed (--time: a warm-up run, then the figures as JSON on stderr)
  ids=$("$py" -c "import sys; print(','.join(str(b) for b in sys.argv[1].encode()))" "$P")
  timeout 300 "$py" "$here/pytorch_generate.py" --ckpt "$ckpt" --prompt-tokens "$ids" --max-new 50 --no-cache --time \
    >torchn.tok 2>torchn.json || bad "pytorch_generate.py --no-cache failed"
  "$py" - torch.tok torchn.tok torchn.json <<'PY' && ok "pytorch_generate.py: --no-cache (from --prompt-tokens) gives the KV cache's tokens; --time prints its figures" \
    || bad "pytorch_generate.py --no-cache / --time"
import json, sys
a, b = open(sys.argv[1]).read().split(), open(sys.argv[2]).read().split()
j = json.loads(open(sys.argv[3]).read().strip().splitlines()[-1])
print(f"     PyTorch {j['tokens_per_s']:.0f} tokens/s without a cache (prefill {j['prefill_tokens_per_s']:.0f}/s)")
assert a == b and len(a) == 50 and j["new_tokens"] == 50 and j["tokens_per_s"] > 0 and j["cache"] is False
PY
  ;;

ranks)
  # eval at 1 and 2 ranks over every val window at seq 64 (93 windows: with --batch 4 the last pass
  # holds one window, which rank 1 does not get); 1e-6 relative (each window's loss is one rank's
  # forward, the sums are added in window order: only the forward's batch shape differs)
  E="$bin eval --ckpt $root/run1 --data $root/d_val.bin --seq 64 --json"
  timeout 120 $E --batch 4 --threads 2 >np1.json || bad "eval at 1 rank"
  timeout 120 $MPIRUN -np 2 --bind-to none $E --batch 4 --threads 1 >np2.json || bad "eval at 2 ranks"
  timeout 120 $E --batch 1 --threads 2 >np1_b1.json || bad "eval at 1 rank, --batch 1"
  "$py" - np1.json np2.json np1_b1.json <<'PY' && ok "eval at 1 and 2 ranks (and --batch 1) equal to 1e-6" || bad "eval 1 vs 2 ranks"
import json, sys
r = [json.load(open(f)) for f in sys.argv[1:]]
print("     " + ", ".join(f"{x['loss']:.9f} ({x['windows']} windows)" for x in r))
assert len({x["tokens"] for x in r}) == 1 and r[0]["windows"] > 4 and r[0]["windows"] % 4 != 0
for x in r[1:]:
    assert abs(x["loss"] - r[0]["loss"]) <= 1e-6 * r[0]["loss"]
PY
  # generate is one process: under mpirun -np 1 it runs, with the text it gives without mpirun
  timeout 120 $MPIRUN -np 1 --bind-to none "$bin" generate --ckpt "$root/run1" --prompt "Call me" --max-new 30 \
    --temperature 0.8 --seed 3 --threads 2 >gen_np1.out 2>gen_np1.err
  G --prompt "Call me" --max-new 30 --temperature 0.8 --seed 3 >gen.out 2>/dev/null
  [ -s gen.out ] && cmp -s gen.out gen_np1.out && ok "generate under mpirun -np 1: the same text as without mpirun" \
    || bad "generate under mpirun -np 1: $(head -c 300 gen_np1.err)"
  # a second run at 2 ranks, --batch 4: the same global batch as run1's 1 rank at --batch 8
  timeout 300 $MPIRUN -np 2 --bind-to none "$bin" train --data "$root/d" --run-dir run2 --layers 2 --heads 4 --embd 64 \
    --seq 64 --context 256 --batch 4 --steps 80 --eval-every 40 --val-batches 2 --lr 3e-3 --warmup 5 --threads 1 \
    >train2.log 2>&1 || { bad "train run2 at 2 ranks"; cat train2.log; }
  # a run's val event at step S is eval of its step-S checkpoint with --batch b*R --batches val-batches
  # (here 8 and 2: 16 windows of 64+1), at 1 and at 2 ranks. The event is printed with 6 decimals:
  # 5e-7 for that rounding, plus 1e-6 relative
  for run in run1 run2; do
    dir=$root/run1; [ $run = run2 ] && dir=$work/run2
    last=$(cat "$dir/latest")
    timeout 120 "$bin" eval --ckpt "$dir" --data "$root/d_val.bin" --seq 64 --batch 8 --batches 2 --json --threads 2 \
      >ev_$run.json || bad "eval $run"
    timeout 120 $MPIRUN -np 2 --bind-to none "$bin" eval --ckpt "$dir/$last" --data "$root/d_val.bin" --seq 64 --batch 8 \
      --batches 2 --json --threads 1 >ev2_$run.json || bad "eval $run at 2 ranks"
    "$py" - "$dir/log.jsonl" ev_$run.json ev2_$run.json <<'PY' && ok "eval of $run's last checkpoint reproduces its last val event (1 and 2 ranks)" \
      || bad "eval vs $run's val event"
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1])]
val = [e for e in ev if e["event"] == "val"][-1]
for f in sys.argv[2:]:
    o = json.load(open(f))
    print(f"     val event at step {val['step']}: {val['val_loss']}; eval ({f}) of step {o['step']}: {o['loss']:.9f}, "
          f"{o['windows']} windows")
    assert o["step"] == val["step"] == 80 and o["windows"] == 16 and o["tokens"] == 16 * 64
    assert abs(o["loss"] - val["val_loss"]) <= 5e-7 + 1e-6 * val["val_loss"]
PY
  done
  # run1 (1 rank, --batch 8) and run2 (2 ranks, --batch 4) train on the same windows and evaluate the
  # same val windows, so their val losses agree to the float rounding of training across world sizes
  # (1e-4 relative; evaluating other windows moves the loss by ~1e-2 here, e.g. run1's own first 8
  # windows vs its 16 differ by the amount printed)
  timeout 120 "$bin" eval --ckpt "$root/run1" --data "$root/d_val.bin" --seq 64 --batch 8 --batches 1 --json --threads 2 \
    >ev_half.json
  "$py" - "$root/run1/log.jsonl" run2/log.jsonl ev_half.json ev_run1.json <<'PY' && ok "1 rank at --batch 8 and 2 ranks at --batch 4: the same val losses (1e-4)" \
    || bad "val losses differ between 1 rank --batch 8 and 2 ranks --batch 4"
import json, sys
v = [[(e["step"], e["val_loss"]) for e in map(json.loads, open(f)) if e["event"] == "val"] for f in sys.argv[1:3]]
half, full = json.load(open(sys.argv[3]))["loss"], json.load(open(sys.argv[4]))["loss"]
print(f"     run1 {v[0]}\n     run2 {v[1]}\n     8 windows instead of 16 would give {half:.6f} vs {full:.6f}")
assert [s for s, _ in v[0]] == [s for s, _ in v[1]] == [40, 80]
for (_, a), (_, b) in zip(*v):
    assert abs(a - b) <= 1e-4 * abs(a), (a, b)
assert abs(half - full) > 10 * 1e-4 * full, "the check would not tell the windows apart"
PY
  ;;

sampling)
  P="Call me Ishmael."
  S() { G --prompt "$P" --max-new 100 --json "$@" >/dev/null 2>s.json; tokens s.json; }
  a=$(S --temperature 0.9 --seed 42) b=$(S --temperature 0.9 --seed 42) c=$(S --temperature 0.9 --seed 43)
  [ -n "$a" ] && [ "$a" = "$b" ] && ok "the same --seed gives the same 100 tokens" || bad "same seed, different text"
  # two seeds give the same 100 tokens only if every draw agrees; per token that chance is sum p^2
  # of the next-byte distribution, well below 1 for a model at ~2.6 nats per byte: over 100 tokens
  # it is negligible
  [ "$a" != "$c" ] && ok "another --seed gives another text" || bad "seeds 42 and 43 gave the same text"
  g=$(S --temperature 0) k1=$(S --temperature 0.9 --top-k 1 --seed 5) k1b=$(S --temperature 2 --top-k 1 --seed 9)
  [ "$g" = "$k1" ] && [ "$g" = "$k1b" ] && ok "--top-k 1 equals greedy (T 0.9 and 2, any seed)" || bad "--top-k 1 differs from greedy"
  # a nucleus so small that only the top token is ever in it: greedy again
  p0=$(S --temperature 1 --top-p 0.000001 --seed 3)
  [ "$g" = "$p0" ] && ok "--top-p 1e-6 equals greedy" || bad "--top-p 1e-6 differs from greedy"
  # --temperature 0 ignores the seed
  g2=$(S --temperature 0 --seed 99)
  [ "$g" = "$g2" ] && ok "greedy does not depend on the seed" || bad "greedy depends on the seed"
  ;;

alloc)
  # the whole process under the LD_PRELOAD counter: generate marks token k >= 2 with
  # sm_step_mark(+k) before it and (-k) after it; every "step k" interval must be 0
  check_alloc() {  # NAME N_TOKENS ARGS...
    local name=$1 n=$2; shift 2
    rm -f counts.txt
    ALLOC_COUNTER_OUT=$work/counts.txt LD_PRELOAD=$so G --max-new "$n" "$@" >gen.out 2>gen.err \
      || { bad "$name: generate failed: $(head -c 300 gen.err)"; return; }
    local seen nz total
    seen=$(awk -v n="$n" '$1=="step" && $2>=2 && $2<=n' counts.txt 2>/dev/null | wc -l)
    nz=$(awk -v n="$n" '$1=="step" && $2>=2 && $2<=n && $3!=0 {k++; s+=$3; if (k<=4) l=l sprintf("token %d: %d, ", $2, $3)}
                         END {if (k) printf "%d allocations in %d of the tokens (%s...)", s, k, l}' counts.txt 2>/dev/null)
    total=$(awk '$1=="total"{print $2}' counts.txt 2>/dev/null)
    if [ "$seen" -eq $((n-1)) ] && [ -z "$nz" ] && [ "${total:-0}" -ge 10 ]; then
      ok "$name: tokens 2..$n allocate nothing ($total allocations in the whole process)"
    else bad "$name: $seen of $((n-1)) token intervals seen; allocations: ${nz:-none}; total ${total:-?}"; fi
  }
  printf 'Call me\nThe white whale! The\nIt is a way I have of driving off\n' > prompts.txt
  check_alloc "one prompt, greedy, KV cache" 40 --prompt "Call me Ishmael." --temperature 0
  check_alloc "one prompt, T 0.8, KV cache" 40 --prompt "Call me Ishmael." --temperature 0.8
  # top-k sorts all V candidates, and top-p at a high temperature keeps nearly all of them: a sort of
  # 256 ints is 1 KiB, where glibc's qsort takes a malloc'd buffer instead of the stack
  check_alloc "one prompt, --top-k 20, KV cache" 40 --prompt "Call me Ishmael." --temperature 0.8 --top-k 20
  check_alloc "one prompt, --top-p 0.99 at T 3, KV cache" 40 --prompt "Call me Ishmael." --temperature 3 --top-p 0.99
  check_alloc "3 prompts (--prompt-file), T 1, --top-p 0.9, KV cache" 40 --prompt-file prompts.txt --temperature 1 --top-p 0.9
  check_alloc "one prompt, --no-cache" 30 --prompt "Call me Ishmael." --temperature 0 --no-cache
  check_alloc "3 prompts, --no-cache" 30 --prompt-file prompts.txt --temperature 0 --no-cache
  ;;

bad)
  # expect_usage NAME PATTERN CMD...: exit 2, exactly one stderr line "smallmind: error: ..." matching PATTERN
  expect_usage() {
    local name=$1 pat=$2; shift 2
    timeout 120 "$@" >out.txt 2>err.txt; local rc=$?
    local lines; lines=$(wc -l <err.txt)
    if [ $rc -eq 2 ] && [ "$lines" -eq 1 ] && grep -q "^smallmind: error: .*$pat" err.txt; then ok "$name"
    else bad "$name (exit $rc, $lines stderr lines: $(head -c 300 err.txt))"; fi
  }
  GB="$bin generate --prompt hi --max-new 3"
  EB="$bin eval --data $root/d_val.bin"
  # checkpoints: missing, truncated, foreign (an HDF5 file h5py wrote), a run directory without
  # `latest`, a `latest` naming a missing file
  cp "$ckpt" trunc.h5 && truncate -s $(( $(stat -c %s "$ckpt") / 2 )) trunc.h5
  "$py" -c "
import h5py, numpy as np
with h5py.File('foreign.h5', 'w') as f:
    f.attrs['format'] = 'something-else'; f['model/wte'] = np.zeros((256, 64), np.float32)
with h5py.File('bare.h5', 'w') as f:
    f['data'] = np.arange(10)"
  echo "not hdf5 at all" > text.h5
  mkdir -p nolatest dangling dangling2 && echo "ckpt_00000099.h5" > dangling/latest
  cp "$ckpt" dangling2/ckpt_00000003.h5 && echo "ckpt_00000099.h5" > dangling2/latest   # and an older one present
  for c in generate eval; do
    B=$GB; [ $c = eval ] && B=$EB
    expect_usage "$c: missing checkpoint"       "nosuch.h5"     $B --ckpt nosuch.h5
    expect_usage "$c: truncated checkpoint"     "trunc.h5"      $B --ckpt trunc.h5
    expect_usage "$c: foreign HDF5 (format attr)" "foreign.h5"  $B --ckpt foreign.h5
    expect_usage "$c: foreign HDF5 (no attrs)"  "bare.h5"       $B --ckpt bare.h5
    expect_usage "$c: not HDF5"                 "text.h5"       $B --ckpt text.h5
    expect_usage "$c: run dir without latest"   "latest"        $B --ckpt nolatest
    expect_usage "$c: latest names a missing file" "ckpt_00000099.*no other checkpoint" $B --ckpt dangling
    expect_usage "$c: latest names a missing file, the newest present named" "ckpt_00000099.*newest checkpoint is ckpt_00000003.h5" $B --ckpt dangling2
  done
  # prompts longer than the context (256): the line names both lengths
  long=$("$py" -c "print('a' * 300)")
  expect_usage "prompt longer than the context" "300.*256\|256.*300" $bin generate --ckpt "$root/run1" --prompt "$long"
  { echo "Call me"; echo "$long"; } > long.txt
  expect_usage "a --prompt-file line longer than the context" "300.*256\|256.*300" $bin generate --ckpt "$root/run1" --prompt-file long.txt
  # sampling and length flags
  GR="$bin generate --ckpt $root/run1 --prompt hi"
  expect_usage "--top-p 0"           "top-p"        $GR --top-p 0
  expect_usage "--top-p 1.5"         "top-p"        $GR --top-p 1.5
  expect_usage "--top-p nan"         "top-p"        $GR --top-p nan
  expect_usage "--top-k -1"          "top-k"        $GR --top-k -1
  expect_usage "--temperature -1"    "temperature"  $GR --temperature -1
  expect_usage "--temperature inf"   "temperature"  $GR --temperature inf
  expect_usage "--max-new 0"         "max-new"      $GR --max-new 0
  expect_usage "--max-new x"         "max-new"      $GR --max-new x
  expect_usage "empty --prompt"      "prompt"       $GR --prompt ""
  expect_usage "--prompt-file missing" "nosuch.txt" $bin generate --ckpt "$root/run1" --prompt-file nosuch.txt
  printf '\n\n' > empty.txt
  expect_usage "--prompt-file without a prompt" "empty.txt" $bin generate --ckpt "$root/run1" --prompt-file empty.txt
  expect_usage "--prompt and --prompt-file" "prompt"  $GR --prompt-file long.txt
  # data files for eval: another vocabulary than the checkpoint's (header says GPT-2, 50257, and
  # tokens within 256: the tokenizer differs even where every token fits), tokens beyond the vocabulary
  "$py" - "$root/d_val.bin" <<'PY'
import sys
import numpy as np
h = np.fromfile(sys.argv[1], "<i4", count=256).copy()
t = np.fromfile(sys.argv[1], "<u2", offset=1024)
g = h.copy(); g[3] = 50257; g[4] = 2            # DESIGN.md: int 3 vocabulary, int 4 tokenizer (2 = gpt2)
open("gpt2_val.bin", "wb").write(g.tobytes() + t.tobytes())
g = h.copy(); g[3] = 50257; g[4] = 0            # vocabulary 50257, no tokenizer recorded
open("v50257_val.bin", "wb").write(g.tobytes() + t.tobytes())
b = t.copy(); b[100] = 1000
g = h.copy(); g[3] = 50257; g[4] = 2
open("bigtok_val.bin", "wb").write(g.tobytes() + b.tobytes())
g = h.copy(); g[3] = 0; g[4] = 0               # llm.c's own GPT-2 shards: int 3 and int 4 both 0
open("llmc0_val.bin", "wb").write(g.tobytes() + t.tobytes())
g = h.copy(); g[2] = 10                         # 10 tokens: no whole window of 64+1
open("tiny_val.bin", "wb").write(g.tobytes() + t[:10].tobytes())
PY
  E="$bin eval --ckpt $root/run1"
  expect_usage "eval: a GPT-2 shard (vocabulary 50257) with a byte checkpoint" "gpt2_val.bin" $E --data gpt2_val.bin
  expect_usage "eval: a shard of vocabulary 50257 (int 4 = 0) with a byte checkpoint" "v50257_val.bin" $E --data v50257_val.bin
  expect_usage "eval: an llm.c GPT-2 shard (int 3 = int 4 = 0) with a byte checkpoint" "llmc0_val.bin" $E --data llmc0_val.bin
  expect_usage "eval: a token beyond the checkpoint's vocabulary" "bigtok_val.bin" $E --data bigtok_val.bin
  expect_usage "eval: missing data file" "nosuch.bin" $E --data nosuch.bin
  expect_usage "eval: --batches beyond the file" "batches" $E --data "$root/d_val.bin" --seq 64 --batch 8 --batches 100
  expect_usage "eval: --seq beyond the context" "seq" $E --data "$root/d_val.bin" --seq 300
  expect_usage "eval: a file shorter than one window" "tiny_val.bin" $E --data tiny_val.bin --seq 64
  # under mpirun -np 2: exit 2 and the message; the number of lines is recorded (ideally one: today
  # each rank prints its own, and Open MPI adds its abort banner)
  multi() {  # NAME PATTERN ARGS...
    local name=$1 pat=$2; shift 2
    timeout 120 $MPIRUN -np 2 --bind-to none "$@" >out.txt 2>err.txt; local rc=$?
    local lines mine; lines=$(cat out.txt err.txt | grep -c .) mine=$(grep -c "^smallmind: .*error: .*$pat" err.txt)
    if [ $rc -eq 2 ] && [ "$mine" -eq 1 ]; then ok "$name: exit 2 (one smallmind line, $lines lines in all)"
    else bad "$name (exit $rc, $mine matching lines: $(head -c 400 err.txt))"; fi
  }
  multi "eval --batch 3 on 2 ranks" "divide" $bin eval --ckpt "$root/run1" --data "$root/d_val.bin" --seq 64 --batch 3 --threads 1
  multi "generate under mpirun -np 2" "one process\|ranks" $bin generate --ckpt "$root/run1" --prompt hi --max-new 3 --threads 1
  # and --help
  for c in eval generate; do "$bin" $c --help | grep -q "usage: smallmind $c" && ok "$c --help" || bad "$c --help"; done
  ;;

int8)
  # INT8 (--int8): the weight matrices quantized at load, one scale per 64 inputs. Perplexity on the
  # validation shard within 1% of fp32 (the issue's bound; per-group int8 of a small model moves it
  # by ~0.01% here); the cache and --no-cache take the same INT8 kernels (a decode row equals that
  # row of a larger product, bit for bit), so their logits agree as the fp32 paths' do.
  E="$bin eval --ckpt $root/run1 --data $root/d_val.bin --seq 64 --json --threads 2"
  $E >fp32.json 2>&1 && $E --int8 >int8.json 2>&1 && $E --int8 --group-size 32 >int8g32.json 2>&1 \
    || bad "eval --int8 ran: $(cat int8.json)"
  "$py" - fp32.json int8.json int8g32.json <<'PY' && ok "eval --int8: perplexity within 1% of fp32 (groups of 64 and 32)" \
    || bad "int8 perplexity"
import json, sys
f, q, q32 = (json.loads(open(p).read().strip().splitlines()[-1]) for p in sys.argv[1:4])
for name, r in (("64", q), ("32", q32)):
    rel = abs(r["perplexity"] - f["perplexity"]) / f["perplexity"]
    print(f"     group {name}: perplexity {r['perplexity']:.6f} vs fp32 {f['perplexity']:.6f}: {rel:.2e} relative")
    assert r["tokens"] == f["tokens"] and rel < 0.01 and r["loss"] != f["loss"], (r, f)   # != : really quantized
PY
  G --prompt "Call me Ishmael. " --max-new 100 --temperature 0 --int8 --json --dump-logits c.bin >c.out 2>c.json
  G --prompt "Call me Ishmael. " --max-new 100 --temperature 0 --int8 --json --dump-logits n.bin --no-cache >n.out 2>n.json
  cmp -s c.out n.out && compare_logits "int8 cache vs no-cache" c.bin n.bin \
    && ok "generate --int8: the KV cache equals --no-cache (text and logits)" || bad "int8 cache vs no-cache"
  "$bin" generate --ckpt "$root/run1" --int8 --group-size 48 --prompt x >/dev/null 2>err.txt; rc=$?
  [ $rc -eq 2 ] && [ "$(wc -l <err.txt)" -eq 1 ] && grep -q "group-size" err.txt \
    && ok "--group-size 48 (does not divide 64): one line, exit 2" || bad "bad group size: exit $rc $(cat err.txt)"
  ;;

*) echo "unknown mode $mode"; exit 2 ;;
esac
finish
