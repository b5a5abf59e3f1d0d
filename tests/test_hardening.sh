#!/usr/bin/env bash
# test_hardening.sh SMALLMIND WORKDIR — the training side of the hardening issue, one case per fault
# kind found by hostile use (the checkpoint side is in test_ckpt_*.{sh,py}): non-finite state never
# committed, what start can check checked at start, flags that drive collectives agreed, sizes in 64
# bits, JSON output escaped, usage errors printed once under mpirun, file-size limits survived.
# Each case writes its own small input. Cases that need an unprivileged user (root ignores
# permissions) run under setpriv as nobody when the test runs as root, else are skipped with a line.
set -uo pipefail
bin=$1 work=$2
rm -rf "$work"; mkdir -p "$work"; cd "$work"
chmod 755 "$work"
py=/usr/bin/python3
MPIRUN=${MPIRUN:-mpirun}
pass=0 fail=0
ok()  { pass=$((pass+1)); echo "ok   $1"; }
bad() { fail=$((fail+1)); echo "FAIL $1"; }

python3 -c "
import random; random.seed(3)
words=['call','me','ishmael','some','years','ago','never','mind','how','long','precisely','whale','sea']
print(' '.join(random.choice(words) for _ in range(30000)))" > text.txt
"$bin" prepare --input text.txt --out d >/dev/null || { echo "FAIL prepare"; exit 1; }
TINY="--layers 2 --heads 2 --embd 32 --seq 32 --batch 4 --eval-every 0 --val-batches 2 --threads 1"

# expect_usage NAME PATTERN CMD... : exit 2, exactly one line on stderr matching PATTERN
expect_usage() {
  local name=$1 pat=$2; shift 2
  "$@" >out.txt 2>err.txt; local rc=$?
  local lines; lines=$(wc -l <err.txt)
  if [ $rc -eq 2 ] && [ "$lines" -eq 1 ] && grep -q "^smallmind: .*error: .*$pat" err.txt; then ok "$name"
  else bad "$name (exit $rc, $lines stderr lines: $(head -c 300 err.txt))"; fi
}

# --- 1. non-finite state ------------------------------------------------------------------------
# optimizer flags as the float32 arithmetic sees them
expect_usage "--eps 0 refused"            "eps"        "$bin" train --data d --run-dir r_eps $TINY --steps 2 --eps 0
expect_usage "--eps 1e-50 (0 as a float)" "eps"        "$bin" train --data d --run-dir r_eps $TINY --steps 2 --eps 1e-50
expect_usage "--beta2 1 refused"          "beta2"      "$bin" train --data d --run-dir r_eps $TINY --steps 2 --beta2 1
expect_usage "--beta1 0.99999999 (1 as a float)" "beta1" "$bin" train --data d --run-dir r_eps $TINY --steps 2 --beta1 0.99999999
expect_usage "lr x wd >= 1 refused"       "wd"         "$bin" train --data d --run-dir r_eps $TINY --steps 2 --lr 2 --wd 0.5
expect_usage "--lr inf refused"           "lr"         "$bin" train --data d --run-dir r_eps $TINY --steps 2 --lr inf
[ ! -e r_eps/config.json ] && ok "refused flags leave no config.json" || bad "refused flags wrote config.json"

# a non-finite loss skips the update (SMALLMIND_INJECT_NAN: test-only fault injection): the step,
# the schedule and the data cursor advance, parameters do not move
SMALLMIND_INJECT_NAN=4 "$bin" train --data d --run-dir r_nan $TINY --steps 6 --ckpt-every 3 --dump-params p_nan.bin \
  >nan.out 2>&1; rc=$?
"$bin" train --data d --run-dir r_ref $TINY --steps 6 --dump-params p_ref.bin >/dev/null 2>&1
$py - <<'PY' && [ $rc -eq 0 ] && ok "a NaN loss skips its update: a skip event, 6 step events, the run finishes (exit 0)" \
  || bad "NaN skip (exit $rc): $(tail -3 nan.out)"
