#!/usr/bin/env bash
# test_cli.sh SMALLMIND WORKDIR — bad input gets exit 2 and one line "smallmind: error: ...";
# good input trains with a falling loss and writes config.json and log.jsonl.
set -uo pipefail
bin=$1 work=$2
rm -rf "$work"; mkdir -p "$work"; cd "$work"
pass=0 fail=0
ok()  { pass=$((pass+1)); echo "ok   $1"; }
bad() { fail=$((fail+1)); echo "FAIL $1"; }

python3 -c "
import random; random.seed(2)
words=['call','me','ishmael','some','years','ago','never','mind','how','long','precisely']
print(' '.join(random.choice(words) for _ in range(30000)))" > text.txt
"$bin" prepare --input text.txt --out d >/dev/null || bad "prepare on good text"

# expect_usage NAME PATTERN ARGS... : exit 2, exactly one stderr line, matching PATTERN
expect_usage() {
  local name=$1 pat=$2; shift 2
  "$@" >out.txt 2>err.txt; local rc=$?
  local lines; lines=$(wc -l <err.txt)
  if [ $rc -eq 2 ] && [ "$lines" -eq 1 ] && grep -q "^smallmind: error: .*$pat" err.txt; then ok "$name"
  else bad "$name (exit $rc, $lines stderr lines: $(head -c 300 err.txt))"; fi
}
T="$bin train --data d --run-dir run_bad --steps 2 --layers 1 --heads 1 --embd 8 --seq 8 --batch 1"
expect_usage "no command"            "no command"       "$bin"
expect_usage "unknown command"       "unknown command"  "$bin" frobnicate
expect_usage "unknown flag"          "unknown option"   $T --frobnicate 3
expect_usage "missing value"         "needs a value\|missing value" $T --steps
expect_usage "negative steps"        "steps"            $T --steps -5
expect_usage "non-numeric steps"     "expects an integer" $T --steps ten
expect_usage "heads not dividing"    "does not divide"  $bin train --data d --run-dir run_bad --heads 3 --embd 8 --seq 8
expect_usage "seq beyond context"    "exceeds"          $T --context 4
expect_usage "nan lr"                "expects a number" $T --lr nan
expect_usage "missing data"          "nosuch_train.bin" $bin train --data nosuch --run-dir run_bad
expect_usage "missing run dir flag"  "run-dir"          $bin train --data d
expect_usage "prepare missing input" "nosuch.txt"       $bin prepare --input nosuch.txt --out x
expect_usage "prepare bad fraction"  "val-fraction"     $bin prepare --input text.txt --out x --val-fraction 2
expect_usage "prepare bad tokenizer" "tokenizer"        $bin prepare --input text.txt --out x --tokenizer morse

# malformed shards
python3 - <<'PY'
import struct
hdr = lambda magic, ver, n, v: struct.pack('<256i', magic, ver, n, v, *([0]*252))
toks = struct.pack('<100H', *range(100))
open('badmagic_train.bin','wb').write(hdr(1234, 1, 100, 256) + toks)
open('trunc_train.bin','wb').write(hdr(20240520, 1, 100, 256) + toks[:50])
open('bigtok_train.bin','wb').write(hdr(20240520, 1, 100, 256) + struct.pack('<100H', *([7]*99 + [300])))
open('short_train.bin','wb').write(b'\x00' * 100)
PY
for p in badmagic trunc bigtok short; do cp d_val.bin ${p}_val.bin; done
expect_usage "bad magic shard"       "badmagic_train.bin.*magic" $bin train --data badmagic --run-dir run_bad
expect_usage "truncated shard"       "trunc_train.bin"  $bin train --data trunc --run-dir run_bad
expect_usage "token >= vocab"        "bigtok_train.bin.*300" $bin train --data bigtok --run-dir run_bad
expect_usage "short header"          "short_train.bin"  $bin train --data short --run-dir run_bad
[ ! -e run_bad/log.jsonl ] && ok "bad input leaves no log" || bad "bad input wrote run_bad/log.jsonl"

# --help on every subcommand
# (through a file: grep -q ends the pipe at its first match, and a usage text longer than stdio's
# 4 KiB buffer would then die of SIGPIPE, which pipefail reports)
for c in train prepare; do "$bin" $c --help >help.txt && grep -q "usage: smallmind $c" help.txt && ok "$c --help" || bad "$c --help"; done

# a good run: loss falls, logs parse
"$bin" train --data d --run-dir run --layers 2 --heads 2 --embd 32 --seq 32 --batch 4 --steps 40 \
  --lr 3e-3 --min-lr 3e-4 --warmup 5 --eval-every 20 --val-batches 2 --threads 2 >train.log 2>&1 \
  && ok "good run exits 0" || { bad "good run"; cat train.log; }
python3 - <<'PY' && ok "log.jsonl and config.json: loss falls, fields present" || bad "log.jsonl check"
import json, math
ev = [json.loads(l) for l in open('run/log.jsonl')]
steps = [e for e in ev if e['event'] == 'step']
vals = [e for e in ev if e['event'] == 'val']
assert [e['step'] for e in steps] == list(range(1, 41)), 'steps numbered 1..40'
for e in steps:
    for k in ('loss', 'lr', 'grad_norm', 'tokens_per_s', 'ms'): assert k in e and math.isfinite(e[k]), k
assert [e['step'] for e in vals] == [20, 40], vals
first, last = steps[0]['loss'], sum(e['loss'] for e in steps[-5:]) / 5
assert abs(first - math.log(256)) < 0.3, f'initial loss {first} not near ln(256)'
assert last < first - 1.0, f'loss did not fall: {first} -> {last}'
cfg = json.load(open('run/config.json'))
assert cfg['layers'] == 2 and cfg['steps'] == 40 and cfg['vocab'] == 256, cfg
PY

# bench checkpoint on a tiny state: both figures with a baseline and a ratio, files cleaned up
mkdir -p benchdir
"$bin" bench checkpoint --dir benchdir --layers 1 --heads 1 --embd 8 --vocab 64 --context 8 --repeats 1 --json >bench.json 2>&1 \
  && python3 - <<'PY' && [ -z "$(ls benchdir)" ] && ok "bench checkpoint --json: save and load against a baseline, cleaned up" || bad "bench checkpoint: $(head -c 300 bench.json)"
import json
rows = [json.loads(l) for l in open('bench.json')]
assert [r['name'] for r in rows] == ['checkpoint_save', 'checkpoint_load'], rows
for r in rows:
    assert r['gbps'] > 0 and r['baseline_gbps'] > 0 and abs(r['ratio'] - r['gbps'] / r['baseline_gbps']) < 1e-3 * r['ratio'] + 1e-3, r
PY
expect_usage "bench checkpoint bad dir" "nosuchdir" $bin bench checkpoint --dir nosuchdir

echo "cli: $pass passed, $fail failed"
[ $fail -eq 0 ]
