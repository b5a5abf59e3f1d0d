#!/usr/bin/python3
# mutate.py — planted bugs: applies each mutation of tests/mutations.txt, one at a time, to a
# scratch copy of the tree, rebuilds, runs CTest there and prints whether the suite caught it.
# Not run by CI (one rebuild and one suite run per bug). The checkout itself is never modified.
#
#   python3 tests/mutate.py                       # every mutation; CTest's stage 1 without the slow ones
#   python3 tests/mutate.py --only clip-reversed,accum-dropped --first
#   python3 tests/mutate.py -L unit               # CTest's own selection: -L, -LE, -R, -E, -j
#   python3 tests/mutate.py --list                # the mutations, checked against the tree
#
# A mutation is caught when at least one selected test fails (or the run exceeds --limit seconds:
# a hang); missed when every selected test passes. Before the mutations, the unmutated tree must
# pass the same selection (else a "caught" would mean nothing). A mutation whose old text is not
# found in the tree (exactly as many times as it says) is reported stale; one that does not
# compile, broken: both count as failures of the list, to be fixed in tests/mutations.txt.
# Exit status: 0 when every mutation run was caught, 1 otherwise, 2 for bad usage or a failing
# baseline. The list's format is described at the top of tests/mutations.txt.
import argparse
import fnmatch
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_LIST = os.path.join(ROOT, "tests", "mutations.txt")
# Without a selection: tests/run.sh's first stage (not `cluster`: Slurm and network namespaces)
# without `fuzz` (minutes of libFuzzer on checkpoint bytes), `valgrind` and bench_smoke (no
# correctness figure, 40 s).
DEFAULT_SELECTION = ["-LE", "^(cluster|fuzz|valgrind)$", "-E", "^bench_smoke$"]


class Mutation:
    def __init__(self, mid, what, line):
        self.id, self.what, self.line = mid, what, line
        self.patches = []   # [path, count, old, new]


def die(msg, code=2):
    print(f"mutate: error: {msg}", file=sys.stderr)
    sys.exit(code)


def parse_list(path):
    """Parses the mutation list (format: see the header of tests/mutations.txt)."""
    muts, cur, patch, last = [], None, None, None
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    for n, raw in enumerate(lines, 1):
        where = f"{path}:{n}"
        if raw.startswith("["):
            m = re.match(r"\[([A-Za-z0-9_.-]+)\]\s+(\S.*)$", raw)
            if not m:
                die(f"expected '[id] description' ({where})")
            cur, patch, last = Mutation(m.group(1), m.group(2).strip(), where), None, None
            if any(x.id == cur.id for x in muts):
                die(f"duplicate mutation id {cur.id} ({where})")
            muts.append(cur)
        elif raw.startswith("@ "):
            if cur is None:
                die(f"'@ file' before any '[id]' ({where})")
            m = re.match(r"@ (\S+)(?:\s+x(\d+))?\s*$", raw)
            if not m:
                die(f"expected '@ path' or '@ path xN' ({where})")
            patch, last = [m.group(1), int(m.group(2) or 1), None, None], None
            cur.patches.append(patch)
        elif raw.startswith("-") or raw.startswith("+"):
            if patch is None:
                die(f"'{raw[0]}' line before '@ file' ({where})")
            if raw[1:2] not in ("", " "):
                die(f"'{raw[0]}' must be followed by one space, then the text ({where})")
            k = 2 if raw[0] == "-" else 3
            text = raw[2:]
            if last == raw[0]:       # consecutive lines: one multi-line text
                patch[k] += "\n" + text
            elif patch[k] is not None:
                die(f"second '{raw[0]}' text for one '@ file': start another '@ file' line ({where})")
            else:
                patch[k] = text
            last = raw[0]
        elif raw.strip() == "" or raw.startswith("#"):
            last = None
        else:
            die(f"unrecognised line: {raw[:60]!r} ({where})")
    for mu in muts:
        if not mu.patches:
            die(f"mutation {mu.id} has no '@ file' ({mu.line})")
        for p in mu.patches:
            if p[2] is None or p[3] is None or p[2] == "":
                die(f"mutation {mu.id}: every '@ {p[0]}' needs a '- old' and a '+ new' line ({mu.line})")
            if p[2] == p[3]:
                die(f"mutation {mu.id}: '- old' and '+ new' are the same ({mu.line})")
    return muts


