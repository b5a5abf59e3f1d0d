#!/usr/bin/env bash
# test_bench_comm.sh MODE SMALLMIND MPIEXEC SRC_DIR WORKDIR — `smallmind bench comm`, without asserting
# any timing (performance is the bench's output, not a test):
#   local  bad usage exits 2 with one error line (1 rank included); `--net list` names the presets
#          with their source; under mpirun -np 2, `--json` prints every figure: the allreduce sizes
#          and fits, the reduction's cost, the cpu share, the step predicted beside the measured one
#          (baseline "measured", ratio = ms / baseline_ms), the timeline the model takes, and a table
#          row for every network, algorithm and N = 2..64 whose step is recomputed here, in Python,
#          from the timeline and the formulas of README/trainer.h (ring, tree, the bucket queue) and the
#          presets' documented figures; jobs/plot-scaling draws exactly those efficiencies.
#   hosts  the same run across two network-namespace hosts over TCP (tests/netns_hosts.sh; root,
#          else skipped with 77): 2 ranks on 2 nodes, the measured network named TCP, the figures.
set -uo pipefail
mode=$1 bin=$2 mpiexec=$3 src=$4 work=$5
rm -rf "$work"; mkdir -p "$work"; cd "$work"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
pass=0 fail=0
ok()  { pass=$((pass+1)); echo "ok   $1"; }
bad() { fail=$((fail+1)); echo "FAIL $1"; }

# the JSON lines of a run, checked and the table recomputed (python3 check.py FILE RANKS MAX_NODES NODES)
cat > check.py <<'PY'
import json, math, sys
path, ranks, max_nodes, nodes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
objs = [json.loads(l) for l in open(path) if l.strip()]
by = {o["name"]: o for o in objs}
shape = "small"
for o in objs:
    assert "name" in o and "ms" in o, o
    if "ratio" in o:
        assert "baseline" in o and "baseline_ms" in o, o
        assert o["baseline_ms"] <= 0 or math.isclose(o["ratio"], o["ms"] / o["baseline_ms"], rel_tol=2e-3, abs_tol=1e-4), o
def need(name):
    assert name in by, "missing figure: " + name
    return by[name]
for kind in ("MPI_Allreduce", "MPI_Iallreduce"):
    fit = need(f"comm {shape} {kind} fit")
    for k in ("alpha_us", "beta_ns_per_byte", "gbps", "fit_max_bytes"):
        assert isinstance(fit[k], (int, float)), (k, fit)
    for b in (4096, 8192, 1048576):
        row = need(f"comm {shape} {kind} {b} B")
        assert row["baseline"] == "fit" and row["bytes"] == b
need(f"comm {shape} reduction sum (a += b, 8 MiB, one thread)")
need(f"comm {shape} MPI_Allreduce 8 B")
share = need(f"comm {shape} cpu share")
assert 0 <= share["frac"] <= 1, share
assert need(f"comm {shape} progress")["calls_per_round"] >= 1
for what in ("step", "exposed wait", "backward (with the sync's work)", "forward", "gradient sync alone"):
    row = need(f"comm {shape} {what} at {ranks} ranks: predicted")
    assert row["baseline"] == "measured" and row["within_20pct"] in (0, 1), row
tl = need(f"comm {shape} timeline")
nb, sizes, ready = tl["n_buckets"], tl["bucket_bytes"], tl["ready_ms"]
assert nb == len(sizes) == len(ready) and nb > 1, tl
assert all(ready[i] <= ready[i + 1] for i in range(nb - 1)), ready
# the gradients: the model's parameters (L=4, C=256, Vp=50304, context 1024) in float32; the
# buckets cover them (the arena's padding between tensors is not sent)
L, C, Vp, T = 4, 256, 50304, 1024
params = Vp * C + T * C + L * (12 * C * C + 13 * C) + 2 * C
assert sum(sizes) == 4 * params, (sum(sizes), 4 * params)
assert max(sizes) <= 1048576, max(sizes)   # --bucket-mb 1

