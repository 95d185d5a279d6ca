// The Hopper kernel's RoPE pre-pass: K rotated once per problem into the launch's workspace
// (rope_sm90.cuh says why K is not rotated inside the kernel). Memory-bound: it reads K and the
// cos/sin table and writes K once, about 2 x |K| of traffic, on the same stream just before the
// attention kernel, so its time is inside the measured interval like the rest of the attention.
//
// Work split: a thread owns one quad of a (token, head) row: four pairs m..m+3 with their
// partners m + rope_dims / 2, or four dimensions past rope_dims that are copied unrotated. Threads
// of a row are adjacent (threadIdx.x), so the 8-byte loads of a warp are contiguous; the rows of
// one token share their table row, which the L1 serves after the first head.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/cuda/common/attention_args.h"
#include "kernels/cuda/flash/launchers.h"
#include "kernels/cuda/flash/rope_sm90.cuh"

namespace attnbench::cuda::flash {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kThreads)
    RotateKeysKernel(const AttentionArgs a, uint2* __restrict__ out, int64_t row_heads) {
  const int quads_rope = a.rope_dims / 8;  // rotated quads per row (each also writes its partner)
  const int half = a.rope_dims / 2;
  const int w = threadIdx.x;
  const uint2* in = static_cast<const uint2*>(a.k);
  for (int64_t rh = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; rh < row_heads;
       rh += static_cast<int64_t>(gridDim.x) * blockDim.y) {
    const int64_t row = rh / a.heads_kv;       // b * S_kv + j
    const int64_t base = rh * (a.dim_qk / 4);  // in quads of 4 elements
    if (w < quads_rope) {
      float c[4], s[4];
      RopeTableRow(a, row % a.seq_kv, 4 * w, c, s);
      uint2 x1 = in[base + w];
      uint2 x2 = in[base + w + half / 4];
      RotateQuad<T>(x1, x2, c, s);
      out[base + w] = x1;
      out[base + w + half / 4] = x2;
    } else {
      const int64_t q = base + a.rope_dims / 4 + (w - quads_rope);
      out[q] = in[q];
    }
  }
}

}  // namespace

size_t RopeKeysBytes(const AttentionArgs& args) {
  return static_cast<size_t>(args.batch) * static_cast<size_t>(args.seq_kv) *
         static_cast<size_t>(args.heads_kv) * static_cast<size_t>(args.dim_qk) * 2;
}

cudaError_t RotateKeys(const AttentionArgs& args, void* out, cudaStream_t stream) {
  if (args.rope_cos_sin == nullptr || out == nullptr || args.rope_dims % 8 != 0 ||
      args.dim_qk % 8 != 0 || args.rope_dims > args.dim_qk ||
      (args.storage != Storage::kFloat16 && args.storage != Storage::kBFloat16)) {
    return cudaErrorInvalidValue;
  }
  // Threads of a row: the rotated quads plus the copied ones past rope_dims.
  const int per_row = args.rope_dims / 8 + (args.dim_qk - args.rope_dims) / 4;
  const int rows_per_block = std::max(1, kThreads / per_row);
  const int64_t row_heads = static_cast<int64_t>(args.batch) * args.seq_kv * args.heads_kv;
  if (row_heads == 0) return cudaSuccess;
  // A grid-stride loop: enough blocks to fill the device several times over, never more than
  // the rows need.
  const int64_t blocks =
      std::min<int64_t>((row_heads + rows_per_block - 1) / rows_per_block, 1 << 16);
  const dim3 block(per_row, rows_per_block);
  uint2* dst = static_cast<uint2*>(out);
  if (args.storage == Storage::kBFloat16) {
    RotateKeysKernel<__nv_bfloat16>
        <<<static_cast<unsigned>(blocks), block, 0, stream>>>(args, dst, row_heads);
  } else {
    RotateKeysKernel<__half>
        <<<static_cast<unsigned>(blocks), block, 0, stream>>>(args, dst, row_heads);
  }
  return cudaGetLastError();
}

}  // namespace attnbench::cuda::flash