import json
ev = [json.loads(l) for l in open('r_nan/log.jsonl')]
skips = [e for e in ev if e['event'] == 'skip']
assert len(skips) == 1 and skips[0]['step'] == 4 and skips[0]['reason'] == 'loss', skips
assert [e['step'] for e in ev if e['event'] == 'step'] == list(range(1, 7))
ref = [json.loads(l) for l in open('r_ref/log.jsonl')]
# steps 1-3 identical to a run without the fault; step 4's batch was consumed (not replayed)
a = {e['step']: e['loss'] for e in ev if e['event'] == 'step'}
b = {e['step']: e['loss'] for e in ref if e['event'] == 'step'}
assert all(a[s] == b[s] for s in (1, 2, 3)), (a, b)
assert all(a[s] != b[s] for s in (5, 6)), 'the skipped update should change what follows'
PY

# K+1 non-finite steps in a row stop the run (exit 1), the last good checkpoint intact and latest
SMALLMIND_INJECT_NAN=4,5,6,7 "$bin" train --data d --run-dir r_stop $TINY --steps 9 --ckpt-every 3 --max-skips 2 \
  >stop.out 2>stop.err; rc=$?
[ $rc -eq 1 ] && grep -q "skipped" stop.err && [ "$(cat r_stop/latest)" = "ckpt_00000003.h5" ] && \
  [ ! -e r_stop/ckpt_00000006.h5 ] && "$bin" inspect r_stop >/dev/null 2>&1 \
  && ok "--max-skips 2: the third bad step in a row stops the run (exit 1), ckpt 3 intact, nothing newer" \
  || bad "max-skips stop: exit $rc, latest $(cat r_stop/latest 2>/dev/null), $(ls r_stop | tr '\n' ' '): $(cat stop.err)"
SMALLMIND_INJECT_NAN=2 "$bin" train --data d --run-dir r_k0 $TINY --steps 4 --max-skips 0 >/dev/null 2>k0.err; rc=$?
[ $rc -eq 1 ] && ok "--max-skips 0: the first bad step stops the run" || bad "max-skips 0: exit $rc $(cat k0.err)"
# "in a row": a good step between two bad ones starts the count again (3 skips, none adjacent, K=1)
SMALLMIND_INJECT_NAN=2,4,6 "$bin" train --data d --run-dir r_apart $TINY --steps 7 --max-skips 1 >/dev/null 2>apart.err
rc=$?
[ $rc -eq 0 ] && [ "$(grep -c '"event":"skip"' r_apart/log.jsonl)" -eq 3 ] \
  && ok "--max-skips 1: skips at steps 2, 4, 6 (never two in a row) do not stop the run" \
  || bad "max-skips apart: exit $rc $(cat apart.err)"

# the same under mpirun: every rank takes the same decision, no rank is left behind
SMALLMIND_INJECT_NAN=3,4 timeout 120 $MPIRUN -np 2 --bind-to none -x SMALLMIND_INJECT_NAN "$bin" train --data d \
  --run-dir r_nan2 --layers 2 --heads 2 --embd 32 --seq 32 --batch 2 --eval-every 0 --val-batches 2 --threads 1 \
  --steps 5 >nan2.out 2>&1; rc=$?
[ $rc -eq 0 ] && [ "$(grep -c '"event":"skip"' r_nan2/log.jsonl)" -eq 2 ] \
  && ok "2 ranks skip the same two steps and finish" || bad "2-rank skip: exit $rc $(tail -3 nan2.out)"

# a spike guard (--spike-z): a step whose loss jumps far above the last ones is skipped; off by
# default (SMALLMIND_INJECT_SPIKE: test-only, that step's loss reads 100x)
SMALLMIND_INJECT_SPIKE=25 "$bin" train --data d --run-dir r_spike $TINY --steps 30 --spike-z 6 >/dev/null 2>&1; rc=$?
SMALLMIND_INJECT_SPIKE=25 "$bin" train --data d --run-dir r_nospike $TINY --steps 30 >/dev/null 2>&1
n=$(grep -c '"event":"skip"' r_spike/log.jsonl) s25=$(grep -c '"step":25,"reason":"spike"' r_spike/log.jsonl)
m=$(grep -c '"event":"skip"' r_nospike/log.jsonl)
[ $rc -eq 0 ] && [ "$n" -eq 1 ] && [ "$s25" -eq 1 ] && [ "$m" -eq 0 ] \
  && ok "--spike-z 6 skips exactly the spiking step 25; off by default" \
  || bad "spike guard: exit $rc, $n skips ($s25 at step 25), $m without --spike-z"