# the model, written again from its formulas
def ring(N, n, a, b, g): return 0 if N <= 1 else 2 * (N - 1) * a + 2 * (N - 1) / N * n * b + (N - 1) / N * n * g
def tree(N, n, a, b, g): return 0 if N <= 1 else math.ceil(math.log2(N)) * (a + n * b + n * g)
def rounds(algo, N): return 2 * (N - 1) if algo == "ring" else math.ceil(math.log2(N))
gamma = tl["gamma_ns_per_byte"] * 1e-9
presets = {"25gbe": (15e-6, 1 / 2.94e9), "ib-edr": (1e-6, 1 / 12.5e9), "ib-hdr": (1e-6, 1 / 25e9)}
fwd, bwd = tl["fwd_ms"] * 1e-3, tl["bwd_ms"] * 1e-3
opt = max(0.0, tl["opt_ms"] * 1e-3 - 2 * tl["scalar_ms"] * 1e-3)
post = tl["post_ns_per_byte"] * 1e-9
calls = [c * 1e-3 for c in tl["calls_ms"]]
assert len(calls) == 5 * L and all(calls[i] <= calls[i + 1] for i in range(len(calls) - 1)), calls
assert all(any(abs(r - c) < 1e-9 for c in calls) or abs(r - bwd) < 1e-9 for r in [x * 1e-3 for x in ready]), "ready not at a call"
alone = fwd + bwd + opt + post * sum(sizes)

def simulate(times, R, cpr, share):
    """One link, one round at a time: rounds posted at backward's calls (cpr = c: the data moves from
    the (c-1)th call after), each bucket's next round at the first call after its last ended; after
    backward, or throughout when cpr = 0, without pause."""
    n = len(sizes)
    rd = [r * 1e-3 for r in ready]
    avail, end, left = rd[:], rd[:], [R] * n
    link = {"free": 0.0, "before": 0.0}
    def take(frm, dur):
        s = max(frm, link["free"]); e = s + dur; link["free"] = e
        if s < bwd: link["before"] += min(e, bwd) - s
        return e
    if cpr:
        inside = [c for c in calls if c < bwd]
        for k, at in enumerate(inside):
            m = k + cpr - 1
            moves = inside[m] if m < len(inside) else bwd
            for i in range(n):
                if left[i] > 0 and rd[i] <= at + 1e-12 and avail[i] <= at + 1e-12:
                    end[i] = avail[i] = take(moves, times[i] / R); left[i] -= 1
    for i in range(n):
        while left[i] > 0:
            frm = max(avail[i], bwd) if cpr else avail[i]
            end[i] = avail[i] = take(frm, times[i] / R); left[i] -= 1
    last, cpu, tail = bwd, bwd, 0.0
    for i in range(n):
        last = max(last, end[i])
        if end[i] > bwd:
            tail += sizes[i]; cpu = max(cpu, end[i]) + post * sizes[i]
    wait = (1 - share) * (max(cpu, last) - bwd) + share * (last - bwd + post * tail)
    stretch = share * link["before"] + post * (sum(sizes) - tail)
    return wait, stretch

