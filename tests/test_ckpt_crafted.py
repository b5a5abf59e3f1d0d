"""test_ckpt_crafted.py — damaged, crafted and poisoned checkpoints are refused, fast, by `inspect`
and by `train --resume PATH`: exit 2, one line naming what is wrong, never a hang or a crash
(issue 13 items 1 and 3). The variants are written here with h5py from a checkpoint a 2-step run
writes; each is checked against the expectation written next to it (an independent reading of the
format: DESIGN.md's layout, h5py's view of the file), not against smallmind's own output.

usage: python3 test_ckpt_crafted.py SMALLMIND WORKDIR
"""
import os
import shutil
import subprocess
import sys
import time

import h5py
import numpy as np

failures = []
LIMIT_S = 20.0   # every verdict well within this (the 2^40-element dataset took hours before)


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def run(args, timeout=60):
    t0 = time.time()
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        return r.returncode, r.stdout, r.stderr, time.time() - t0
    except subprocess.TimeoutExpired:
        return 124, "", "timed out", time.time() - t0


def main():
    sm, work = sys.argv[1], os.path.abspath(sys.argv[2])
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    os.chdir(work)
    words = ["call", "me", "ishmael", "whale", "sea", "ship", "white", "spout"]
    rng = np.random.default_rng(3)
    open("text.txt", "w").write(" ".join(words[i] for i in rng.integers(0, len(words), 20000)))
    subprocess.run([sm, "prepare", "--input", "text.txt", "--out", "d"], check=True, capture_output=True)
    model = ["--layers", "2", "--heads", "2", "--embd", "32", "--seq", "16", "--batch", "2", "--eval-every", "0",
             "--val-batches", "1", "--threads", "1"]
    subprocess.run([sm, "train", "--data", "d", "--run-dir", "base", "--steps", "2", *model], check=True,
                   capture_output=True)
    base = os.path.join(work, "base", "ckpt_00000002.h5")

    ALL = lambda n: ["model/" + n, "optim/m/" + n, "optim/v/" + n]

    def recreate(f, path, data, **kw):
        del f[path]
        kw.setdefault("fletcher32", True)
        kw.setdefault("chunks", True)
        f.create_dataset(path, data=data, **kw)

    def set_value(path, index, value):
        def edit(f):
            a = f[path][...]
            a[index] = value
            f[path][...] = a
        return edit

    def attr(obj, key, value, dtype=None):
        def edit(f):
            o = f[obj]
            if key in o.attrs:
                del o.attrs[key]
            if dtype is None:
                o.attrs[key] = value
            else:
                o.attrs.create(key, value, dtype=dtype)
        return edit

    def unallocated(f):   # chunked with Fletcher32, but no chunk written: nothing to checksum
        for p in ALL("wte"):
            shape = f[p].shape
            del f[p]
            f.create_dataset(p, shape=shape, dtype=np.float32, chunks=True, fletcher32=True)

    def no_checksums(f):
        names = []
        f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        for n in names:
            a = f[n][...]
            del f[n]
            f.create_dataset(n, data=a)

    def external(f):
        with h5py.File(os.path.join(work, "other.h5"), "w") as g:
            g.create_dataset("wte", data=np.zeros(f["model/wte"].shape, np.float32), chunks=True, fletcher32=True)
        del f["model/wte"]
        f["model/wte"] = h5py.ExternalLink(os.path.join(work, "other.h5"), "/wte")

    def huge_state(f):   # 2^40 uint64 declared (8 TiB), a few KB stored
        f.create_dataset("state/huge", shape=(2 ** 40,), dtype=np.uint64, chunks=(2 ** 17,), fletcher32=True)

    def huge_model(f):   # the model's own wpe declared 2^34 rows
        for p in ALL("wpe"):
            del f[p]
            f.create_dataset(p, shape=(2 ** 34, 32), dtype=np.float32, chunks=(4096, 32), fletcher32=True)

    def column_chunks(f):   # wte whole and right, chunked one column per chunk (quadratic to read by rows)
        for p in ALL("wte"):
            recreate(f, p, f[p][...], chunks=(f[p].shape[0], 1))

    # (name, edit, what the one-line error must contain: one string, or one for inspect and one for
    # train --resume, which first compares the header's config with its own); None: accepted
    cases = [
        ("unchanged", lambda f: None, None),
        ("column_chunks_but_whole", column_chunks, None),
        ("nan_param", set_value("model/wte", (3, 1), np.nan), "/model/wte"),
        ("inf_param", set_value("model/lnfw", 0, np.inf), "/model/lnfw"),
        ("nan_m", set_value("optim/m/qkvw", (1, 2, 3), np.nan), "/optim/m/qkvw"),
        ("negative_v", set_value("optim/v/wte", (0, 0), -1.0), "/optim/v/wte"),
        ("unallocated_chunks", unallocated, "not fully written"),
        ("no_checksums", no_checksums, "Fletcher32"),
        ("external_link", external, "external link"),
        ("soft_link_loop", lambda f: (f.__delitem__("model/wte"), f.__setitem__("model/wte", h5py.SoftLink("/model/wte"))),
         "soft link"),
        ("huge_state_dataset", huge_state, "/state holds 2 objects"),
        ("huge_model_dataset", huge_model, "/model/wpe"),
        ("wte_rows_everywhere", lambda f: [recreate(f, p, np.zeros((128, 32), np.float32)) for p in ALL("wte")],
         "/model/wte has shape [128, 32]"),
        ("lnfb_missing_everywhere", lambda f: [f.__delitem__(p) for p in ALL("lnfb")], "/model"),
        ("extra_dataset_everywhere",
         lambda f: [f.create_dataset(p, data=np.ones(4, np.float32), chunks=True, fletcher32=True) for p in ALL("x")],
         "/model"),
        ("extra_group_in_model", lambda f: f.create_group("model/sub"), "/model"),
        ("float64_wte", lambda f: [recreate(f, p, f[p][...].astype(np.float64)) for p in ALL("wte")], "float32"),
        ("n_layer_1000000", attr("/", "n_layer", 1000000, "i4"), "n_layer"),
        ("n_head_3", attr("/", "n_head", 3, "i4"), ("does not divide", "n_head=3")),
        ("vocab_300_padded_256", attr("/", "vocab_size", 300, "i4"), ("padded_vocab_size", "vocab_size=300")),
        ("n_layer_int64_huge", attr("/", "n_layer", 2 ** 40 + 2, "i8"), "out of range"),
        ("world_size_huge", attr("/", "world_size", 1000000, "i4"), "world"),
        ("lr_nan", attr("/optim", "lr", float("nan"), "f8"), "lr"),
        ("parent_not_a_name", attr("/", "parent", "../../etc/passwd"), "parent"),
        ("step_negative", attr("/", "step", -1, "i4"), "step"),
    ]
    for name, edit, needles in cases:
        needle, resume_needle = needles if isinstance(needles, tuple) else (needles, needles)
        path = os.path.join(work, name + ".h5")
        shutil.copy(base, path)
        with h5py.File(path, "r+") as f:
            edit(f)
        rc, out, err, secs = run([sm, "inspect", path])
        lines = err.strip().splitlines()
        if needle is None:
            check(rc == 0 and secs < LIMIT_S, f"{name}: inspect accepts it (exit {rc}, {secs:.1f} s) {err.strip()[:200]}")
        else:
            one = rc == 2 and len(lines) == 1 and lines[0].startswith("smallmind: error:") and needle in lines[0]
            check(one and secs < LIMIT_S, f"{name}: inspect exit 2 in {secs:.1f} s, one line with '{needle}' "
                  f"(exit {rc}: {lines[-1][:200] if lines else ''})")
        rdir = os.path.join(work, "r_" + name)
        rc, out, err, secs = run([sm, "train", "--data", "d", "--run-dir", rdir, "--resume", path, "--steps", "3",
                                  *model])
        lines = [l for l in err.strip().splitlines() if "error" in l]
        if needle is None:
            check(rc == 0, f"{name}: train --resume loads it (exit {rc}) {err.strip()[:200]}")
        else:
            check(rc == 2 and secs < LIMIT_S and len(lines) == 1 and resume_needle in lines[0],
                  f"{name}: train --resume exit 2 in {secs:.1f} s naming '{resume_needle}' "
                  f"(exit {rc}: {lines[-1][:200] if lines else ''})")
            check(not os.path.exists(os.path.join(rdir, "ckpt_00000003.h5")), f"{name}: nothing committed after it")

    # `latest` that is not a regular file: refused at once, never waited on
    os.makedirs("fifo_run")
    shutil.copy(base, "fifo_run/ckpt_00000002.h5")
    os.mkfifo("fifo_run/latest")
    rc, out, err, secs = run([sm, "inspect", "fifo_run"], timeout=20)
    check(rc == 2 and "not a regular file" in err and secs < 10, f"inspect RUN_DIR with a FIFO as latest: exit {rc} "
          f"in {secs:.1f} s ({err.strip()[:150]})")
    # a checkpoint file that is a FIFO
    os.mkfifo("fifo.h5")
    rc, out, err, secs = run([sm, "inspect", "fifo.h5"], timeout=20)
    check(rc == 2 and "not a regular file" in err and secs < 10, f"inspect of a FIFO: exit {rc} in {secs:.1f} s")
    print(f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
