#!/usr/bin/python3
"""pytorch_generate.py — GPT-2 generation in PyTorch from a smallmind HDF5 checkpoint, with a
preallocated KV cache: the independent reference for `smallmind generate` (tests) and the PyTorch
baseline of `smallmind bench generate`.

usage: pytorch_generate.py --ckpt FILE (--prompt TEXT | --prompt-tokens IDS) [--max-new N]
                           [--no-cache] [--threads N] [--time] [--dump-logits FILE]

  --ckpt FILE          a checkpoint (ckpt_NNNNNNNN.h5), read with h5py only: /model/<name> in
                       llm.c's names and shapes, the config in the root attributes
  --prompt TEXT        the prompt, byte tokenizer: token i is byte i of the UTF-8 text
  --prompt-tokens IDS  the prompt as token ids, separated by commas or spaces (any tokenizer)
  --max-new N          new tokens (default 50); stops earlier at the context (the text then holds
                       max_seq_len + 1 tokens, as smallmind's does: the token predicted from a
                       full context is kept)
  --no-cache           recompute the whole prefix for every token (the training-style forward)
  --threads N          torch threads (default 2)
  --time               one untimed warm-up generation first, then the timed one; prints on stderr
                       {"new_tokens":N,"tokens_per_s":R,"prefill_tokens_per_s":R2,...}
  --dump-logits FILE   the logits (V float32, raw) from which each new token was chosen
Decoding is greedy (argmax; the lowest id among equal logits). stdout: the new token ids,
space-separated, on one line.

The model is GPT-2 as DESIGN.md defines it: token + position embeddings, pre-LayerNorm blocks
(eps 1e-5), causal multi-head attention (q, k, v in that order in qkvw's rows), GELU (tanh), the
LM head tied to wte; padded vocabulary columns are never chosen. Everything runs under
torch.no_grad() in float32; the cache, (L, 2, H, max_seq_len, head_size), is allocated once and
each step writes its new keys and values in place (no concatenation), then attends over the
positions filled so far.
"""
import argparse
import json
import math
import sys
import time

import h5py
import numpy as np
import torch
import torch.nn.functional as F

PARAM_NAMES = ["wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb",
               "ln2w", "ln2b", "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb"]
CONFIG_KEYS = ["n_layer", "n_head", "n_embd", "max_seq_len", "vocab_size", "padded_vocab_size"]


def load_checkpoint(path):
    """(config dict, {name: float32 tensor}) from a smallmind checkpoint, read with h5py."""
    with h5py.File(path, "r") as f:
        fmt = f.attrs.get("format")
        if isinstance(fmt, bytes):
            fmt = fmt.decode()
        if fmt != "smallmind-checkpoint":
            raise SystemExit(f"pytorch_generate: {path} is not a smallmind checkpoint (format={fmt!r})")
        cfg = {k: int(f.attrs[k]) for k in CONFIG_KEYS}
        tok = f.attrs.get("tokenizer", "byte")
        cfg["tokenizer"] = tok.decode() if isinstance(tok, bytes) else str(tok)
        L, C, maxT, Vp = cfg["n_layer"], cfg["n_embd"], cfg["max_seq_len"], cfg["padded_vocab_size"]
        shapes = {"wte": (Vp, C), "wpe": (maxT, C), "ln1w": (L, C), "ln1b": (L, C), "qkvw": (L, 3 * C, C),
                  "qkvb": (L, 3 * C), "attprojw": (L, C, C), "attprojb": (L, C), "ln2w": (L, C), "ln2b": (L, C),
                  "fcw": (L, 4 * C, C), "fcb": (L, 4 * C), "fcprojw": (L, C, 4 * C), "fcprojb": (L, C),
                  "lnfw": (C,), "lnfb": (C,)}
        p = {}
        for n in PARAM_NAMES:
            a = np.asarray(f["model/" + n][...], dtype=np.float32)
            if a.shape != shapes[n]:
                raise SystemExit(f"pytorch_generate: /model/{n} has shape {a.shape}, the config implies {shapes[n]}")
            p[n] = torch.from_numpy(np.ascontiguousarray(a))
    return cfg, p


