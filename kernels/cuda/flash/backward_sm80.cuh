// cuda_flash's backward on mma.sync (sm_80 and newer), FlashAttention-2's structure
// (docs/variants.md §5): the forward's probabilities are recomputed tile by tile from its
// log-sum-exp, so S, P, dP and dS never leave the chip; dK and dV stay in registers for a whole
// thread block's life; dQ is summed in float32 with atomics. Four kernels, launched in order by
// launch_backward_sm80.cu (which also launches the forward that saves what this one reads):
//
//   rows      D_i = <dO_i, O_i> per (b, h, i), a warp per row (O in float32 as the saving forward
//             wrote it before rounding, as cuda_reference's backward does)
//   (memset)  the float32 dQ accumulator [B, S_q, H_q, D_qk] to zero
//   main      FlashBackwardKernel below
//   dq        dQ = scale R(i')^T acc, rounded to the storage type, a warp per row
//
// The main kernel: one thread block per (K/V tile of kBc = 16 kWarps keys, key/value head kh,
// batch b). It loads K_j (rotated by RoPE at j on the way in, rounded to the storage type) and
// V_j once, then for every output head h reading kh (BackwardArgs::kv_heads: so dK and dV sum over
// the heads sharing their kv head inside the block, with no expanded K/V and no atomics on them)
// and every query tile of kBr rows that the mask can keep against these keys (the row interval of
// the causal / window bounds, then TileCoverage per tile as in the forward: kNone skipped without
// loads, kAll untested, kPartial tested per pair with MaskKeeps):
//   load Q_i (rotated at i'), dO_i, lse_i and D_i of head h (cp.async where rows are 16-byte
//     aligned and there is no RoPE, through registers otherwise; zero rows past S_q);
//   S^T = K_w Q^T and dP^T = V_w dO^T per warp w (its 16 keys x kBr queries, ldmatrix +
//     mma.m16n8k16, float32), the score modifiers exactly as the saving forward computed them
//     (the same FMAs for ALiBi, the same exact tanhf for the softcap), the mask;
//   P^T = 2^(t exp_scale - lse_i log2 e) and dS^T = P^T (dP^T - D_i) (1 - tanh^2 under softcap),
//     both rounded to the storage type in registers;
//   dV_w += P^T dO and dK_w += dS^T Q with P^T and dS^T as the A operands straight from the
//     accumulator layout (as the forward feeds P to P V), Q and dO through ldmatrix.trans;
//   dS^T to shared memory; after a barrier dQ_i = dS K_j, the kBr x D_qk tile split over the warps
//     (kBr / 16 row groups x the rest in column groups; dS through ldmatrix.trans), each element
//     atomically added to the float32 accumulator.
// At the end dK (times scale) is staged in shared memory in float32 and leaves through RoPE's
// transpose at j; dV leaves from the registers. A tile that no query keeps writes zeros.
//
// What is recomputed: S and dP (two of the five matmuls of §7's count: S = QK^T, dP = dO V^T,
// dV, dK, dQ), and P from the log-sum-exp. Hidden pairs give P = 0 and dS = 0; rows past S_q and
// rows whose every key is hidden (log-sum-exp -inf) take lse = +inf, so P = 0 there too.
//
// Budget (FlashBackwardConfig, rows of kSm80BackwardTiles): per thread dK and dV accumulators
// (kD / 4 + kDv / 4 floats: 32 + 32 at D = 64, 64 + 64 at D = 128), S^T and dP^T (kBr / 2 each:
// 32 + 32 with kBr = 64 at D = 64, 16 + 16 with kBr = 32 at D = 128) and the dQ tile of the warp
// (after S^T and dP^T die: 32 floats); shared memory 46 KB (D = 64) and 57 KB (D = 128).
//
// Not done yet (performance): no double buffering of Q / dO (the loads of the next query tile do
// not overlap this one's math), the mask tested per element with MaskKeeps in partial tiles,
// dV written element by element, and a grid of B x H_kv x S_kv / 64 blocks, which is small for
// GQA / MQA at short sequences (the heads sharing a kv head could be split over blocks with a
// dK / dV reduction). dQ by atomics is not deterministic (the order of float additions varies).
#ifndef ATTNBENCH_KERNELS_CUDA_FLASH_BACKWARD_SM80_CUH_
#define ATTNBENCH_KERNELS_CUDA_FLASH_BACKWARD_SM80_CUH_

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/cuda/common/attention_args.h"
#include "kernels/cuda/common/backward_args.h"
#include "kernels/cuda/common/mask.cuh"
#include "kernels/cuda/common/ptx.cuh"
#include "kernels/cuda/common/score_grads.cuh"
#include "kernels/cuda/common/score_mods.cuh"
#include "kernels/cuda/common/storage.cuh"
#include "kernels/cuda/flash/backward_configs.h"
#include "kernels/cuda/flash/kernel_sm80.cuh"