checked = 0
for net in list(presets) + ["measured"]:
    for algo, f in (("ring", ring), ("tree", tree)):
        N = 2
        while N <= max_nodes:
            rows = [o for o in objs if o["name"].startswith(f"scaling {shape} {net}") and o["name"].endswith(f" {algo} N={N}")]
            assert len(rows) == 1, (net, algo, N, len(rows))
            row = rows[0]
            assert 0 < row["efficiency"] <= 1 and row["ms"] >= row["baseline_ms"] * (1 - 1e-6), row
            assert row["rounds"] == rounds(algo, N), row
            if net in presets:
                a, b = presets[net]
                assert math.isclose(row["alpha_us"], a * 1e6, rel_tol=1e-4) and row["cpu_share"] == 0, row
                assert row["calls_per_round"] == 1, row
            else:
                a, b = row["alpha_us"] * 1e-6, row["beta_ns_per_byte"] * 1e-9
                assert (net + " (TCP between the hosts)" if nodes > 1 else net + " (one host)") in row["name"], row
                assert row["calls_per_round"] == tl["calls_per_round"], row
            times = [f(N, n, a, b, gamma) for n in sizes]
            wait, stretch = simulate(times, rounds(algo, N), row["calls_per_round"], row["cpu_share"])
            step = fwd + bwd + opt + wait + stretch + 2 * tree(N, 8, a, b, gamma)
            assert math.isclose(row["ms"], step * 1e3, rel_tol=2e-3), (row["name"], row["ms"], step * 1e3)
            assert math.isclose(row["efficiency"], alone / step, rel_tol=2e-3), (row["name"], row["efficiency"], alone / step)
            assert math.isclose(row["baseline_ms"], alone * 1e3, rel_tol=2e-3), (row["name"], row["baseline_ms"], alone * 1e3)
            checked += 1
            N *= 2
print(f"{len(objs)} figures; {checked} table rows recomputed")
PY

if [ "$mode" = local ]; then
  usage_case() {   # args...: exit 2, exactly one "smallmind: error:" line on stderr
    "$bin" bench comm "$@" >out 2>err; local rc=$?
    if [ $rc -eq 2 ] && [ "$(wc -l <err)" -eq 1 ] && grep -q '^smallmind: error: ' err; then ok "bench comm $*: exit 2, one line"
    else bad "bench comm $* exited $rc with: $(cat err)"; fi
  }
  usage_case --shape huge
  usage_case --alpha 5
  usage_case --beta 0.1
  usage_case --algo star
  usage_case --net token-ring
  usage_case --cpu-share 2
  usage_case --progress sometimes
  usage_case --min-kib 65536 --max-mib 1
  usage_case --bogus
  usage_case                      # one rank: nothing to reduce
  grep -q "mpirun" err && ok "one rank: the error says to use mpirun" || bad "one-rank error: $(cat err)"
  "$bin" bench comm --help >out 2>&1 && grep -q "ring  2(N-1) alpha" out && ok "--help states the formulas" || bad "--help"
  "$bin" bench comm --net list >out 2>&1 && [ "$(grep -c 'alpha .* us, beta' out)" -eq 3 ] && grep -q "IEEE 802.3by" out \
    && ok "--net list: three presets with their source" || bad "--net list: $(cat out)"
  "$bin" bench --help 2>&1 | grep -q "^  comm " && ok "bench --help lists comm" || bad "bench --help does not list comm"

  timeout 600 "$mpiexec" -np 2 --bind-to none -x OMP_NUM_THREADS=1 "$bin" bench comm --shape small --steps 1 \
    --max-mib 2 --bucket-mb 1 --max-nodes 64 --json >run.json 2>run.err; rc=$?
  [ $rc -eq 0 ] && ok "mpirun -np 2 bench comm --json: exit 0" || bad "bench comm at 2 ranks: exit $rc: $(tail -3 run.err)"
  /usr/bin/python3 check.py run.json 2 64 1 && ok "figures, comparisons and the recomputed table" || bad "JSON figures"
  # jobs/plot-scaling draws the table's efficiencies: the points it plotted equal the JSON's
  if "$src/jobs/plot-scaling" run.json scaling.png >plot.out 2>&1 && [ -s scaling.png ] && /usr/bin/python3 - <<'PY'
import glob, json, os
rows = {}
for l in open("run.json"):
    o = json.loads(l)
    if o["name"].startswith("scaling small "):
        w = o["name"].split()
        net = "_".join(w[2:-2]).replace("(", "").replace(")", "")
        rows.setdefault(f"small_{net}_{w[-2]}", []).append((o["nodes"], o["efficiency"]))
