"""test_ckpt_h5py.py — a checkpoint the C side wrote at 2 ranks, read with h5py and h5dump only.
Names, order, shapes, dtypes, attributes, checksums and sample values against
DIR/expected.json (no smallmind code reads it); then a flipped byte is refused by h5py and by
`smallmind inspect`.

usage: python3 test_ckpt_h5py.py DIR TEST_CHECKPOINTS_BINARY
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import h5py
import numpy as np

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def main():
    d, test_bin = sys.argv[1], sys.argv[2]
    exp = json.load(open(os.path.join(d, "expected.json")))
    latest = open(os.path.join(d, "latest")).read()
    check(latest == exp["file"] + "\n", f"latest names {exp['file']}")
    path = os.path.join(d, exp["file"])

    with h5py.File(path, "r") as f:
        a = f.attrs
        check(a["format"] == exp["format"], "format attribute is a str 'smallmind-checkpoint'")
        for k in ("format_version", "step", "tokens_seen", "world_size"):
            check(int(a[k]) == exp[k], f"/ {k} = {exp[k]}")
        for k, v in exp["config"].items():
            check((a[k] if isinstance(v, str) else int(a[k])) == v, f"/ {k} = {v}")
        o = f["optim"].attrs
        for k, v in exp["optim"].items():
            check(float(o[k]) == v, f"/optim {k} = {v}")
        check(int(f["state"].attrs["data_cursor"]) == exp["data_cursor"], "/state data_cursor")
        rng = f["state/rng"][...]
        want = np.array([[int(x) for x in row] for row in exp["rng"]], dtype=np.uint64)
        check(rng.dtype == np.uint64 and np.array_equal(rng, want), "/state/rng holds every rank's state")

        names = [t["name"] for t in exp["tensors"]]
        for g in ("model", "optim/m", "optim/v"):
            check(list(f[g]) == names, f"/{g} lists the tensors in the model's order")
        for t in exp["tensors"]:
            for kind, g in enumerate(("model", "optim/m", "optim/v")):
                ds = f[g][t["name"]]
                ok = ds.shape == tuple(t["shape"]) and ds.dtype == np.float32 and ds.fletcher32 and ds.chunks
                flat = ds[...].ravel().view(np.uint32)
                vals = all(int(flat[s[0]]) == s[1 + kind] for s in t["samples"])
                check(ok and vals, f"/{g}/{t['name']} {ds.shape} float32, Fletcher32, sample values")

    h5dump = shutil.which("h5dump")
    if h5dump:
        r = subprocess.run([h5dump, "-A", path], capture_output=True, text=True)
        check(r.returncode == 0 and "smallmind-checkpoint" in r.stdout, "h5dump -A reads the attributes")
        r = subprocess.run([h5dump, "-d", "/model/lnfw", path], capture_output=True, text=True)
        check(r.returncode == 0 and "DATA" in r.stdout, "h5dump -d /model/lnfw reads the data")
    else:
        print("note: h5dump not installed, skipped")

    # smallmind inspect: verifies, JSON; then a flipped byte in a chunk is refused by h5py and inspect
    r = subprocess.run([test_bin, "--inspect", path, "--json"], capture_output=True, text=True)
    js = json.loads(r.stdout) if r.returncode == 0 else {}
    check(r.returncode == 0 and js.get("ok") and js.get("step") == 42 and js.get("n_datasets") == 49
          and js["datasets"][0]["name"] == "/model/wte", "inspect --json: exit 0, 49 datasets verify")
    r = subprocess.run([test_bin, "--inspect", d], capture_output=True, text=True)
    check(r.returncode == 0 and "all 49 datasets verify" in r.stdout, "inspect RUN_DIR follows latest")
    with tempfile.TemporaryDirectory() as tmp:
        bad = os.path.join(tmp, "bad.h5")
        shutil.copy(path, bad)
        with h5py.File(bad, "r") as f:
            info = f["model/fcw"].id.get_chunk_info(1)
        with open(bad, "r+b") as fh:
            fh.seek(info.byte_offset + info.size // 3)
            b = fh.read(1)
            fh.seek(-1, 1)
            fh.write(bytes([b[0] ^ 0x5A]))
        with h5py.File(bad, "r") as f:
            try:
                f["model/fcw"][...]
                check(False, "h5py refuses the flipped byte")
            except OSError as e:
                check("Fletcher32" in str(e), f"h5py refuses the flipped byte ({e})")
            check(np.array_equal(f["model/wte"][...].shape, exp["tensors"][0]["shape"]), "h5py still reads the rest")
        r = subprocess.run([test_bin, "--inspect", bad], capture_output=True, text=True)
        err = r.stderr.strip().splitlines()
        check(r.returncode == 2 and len(err) == 1 and "smallmind: error:" in err[0] and "Fletcher32" in err[0]
              and "/model/fcw" in err[0], f"inspect on it: exit 2, one line ({err[-1] if err else ''})")
        garbage = os.path.join(tmp, "garbage.h5")
        open(garbage, "wb").write(b"not hdf5 at all" * 100)
        r = subprocess.run([test_bin, "--inspect", garbage], capture_output=True, text=True)
        check(r.returncode == 2 and "not an HDF5 file" in r.stderr, "inspect on garbage: exit 2")
    print(f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