namespace attnbench::cuda::flash {

template <int kD_, int kDv_, int kWarps_, int kBr_, int kMinBlocks_>
struct FlashBackwardConfig {
  static constexpr int kD = kD_;
  static constexpr int kDv = kDv_;
  static constexpr int kWarps = kWarps_;
  static constexpr int kThreads = 32 * kWarps_;
  static constexpr int kBc = 16 * kWarps_;  // each warp owns 16 keys
  static constexpr int kBr = kBr_;
  static constexpr int kMinBlocks = kMinBlocks_;
  // dQ = dS K: kBr / 16 row groups of 16 queries, the warps of each splitting D_qk in columns.
  static constexpr int kRowGroups = kBr / 16;
  static constexpr int kColGroups = kWarps / kRowGroups;
  static constexpr int kDqCols = kD / kColGroups;
  // Row strides in elements, +8 elements (16 bytes) against ldmatrix bank conflicts.
  static constexpr int kKStride = kD + 8;
  static constexpr int kVStride = kDv + 8;
  static constexpr int kQStride = kD + 8;
  static constexpr int kOStride = kDv + 8;
  static constexpr int kSStride = kBr + 8;  // dS^T: [key][query]
  static constexpr int kKElems = kBc * kKStride;
  static constexpr int kVElems = kBc * kVStride;
  static constexpr int kQElems = kBr * kQStride;
  static constexpr int kOElems = kBr * kOStride;
  static constexpr int kSElems = kBc * kSStride;
  static constexpr int kStageStride = kD + 4;  // dK staged in float32 at the end
  static constexpr int kTileBytes = (kKElems + kVElems + kQElems + kOElems + kSElems) * 2 +
                                    2 * kBr * static_cast<int>(sizeof(float));
  static constexpr int kStageBytes = kBc * kStageStride * static_cast<int>(sizeof(float));
  static constexpr int kSmemBytes = kTileBytes > kStageBytes ? kTileBytes : kStageBytes;
  static_assert(kD % 16 == 0 && kDv % 16 == 0 && kBr % 16 == 0, "mma tiles are 16 wide");
  static_assert(kWarps % kRowGroups == 0 && kDqCols % 16 == 0, "dQ's warp tiles");
};

template <int kTile>
using Sm80BackwardConfig =
    FlashBackwardConfig<kSm80BackwardTiles[kTile].dim_qk, kSm80BackwardTiles[kTile].dim_v,
                        kSm80BackwardTiles[kTile].warps, kSm80BackwardTiles[kTile].block_q,
                        kSm80BackwardTiles[kTile].min_blocks>;

// Per-launch choices made on the host.
struct FlashBackwardParams {
  float* dq_accum = nullptr;  // [B, S_q, H_q, D_qk], zero before the main kernel
  // The K/V tile of the saving forward (kSm80Tiles): ALiBi's bias is computed with the same
  // float operations as there, which depend on a key's column within that tile.
  int forward_block_kv = 64;
  bool async_q = false;  // cp.async for Q (aligned rows, no RoPE)
  bool async_k = false;  // cp.async for K (aligned rows, no RoPE)
  bool async_v = false;
  bool async_do = false;
};

// The query rows [lo, hi) an interval mask (causal, window, a block mask's causal part) can keep
// against some key of [j0, j1), clipped to [0, S_q); lo >= hi when none.
struct RowInterval {
  int64_t lo = 0;
  int64_t hi = 0;
};
__device__ __forceinline__ RowInterval RowsKeepingKeys(const AttentionArgs& a, int64_t j0,
                                                       int64_t j1) {
  // Row i sits at i' = i + offset: causal keeps j <= i', the window i' - L <= j <= i' + R.
  RowInterval r{0, a.seq_q};
  if (a.mask == MaskCode::kCausal || (a.mask == MaskCode::kBlock && a.block_causal)) {
    r.lo = max(r.lo, j0 - a.offset);
  } else if (a.mask == MaskCode::kWindow) {
    if (a.window_right >= 0) r.lo = max(r.lo, j0 - a.window_right - a.offset);
    if (a.window_left >= 0) r.hi = min(r.hi, j1 - 1 + a.window_left - a.offset + 1);
  }
  return r;
}

// Index of (b, h, i) in the [B, H_out, S_q] row statistics (log-sum-exp, D).
__device__ __forceinline__ int64_t BackwardStatIndex(const AttentionArgs& a, int b, int h,
                                                     int64_t i) {
  return (static_cast<int64_t>(b) * a.heads_out + h) * a.seq_q + i;
}

// dQ = scale R(i')^T acc for every (b, i, qh) row of the float32 accumulator, a warp per row.
template <typename T>
__global__ void __launch_bounds__(256)
    FlashBackwardDqKernel(const __grid_constant__ AttentionArgs a,
                          const __grid_constant__ BackwardArgs g, const float* acc) {
  T* dq = static_cast<T*>(g.dq);
  const int lane = threadIdx.x % 32;
  const int64_t rows = static_cast<int64_t>(a.batch) * a.seq_q * a.heads_q;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * 8 + threadIdx.x / 32; row < rows;
       row += static_cast<int64_t>(gridDim.x) * 8) {
    const int64_t i = (row / a.heads_q) % a.seq_q;  // row = (b S_q + i) H_q + qh
    const float* src = acc + row * a.dim_qk;
    for (int d = lane; d < a.dim_qk; d += 32) {
      dq[row * a.dim_qk + d] =
          FromFloat<T>(a.scale * RopeTransposedElement<float>(a, src, i + a.offset, d));
    }
  }
}