# --- 2. found at start, not after hours -----------------------------------------------------
# llm.c-style shards (header vocab 0, gpt2 by DESIGN.md) with one token beyond the vocabulary, in the
# val shard only: refused before step 1, naming the file and the position
$py - <<'PY'
import struct
hdr = lambda n: struct.pack('<256i', 20240520, 1, n, 0, *([0] * 252))
toks = [(i * 7) % 50000 for i in range(20000)]
open('oov_train.bin', 'wb').write(hdr(len(toks)) + struct.pack('<%dH' % len(toks), *toks))
val = toks[:5000]; val[100] = 60000
open('oov_val.bin', 'wb').write(hdr(len(val)) + struct.pack('<%dH' % len(val), *val))
PY
expect_usage "a token >= V in the val shard: refused at start, naming file and position" "60000.*position 100.*oov_val.bin" \
  "$bin" train --data oov --run-dir r_oov --layers 1 --heads 1 --embd 8 --seq 8 --batch 1 --steps 3 --threads 1
[ ! -e r_oov/log.jsonl ] && ok "the refused run trained nothing" || bad "r_oov has a log"

expect_usage "--dump-params into a missing directory: refused at start" "dump-params" \
  "$bin" train --data d --run-dir r_dump $TINY --steps 20 --dump-params /nonexistent/dir/p.bin
