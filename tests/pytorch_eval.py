#!/usr/bin/python3
"""pytorch_eval.py — the mean per-token loss of a smallmind HDF5 checkpoint over a token shard's
windows, in PyTorch: the independent reference for `smallmind eval --json`.

usage: pytorch_eval.py (--ckpt FILE | --llmc FILE) --data SHARD [--seq T] [--windows N] [--threads N]

  --ckpt reads a smallmind HDF5 checkpoint with h5py; --llmc reads an llm.c checkpoint (.bin, fp32 or
  bf16, its own padded vocabulary) with llmc.py, so that `smallmind convert`'s output is checked
  against the file it came from.

  The shard is llm.c's format, read with numpy: a header of 256 int32 (magic 20240520, version 1,
  token count), then uint16 tokens. Windows of T+1 tokens start every T tokens from token 0 (a
  last partial window dropped); --seq defaults to the checkpoint's max_seq_len; --windows keeps
  the first N. Each window's per-token cross-entropy (PyTorch, float32, padded vocabulary columns
  left out) is summed in float64, and the windows' sums are added in order.
  stdout: {"loss": mean nats per target token, "tokens": N, "windows": W, "seq": T}
The forward is pytorch_ref.py's (the one test_pytorch checks the training model against), the
weights are read by pytorch_generate.py's h5py loader.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llmc  # noqa: E402
from pytorch_generate import load_checkpoint  # noqa: E402
from pytorch_ref import gpt2_forward  # noqa: E402

SHARD_MAGIC, SHARD_VERSION = 20240520, 1


def read_shard(path):
    header = np.fromfile(path, dtype="<i4", count=256)
    if header.size != 256 or header[0] != SHARD_MAGIC or header[1] != SHARD_VERSION:
        raise SystemExit(f"pytorch_eval: {path} is not a version-1 token shard")
    tokens = np.fromfile(path, dtype="<u2", offset=256 * 4)
    if tokens.size != header[2]:
        raise SystemExit(f"pytorch_eval: {path}: header says {header[2]} tokens, file holds {tokens.size}")
    return tokens.astype(np.int64)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--ckpt")
    src.add_argument("--llmc")
    ap.add_argument("--data", required=True)
    ap.add_argument("--seq", type=int, default=0)
    ap.add_argument("--windows", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.ckpt:
        cfg, p = load_checkpoint(a.ckpt)
    else:
        c, p = llmc.read(a.llmc)
        cfg = {"n_layer": c["L"], "n_head": c["NH"], "vocab_size": c["V"], "max_seq_len": c["maxT"]}
    L, H, V = cfg["n_layer"], cfg["n_head"], cfg["vocab_size"]
    T = a.seq or cfg["max_seq_len"]
    assert 1 <= T <= cfg["max_seq_len"], f"--seq {T} outside 1..{cfg['max_seq_len']}"
    tok = read_shard(a.data)
    assert tok.max() < V, f"token {tok.max()} >= vocab {V}"
    n_windows = (tok.size - 1) // T   # window w is tokens w*T .. w*T+T
    if a.windows:
        assert a.windows <= n_windows, f"{a.windows} windows asked, the shard holds {n_windows}"
        n_windows = a.windows
    assert n_windows >= 1, "the shard holds no whole window"
    per_window = np.zeros(n_windows, dtype=np.float64)
    chunk = max(1, 2048 // T)
    with torch.no_grad():
        for w0 in range(0, n_windows, chunk):
            ws = range(w0, min(n_windows, w0 + chunk))
            x = torch.from_numpy(np.stack([tok[w * T:w * T + T + 1] for w in ws]))   # (b, T+1)
            logits = gpt2_forward(p, x[:, :-1], L, H, V)                             # (b, T, Vp)
            losses = F.cross_entropy(logits[..., :V].reshape(-1, V), x[:, 1:].reshape(-1), reduction="none")
            per_window[w0:w0 + len(ws)] = losses.view(len(ws), T).double().sum(dim=1).numpy()
    total = 0.0
    for s in per_window:   # in window order
        total += float(s)
    n_tokens = n_windows * T
    print(json.dumps({"loss": total / n_tokens, "tokens": n_tokens, "windows": n_windows, "seq": T}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