// Grid (ceil(S_kv / kBc), H_kv, B), kThreads threads, Cfg::kSmemBytes of dynamic shared memory.
template <typename T, typename Cfg>
__global__ void __launch_bounds__(Cfg::kThreads, Cfg::kMinBlocks)
    FlashBackwardKernel(const __grid_constant__ AttentionArgs args,
                        const __grid_constant__ BackwardArgs g, const FlashBackwardParams p) {
  constexpr int kD = Cfg::kD;
  constexpr int kDv = Cfg::kDv;
  constexpr int kBr = Cfg::kBr;
  constexpr int kBc = Cfg::kBc;
  constexpr int kThreads = Cfg::kThreads;
  constexpr int kNQ = kBr / 8;  // query n-tiles of S^T and dP^T

  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* s_k = reinterpret_cast<T*>(smem_raw);
  T* s_v = s_k + Cfg::kKElems;
  T* s_q = s_v + Cfg::kVElems;
  T* s_do = s_q + Cfg::kQElems;
  T* s_ds = s_do + Cfg::kOElems;
  float* s_lse = reinterpret_cast<float*>(s_ds + Cfg::kSElems);  // lse log2 e; +inf: P = 0
  float* s_dd = s_lse + kBr;                                     // D

  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int b = blockIdx.z;
  const int kh = blockIdx.y;
  const int64_t seq_q = args.seq_q;
  const int64_t seq_kv = args.seq_kv;
  const int64_t j0 = static_cast<int64_t>(blockIdx.x) * kBc;
  const int rows_kv = static_cast<int>(seq_kv - j0 < kBc ? seq_kv - j0 : kBc);
  const int64_t j1 = j0 + rows_kv;
  const bool rope = args.rope_cos_sin != nullptr;

  // K and V of the block's keys, once.
  {
    const T* k_ptr =
        static_cast<const T*>(args.k) + RowOffset(b, seq_kv, j0, args.heads_kv, kh, args.dim_qk);
    const T* v_ptr =
        static_cast<const T*>(args.v) + RowOffset(b, seq_kv, j0, args.heads_kv, kh, args.dim_v);
    const int64_t k_stride = static_cast<int64_t>(args.heads_kv) * args.dim_qk;
    const int64_t v_stride = static_cast<int64_t>(args.heads_kv) * args.dim_v;
    if (p.async_k) {
      LoadTileAsync<kThreads, kBc, kD, Cfg::kKStride>(s_k, k_ptr, k_stride, rows_kv, args.dim_qk,
                                                      tid);
    } else {
      LoadTileSync<kThreads, kBc, kD, Cfg::kKStride>(s_k, k_ptr, k_stride, rows_kv, args.dim_qk,
                                                     rope, j0, args, tid);
    }
    if (p.async_v) {
      LoadTileAsync<kThreads, kBc, kDv, Cfg::kVStride>(s_v, v_ptr, v_stride, rows_kv, args.dim_v,
                                                       tid);
    } else {
      LoadTileSync<kThreads, kBc, kDv, Cfg::kVStride>(s_v, v_ptr, v_stride, rows_kv, args.dim_v,
                                                      false, j0, args, tid);
    }
    CpAsyncCommit();
  }

  // dK' and dV of the warp's 16 keys: lane (g = lane / 4, c = lane % 4) holds keys g and g + 8,
  // columns 8 n + 2 c + {0, 1} (the mma accumulator layout).
  float dk_acc[kD / 8][4];
  float dv_acc[kDv / 8][4];
#pragma unroll
  for (int n = 0; n < kD / 8; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) dk_acc[n][e] = 0.f;
  }
