#!/usr/bin/python3
# pytorch_ref.py DIR — the PyTorch reference for tests/test_pytorch.c.
#
# Reads what `test_pytorch --write DIR` wrote (config.json, params.bin, tokens.bin), runs the
# same GPT-2 in PyTorch (float32, CPU) and writes DIR/ref.bin, float32 little-endian, concatenated:
#   logits (B,T,Vp) | loss (1) | the 16 parameter gradients in checkpoint order |
#   then for each clip value of config.json, from the same weights and fresh AdamW moments:
#     the losses of `steps` steps (the forward before each step) | their gradient norms (before
#     clipping, as clip_grad_norm_ returns them) | the 16 parameters after the steps.
# The batch is B windows of the token stream tokens.bin (int32): window b's inputs are tokens
# b*T .. b*T+T-1 and its targets the same shifted by one (llm.c's and smallmind's windows).
# Self-contained: Debian's python3 with python3-torch and numpy only.
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

# llm.c's 16 tensors, in checkpoint order; decay marks the 2-D weights that get weight decay.
PARAM_NAMES = ["wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb",
               "ln2w", "ln2b", "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb"]
DECAY = {"wte", "wpe", "qkvw", "attprojw", "fcw", "fcprojw"}


def param_shapes(L, C, maxT, Vp):
    return {
        "wte": (Vp, C), "wpe": (maxT, C),
        "ln1w": (L, C), "ln1b": (L, C),
        "qkvw": (L, 3 * C, C), "qkvb": (L, 3 * C),
        "attprojw": (L, C, C), "attprojb": (L, C),
        "ln2w": (L, C), "ln2b": (L, C),
        "fcw": (L, 4 * C, C), "fcb": (L, 4 * C),
        "fcprojw": (L, C, 4 * C), "fcprojb": (L, C),
        "lnfw": (C,), "lnfb": (C,),
    }


def gpt2_forward(p, inp, L, H, V):
    """Returns logits (B,T,Vp) over all padded columns; p maps names to tensors."""
    B, T = inp.shape
    C = p["wte"].shape[1]
    hs = C // H
    x = p["wte"][inp] + p["wpe"][:T]
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    for l in range(L):
        h = F.layer_norm(x, (C,), p["ln1w"][l], p["ln1b"][l], eps=1e-5)
        qkv = F.linear(h, p["qkvw"][l], p["qkvb"][l])                  # (B,T,3C)
        q, k, v = qkv.split(C, dim=2)                                  # q, k, v in that order
        q = q.view(B, T, H, hs).transpose(1, 2)                        # (B,H,T,hs)
        k = k.view(B, T, H, hs).transpose(1, 2)
        v = v.view(B, T, H, hs).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))       # (B,H,T,T)
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        x = x + F.linear(y, p["attprojw"][l], p["attprojb"][l])
        h = F.layer_norm(x, (C,), p["ln2w"][l], p["ln2b"][l], eps=1e-5)
        h = F.gelu(F.linear(h, p["fcw"][l], p["fcb"][l]), approximate="tanh")
        x = x + F.linear(h, p["fcprojw"][l], p["fcprojb"][l])
    x = F.layer_norm(x, (C,), p["lnfw"], p["lnfb"], eps=1e-5)
    return x @ p["wte"].t()                                            # tied LM head, (B,T,Vp)


def gpt2_loss(logits, tgt, V):
    # padded columns never enter the softmax; mean over the B*T tokens
    return F.cross_entropy(logits[..., :V].reshape(-1, V), tgt.reshape(-1))