def tree_files(root):
    """The files of the working tree that git knows or would add (tracked + untracked, not ignored)."""
    out = subprocess.run(["git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         check=True, capture_output=True).stdout.decode()
    return sorted({f for f in out.split("\0") if f and os.path.isfile(os.path.join(root, f))})


def sync_tree(root, dst):
    """Copies the tree into dst, rewriting only files whose content differs (incremental builds)."""
    os.makedirs(dst, exist_ok=True)
    manifest = os.path.join(dst, ".mutate-files")
    old = set(open(manifest).read().split("\n")) - {""} if os.path.exists(manifest) else set()
    files = tree_files(root)
    changed = 0
    for f in files:
        s, d = os.path.join(root, f), os.path.join(dst, f)
        with open(s, "rb") as fh:
            data = fh.read()
        if os.path.exists(d):
            with open(d, "rb") as fh:
                if fh.read() == data:
                    continue
        os.makedirs(os.path.dirname(d), exist_ok=True)
        with open(d, "wb") as fh:
            fh.write(data)
        shutil.copymode(s, d)
        changed += 1
    for f in old - set(files):
        if os.path.isfile(os.path.join(dst, f)):
            os.remove(os.path.join(dst, f))
    with open(manifest, "w") as fh:
        fh.write("\n".join(files) + "\n")
    # the npm packages jobs/setup.sh installs into the checkout (GPT-2's BPE files, tiktoken), which
    # git ignores: the scratch tree reads the checkout's through a link (run setup.sh first)
    nm, nm_dst = os.path.join(root, "node_modules"), os.path.join(dst, "node_modules")
    if os.path.isdir(nm) and not os.path.lexists(nm_dst):
        os.symlink(nm, nm_dst)
    return changed


def check_patches(mu, tree):
    """None if every patch applies to tree, else why not."""
    for path, count, old, _ in mu.patches:
        p = os.path.join(tree, path)
        if not os.path.isfile(p):
            return f"{path}: no such file"
        n = open(p, encoding="utf-8").read().count(old)
        if n != count:
            first = old.split("\n")[0]
            return f"{path}: '{first[:50]}' found {n} times, expected {count}"
    return None


def apply(mu, tree):
    """Applies mu's patches; returns {path: original text} to restore."""
    saved = {}
    for path, _, old, new in mu.patches:
        p = os.path.join(tree, path)
        if path not in saved:
            saved[path] = open(p, encoding="utf-8").read()
        text = open(p, encoding="utf-8").read()
        with open(p, "w", encoding="utf-8") as fh:
            fh.write(text.replace(old, new))
    return saved


def restore(saved, tree):
    for path, text in saved.items():
        with open(os.path.join(tree, path), "w", encoding="utf-8") as fh:
            fh.write(text)


def run(cmd, cwd, log, limit=None):
    """Runs cmd in its own process group, output appended to log; returns (rc, seconds, timed_out)."""
    t0 = time.monotonic()
    with open(log, "a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        p = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = p.wait(timeout=limit)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)   # the group this call started (ctest, mpirun, the tests)
            p.wait()
            rc, timed_out = -9, True
    return rc, time.monotonic() - t0, timed_out


def failed_tests(log):
    """The names CTest lists under 'The following tests FAILED:' in the last run of log."""
    text = open(log, errors="replace").read()
    part = text.rsplit("$ ctest", 1)[-1]
    if "The following tests FAILED:" not in part:
        return []
    tail = part.split("The following tests FAILED:", 1)[1]
    return re.findall(r"^\s*\d+ - (\S+) \(", tail, flags=re.M)


def main():
    ap = argparse.ArgumentParser(description="Plants each bug of a mutation list and runs CTest after each.",
                                 epilog="CTest selection: without -L/-LE/-R/-E, every test but the labels "
                                        "cluster, fuzz and valgrind, and bench_smoke.")
    ap.add_argument("--list-file", default=DEFAULT_LIST, help="the mutation list (default tests/mutations.txt)")
    ap.add_argument("--only", default="", help="comma-separated ids or globs (e.g. 'zero-*,clip-reversed')")
    ap.add_argument("--list", action="store_true", help="print the mutations and whether each applies; run nothing")
    ap.add_argument("--scratch", default="", help="the scratch tree and its build (kept; reused next time, "
                                                   "only changed files rewritten). Default: a temporary directory, "
                                                   "removed at the end")
    ap.add_argument("--first", action="store_true", help="stop each suite run at its first failing test "
                                                         "(faster; names one catching test only)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the unmutated run (it must pass)")
    ap.add_argument("--limit", type=float, default=0, help="seconds per suite run before it counts as a hang "
                                                            "(default 3 x the baseline's time + 120)")
    ap.add_argument("-L", dest="label", help="CTest: tests with this label (e.g. unit)")
    ap.add_argument("-LE", dest="label_exclude", help="CTest: leave out tests with this label")
    ap.add_argument("-R", dest="regex", help="CTest: tests whose name matches")
    ap.add_argument("-E", dest="exclude", help="CTest: leave out tests whose name matches")
    ap.add_argument("-j", dest="jobs", type=int, default=1, help="CTest: parallel tests (default 1)")
    ap.add_argument("--cmake-arg", action="append", default=[], help="an extra cmake argument (repeatable)")
    a = ap.parse_args()

    muts = parse_list(a.list_file)
    if a.only:
        pats = [p.strip() for p in a.only.split(",") if p.strip()]
        unknown = [p for p in pats if not any(fnmatch.fnmatchcase(m.id, p) for m in muts)]
        if unknown:
            die(f"--only: no mutation matches {', '.join(unknown)} (see --list)")
        muts = [m for m in muts if any(fnmatch.fnmatchcase(m.id, p) for p in pats)]
    if a.list:
        bad = 0
        for m in muts:
            why = check_patches(m, ROOT)
            bad += why is not None
            files = ", ".join(sorted({p[0] for p in m.patches}))
            print(f"{'ok   ' if why is None else 'STALE'} {m.id:28s} {m.what}  [{files}]" + (f"\n      {why}" if why else ""))
        print(f"{len(muts)} mutations, {bad} stale")
        return 1 if bad else 0

    sel = []
    if a.label:
        sel += ["-L", a.label]
    if a.label_exclude:
        sel += ["-LE", a.label_exclude]
    if a.regex:
        sel += ["-R", a.regex]
    if a.exclude:
        sel += ["-E", a.exclude]
    if not (a.label or a.label_exclude or a.regex or a.exclude):
        sel += DEFAULT_SELECTION
    ctest = ["ctest", "--output-on-failure", "-j", str(a.jobs), "--no-tests=error"] + sel
    if a.first:
        ctest.append("--stop-on-failure")

    tmp = None
    scratch = os.path.abspath(a.scratch) if a.scratch else None
    if not scratch:
        tmp = tempfile.mkdtemp(prefix="smallmind-mutate-")
        scratch = tmp
    tree, build, logs = os.path.join(scratch, "src"), os.path.join(scratch, "build"), os.path.join(scratch, "logs")
    os.makedirs(logs, exist_ok=True)
    status = 0
    try:
        n = sync_tree(ROOT, tree)
        print(f"mutate: {len(muts)} mutations; scratch tree {tree} ({n} files written); "
              f"ctest {' '.join(ctest[1:])}", flush=True)
        # each mutation must apply to the tree as it is now
        runnable = []
        results = {}
        for m in muts:
            why = check_patches(m, tree)
            if why:
                results[m.id] = ("STALE", why, [])
            else:
                runnable.append(m)
        cfg = ["cmake", "-S", tree, "-B", build, "-DCMAKE_BUILD_TYPE=Release", "-DSMALLMIND_WERROR=ON"] + a.cmake_arg
        log = os.path.join(logs, "baseline.log")
        open(log, "w").close()
        rc, _, _ = run(cfg, tree, log)
        if rc == 0:
            rc, tb, _ = run(["cmake", "--build", build, "-j", "2"], tree, log)
        if rc != 0:
            die(f"the unmutated tree does not build (see {log})")
        limit = a.limit or None
        if not a.no_baseline:
            rc, ts, to = run(ctest, build, log, limit)
            if rc != 0:
                die(f"the unmutated tree fails the selected tests: {', '.join(failed_tests(log)) or 'timeout'} "
                    f"(see {log})")
            print(f"baseline: build {tb:.0f} s, tests pass in {ts:.0f} s", flush=True)
            if not limit:
                limit = 3 * ts + 120
        width = max([len(m.id) for m in muts] + [10])
        for k, m in enumerate(runnable, 1):
            log = os.path.join(logs, f"{m.id}.log")
            open(log, "w").close()
            saved = apply(m, tree)
            try:
                rc, tb, _ = run(["cmake", "--build", build, "-j", "2"], tree, log)
                if rc != 0:
                    results[m.id] = ("BROKEN", f"does not build (see {log})", [])
                else:
                    rc, ts, to = run(ctest, build, log, limit)
                    fails = failed_tests(log)
                    if to:
                        results[m.id] = ("caught", f"build {tb:.0f} s, suite stopped after {ts:.0f} s (hang)",
                                         ["timeout"])
                    elif rc != 0:
                        results[m.id] = ("caught", f"build {tb:.0f} s, tests {ts:.0f} s", fails or ["ctest error"])
                    else:
                        results[m.id] = ("MISSED", f"build {tb:.0f} s, tests {ts:.0f} s", [])
            finally:
                restore(saved, tree)
            verdict, note, by = results[m.id]
            print(f"[{k:2d}/{len(runnable)}] {verdict:6s} {m.id:{width}s} {note}"
                  + (f"; by {', '.join(by)}" if by else ""), flush=True)
        # the summary, in list order
        print(f"\n  {'mutation':{width}s}  verdict  what")
        count = {}
        for m in muts:
            verdict, note, by = results[m.id]
            count[verdict] = count.get(verdict, 0) + 1
            print(f"  {m.id:{width}s}  {verdict:6s}  {m.what}" + (f"  [{', '.join(by)}]" if by else "")
                  + (f"\n  {'':{width}s}          {note}" if verdict in ("STALE", "BROKEN") else ""))
        summary = ", ".join(f"{count.get(v, 0)} {v.lower()}" for v in ("caught", "MISSED", "STALE", "BROKEN"))
        print(f"summary: {len(muts)} mutations: {summary}")
        missed = [m.id for m in muts if results[m.id][0] != "caught"]
        if missed:
            print(f"not caught: {' '.join(missed)}")
            status = 1
        if not tmp:   # a kept scratch build is left matching the unmutated tree again
            run(["cmake", "--build", build, "-j", "2"], tree, os.path.join(logs, "final.log"))
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"logs: {logs}")
    return status


if __name__ == "__main__":
    sys.exit(main())