#pragma unroll
  for (int n = 0; n < kDv / 8; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) dv_acc[n][e] = 0.f;
  }

  // ldmatrix lane addresses (see kernel_sm80.cuh for the patterns).
  // A from the warp's K / V rows (row-major [key][d]): rows lane % 16, column half lane / 16.
  const uint32_t k_a = SmemAddr(s_k + (16 * warp + lane % 16) * Cfg::kKStride + (lane / 16) * 8);
  const uint32_t v_a = SmemAddr(s_v + (16 * warp + lane % 16) * Cfg::kVStride + (lane / 16) * 8);
  // B from Q / dO stored [query][d] with N = query (S^T, dP^T): non-transposed, rows
  // (lane % 8) + 8 (lane / 16), column half (lane / 8) % 2.
  const uint32_t q_b =
      SmemAddr(s_q + ((lane % 8) + 8 * (lane / 16)) * Cfg::kQStride + ((lane / 8) % 2) * 8);
  const uint32_t do_b =
      SmemAddr(s_do + ((lane % 8) + 8 * (lane / 16)) * Cfg::kOStride + ((lane / 8) % 2) * 8);
  // B from Q / dO with K = query (dK, dV): transposed, rows (lane % 8) + 8 ((lane / 8) % 2),
  // column half lane / 16.
  const uint32_t q_bt =
      SmemAddr(s_q + ((lane % 8) + 8 * ((lane / 8) % 2)) * Cfg::kQStride + (lane / 16) * 8);
  const uint32_t do_bt =
      SmemAddr(s_do + ((lane % 8) + 8 * ((lane / 8) % 2)) * Cfg::kOStride + (lane / 16) * 8);
  // dQ = dS K. The warp's tile: query rows 16 rg, columns cg kDqCols.
  const int rg = warp % Cfg::kRowGroups;
  const int cg = warp / Cfg::kRowGroups;
  // A = dS [query][key] from dS^T stored [key][query]: transposed, key rows (lane % 8) +
  // 8 (lane / 16), query column half (lane / 8) % 2.
  const uint32_t ds_at = SmemAddr(s_ds + ((lane % 8) + 8 * (lane / 16)) * Cfg::kSStride + 16 * rg +
                                  ((lane / 8) % 2) * 8);
  // B = K [key][d] with K = key: transposed, as V in the forward.
  const uint32_t k_bt = SmemAddr(s_k + ((lane % 8) + 8 * ((lane / 8) % 2)) * Cfg::kKStride +
                                 cg * Cfg::kDqCols + (lane / 16) * 8);
  constexpr uint32_t kKRowBytes = Cfg::kKStride * sizeof(T);
  constexpr uint32_t kQRowBytes = Cfg::kQStride * sizeof(T);
  constexpr uint32_t kORowBytes = Cfg::kOStride * sizeof(T);
  constexpr uint32_t kSRowBytes = Cfg::kSStride * sizeof(T);

  // The thread's two keys (rows of S^T).
  const int key_row0 = 16 * warp + lane / 4;
  const int64_t keys[2] = {j0 + key_row0, j0 + key_row0 + 8};
  const int64_t q_stride = static_cast<int64_t>(args.heads_q) * args.dim_qk;
  const int64_t o_stride = static_cast<int64_t>(args.heads_out) * args.dim_v;
  const RowInterval rows = RowsKeepingKeys(args, j0, j1);
  const int qt_begin = rows.hi > rows.lo ? static_cast<int>(rows.lo / kBr) : 0;
  const int qt_end = rows.hi > rows.lo ? static_cast<int>((rows.hi + kBr - 1) / kBr) : 0;

  for (int e_head = g.kv_head_offsets[kh]; e_head < g.kv_head_offsets[kh + 1]; ++e_head) {
    const int h = g.kv_heads[e_head];
    const int qh = args.head_map[2 * h];
    // The modifiers' constants as the saving forward took them (FragmentScoreMods).
    const FragmentScoreMods<kModsRuntime> mods(args, h);

    for (int qt = qt_begin; qt < qt_end; ++qt) {
      const int64_t i0 = static_cast<int64_t>(qt) * kBr;
      const int64_t i1 = i0 + kBr < seq_q ? i0 + kBr : seq_q;
      const int rows_q = static_cast<int>(i1 - i0);
      const Coverage cov = TileCoverage(args, b, h, i0, i1, j0, j1);
      if (cov == Coverage::kNone) continue;  // block-uniform

      // Q (rotated at i'), dO, and the rows' statistics.
      const T* q_ptr =
          static_cast<const T*>(args.q) + RowOffset(b, seq_q, i0, args.heads_q, qh, args.dim_qk);
      const T* do_ptr = static_cast<const T*>(g.grad_out) +
                        RowOffset(b, seq_q, i0, args.heads_out, h, args.dim_v);
      if (p.async_q) {
        LoadTileAsync<kThreads, kBr, kD, Cfg::kQStride>(s_q, q_ptr, q_stride, rows_q, args.dim_qk,
                                                        tid);
      } else {
        LoadTileSync<kThreads, kBr, kD, Cfg::kQStride>(s_q, q_ptr, q_stride, rows_q, args.dim_qk,
                                                       rope, i0 + args.offset, args, tid);
      }
      if (p.async_do) {
        LoadTileAsync<kThreads, kBr, kDv, Cfg::kOStride>(s_do, do_ptr, o_stride, rows_q, args.dim_v,
                                                         tid);
      } else {
        LoadTileSync<kThreads, kBr, kDv, Cfg::kOStride>(s_do, do_ptr, o_stride, rows_q, args.dim_v,
                                                        false, i0, args, tid);
      }
      CpAsyncCommit();
      for (int r = tid; r < kBr; r += kThreads) {
        const int64_t i = i0 + r;
        float lse = kNegInf;
        float dd = 0.f;
        if (i < seq_q) {
          const int64_t stat = BackwardStatIndex(args, b, h, i);
          lse = g.lse[stat];
          dd = g.row_terms[stat];
        }
        // A row with no kept key (lse = -inf) or past S_q: +inf, so that every P is 0.
        s_lse[r] = lse == kNegInf ? -kNegInf : lse * kLog2e;
        s_dd[r] = dd;
      }
      CpAsyncWait<0>();
      __syncthreads();

      // S^T = K_w Q^T and dP^T = V_w dO^T: the warp's 16 keys x kBr queries.
      float st[kNQ][4];
      float dpt[kNQ][4];
#pragma unroll
      for (int n = 0; n < kNQ; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          st[n][e] = 0.f;
          dpt[n][e] = 0.f;
        }
      }
#pragma unroll
      for (int kk = 0; kk < kD / 16; ++kk) {
        uint32_t a[4];
        Ldmatrix4(k_a + kk * 32, a[0], a[1], a[2], a[3]);
#pragma unroll
        for (int np = 0; np < kBr / 16; ++np) {
          uint32_t b0, b1, b2, b3;
          Ldmatrix4(q_b + np * 16 * kQRowBytes + kk * 32, b0, b1, b2, b3);
          Mma16816<T>(st[2 * np], a, b0, b1);
          Mma16816<T>(st[2 * np + 1], a, b2, b3);
        }
      }
#pragma unroll
      for (int kk = 0; kk < kDv / 16; ++kk) {
        uint32_t a[4];
        Ldmatrix4(v_a + kk * 32, a[0], a[1], a[2], a[3]);
#pragma unroll
        for (int np = 0; np < kBr / 16; ++np) {
          uint32_t b0, b1, b2, b3;
          Ldmatrix4(do_b + np * 16 * kORowBytes + kk * 32, b0, b1, b2, b3);
          Mma16816<T>(dpt[2 * np], a, b0, b1);
          Mma16816<T>(dpt[2 * np + 1], a, b2, b3);
        }
      }

      // P^T and dS^T, element (n, 2 r + e): key keys[r], query i0 + 8 n + 2 (lane % 4) + e.
      const bool test = cov == Coverage::kPartial || j0 + kBc > seq_kv;
      uint32_t p_pk[kNQ][2];
      uint32_t ds_pk[kNQ][2];
#pragma unroll
      for (int n = 0; n < kNQ; ++n) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int64_t j = keys[r];
          float pv[2], dsv[2];
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int col = 8 * n + 2 * (lane % 4) + e;
            const int64_t i = i0 + col;
            const float x = st[n][2 * r + e];
            // The forward's steps (FragmentScoreMods::Apply, the saving build's exact tanh),
            // ALiBi's bias split as there: u = the key's 8 n + e in the forward's K/V tile.
            float t = x;
            if (mods.alibi) {
              const int64_t u = (j % p.forward_block_kv) & ~int64_t{6};
              const float bias = fmaf(mods.slope_u, static_cast<float>(u),
                                      mods.slope_u * static_cast<float>(j - u - (i + args.offset)));
              t = fmaf(x, mods.mul, bias);
            } else if (mods.softcap) {
              t = x * mods.mul;
            }
            if (mods.softcap) t = tanhf(t);
            bool keep = true;
            if (test) {
              keep =
                  j < seq_kv && i < seq_q && (cov == Coverage::kAll || MaskKeeps(args, b, h, i, j));
            }
            const float pr = keep ? FastExp2(fmaf(t, mods.exp_scale, -s_lse[col])) : 0.f;
            float ds = pr * (dpt[n][2 * r + e] - s_dd[col]);
            if (mods.softcap) ds *= 1.f - t * t;
            pv[e] = pr;
            dsv[e] = ds;
          }
          p_pk[n][r] = Pack2<T>(pv[0], pv[1]);
          ds_pk[n][r] = Pack2<T>(dsv[0], dsv[1]);
          *reinterpret_cast<uint32_t*>(s_ds + (key_row0 + 8 * r) * Cfg::kSStride + 8 * n +
                                       2 * (lane % 4)) = ds_pk[n][r];
        }
      }

      // dV += P^T dO and dK' += dS^T Q over the tile's queries.