def main():
    if len(sys.argv) != 2:
        print("usage: pytorch_ref.py DIR", file=sys.stderr)
        return 2
    d = sys.argv[1]
    torch.set_num_threads(2)
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    L, H, C, maxT, V, Vp = (cfg[k] for k in ("L", "H", "C", "maxT", "V", "Vp"))
    B, T, steps = cfg["B"], cfg["T"], cfg["steps"]
    assert C % H == 0 and Vp >= V and T <= maxT, cfg

    shapes = param_shapes(L, C, maxT, Vp)
    flat = np.fromfile(os.path.join(d, "params.bin"), dtype="<f4")
    n_expected = sum(int(np.prod(shapes[n])) for n in PARAM_NAMES)
    assert flat.size == n_expected, f"params.bin holds {flat.size} floats, config implies {n_expected}"
    params, off = {}, 0
    for n in PARAM_NAMES:
        cnt = int(np.prod(shapes[n]))
        params[n] = torch.tensor(flat[off:off + cnt].reshape(shapes[n]), dtype=torch.float32, requires_grad=True)
        off += cnt
    tokens = np.fromfile(os.path.join(d, "tokens.bin"), dtype="<i4").astype(np.int64)
    assert tokens.size == B * T + 1, f"tokens.bin holds {tokens.size} tokens, expected B*T+1 = {B * T + 1}"
    inp = torch.from_numpy(np.stack([tokens[b * T:b * T + T] for b in range(B)]))
    tgt = torch.from_numpy(np.stack([tokens[b * T + 1:b * T + T + 1] for b in range(B)]))
    assert int(inp.min()) >= 0 and int(inp.max()) < V and int(tgt.min()) >= 0 and int(tgt.max()) < V

    # one forward + backward: logits, loss, gradients
    logits = gpt2_forward(params, inp, L, H, V)
    loss = gpt2_loss(logits, tgt, V)
    loss.backward()
    out = [logits.detach().reshape(-1), loss.detach().reshape(1)]
    out += [params[n].grad.detach().clone().reshape(-1) for n in PARAM_NAMES]
    grad_norm = math.sqrt(sum(float((params[n].grad.double() ** 2).sum()) for n in PARAM_NAMES))

    # `steps` AdamW steps from the same weights, once per clip value: clip_grad_norm_ on the
    # gradients of the whole model before each step (the global norm, GPT-2 trainers' clip)
    runs = []
    for clip in cfg["clips"]:
        p = {n: params[n].detach().clone().requires_grad_(True) for n in PARAM_NAMES}
        opt = torch.optim.AdamW(
            [{"params": [p[n] for n in PARAM_NAMES if n in DECAY], "weight_decay": cfg["wd"]},
             {"params": [p[n] for n in PARAM_NAMES if n not in DECAY], "weight_decay": 0.0}],
            lr=cfg["lr"], betas=(cfg["beta1"], cfg["beta2"]), eps=cfg["eps"])
        losses, norms = [], []
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            step_loss = gpt2_loss(gpt2_forward(p, inp, L, H, V), tgt, V)
            step_loss.backward()
            norms.append(float(torch.nn.utils.clip_grad_norm_([p[n] for n in PARAM_NAMES], clip)))
            opt.step()
            losses.append(float(step_loss))
        out.append(torch.tensor(losses + norms, dtype=torch.float32))
        out += [p[n].detach().reshape(-1) for n in PARAM_NAMES]
        runs.append((clip, losses, norms))

    ref = torch.cat(out).numpy().astype("<f4")
    tmp = os.path.join(d, "ref.bin.tmp")
    ref.tofile(tmp)
    os.replace(tmp, os.path.join(d, "ref.bin"))
    print(f"pytorch_ref: torch {torch.__version__} L={L} H={H} C={C} V={V} Vp={Vp} B={B} T={T}: "
          f"loss {float(loss):.6f} (ln V {math.log(V):.6f}) grad_norm {grad_norm:.6e}")
    for clip, losses, norms in runs:
        print(f"  clip {clip:g}: losses {' '.join(f'{x:.6f}' for x in losses)}; "
              f"grad norms {' '.join(f'{x:.6f}' for x in norms)}")
    print(f"pytorch_ref: wrote {ref.size} floats to {os.path.join(d, 'ref.bin')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
