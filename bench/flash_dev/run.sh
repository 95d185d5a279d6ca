#!/bin/bash
# One device call: build the checker for sm_90a, run the correctness suite and the timing table,
# time PyTorch's flash backend on the same shapes, and keep the SASS of the shipped D = 128 bf16
# kernel. Run from the repository root on the GPU machine; results go to $OUT (or /tmp/flash_out).
set -o pipefail
OUT=${OUT:-/tmp/flash_out}
mkdir -p "$OUT" /tmp/fb
NVCC="nvcc -std=c++17 -O3 -I. -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr"
$NVCC -Xptxas -v -c kernels/cuda/flash_attention.cu -o /tmp/fb/fa.o > /tmp/fb/fa.log 2>&1 &
$NVCC -c bench/flash_dev/flash_check.cu -o /tmp/fb/check.o > /tmp/fb/check.log 2>&1 || { cat /tmp/fb/check.log; exit 1; }
wait $! || { cat /tmp/fb/fa.log; exit 1; }
$NVCC /tmp/fb/check.o /tmp/fb/fa.o -o /tmp/fb/flash_check || exit 1
grep -E "Compiling entry|registers|spill" /tmp/fb/fa.log > "$OUT/ptxas.txt"
cuobjdump -sass /tmp/fb/fa.o | gzip > "$OUT/fa.sass.gz"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv,noheader
/tmp/fb/flash_check "$OUT/ours.tsv" 2>&1 | tee "$OUT/check.log"
rc=$?
PYTHONUNBUFFERED=1 python3 bench/flash_dev/torch_flash.py "$OUT/ours.tsv" 2>&1 | tee "$OUT/torch.log"
grep -h "failures" "$OUT/check.log"
exit $rc
