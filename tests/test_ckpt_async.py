"""test_ckpt_async.py — the checkpoint an asynchronous save (--ckpt-async's path: the buffer, the
writer thread, the commit by rank 0's thread) writes equals a synchronous save's of the same state, in
every group, dataset (values, shape, dtype, chunking, Fletcher32) and attribute, read with h5py only.
The file bytes may differ (HDF5's timestamps), so the files are compared object by object.

usage: python3 test_ckpt_async.py MPIEXEC NPFLAG NP TEST_CHECKPOINTS_BINARY WORKDIR
"""
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def objects(f):
    """Every object's path -> (kind, attributes, dataset properties and values)."""
    out = {}

    def visit(name, obj):
        attrs = {k: obj.attrs[k] for k in obj.attrs}
        if isinstance(obj, h5py.Dataset):
            out[name] = ("dataset", attrs, (obj.shape, obj.dtype, obj.chunks, obj.fletcher32), obj[...])
        else:
            out[name] = ("group", attrs, None, None)

    out["/"] = ("group", {k: f.attrs[k] for k in f.attrs}, None, None)
    f.visititems(visit)
    return out


def same_attrs(a, b):
    if sorted(a) != sorted(b):
        return False
    for k in a:
        x, y = np.asarray(a[k]), np.asarray(b[k])
        if x.dtype != y.dtype or x.shape != y.shape or not np.array_equal(x, y):
            return False
    return True


def main():
    mpiexec, npflag, np_, test_bin, work = sys.argv[1:6]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               SMALLMIND_CKPT_CHUNK_FLOATS="333")   # many chunks, none on a slice edge
    r = subprocess.run([mpiexec, npflag, np_, test_bin, "--async-pair", work], env=env, capture_output=True, text=True)
    check(r.returncode == 0, f"sync and async saves of one state at {np_} ranks ({r.stderr.strip()[-300:]})")
    if r.returncode:
        sys.exit(1)
    for d in ("sync", "async"):
        check(open(os.path.join(work, d, "latest")).read() == "ckpt_00000007.h5\n", f"{d}: latest names step 7")
        check(not [n for n in os.listdir(os.path.join(work, d)) if n.endswith(".tmp")], f"{d}: no temporary left")
    with h5py.File(os.path.join(work, "sync", "ckpt_00000007.h5"), "r") as fs, \
            h5py.File(os.path.join(work, "async", "ckpt_00000007.h5"), "r") as fa:
        s, a = objects(fs), objects(fa)
        check(sorted(s) == sorted(a), f"the same {len(s)} objects")
        n_data = 0
        for name in sorted(set(s) & set(a)):
            ks, attrs_s, props_s, val_s = s[name]
            ka, attrs_a, props_a, val_a = a[name]
            ok = ks == ka and same_attrs(attrs_s, attrs_a)
            if ks == "dataset":
                n_data += 1
                ok = ok and props_s == props_a and val_s.dtype == val_a.dtype and \
                    np.array_equal(val_s.view(np.uint8), val_a.view(np.uint8))   # bit for bit (NaN-safe)
                ok = ok and props_s[3]   # Fletcher32 on, and h5py verified every chunk it read
            if not ok:
                check(False, f"{name} differs")
        check(n_data > 0 and not failures, f"{n_data} datasets and every attribute equal bit for bit")
        check(int(fa.attrs["step"]) == 7 and fa.attrs["parent"] == "ckpt_00000006.h5",
              "async: step 7, parent recorded")
    if failures:
        print(f"{len(failures)} failures")
        sys.exit(1)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