#pragma unroll
      for (int kk = 0; kk < kBr / 16; ++kk) {
        const uint32_t ap[4] = {p_pk[2 * kk][0], p_pk[2 * kk][1], p_pk[2 * kk + 1][0],
                                p_pk[2 * kk + 1][1]};
#pragma unroll
        for (int np = 0; np < kDv / 16; ++np) {
          uint32_t b0, b1, b2, b3;
          Ldmatrix4Trans(do_bt + kk * 16 * kORowBytes + np * 32, b0, b1, b2, b3);
          Mma16816<T>(dv_acc[2 * np], ap, b0, b1);
          Mma16816<T>(dv_acc[2 * np + 1], ap, b2, b3);
        }
        const uint32_t ad[4] = {ds_pk[2 * kk][0], ds_pk[2 * kk][1], ds_pk[2 * kk + 1][0],
                                ds_pk[2 * kk + 1][1]};
#pragma unroll
        for (int np = 0; np < kD / 16; ++np) {
          uint32_t b0, b1, b2, b3;
          Ldmatrix4Trans(q_bt + kk * 16 * kQRowBytes + np * 32, b0, b1, b2, b3);
          Mma16816<T>(dk_acc[2 * np], ad, b0, b1);
          Mma16816<T>(dk_acc[2 * np + 1], ad, b2, b3);
        }
      }
      __syncthreads();  // dS^T complete

      // dQ' of the tile (unscaled: the dq kernel multiplies by scale) into the accumulator.
      {
        float dq[Cfg::kDqCols / 8][4];
#pragma unroll
        for (int n = 0; n < Cfg::kDqCols / 8; ++n) {
#pragma unroll
          for (int e = 0; e < 4; ++e) dq[n][e] = 0.f;
        }
#pragma unroll
        for (int kk = 0; kk < kBc / 16; ++kk) {
          uint32_t a[4];
          Ldmatrix4Trans(ds_at + kk * 16 * kSRowBytes, a[0], a[1], a[2], a[3]);
#pragma unroll
          for (int np = 0; np < Cfg::kDqCols / 16; ++np) {
            uint32_t b0, b1, b2, b3;
            Ldmatrix4Trans(k_bt + kk * 16 * kKRowBytes + np * 32, b0, b1, b2, b3);
            Mma16816<T>(dq[2 * np], a, b0, b1);
            Mma16816<T>(dq[2 * np + 1], a, b2, b3);
          }
        }
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int64_t i = i0 + 16 * rg + lane / 4 + 8 * r;
          if (i < seq_q) {
            float* acc_row = p.dq_accum + RowOffset(b, seq_q, i, args.heads_q, qh, args.dim_qk);
#pragma unroll
            for (int n = 0; n < Cfg::kDqCols / 8; ++n) {
#pragma unroll
              for (int e = 0; e < 2; ++e) {
                const int d = cg * Cfg::kDqCols + 8 * n + 2 * (lane % 4) + e;
                if (d < args.dim_qk) atomicAdd(acc_row + d, dq[n][2 * r + e]);
              }
            }
          }
        }
      }
      __syncthreads();  // Q, dO, dS^T and the statistics are refilled by the next tile
    }
  }

  // dK = R(j)^T scale dK', staged in float32 (RoPE's transpose pairs dims across threads).
  CpAsyncWait<0>();  // K and V copies of a block that visited no tile
  __syncthreads();
  float* stage = reinterpret_cast<float*>(smem_raw);
