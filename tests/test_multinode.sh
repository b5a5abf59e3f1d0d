#!/usr/bin/env bash
# test_multinode.sh SMALLMIND SRC_DIR WORKDIR — smallmind across two hosts over real TCP: two
# network-namespace hosts (tests/netns_hosts.sh), jobs/launch.sh with a hostfile, one rank per
# host, `--mca btl tcp,self` (no shared memory between the ranks). Checks:
#  - the topology line says 2 ranks on 2 nodes;
#  - the losses and the final parameters (--dump-params, and every dataset of the last checkpoint
#    read with h5py) equal the single-host 2-rank run's bit for bit (2 ranks sum each gradient
#    as a+b, whatever the transport), while a 1-rank run at the same global batch differs (so
#    the comparison can fail);
#  - a host that does not see the run directory (a tmpfs over it on smnode1): exit 2 naming
#    smnode1, and no checkpoint written.
# Needs root (ip netns); exits 77 (skipped) otherwise. The hosts are removed at the end, pass or fail.
set -uo pipefail
bin=$1 src=$2 work=$3
if [ "$(id -u)" != 0 ]; then echo "multinode: SKIP: network namespaces need root"; exit 77; fi
need=()
command -v ip >/dev/null || need+=(iproute2)
command -v unshare >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# one cluster test at a time on this machine (ports, namespace names and munged are machine-wide)
exec 9>/tmp/smallmind-cluster-tests.lock
flock -w 900 9 || { echo "multinode: another run's cluster test held the lock for 15 minutes"; exit 1; }
N=$src/tests/netns_hosts.sh
trap 'bash "$N" down >/dev/null 2>&1 || true' EXIT
rm -rf "$work"; mkdir -p "$work"; cd "$work"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 SMALLMIND=$bin
unset OMP_NUM_THREADS
pass=0 fail=0
ok()  { pass=$((pass+1)); echo "ok   $1"; }
bad() { fail=$((fail+1)); echo "FAIL $1"; }

bash "$N" up || { echo "multinode: cannot create the test hosts"; exit 1; }
bash "$N" hostfile hosts
python3 -c "
import random; random.seed(11)
w=['call','me','ishmael','some','years','ago','never','mind','how','long','precisely']
print(' '.join(random.choice(w) for _ in range(20000)))" > text.txt
"$bin" prepare --input text.txt --out d >/dev/null
M="--data d --layers 2 --heads 2 --embd 32 --seq 32 --steps 12 --lr 1e-3 --min-lr 1e-4 --warmup 3 --eval-every 6 --val-batches 2 --bucket-mb 0.05 --ckpt-every 6"
TCP=(--mca plm_rsh_agent "$N rsh" --mca btl tcp,self --mca btl_tcp_if_include 10.213.7.0/24 --mca oob_tcp_if_include 10.213.7.0/24)
two_hosts() {   # two_hosts OUT smallmind-args...: one rank on each host, launched from smnode0
  local out=$1; shift
  timeout 120 bash "$N" on0 "$src/jobs/launch.sh" --hostfile hosts -t 1 "${TCP[@]}" -- "$@" >"$out" 2>&1
}

two_hosts tcp.out train $M --batch 2 --run-dir run_tcp --dump-params p_tcp.bin; rc=$?
[ $rc -eq 0 ] && ok "2 ranks on 2 hosts over TCP: exit 0" || bad "2-host run (exit $rc): $(tail -5 tcp.out)"
grep -q "^topology: 2 ranks on 2 nodes (1 per node)" tcp.out && grep -q "rank 1 on smnode1" tcp.out \
  && ok "topology: 2 nodes, rank 1 on smnode1" || bad "topology line: $(grep topology tcp.out)"
grep -q "mpirun -np 2 --hostfile .*btl tcp" tcp.out && ok "launch.sh printed the mpirun command" || bad "no mpirun command printed"
timeout 120 "$src/jobs/launch.sh" -n 2 -t 1 -- train $M --batch 2 --run-dir run_shm --dump-params p_shm.bin >shm.out 2>&1 \
  || bad "single-host 2-rank run failed: $(tail -5 shm.out)"
timeout 120 "$src/jobs/launch.sh" -n 1 -t 1 -- train $M --batch 4 --run-dir run_one --dump-params p_one.bin >one.out 2>&1 \
  || bad "1-rank run failed: $(tail -5 one.out)"

/usr/bin/python3 - <<'PY' && ok "2 hosts over TCP == 1 host, 2 ranks: losses, val losses, parameters and the checkpoint bit for bit" || bad "2-host run differs from the 1-host run"
import json, h5py, numpy as np
def events(d):
    return [(e['event'], e['step'], e.get('loss', e.get('val_loss'))) for e in map(json.loads, open(f'{d}/log.jsonl'))
            if e['event'] in ('step', 'val')]
a, b = events('run_tcp'), events('run_shm')
assert len([e for e in a if e[0] == 'step']) == 12 and len([e for e in a if e[0] == 'val']) == 2, a
assert a == b, [(x, y) for x, y in zip(a, b) if x != y][:3]
pa, pb = np.fromfile('p_tcp.bin', np.float32), np.fromfile('p_shm.bin', np.float32)
assert pa.size > 30000 and pa.tobytes() == pb.tobytes(), 'dumped parameters differ'
fa, fb = h5py.File('run_tcp/ckpt_00000012.h5', 'r'), h5py.File('run_shm/ckpt_00000012.h5', 'r')
n = 0
for g in ('model', 'optim/m', 'optim/v'):
    assert list(fa[g].keys()) == list(fb[g].keys())
    for k in fa[g]:
        assert fa[g][k][...].tobytes() == fb[g][k][...].tobytes(), f'{g}/{k} differs'
        n += 1
assert n == 48, n
assert fa.attrs['world_size'] == 2 and fa.attrs['step'] == 12
print(f'{len(a)} events and {n} datasets identical')
PY
/usr/bin/python3 - <<'PY' && ok "a 1-rank run at the same global batch is not bit-identical (the comparison can fail)" || bad "1-rank run compared bit-identical"
import numpy as np
a, b = np.fromfile('p_tcp.bin', np.float32), np.fromfile('p_one.bin', np.float32)
assert a.tobytes() != b.tobytes()
d = np.abs(a - b).max()
assert d < 1e-4, f'but it should agree to rounding: max diff {d}'
print(f'max |diff| {d:.2e}')
PY

# a host that does not share the run directory: smnode1 gets an empty tmpfs over private/
mkdir -p private
NETNS_PRIVATE_DIR=$work/private two_hosts private.out train $M --batch 2 --run-dir private/run; rc=$?
if [ $rc -eq 2 ] && grep -q "error: rank 1 on node smnode1 does not see the run directory" private.out \
   && [ -z "$(ls private/run/ckpt_* 2>/dev/null)" ]; then
  ok "run directory not shared with smnode1: exit 2, node named, no checkpoint"
else bad "unshared run directory (exit $rc): $(grep -m2 error private.out)"; fi
ls private/run/.shared-check-* >/dev/null 2>&1 && bad "the token file was left behind" || ok "token file removed"

bash "$N" down >/dev/null && ! ip netns list | grep -q smnode && ok "test hosts removed" || bad "test hosts still there"
trap - EXIT
echo "multinode: $pass passed, $fail failed"
[ $fail -eq 0 ]