class KVGPT2:
    """GPT-2 forward over new positions of one sequence, against a preallocated KV cache."""

    def __init__(self, cfg, p):
        self.L, self.H, self.C = cfg["n_layer"], cfg["n_head"], cfg["n_embd"]
        self.maxT, self.V = cfg["max_seq_len"], cfg["vocab_size"]
        self.hs = self.C // self.H
        self.p = p
        # per layer: the weights as contiguous views, sliced once
        self.layers = [{n: p[n][l] for n in PARAM_NAMES if p[n].dim() >= 2 and n not in ("wte", "wpe")}
                       for l in range(self.L)]
        self.cache = torch.zeros(self.L, 2, self.H, self.maxT, self.hs)   # keys, values
        self.mask = torch.full((self.maxT, self.maxT), float("-inf")).triu(1)   # causal, additive
        self.scale = 1.0 / math.sqrt(self.hs)
        self.pos = 0

    def reset(self):
        self.pos = 0

    def forward(self, tokens):
        """tokens: 1-D LongTensor of the T new tokens at positions pos..pos+T-1. Returns the
        logits (V,) at the last of them, and advances pos by T."""
        T, C, H, hs, p0 = tokens.numel(), self.C, self.H, self.hs, self.pos
        if p0 + T > self.maxT:
            raise ValueError(f"{p0} cached + {T} new positions exceed the context {self.maxT}")
        x = self.p["wte"][tokens] + self.p["wpe"][p0:p0 + T]                      # (T,C)
        for l, w in enumerate(self.layers):
            h = F.layer_norm(x, (C,), w["ln1w"], w["ln1b"], eps=1e-5)
            qkv = F.linear(h, w["qkvw"], w["qkvb"])                              # (T,3C): q, k, v
            q = qkv[:, :C].view(T, H, hs).transpose(0, 1)                        # (H,T,hs)
            kc, vc = self.cache[l, 0], self.cache[l, 1]                          # (H,maxT,hs)
            kc[:, p0:p0 + T] = qkv[:, C:2 * C].view(T, H, hs).transpose(0, 1)
            vc[:, p0:p0 + T] = qkv[:, 2 * C:].view(T, H, hs).transpose(0, 1)
            k, v = kc[:, :p0 + T], vc[:, :p0 + T]                                # (H,P,hs)
            att = torch.matmul(q, k.transpose(1, 2)) * self.scale                # (H,T,P)
            if T > 1:   # query t (position p0+t) sees keys 0..p0+t
                att = att + self.mask[p0:p0 + T, :p0 + T]
            y = torch.matmul(att.softmax(dim=-1), v).transpose(0, 1).reshape(T, C)
            x = x + F.linear(y, w["attprojw"], w["attprojb"])
            h = F.layer_norm(x, (C,), w["ln2w"], w["ln2b"], eps=1e-5)
            h = F.gelu(F.linear(h, w["fcw"], w["fcb"]), approximate="tanh")
            x = x + F.linear(h, w["fcprojw"], w["fcprojb"])
        x = F.layer_norm(x[-1], (C,), self.p["lnfw"], self.p["lnfb"], eps=1e-5)
        self.pos = p0 + T
        return F.linear(x, self.p["wte"][:self.V])                               # tied LM head, real rows


def greedy(logits):
    # torch.argmax's choice among equal values is not documented: take the lowest id explicitly
    m = logits.max()
    return int(torch.nonzero(logits == m)[0, 0])


def generate(model, prompt, max_new, use_cache, dump=None):
    """Greedy continuation of prompt (list of ids). Returns (new ids, prefill s, decode s)."""
    seq = list(prompt)
    model.reset()
    t0 = time.perf_counter()
    logits = model.forward(torch.tensor(seq, dtype=torch.long))                # prefill: one forward
    t_prefill = time.perf_counter() - t0
    new = []
    t1 = time.perf_counter()
    while True:
        if dump is not None:
            dump.write(logits.numpy().astype("<f4").tobytes())
        tok = greedy(logits)
        seq.append(tok)
        new.append(tok)
        if len(new) >= max_new or len(seq) > model.maxT:   # the new token could not be fed back
            break
        if use_cache:
            logits = model.forward(torch.tensor([tok], dtype=torch.long))
        else:   # the whole prefix again, from an empty cache
            model.reset()
            logits = model.forward(torch.tensor(seq, dtype=torch.long))
    return new, t_prefill, time.perf_counter() - t1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt", required=True)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--prompt")
    g.add_argument("--prompt-tokens")
    ap.add_argument("--max-new", type=int, default=50)
    ap.add_argument("--no-cache", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--time", action="store_true")
    ap.add_argument("--dump-logits")
    a = ap.parse_args()
    if a.max_new < 1:
        ap.error("--max-new must be at least 1")
    torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)   # as smallmind's inference does: no denormal slow paths
    cfg, p = load_checkpoint(a.ckpt)
    if a.prompt is not None:
        if cfg["tokenizer"] != "byte":
            ap.error(f"--prompt TEXT needs the byte tokenizer; this checkpoint's is {cfg['tokenizer']}: "
                     "give --prompt-tokens")
        prompt = list(a.prompt.encode())
    else:
        prompt = [int(t) for t in a.prompt_tokens.replace(",", " ").split()]
    if not prompt or len(prompt) > cfg["max_seq_len"]:
        ap.error(f"the prompt is {len(prompt)} tokens; it must be 1..{cfg['max_seq_len']} (the context)")
    if min(prompt) < 0 or max(prompt) >= cfg["vocab_size"]:
        ap.error(f"prompt tokens must be in [0, {cfg['vocab_size']})")
    model = KVGPT2(cfg, p)
    with torch.no_grad():
        if a.time:
            generate(model, prompt, a.max_new, not a.no_cache)   # warm-up: first-touch, thread start
        dump = open(a.dump_logits, "wb") if a.dump_logits else None
        new, t_prefill, t_decode = generate(model, prompt, a.max_new, not a.no_cache, dump)
        if dump:
            dump.close()
    print(" ".join(str(t) for t in new), flush=True)
    if a.time:
        print(json.dumps({"new_tokens": len(new), "tokens_per_s": len(new) / t_decode if t_decode > 0 else 0.0,
                          "prefill_tokens_per_s": len(prompt) / t_prefill if t_prefill > 0 else 0.0,
                          "prompt_tokens": len(prompt), "threads": torch.get_num_threads(),
                          "cache": not a.no_cache, "torch": torch.__version__}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