#pragma unroll
  for (int n = 0; n < kD / 8; ++n) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        stage[(key_row0 + 8 * r) * Cfg::kStageStride + 8 * n + 2 * (lane % 4) + e] =
            args.scale * dk_acc[n][2 * r + e];
      }
    }
  }
  __syncthreads();
  T* dk = static_cast<T*>(g.dk);
  T* dv = static_cast<T*>(g.dv);
  for (int idx = tid; idx < rows_kv * kD; idx += kThreads) {
    const int row = idx / kD;
    const int d = idx % kD;
    if (d < args.dim_qk) {
      const int64_t j = j0 + row;
      dk[RowOffset(b, seq_kv, j, args.heads_kv, kh, args.dim_qk) + d] =
          FromFloat<T>(RopeTransposedElement<float>(args, stage + row * Cfg::kStageStride, j, d));
    }
  }
  // dV straight from the registers.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t j = keys[r];
    if (j < seq_kv) {
      T* dv_row = dv + RowOffset(b, seq_kv, j, args.heads_kv, kh, args.dim_v);
#pragma unroll
      for (int n = 0; n < kDv / 8; ++n) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int d = 8 * n + 2 * (lane % 4) + e;
          if (d < args.dim_v) dv_row[d] = FromFloat<T>(dv_acc[n][2 * r + e]);
        }
      }
    }
  }
}

}  // namespace attnbench::cuda::flash

#endif  // ATTNBENCH_KERNELS_CUDA_FLASH_BACKWARD_SM80_CUH_
