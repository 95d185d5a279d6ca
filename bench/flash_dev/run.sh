#!/bin/bash
# One device call: build the checker for sm_90a, run the correctness suite and the timing table,
# time PyTorch's flash backend on the same shapes, and keep the SASS of the shipped D = 128 bf16
# kernels. Run from the repository root on the GPU machine; results go to $OUT (or /tmp/flash_out).
# `bash bench/flash_dev/run.sh build DIR` builds the same objects on the development machine
# (nvcc there too) so that a device call only runs them: `FB=DIR bash bench/flash_dev/run.sh`.
set -o pipefail
NVCC="nvcc -std=c++17 -O3 -I. -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr"
build() {
  local dir=$1
  mkdir -p "$dir"
  $NVCC -Xptxas -v -c kernels/cuda/flash_attention.cu -o "$dir/fa.o" > "$dir/fa.log" 2>&1 &
  local fa=$!
  $NVCC -Xptxas -v -c kernels/cuda/flash_hopper.cu -o "$dir/fh.o" > "$dir/fh.log" 2>&1 &
  local fh=$!
  $NVCC -c bench/flash_dev/flash_check.cu -o "$dir/check.o" > "$dir/check.log" 2>&1 ||
    { cat "$dir/check.log"; return 1; }
  wait $fa || { cat "$dir/fa.log"; return 1; }
  wait $fh || { cat "$dir/fh.log"; return 1; }
  $NVCC "$dir/check.o" "$dir/fa.o" "$dir/fh.o" -o "$dir/flash_check"
}
if [ "$1" = build ]; then build "$2"; exit $?; fi
OUT=${OUT:-/tmp/flash_out}
FB=${FB:-/tmp/fb}
mkdir -p "$OUT"
[ -x "$FB/flash_check" ] || build "$FB" || exit 1
cat "$FB/fa.log" "$FB/fh.log" | grep -E "Compiling entry|registers|spill" > "$OUT/ptxas.txt"
cuobjdump -sass "$FB/fa.o" | gzip > "$OUT/fa.sass.gz"
cuobjdump -sass "$FB/fh.o" | gzip > "$OUT/fh.sass.gz"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv,noheader
"$FB/flash_check" "$OUT/ours.tsv" 2>&1 | tee "$OUT/check.log"
rc=$?
PYTHONUNBUFFERED=1 python3 bench/flash_dev/torch_flash.py "$OUT/ours.tsv" 2>&1 | tee "$OUT/torch.log"
grep -h "failures" "$OUT/check.log"
exit $rc
