"""test_ckpt_capture.py — `train --ckpt-async`'s scheduled saves take their copy of the state from the
step's AdamW pass (ckpt_async_capture: the updated p, m, v written to the buffer as they are computed)
instead of reading the state again after it. Truth: the same run without --ckpt-async (synchronous
saves, no capture). Every checkpoint of the two runs must be equal in every dataset, bit for bit, and
every attribute but run_options (which records the flag), read with h5py; the losses printed equal; and
the async run's log must say which saves were copied by AdamW: all of them where a capture applies
(fp32 and bf16, 1 and 2 ranks, many chunks a tensor), none under --zero 1 (moments sharded: the save
copies as before), and not a save whose step skipped its update (an injected NaN loss).

usage: python3 test_ckpt_capture.py MPIEXEC SMALLMIND WORKDIR
"""
import os
import re
import shutil
import subprocess
import sys

import h5py
import numpy as np

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def contents(path):
    """path -> {object: (attributes, dataset bytes or None)}, run_options left out."""
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            attrs = {k: np.asarray(obj.attrs[k]).tobytes() for k in obj.attrs if k != "run_options"}
            data = obj[...].tobytes() if isinstance(obj, h5py.Dataset) else None
            out[name] = (attrs, data)
        out["/"] = ({k: np.asarray(f.attrs[k]).tobytes() for k in f.attrs if k != "run_options"}, None)
        f.visititems(visit)
    return out


def main():
    mpiexec, sm, work = sys.argv[1:4]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    env.pop("SMALLMIND_CKPT_CHUNK_FLOATS", None)
    env.pop("SMALLMIND_INJECT_NAN", None)
    words = "call me ishmael some years ago never mind how long precisely having little or no money".split()
    with open(os.path.join(work, "text.txt"), "w") as f:
        f.write(" ".join(words[(i * 7 + i // 5) % len(words)] for i in range(12000)))
    r = subprocess.run([sm, "prepare", "--input", os.path.join(work, "text.txt"), "--out", os.path.join(work, "d")],
                       env=env, capture_output=True, text=True)
    check(r.returncode == 0, f"prepare ({r.stderr.strip()[-200:]})")
    if r.returncode:
        sys.exit(1)
    base = ["--data", os.path.join(work, "d"), "--layers", "2", "--heads", "2", "--embd", "64", "--seq", "32",
            "--batch", "2", "--steps", "12", "--ckpt-every", "3", "--eval-every", "0", "--threads", "1"]
    # name, ranks, extra flags, extra environment, saves expected to be copied by AdamW
    cases = [
        ("fp32, 1 rank", 1, [], {}, 4),
        ("fp32, 2 ranks", 2, [], {}, 4),
        ("bf16, 2 ranks", 2, ["--precision", "bf16"], {}, 4),
        ("fp32, 2 ranks, many chunks a tensor", 2, [], {"SMALLMIND_CKPT_CHUNK_FLOATS": "333"}, 4),
        ("--zero 1, 2 ranks: copied by the save", 2, ["--zero", "1"], {}, 0),
        ("step 6's update skipped (NaN loss): that save copied by the save", 1, [], {"SMALLMIND_INJECT_NAN": "6"}, 3),
    ]
    for k, (name, np_, extra, xenv, want) in enumerate(cases):
        runs = {}
        for mode in ("sync", "async"):
            d = os.path.join(work, f"c{k}_{mode}")
            cmd = [mpiexec, "-n", str(np_), "--bind-to", "none"]
            for key in xenv:
                cmd += ["-x", key]
            cmd += [sm, "train", "--run-dir", d] + base + extra + (["--ckpt-async"] if mode == "async" else [])
            r = subprocess.run(cmd, env=dict(env, **xenv), capture_output=True, text=True, timeout=300)
            runs[mode] = (d, r)
            check(r.returncode == 0, f"{name}: {mode} run ({r.stderr.strip()[-300:]})")
        if any(r.returncode for _, r in runs.values()):
            continue
        (ds, rs), (da, ra) = runs["sync"], runs["async"]
        losses = [re.findall(r"\| loss (\S+)", r.stdout) for r in (rs, ra)]
        check(len(losses[0]) == 12 and losses[0] == losses[1], f"{name}: the same 12 losses")
        names = sorted(n for n in os.listdir(ds) if n.endswith(".h5"))
        check(names == sorted(n for n in os.listdir(da) if n.endswith(".h5")) and len(names) == 4,
              f"{name}: the same 4 checkpoints")
        same = all(contents(os.path.join(ds, n)) == contents(os.path.join(da, n)) for n in names)
        check(same, f"{name}: every dataset and attribute equal, bit for bit")
        copied = len(re.findall(r"the copy made by its AdamW pass", ra.stdout))
        check(copied == want, f"{name}: {want} of 4 saves copied by AdamW (saw {copied})")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
