"""llmc.py — llm.c's GPT-2 checkpoint format (.bin) in numpy and PyTorch, written from llm.c's own
description (train_gpt2.py: write_model / write_tensors; train_gpt2.c: gpt2_build_from_checkpoint),
independently of smallmind's reader: the tests' truth for `smallmind convert`.

  header: 256 int32 little-endian: [0] magic 20240326, [1] version (3: fp32; 5: bf16, every tensor,
          the LayerNorms too), [2] maxT, [3] V, [4] L, [5] NH, [6] C, [7] Vp (padded vocabulary), 0s
  then:   wte (Vp,C), wpe (maxT,C), ln1w (L,C), ln1b (L,C), qkvw (L,3C,C), qkvb (L,3C), attprojw
          (L,C,C), attprojb (L,C), ln2w (L,C), ln2b (L,C), fcw (L,4C,C), fcb (L,4C), fcprojw (L,C,4C),
          fcprojb (L,C), lnfw (C), lnfb (C), back to back, nothing after.
"""
import numpy as np
import torch

MAGIC, FP32, BF16 = 20240326, 3, 5
NAMES = ["wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb",
         "ln2w", "ln2b", "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb"]


def shapes(maxT, V, L, C, Vp):
    return {"wte": (Vp, C), "wpe": (maxT, C), "ln1w": (L, C), "ln1b": (L, C), "qkvw": (L, 3 * C, C),
            "qkvb": (L, 3 * C), "attprojw": (L, C, C), "attprojb": (L, C), "ln2w": (L, C), "ln2b": (L, C),
            "fcw": (L, 4 * C, C), "fcb": (L, 4 * C), "fcprojw": (L, C, 4 * C), "fcprojb": (L, C),
            "lnfw": (C,), "lnfb": (C,)}


def random_params(maxT, V, L, C, Vp, seed, pad_value=0.0):
    """Random weights (float32 torch tensors): normal matrices, embeddings and biases, LayerNorm
    weights around 1, so the model's loss is far from flat. wte's padding rows (V..Vp-1) hold
    pad_value (llm.c's pad_vocab writes 0)."""
    g = torch.Generator().manual_seed(seed)
    # scales large enough that every tensor moves the loss well beyond the tests' 1e-5 (a swapped or
    # transposed tensor is seen), small enough that the model still trains
    std = {"wte": 0.3, "wpe": 0.1, "qkvw": 0.15, "attprojw": 0.15, "fcw": 0.15, "fcprojw": 0.1,
           "ln1b": 0.1, "ln2b": 0.1, "lnfb": 0.1}
    p = {}
    for n, s in shapes(maxT, V, L, C, Vp).items():
        if n in ("ln1w", "ln2w", "lnfw"):
            t = 1.0 + 0.2 * torch.randn(s, generator=g)
        else:
            t = std.get(n, 0.05) * torch.randn(s, generator=g)
        p[n] = t.float()
    p["wte"][V:] = pad_value
    return p


def write(path, cfg, p, dtype):
    """Writes an llm.c checkpoint as train_gpt2.py's write_model does: header, then every tensor in
    NAMES order, fp32 (version 3) or bf16 (version 5, torch's round-to-nearest-even cast)."""
    maxT, V, L, NH, C, Vp = (cfg[k] for k in ("maxT", "V", "L", "NH", "C", "Vp"))
    header = np.zeros(256, dtype="<i4")
    header[:8] = [MAGIC, FP32 if dtype == "float32" else BF16, maxT, V, L, NH, C, Vp]
    with open(path, "wb") as f:
        f.write(header.tobytes())
        for n in NAMES:
            t = p[n].detach().cpu()
            assert tuple(t.shape) == shapes(maxT, V, L, C, Vp)[n], (n, t.shape)
            if dtype == "float32":
                f.write(t.to(torch.float32).numpy().astype("<f4").tobytes())
            else:
                f.write(t.to(torch.bfloat16).view(torch.int16).numpy().astype("<i2").tobytes())


def read(path):
    """(cfg dict, {name: float32 tensor}) from an llm.c checkpoint; bf16 tensors cast to float32 by
    PyTorch. Raises ValueError on a malformed file."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size < 1024:
        raise ValueError(f"{path}: shorter than the header")
    h = raw[:1024].view("<i4")
    if h[0] != MAGIC or h[1] not in (FP32, BF16):
        raise ValueError(f"{path}: magic {h[0]}, version {h[1]}")
    maxT, V, L, NH, C, Vp = (int(x) for x in h[2:8])
    cfg = {"version": int(h[1]), "maxT": maxT, "V": V, "L": L, "NH": NH, "C": C, "Vp": Vp}
    elem = 4 if h[1] == FP32 else 2
    at, p = 1024, {}
    for n, s in shapes(maxT, V, L, C, Vp).items():
        k = int(np.prod(s))
        b = raw[at:at + k * elem]
        if b.size != k * elem:
            raise ValueError(f"{path}: truncated in {n}")
        if elem == 4:
            p[n] = torch.from_numpy(b.view("<f4").astype(np.float32).reshape(s).copy())
        else:
            p[n] = torch.from_numpy(b.view("<i2").reshape(s).copy()).view(torch.bfloat16).to(torch.float32)
        at += k * elem
    if at != raw.size:
        raise ValueError(f"{path}: {raw.size - at} bytes after the tensors")
    return cfg, p
