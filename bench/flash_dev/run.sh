#!/bin/bash
# One device call: build the checker for sm_90a, run the correctness suite and the timing table,
# time PyTorch's flash backend on the same shapes, and keep the SASS of the shipped D = 128 bf16
# kernels. Run from the repository root on the GPU machine; results go to $OUT (or /tmp/flash_out).
# `bash bench/flash_dev/run.sh build DIR` builds the same objects on the development machine
# (nvcc there too) so that a device call only runs them: `FB=DIR bash bench/flash_dev/run.sh`.
set -o pipefail
NVCC="nvcc -std=c++17 -O3 -I. -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -Xfatbin=-compress-all"
build() {
  local dir=$1
  mkdir -p "$dir"
  # The flash family's sources (kernels/cuda/flash), FLASH_DEV_JOBS compile jobs at a time (2 by
  # default, for the development machine; the GPU machine has 16 cores).
  local jobs=${FLASH_DEV_JOBS:-2}
  local srcs=(flash.cu launch_sm80.cu launch_backward_sm80.cu launch_sm90.cu rope_keys.cu
              sm90_tile0.cu sm90_tile1.cu sm90_tile2.cu sm90_tile3.cu sm90_tile4.cu sm90_tile5.cu
              sm90_tile6.cu sm90_tile7.cu)
  local objs=() pids=()
  for src in "${srcs[@]}"; do
    $NVCC -Xptxas -v -c "kernels/cuda/flash/$src" -o "$dir/${src%.cu}.o" \
      > "$dir/${src%.cu}.log" 2>&1 &
    pids+=($!)
    objs+=("$dir/${src%.cu}.o")
    if [ "${#pids[@]}" -ge "$jobs" ]; then
      wait "${pids[0]}" || { cat "$dir"/*.log; return 1; }
      pids=("${pids[@]:1}")
    fi
  done
  g++ -std=c++17 -O2 -I. -c kernels/cuda/flash/support.cc -o "$dir/support.o" || return 1
  g++ -std=c++17 -O2 -I. -c kernels/cuda/flash/item_order.cc -o "$dir/item_order.o" || return 1
  $NVCC -c bench/flash_dev/flash_check.cu -o "$dir/check.o" > "$dir/check.log" 2>&1 ||
    { cat "$dir/check.log"; return 1; }
  for p in "${pids[@]}"; do wait "$p" || { cat "$dir"/*.log; return 1; }; done
  $NVCC "$dir/check.o" "${objs[@]}" "$dir/support.o" "$dir/item_order.o" -o "$dir/flash_check"
}
if [ "$1" = build ]; then build "$2"; exit $?; fi
OUT=${OUT:-/tmp/flash_out}
FB=${FB:-/tmp/fb}
mkdir -p "$OUT"
[ -x "$FB/flash_check" ] || build "$FB" || exit 1
cat "$FB"/*.log | grep -E "Compiling entry|registers|spill" > "$OUT/ptxas.txt"
cuobjdump -sass "$FB/launch_sm80.o" | gzip > "$OUT/sm80.sass.gz"
cuobjdump -sass "$FB/sm90_tile4.o" | gzip > "$OUT/sm90_d128.sass.gz"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv,noheader
"$FB/flash_check" "$OUT/ours.tsv" 2>&1 | tee "$OUT/check.log"
rc=$?
PYTHONUNBUFFERED=1 python3 bench/flash_dev/torch_flash.py "$OUT/ours.tsv" 2>&1 | tee "$OUT/torch.log"
grep -h "failures" "$OUT/check.log"
exit $rc
