#!/usr/bin/env bash
# test_valgrind.sh VALGRIND SMALLMIND SUPP WORKDIR — prepare + a 3-step training run (with a
# val pass) under memcheck: no invalid access, no uninitialised use, no definite leak.
set -euo pipefail
vg=$1 bin=$2 supp=$3 work=$4
rm -rf "$work"; mkdir -p "$work"; cd "$work"
python3 -c "print(' '.join(['it','was','the','best','of','times'] * 3000))" > text.txt
V="$vg --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite --suppressions=$supp"
$V "$bin" prepare --input text.txt --out d >prepare.log 2>&1 || { cat prepare.log; exit 1; }
$V "$bin" train --data d --run-dir run --layers 2 --heads 2 --embd 32 --seq 32 --batch 2 --steps 3 \
  --eval-every 2 --val-batches 1 --threads 2 >train.log 2>&1 || { grep -E "==[0-9]+==" train.log | head -60; exit 1; }
grep "ERROR SUMMARY" train.log
echo "valgrind: 1 passed, 0 failed"