expect_usage "--run-dir ''" "run-dir" "$bin" train --data d --run-dir '' $TINY --steps 1
long=$($py -c "
cur='$work/long'
while len(cur) < 4080-201: cur += '/' + 'd'*200
print(cur + '/' + 'e'*(4080-len(cur)-1))")
expect_usage "a 4080-character --run-dir" "run-dir" "$bin" train --data d --run-dir "$long" $TINY --steps 2

# a run directory on a filesystem too small for one checkpoint: refused at start (root: a tmpfs)
if [ "$(id -u)" -eq 0 ] && mkdir -p small && mount -t tmpfs -o size=256k tmpfs small 2>/dev/null; then
  expect_usage "a run directory too small for a checkpoint: refused at start" "disk space\|checkpoint needs" \
    "$bin" train --data d --run-dir small/run --layers 2 --heads 2 --embd 64 --seq 32 --batch 2 --steps 50 --threads 1
  # the same under mpirun -np 2 (an agreed error: one line, every rank exits 2, no MPI_Abort), and a
  # save that no longer fits after the first, with --ckpt-async: one line, exit 1, the first checkpoint kept
  timeout 120 $MPIRUN -np 2 --bind-to none "$bin" train --data d --run-dir small/run2 --layers 2 --heads 2 --embd 64 \
    --seq 32 --batch 2 --steps 50 --threads 1 >s2.out 2>s2.err; rc=$?
  [ $rc -eq 2 ] && [ "$(grep -c '^smallmind' s2.err)" -eq 1 ] && grep -q "disk space" s2.err && ! grep -q MPI_ABORT s2.err \
    && ok "a run directory too small, under mpirun -np 2: one line, exit 2, no MPI_Abort" \
    || bad "too small under mpirun: exit $rc, $(grep -c '^smallmind' s2.err) lines: $(head -c 300 s2.err)"
  umount small
  mount -t tmpfs -o size=2600k tmpfs small   # start: room for the bound (2.0 MB); one checkpoint (1.0 MB) leaves too little
  timeout 120 $MPIRUN -np 2 --bind-to none "$bin" train --data d --run-dir small/run3 --layers 1 --heads 2 --embd 64 \
    --seq 32 --batch 2 --steps 8 --ckpt-every 2 --ckpt-async --eval-every 0 --threads 1 >s3.out 2>s3.err; rc=$?
  [ $rc -eq 1 ] && [ "$(grep -c '^smallmind' s3.err)" -eq 1 ] && grep -q "disk space\|No space" s3.err \
    && ! grep -q MPI_ABORT s3.err && ls small/run3/ckpt_00000002.h5 >/dev/null 2>&1 && ! ls small/run3/*.tmp >/dev/null 2>&1 \
    && ok "a later --ckpt-async save that does not fit, at 2 ranks: one line, exit 1, the earlier checkpoint kept, no .tmp" \
    || bad "disk full mid-run at 2 ranks: exit $rc, $(grep -c '^smallmind' s3.err) lines: $(head -c 300 s3.err); $(ls small/run3)"
  umount small
else
  echo "skip run directory too small (needs root for a tmpfs)"
fi

# --- permissions: cases that need an unprivileged user --------------------------------------------
# Root ignores file permissions, so as root (CI) these run as nobody (setpriv: uid and gid 65534, no
# supplementary groups, no capabilities); as any other user they run as that user, who is unprivileged
# already. The files are made by this script; NB is a directory nobody owns, for what the run writes.
if [ "$(id -u)" -eq 0 ]; then
  as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
  setpriv --reuid=65534 --regid=65534 --clear-groups test -x "$work" \
    || { echo "FAIL nobody cannot reach $work (each parent directory needs o+x)"; exit 1; }
else
  as_nobody() { "$@"; }
  echo "note: not root: the permission cases run as $(id -un), unprivileged already"
fi
NB=$work/nb; mkdir -p "$NB"; [ "$(id -u)" -eq 0 ] && chown 65534:65534 "$NB"
# a run directory the process cannot write
mkdir -p ro && chmod 555 ro
cp d_train.bin d_val.bin ro/ 2>/dev/null; chmod 444 ro/*.bin 2>/dev/null
expect_usage "an unwritable run directory: refused at start" "not writable" \
  as_nobody "$bin" train --data "$work/ro/d" --run-dir "$work/ro" $TINY --steps 2
# unreadable shards (mode 000): refused at start, naming the file; nothing is written to the run directory
cp d_train.bin u_train.bin; cp d_val.bin u_val.bin; chmod 000 u_train.bin
expect_usage "an unreadable train shard: refused at start, naming it" "Permission denied.*u_train.bin" \
  as_nobody "$bin" train --data "$work/u" --run-dir "$NB/r_u" $TINY --steps 2
cp d_train.bin v_train.bin; cp d_val.bin v_val.bin; chmod 000 v_val.bin
expect_usage "an unreadable val shard only: refused at start, naming it" "Permission denied.*v_val.bin" \
  as_nobody "$bin" train --data "$work/v" --run-dir "$NB/r_v" $TINY --steps 2
[ ! -e "$NB/r_u/log.jsonl" ] && [ ! -e "$NB/r_v/log.jsonl" ] && ok "the refused runs trained nothing" \
  || bad "a run with an unreadable shard wrote a log"
# outputs into a directory the process cannot write: refused before any work
expect_usage "--dump-params into an unwritable directory: refused at start" "dump-params.*Permission denied" \
  as_nobody "$bin" train --data "$work/d" --run-dir "$NB/r_dp" $TINY --steps 20 --dump-params "$work/ro/p.bin"
[ ! -e "$NB/r_dp/log.jsonl" ] && ok "the refused --dump-params run trained nothing" || bad "r_dp has a log"
expect_usage "prepare --out into an unwritable directory" "Permission denied" \
  as_nobody "$bin" prepare --input "$work/text.txt" --out "$work/ro/x"
cp text.txt t000.txt; chmod 000 t000.txt
expect_usage "prepare --input unreadable" "Permission denied.*t000.txt" \
  as_nobody "$bin" prepare --input "$work/t000.txt" --out "$NB/x"
# checkpoints the process cannot read: inspect and eval refuse them; resume skips them with a warning
"$bin" train --data d --run-dir r_pr $TINY --steps 4 --ckpt-every 2 >/dev/null 2>&1
[ "$(id -u)" -eq 0 ] && chown -R 65534:65534 r_pr
cp -a r_pr r_pr_latest; chmod 000 r_pr/ckpt_00000004.h5 r_pr_latest/latest
expect_usage "inspect of an unreadable checkpoint" "Permission denied.*ckpt_00000004.h5" \
  as_nobody "$bin" inspect "$work/r_pr/ckpt_00000004.h5"
expect_usage "eval of an unreadable checkpoint" "Permission denied.*ckpt_00000004.h5" \
  as_nobody "$bin" eval --ckpt "$work/r_pr/ckpt_00000004.h5" --data "$work/d_val.bin"
as_nobody "$bin" train --data "$work/d" --run-dir "$work/r_pr" $TINY --steps 6 --ckpt-every 2 >pr.out 2>&1; rc=$?
[ $rc -eq 0 ] && grep -q "warning: skipping damaged checkpoint ckpt_00000004.h5: .*Permission denied" pr.out \
  && grep -q "resumed from $work/r_pr/ckpt_00000002.h5" pr.out \
  && ok "resume with the newest checkpoint unreadable: named in a warning, resumes from the one before" \
  || bad "unreadable newest checkpoint: exit $rc, $(grep -E 'warning|resumed|error' pr.out | head -3)"
as_nobody "$bin" train --data "$work/d" --run-dir "$work/r_pr_latest" $TINY --steps 6 --ckpt-every 2 >prl.out 2>&1; rc=$?
[ $rc -eq 0 ] && grep -q "warning: ignoring .*latest: .*Permission denied" prl.out \
  && grep -q "resumed from $work/r_pr_latest/ckpt_00000004.h5" prl.out \
  && ok "resume with \`latest\` unreadable: named in a warning, takes the newest checkpoint that verifies" \
  || bad "unreadable latest: exit $rc, $(grep -E 'warning|resumed|error' prl.out | head -3)"

# --- 3. ranks that differ only in a flag that drives a collective stop at start ----------------
$MPIRUN --version >/dev/null 2>&1 || { echo "cli: mpirun missing"; exit 1; }
C="train --data d --run-dir r_mm $TINY --steps 10"
timeout 60 $MPIRUN --bind-to none --oversubscribe -np 1 "$bin" $C --stop-at 3 : -np 1 "$bin" $C >mm.out 2>mm.err; rc=$?
[ $rc -eq 2 ] && [ "$(grep -c 'smallmind:' mm.err)" -eq 1 ] && grep -q "disagree" mm.err \
  && ok "ranks differing in --stop-at stop at start (exit 2, one line), no hang" || bad "--stop-at mismatch: exit $rc $(cat mm.err | head -3)"
timeout 60 $MPIRUN --bind-to none --oversubscribe -np 1 "$bin" $C --ckpt-every 3 : -np 1 "$bin" $C >mm.out 2>mm.err; rc=$?
[ $rc -eq 2 ] && ok "ranks differing in --ckpt-every stop at start" || bad "--ckpt-every mismatch: exit $rc"

# shards of the same size that differ in 10% of their tokens: every byte is hashed
$py - <<'PY'
import struct
b = bytearray(open('d_train.bin', 'rb').read())
n = (len(b) - 1024) // 2
for i in range(1000, n, 10): b[1024 + 2 * i] = ord('#')
open('o_train.bin', 'wb').write(bytes(b))
PY
cp d_val.bin o_val.bin
timeout 60 $MPIRUN --bind-to none --oversubscribe -np 1 "$bin" train --data d --run-dir r_md $TINY --steps 3 : \
  -np 1 "$bin" train --data o --run-dir r_md $TINY --steps 3 >md.out 2>md.err; rc=$?
[ $rc -eq 2 ] && grep -q "disagree" md.err && ok "ranks given shards differing in 10% of their tokens stop at start" \
  || bad "different data: exit $rc $(head -2 md.err)"

# a usage error under mpirun -np 2: our line once (mpirun adds its own notice of the exit code)
timeout 60 $MPIRUN -np 2 --bind-to none "$bin" train --data d --run-dir r_u $TINY --steps -5 >u.out 2>u.err; rc=$?
[ $rc -eq 2 ] && [ "$(grep -c '^smallmind:' u.err)" -eq 1 ] && ! grep -q MPI_ABORT u.err \
  && ok "usage error under mpirun -np 2: one smallmind line, no MPI_Abort, exit 2" \
  || bad "usage error under mpirun: exit $rc, $(grep -c '^smallmind:' u.err) lines: $(head -c 300 u.err)"

# --- 4. resume: what may change, the roll-back, one trainer per run directory --------------------
"$bin" train --data d --run-dir r_res $TINY --steps 6 --ckpt-every 2 >/dev/null 2>&1
cp r_res/config.json cfg_before.json
expect_usage "--seq changed on resume: refused (it changes the windows)" "seq.*may not change" \
  "$bin" train --data d --run-dir r_res $TINY --steps 8 --seq 16 --context 32
expect_usage "--layers changed on resume: refused" "layers\|n_layer" \
  "$bin" train --data d --run-dir r_res $TINY --steps 8 --layers 3
cmp -s cfg_before.json r_res/config.json && ok "a refused resume leaves config.json as it was" \
  || bad "a refused resume rewrote config.json"
"$bin" train --data d --run-dir r_res $TINY --steps 8 --ckpt-every 2 --lr 1e-3 >ann.out 2>&1; rc=$?
[ $rc -eq 0 ] && grep -q "resume: --lr changes from" ann.out && grep -q "resume: --steps changes from 6 to 8" ann.out \
  && ok "--lr and --steps changed on resume: announced, one line each" || bad "announce: exit $rc $(grep resume ann.out)"
# roll back to step 4: the newer checkpoints (6, 8) move to abandoned/, and auto then follows the new branch
"$bin" train --data d --run-dir r_res $TINY --steps 8 --ckpt-every 2 --lr 1e-3 --resume r_res/ckpt_00000004.h5 \
  >rb.out 2>&1; rc=$?
"$bin" train --data d --run-dir r_res $TINY --steps 10 --ckpt-every 2 --lr 1e-3 >rb2.out 2>&1; rc2=$?
[ $rc -eq 0 ] && [ $rc2 -eq 0 ] && ls r_res/abandoned/ | grep -q ckpt_00000008.h5 && \
  grep -q "resumed from r_res/ckpt_00000008.h5" rb2.out && \
  [ "$(h5dump -a /parent r_res/ckpt_00000006.h5 | grep '(0)' | grep -o 'ckpt_[0-9]*.h5')" = "ckpt_00000004.h5" ] \
  && ok "roll-back with --resume PATH: the old branch in abandoned/, auto then continues the new one" \
  || bad "roll-back: exit $rc/$rc2, abandoned: $(ls r_res/abandoned 2>&1 | tr '\n' ' '), $(grep -h resumed rb2.out)"
grep -q "resume with --resume auto" <("$bin" train --data d --run-dir r_hint $TINY --steps 8 --stop-at 2 2>&1) \
  && ok "the stop hint names --resume auto" || bad "stop hint"
# two trainers on one run directory: the second stops at start, naming the holder
"$bin" train --data d --run-dir r_lock --layers 2 --heads 2 --embd 64 --seq 64 --batch 8 --steps 100000 \
  --eval-every 0 --val-batches 1 --threads 1 >/dev/null 2>&1 & holder=$!
for _ in $(seq 50); do [ -s r_lock/log.jsonl ] && break; sleep 0.2; done
expect_usage "a second trainer on a locked run directory: refused, naming the holder" "pid $holder" \
  "$bin" train --data d --run-dir r_lock $TINY --steps 2
kill $holder; wait $holder 2>/dev/null

# the tokenizer travels from the shard header into the checkpoint as a fact: a byte-level shard
# trained with --vocab 300 is recorded as byte (it used to be guessed from V: "gpt2")
"$bin" train --data d --run-dir r_v300 $TINY --steps 2 --vocab 300 >/dev/null 2>&1; rc=$?
[ $rc -eq 0 ] && [ "$(h5dump -a /tokenizer r_v300/ckpt_00000002.h5 | grep '(0)' | grep -o '"[a-z0-9]*"')" = '"byte"' ] \
  && [ "$(h5dump -a /vocab_size r_v300/ckpt_00000002.h5 | grep '(0)' | grep -o '[0-9]*$')" = "300" ] \
  && ok "a byte shard trained with --vocab 300: the checkpoint says tokenizer byte, vocab_size 300" \
  || bad "--vocab 300 on a byte shard: exit $rc, $(h5dump -a /tokenizer r_v300/ckpt_00000002.h5 2>&1 | grep '(0)')"

# --- 8. sizes in 64 bits ---------------------------------------------------------------------------
expect_usage "--batch 65536 x --accum 65536 refused (no wrap to 0)" "batch" \
  "$bin" train --data d --run-dir r_ovf --layers 1 --heads 1 --embd 8 --seq 1 --batch 65536 --accum 65536 --steps 1 --threads 1

# --- 9. output and environment --------------------------------------------------------------------
R='r_q"x\y'
"$bin" train --data d --run-dir "$R" $TINY --steps 2 >/dev/null 2>&1; rc=$?
$py -c 'import json,sys; json.load(open(sys.argv[1])); [json.loads(l) for l in open(sys.argv[2])]' "$R/config.json" "$R/log.jsonl" \
  && [ $rc -eq 0 ] && ok "a quote and a backslash in the run directory: config.json and log.jsonl stay valid JSON" \
  || bad "JSON escaping (exit $rc)"
# log.jsonl outgrowing `ulimit -f`: one line and exit 1, never SIGXFSZ mid-line. A resumed run whose
# log already holds 19.5 MB of events (Open MPI's start-up needs some MB under the limit itself)
"$bin" train --data d --run-dir r_fsz --layers 1 --heads 1 --embd 8 --seq 8 --batch 1 --eval-every 0 --val-batches 1 \
  --threads 1 --steps 2 >/dev/null 2>&1
$py -c "
line = '{\"event\":\"note\",\"step\":1,\"pad\":\"' + 'x' * 900 + '\"}\n'
open('r_fsz/log.jsonl', 'a').write(line * int(19.5e6 / len(line)))"
(ulimit -f 20000; "$bin" train --data d --run-dir r_fsz --layers 1 --heads 1 --embd 8 --seq 8 --batch 1 --eval-every 0 \
  --val-batches 1 --threads 1 --steps 20000 >/dev/null 2>fsz.err); rc=$?
[ $rc -eq 1 ] && [ "$(wc -l <fsz.err)" -eq 1 ] && grep -q "cannot write the log" fsz.err \
  && $py -c 'import json,sys; [json.loads(l) for l in open(sys.argv[1])]' r_fsz/log.jsonl \
  && ok "ulimit -f: the log write fails cleanly (exit 1, one line), every line of log.jsonl whole" \
  || bad "ulimit -f: exit $rc $(head -c 300 fsz.err)"

# A plain (singleton) run under a tight limit: Open MPI's daemon and its PMIx segments no longer
# fail inside MPI_Init with pages of text; what the limit stops is smallmind's one line.
(ulimit -f 4; "$bin" train --data d --run-dir r_f4 $TINY --steps 2 >/dev/null 2>f4.err); rc=$?
[ $rc -eq 2 ] && [ "$(wc -l <f4.err)" -eq 1 ] && grep -q "^smallmind: error: the file size limit" f4.err \
  && ok "ulimit -f 4 without mpirun: one line of ours, exit 2 (no Open MPI start-up failure)" \
  || bad "ulimit -f 4: exit $rc, $(wc -l <f4.err) lines: $(head -c 300 f4.err)"
if ldd "$bin" | grep -q 'libasan'; then echo "skip ulimit -v (ASan reserves terabytes of shadow memory)"
else
  (ulimit -v 100000; "$bin" train --data d --run-dir r_v $TINY --steps 2 >/dev/null 2>v.err); rc=$?
  [ $rc -eq 2 ] && [ "$(wc -l <v.err)" -eq 1 ] && grep -q "^smallmind: error: the address-space limit (ulimit -v)" v.err \
    && [ ! -e r_v ] && ok "ulimit -v 100000: refused at start in one line of ours (Open MPI would segfault in MPI_Init), exit 2" \
    || bad "ulimit -v 100000: exit $rc, $(wc -l <v.err) lines: $(head -c 300 v.err)"
fi

# --- found by a new user's trial ------------------------------------------------------------------
# Ctrl-C: the first SIGINT checkpoints at the end of the step and exits 130 (a run that saves only
# at the end lost every step before)
"$bin" train --data d --run-dir r_int $TINY --steps 100000 >int.out 2>int.err &
pid=$!
for _ in $(seq 600); do grep -q '"event":"step"' r_int/log.jsonl 2>/dev/null && break; sleep 0.1; done
kill -INT $pid; wait $pid; rc=$?
ck=$(ls r_int/ckpt_*.h5 2>/dev/null | head -1)
[ $rc -eq 130 ] && [ -n "$ck" ] && [ ! -e "$ck.tmp" ] && grep -q "interrupt" int.err \
  && $py -c 'import h5py,sys; f=h5py.File(sys.argv[1]); assert f.attrs["step"] >= 1' "$ck" \
  && ok "Ctrl-C (SIGINT): a checkpoint at the step it stopped after ($(basename $ck)), exit 130" \
  || bad "SIGINT: exit $rc, checkpoint '$ck', $(head -c 300 int.err)"
# --stop-at at or before the resumed step would be ignored: refused
expect_usage "--stop-at before the resumed step refused" "stop-at" \
  "$bin" train --data d --run-dir r_int $TINY --steps 100000 --stop-at 1
# eval under mpirun: a start error ends both ranks with one line of ours, no MPI_Abort
timeout 120 $MPIRUN -np 2 --bind-to none "$bin" eval --ckpt r_int --data nonexistent_val.bin >ev.out 2>ev.err; rc=$?
[ $rc -eq 2 ] && [ "$(grep -c '^smallmind' ev.err)" -eq 1 ] && ! grep -q MPI_ABORT ev.err \
  && ok "eval under mpirun -np 2 with a missing data file: one smallmind line, exit 2, no MPI_Abort" \
  || bad "eval under mpirun: exit $rc: $(head -c 400 ev.err)"
# prepare is one process: refused under mpirun (both ranks wrote the same files); --out's directory made
timeout 60 $MPIRUN -np 2 --bind-to none "$bin" prepare --input text.txt --out pm/x >pm.out 2>pm.err; rc=$?
[ $rc -eq 2 ] && [ "$(grep -c '^smallmind' pm.err)" -eq 1 ] && [ ! -e pm ] \
  && ok "prepare under mpirun -np 2: refused in one line, nothing written" || bad "prepare under mpirun: exit $rc $(head -c 300 pm.err)"
"$bin" prepare --input text.txt --out new/dir/x >/dev/null 2>pn.err && [ -s new/dir/x_train.bin ] \
  && ok "prepare --out in a directory that does not exist yet: made (mkdir -p, as train's --run-dir)" \
  || bad "prepare --out new/dir/x: $(head -c 300 pn.err)"
# mpirun --bind-to none without --threads: the node's CPUs shared by its ranks, not each rank all of them
ncpu=$(nproc)
env -u OMP_NUM_THREADS -u SLURM_CPUS_PER_TASK timeout 120 $MPIRUN -np 2 --bind-to none "$bin" train --data d --run-dir r_thr --layers 1 --heads 1 --embd 8 --seq 8 \
  --batch 1 --eval-every 0 --val-batches 1 --steps 1 >thr.out 2>thr.err; rc=$?
want=$(( ncpu / 2 > 0 ? ncpu / 2 : 1 ))
[ $rc -eq 0 ] && grep -q "topology: 2 ranks.* $want OpenMP threads\? per rank" thr.out && ! grep -q "OpenMP threads in all" thr.err \
  && ok "mpirun -np 2 --bind-to none, no --threads: $want thread(s) per rank on $ncpu CPUs, no oversubscription warning" \
  || bad "default threads under mpirun: exit $rc: $(grep topology thr.out) $(head -c 300 thr.err)"
# threads asked for beyond the node's CPUs are still warned about (rank 0, one line)
OMP_NUM_THREADS=$((ncpu)) timeout 120 $MPIRUN -np 2 --bind-to none -x OMP_NUM_THREADS "$bin" train --data d --run-dir r_thr2 \
  --layers 1 --heads 1 --embd 8 --seq 8 --batch 1 --eval-every 0 --val-batches 1 --steps 1 >thr2.out 2>thr2.err; rc=$?
[ $rc -eq 0 ] && [ "$(grep -c "its 2 ranks run $((2 * ncpu)) OpenMP threads in all on $ncpu CPUs" thr2.err)" -eq 1 ] \
  && ok "OMP_NUM_THREADS=$ncpu for 2 ranks on $ncpu CPUs: warned once" || bad "no oversubscription warning: $(head -c 300 thr2.err)"
# generate cut by the context says so (stderr), rather than returning fewer tokens silently
"$bin" generate --ckpt r_int --prompt "call me" --max-new 1000 >gen.out 2>gen.err; rc=$?
[ $rc -eq 0 ] && grep -q "stopped at the model's context of 32 tokens" gen.err \
  && ok "generate beyond the context: one line says where it stopped" || bad "generate context note: exit $rc $(head -c 300 gen.err)"

# --data as each command takes it: train a prefix, eval a file; each names the other form
expect_usage "train --data PREFIX_train.bin: says --data takes the prefix" "takes the prefix" \
  "$bin" train --data d_train.bin --run-dir r_pfx $TINY --steps 1
expect_usage "eval --data PREFIX: says --data takes a shard file" "takes a shard file" \
  "$bin" eval --ckpt r_int --data d
# convert onto its own input would rewrite it while reading: refused
"$bin" convert --from r_int --to m.bin >/dev/null 2>&1 && cp m.bin m2.bin
expect_usage "convert --to the --from file: refused" "itself" "$bin" convert --from m.bin --to m.bin
cmp -s m.bin m2.bin && ok "the .bin given as both --from and --to is unchanged" || bad "convert rewrote its input"

expect_usage "--group-size without --int8 refused (it would be ignored)" "group-size" \
  "$bin" generate --ckpt r_int --prompt x --group-size 32

echo "hardening: $pass passed, $fail failed"
[ $fail -eq 0 ]
