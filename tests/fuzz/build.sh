#!/usr/bin/env bash
# build.sh OUT_DIR — builds the libFuzzer harnesses with Debian's clang (libclang-rt-14-dev holds
# libFuzzer), AddressSanitizer and UndefinedBehaviorSanitizer: the checkpoint code, common/ and comm/
# compiled in, linked against parallel HDF5 and Open MPI.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${1:?usage: build.sh OUT_DIR}
mkdir -p "$OUT"
if ! command -v clang >/dev/null || ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  echo "fuzz: installing clang and libclang-rt-14-dev"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq clang libclang-rt-14-dev >/dev/null
fi
H5INC=$(pkg-config --cflags hdf5-openmpi 2>/dev/null || echo -I/usr/include/hdf5/openmpi)
H5LIB=$(pkg-config --libs hdf5-openmpi 2>/dev/null || echo "-L/usr/lib/x86_64-linux-gnu/hdf5/openmpi -lhdf5")
CFLAGS="-std=c17 -g -O1 -D_GNU_SOURCE -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined
        -fno-sanitize-recover=undefined -fopenmp -Wall -Wextra -Werror
        -I$ROOT/common -I$ROOT/comm -I$ROOT/checkpoints $(mpicc --showme:compile) $H5INC"
SRC="$ROOT/checkpoints/*.c $ROOT/common/common.c $ROOT/comm/comm.c"
for h in fuzz_ckpt_file fuzz_latest; do
  # shellcheck disable=SC2086
  clang $CFLAGS "$ROOT/tests/fuzz/$h.c" $SRC -o "$OUT/$h" $H5LIB $(mpicc --showme:link) -lm
done
echo "fuzz: built $OUT/fuzz_ckpt_file $OUT/fuzz_latest"
