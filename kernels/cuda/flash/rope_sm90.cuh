// RoPE for the Hopper kernel (docs/variants.md §4.1). Q is rotated inside the kernel: each Q tile
// arrives by TMA unrotated and three producer warps rotate it in place in shared memory before
// the consumers are told it is ready, once per work item. K is rotated once per problem by a
// pre-pass (RotateKeys, rope_keys.cu) into the launch's workspace, because a K tile is read by
// every query tile: rotating it in the kernel cost S / 128 rotations per K tile and made RoPE
// 1.5-2.1x slower than no RoPE on an H100 (bench/flash_dev/NOTES.md, parts round). Both use
// RotateQuad below, so the rounding is the same wherever a vector is rotated.
//
// Work split: each rotating thread owns 4 consecutive pair indices m (elements m..m+3 and their
// partners m + rope_dims / 2) of every RG-th row of the tile, RG = threads / (rope_dims / 8). It
// reads the cos/sin of its first two rows from the host-built table (evaluated in double) and
// reaches every further row, RG positions on, by one complex multiplication with their ratio, so a
// tile reads 2 table rows per thread instead of one per row (reading them all would double the L2
// traffic of the K/V loads). Twenty steps of float rotation drift by ~1e-6, far below the 16-bit
// rounding of the result. Rows past the sequence are zeros from the TMA fill and are left alone;
// dimensions past rope_dims are not touched.
#ifndef ATTNBENCH_KERNELS_CUDA_FLASH_ROPE_SM90_CUH_
#define ATTNBENCH_KERNELS_CUDA_FLASH_ROPE_SM90_CUH_

#include <cstdint>

#include "kernels/cuda/common/attention_args.h"
#include "kernels/cuda/common/ptx.cuh"

namespace attnbench::cuda::flash {

// One rotating thread's share of every tile: its pair indices m0..m0+3 and rows.
struct RopeLane {
  bool active = false;
  int m0 = 0;        // first pair index
  int row0 = 0;      // first row of the tile this thread rotates
  int row_step = 0;  // RG

  __device__ __forceinline__ RopeLane(const AttentionArgs& a, int tid, int threads) {
    const int quads = a.rope_dims / 8;  // 4 pair indices each
    const int groups = threads / quads;
    active = tid < quads * groups;
    m0 = 4 * (tid % quads);
    row0 = tid / quads;
    row_step = groups;
  }
};

// cos/sin of pair indices m0..m0+3 at position pos, from the table.
__device__ __forceinline__ void RopeTableRow(const AttentionArgs& a, int64_t pos, int m0,
                                             float (&c)[4], float (&s)[4]) {
  const float4* cs =
      reinterpret_cast<const float4*>(a.rope_cos_sin + 2 * (pos * (a.rope_dims / 2) + m0));
  const float4 c01 = cs[0];
  const float4 c23 = cs[1];
  c[0] = c01.x, s[0] = c01.y, c[1] = c01.z, s[1] = c01.w;
  c[2] = c23.x, s[2] = c23.y, c[3] = c23.z, s[3] = c23.w;
}

// Rotates four pairs: elements m..m+3 (x1, four 16-bit values) against their partners
// m + rope_dims / 2 (x2) by the angles whose cosines and sines are c and s.
template <typename T>
__device__ __forceinline__ void RotateQuad(uint2& x1, uint2& x2, const float (&c)[4],
                                           const float (&s)[4]) {
  const uint32_t w1[2] = {x1.x, x1.y};
  const uint32_t w2[2] = {x2.x, x2.y};
  uint32_t v1[2], v2[2];
#pragma unroll
  for (int w = 0; w < 2; ++w) {
    const float2 a1 = Unpack2<T>(w1[w]);
    const float2 a2 = Unpack2<T>(w2[w]);
    const int i0 = 2 * w, i1 = 2 * w + 1;
    v1[w] = Pack2<T>(a1.x * c[i0] - a2.x * s[i0], a1.y * c[i1] - a2.y * s[i1]);
    v2[w] = Pack2<T>(a2.x * c[i0] + a1.x * s[i0], a2.y * c[i1] + a1.y * s[i1]);
  }
  x1 = make_uint2(v1[0], v1[1]);
  x2 = make_uint2(v2[0], v2[1]);
}

// Rotates rows [0, rows_valid) of a [kRows][kDim] tile laid out as Layout (PanelLayout<kDim>) at
// `tile`, row r sitting at position pos0 + r.
template <typename T, typename Layout, int kRows>
__device__ __forceinline__ void RotateTile(uint8_t* tile, const AttentionArgs& a,
                                           const RopeLane& lane, int64_t pos0, int rows_valid) {
  if (!lane.active || lane.row0 >= rows_valid) return;
  const int half = a.rope_dims / 2;
  float c[4], s[4], step_c[4] = {1.f, 1.f, 1.f, 1.f}, step_s[4] = {0.f, 0.f, 0.f, 0.f};
  RopeTableRow(a, pos0 + lane.row0, lane.m0, c, s);
  if (lane.row0 + lane.row_step < rows_valid) {
    // The rotation from one of this thread's rows to the next: table(p + RG) / table(p).
    float c1[4], s1[4];
    RopeTableRow(a, pos0 + lane.row0 + lane.row_step, lane.m0, c1, s1);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      step_c[i] = c1[i] * c[i] + s1[i] * s[i];
      step_s[i] = s1[i] * c[i] - c1[i] * s[i];
    }
  }
#pragma unroll 1
  for (int r = lane.row0; r < rows_valid; r += lane.row_step) {
    uint2* p1 = reinterpret_cast<uint2*>(tile + Layout::template Offset<kRows>(r, lane.m0));
    uint2* p2 = reinterpret_cast<uint2*>(tile + Layout::template Offset<kRows>(r, lane.m0 + half));
    uint2 x1 = *p1;
    uint2 x2 = *p2;
    RotateQuad<T>(x1, x2, c, s);
    *p1 = x1;
    *p2 = x2;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float cn = c[i] * step_c[i] - s[i] * step_s[i];
      s[i] = s[i] * step_c[i] + c[i] * step_s[i];
      c[i] = cn;
    }
  }
}

}  // namespace attnbench::cuda::flash

#endif  // ATTNBENCH_KERNELS_CUDA_FLASH_ROPE_SM90_CUH_