files = sorted(glob.glob("scaling.plot/*.dat"))
assert len(files) == len(rows) == 8, (files, list(rows))
for f in files:
    pts = [tuple(map(float, l.split()[:2])) for l in open(f)]
    assert pts == [(float(n), float(e)) for n, e in rows[os.path.basename(f)[:-4]]], f
assert "plot '" in open("scaling.plot/scaling.gp").read()
PY
  then ok "plot-scaling: a PNG, and its curves are the table's efficiencies"
  else bad "plot-scaling: $(cat plot.out)"; fi
  "$src/jobs/plot-scaling" run.err x.png >plot.out 2>&1; rc=$?
  [ $rc -eq 2 ] && grep -q "no scaling figures" plot.out && ok "plot-scaling: a file without figures, exit 2" \
    || bad "plot-scaling on a file without figures: exit $rc: $(cat plot.out)"
  timeout 600 "$mpiexec" -np 2 --bind-to none -x OMP_NUM_THREADS=1 "$bin" bench comm --shape small --steps 1 \
    --max-mib 1 --bucket-mb 1 --max-nodes 8 --net ib-edr --algo ring --alpha 3 --beta 0.5 --progress continuous \
    >run.txt 2>run.err; rc=$?
  if [ $rc -eq 0 ] && grep -q "^network ib-edr.*progress without pause" run.txt \
     && grep -q "^network custom: alpha 3.00 us, beta 0.5000 ns/B" run.txt \
     && ! grep -q "^network 25gbe" run.txt && grep -q "within 20%\|OFF by more than 20%" run.txt; then
    ok "text output: the check's table, --net and --alpha/--beta select the networks, --progress continuous"
  else bad "text output (exit $rc): $(head -c 600 run.txt) $(tail -3 run.err)"; fi
elif [ "$mode" = hosts ]; then
  if [ "$(id -u)" != 0 ]; then echo "bench_comm_hosts: SKIP: network namespaces need root"; exit 77; fi
  exec 9>/tmp/smallmind-cluster-tests.lock   # one cluster test at a time on this machine
  flock -w 900 9 || { echo "bench_comm_hosts: another run's cluster test held the lock for 15 minutes"; exit 1; }
  N=$src/tests/netns_hosts.sh
  trap 'bash "$N" down >/dev/null 2>&1 || true' EXIT
  bash "$N" up >/dev/null || { echo "bench_comm_hosts: cannot create the test hosts"; exit 1; }
  bash "$N" hostfile hosts
  TCP=(--mca plm_rsh_agent "$N rsh" --mca btl tcp,self --mca btl_tcp_if_include 10.213.7.0/24 --mca oob_tcp_if_include 10.213.7.0/24)
  timeout 600 bash "$N" on0 "$mpiexec" -np 2 --hostfile hosts --bind-to none "${TCP[@]}" -x OMP_NUM_THREADS=1 \
    -x OMPI_ALLOW_RUN_AS_ROOT -x OMPI_ALLOW_RUN_AS_ROOT_CONFIRM "$bin" bench comm --shape small --steps 1 --max-mib 2 \
    --bucket-mb 1 --max-nodes 64 --json >run.json 2>run.err; rc=$?
  [ $rc -eq 0 ] && ok "bench comm across two hosts over TCP: exit 0" || bad "2-host bench comm: exit $rc: $(tail -3 run.err)"
  /usr/bin/python3 check.py run.json 2 64 2 && ok "2 hosts: figures, comparisons and the recomputed table" || bad "2-host JSON"
  bash "$N" down >/dev/null && ok "test hosts removed" || bad "test hosts still there"
  trap - EXIT
else
  echo "usage: $0 local|hosts SMALLMIND MPIEXEC SRC_DIR WORKDIR" >&2; exit 2
fi
echo "bench_comm_$mode: $pass passed, $fail failed"
[ $fail -eq 0 ]
