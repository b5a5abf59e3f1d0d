#!/usr/bin/env bash
# test_bench.sh BENCH — `smallmind bench` (BENCH runs cmd_bench): bad usage exits 2 with one
# error line (checkpoint has its own test), and short runs of `bench kernels`, `bench train` and
# `bench generate` print every figure as a JSON object, one per line,
# with the keys DESIGN names. Nothing about speed is asserted: performance is what the bench
# reports, not a test.
set -uo pipefail
bin=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }

usage_case() {   # args...: must exit 2 with exactly one "smallmind: error:" line on stderr
    "$bin" "$@" >"$work/out" 2>"$work/err"
    local rc=$?
    if [ $rc -eq 2 ] && [ "$(wc -l <"$work/err")" -eq 1 ] && grep -q '^smallmind: error: ' "$work/err"; then ok
    else bad "bench $* exited $rc with: $(cat "$work/err")"; fi
}
usage_case
usage_case frobnicate
usage_case kernels --shape huge
usage_case kernels --simd avx9000
usage_case train --rounds 0
usage_case train --bogus
usage_case generate --shape huge
usage_case generate --new 1
"$bin" --help >"$work/out" 2>&1 && grep -q "bench <what>" "$work/out" && ok || bad "bench --help"

# JSON lines: every line an object with a name and its figure
check_json() {   # file, then names that must appear
    local f=$1; shift
    /usr/bin/python3 - "$f" "$@" <<'PY' || return 1
import json, sys
lines = [l for l in open(sys.argv[1]) if l.strip()]
objs = [json.loads(l) for l in lines]
names = [o.get("name", "") for o in objs]
for want in sys.argv[2:]:
    assert any(want in n or o.get("event") == want for n, o in zip(names, objs)), "missing figure: " + want
for o in objs:
    if "name" in o:
        assert "ms" in o, o
        if "ratio" in o: assert "baseline" in o and o["ratio"] > 0, o
PY
}
if "$bin" kernels --shape small --rounds 1 --json >"$work/k.json" 2>"$work/k.err" &&
   check_json "$work/k.json" "stream triad" "matmul small.qkv fwd" "matmul small.lm_head dweight" \
       "attention fwd flash" "layernorm fwd" "softmax_xent" "adamw" "gemm NT (512,512,512)" \
       "matmul q8 small.qkv fwd" "decode small f32 matvecs" "decode small q8 matvecs"; then ok
else bad "bench kernels: $(tail -3 "$work/k.err")"; fi
if "$bin" train --shape small --steps 2 --rounds 1 --no-torch --profile --json >"$work/t.json" 2>"$work/t.err" &&
   check_json "$work/t.json" "train small s/step" "train small tokens/s" "train small achieved GFLOP/s" profile; then ok
else bad "bench train: $(tail -3 "$work/t.err")"; fi
if "$bin" generate --shape small --rounds 1 --prompt 16 --new 4 --no-torch --json >"$work/g.json" 2>"$work/g.err" &&
   check_json "$work/g.json" "stream triad" "generate small prefill tokens/s" "generate small prefill products GFLOP/s" \
       "generate small decode tokens/s (KV cache)" "generate small decode tokens/s vs bandwidth limit" \
       "generate small allocations per token" "generate small decode tokens/s (no cache)" \
       "generate small INT8 decode tokens/s" &&
   /usr/bin/python3 -c "
import json, sys
o = {j['name']: j for j in map(json.loads, open(sys.argv[1]))}
assert o['generate small allocations per token']['allocs'] == 0, 'a generated token allocated'" "$work/g.json"; then ok
else bad "bench generate: $(tail -3 "$work/g.err")"; fi
echo "bench_smoke: $pass passed, $fail failed"
[ $fail -eq 0 ]
