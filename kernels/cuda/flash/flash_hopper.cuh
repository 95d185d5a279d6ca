// The fused attention forward for Hopper (sm_90a): the FlashAttention-2 algorithm of
// flash_attention.cuh rebuilt on Hopper's asynchronous units, in the manner of FlashAttention-3.
// Tensor-core work is wgmma (a warpgroup multiplies 64 rows at once, B straight from shared
// memory), and tiles arrive by the tensor memory accelerator (TMA) onto mbarriers, issued by a
// producer warp so that loads never wait on the math. flash_hopper.cu decides which requests take
// this path (cc 9.0, fp16/bf16, D_qk = D_v in {64, 128}, an interval mask, no modifiers, rows
// whose strides TMA accepts); everything else runs the mma.sync kernel.
//
// Tiles and work split (per thread block, Cfg = HopperConfig<kD, kBc, kStages>):
//   - 3 warpgroups (384 threads). Warpgroup 0 is the producer: one thread issues every TMA copy
//     and the rest idle with 24 registers (setmaxnreg), leaving 240 to each consumer thread.
//     Warpgroups 1 and 2 are consumers, each owning 64 of the tile's kBr = 128 query rows.
//   - K/V tiles of kBc = 128 keys; kStages shared-memory stages of K and V each.
//   - Shared memory: Q [kBr][kD], then kStages K tiles [kBc][kD] and V tiles [kBc][kD], each
//     stored as kD / 64 column panels of 64 elements (128 bytes a row) with the 128-byte swizzle
//     TMA writes and wgmma reads; then the mbarriers.
//
// Pipeline:
//   producer, per work item: wait until Q's buffer is free (q_empty, after the first item), load
//     Q; then for each kept K/V tile: wait until its stage is free (k_empty / v_empty, after the
//     first round), expect the tile's bytes on k_full / v_full and issue the copies (one per
//     64-column panel). K and V have separate barriers so the next K can land while the
//     consumers still multiply by the current V. Stages and phases run on across items.
//   consumer, per K/V tile i (after the first): wait k_full; take its turn on the tensor cores
//     (the two consumers alternate through named barriers: FlashAttention-3's ping-pong); issue
//     S_i = Q K_i^T (wgmma SS, float32 in registers), scale O by the previous softmax's
//     correction, issue O += P_{i-1} V_{i-1} (wgmma RS, V read MN-major), pass the turn; wait for
//     S_i and release K_i's stage (and Q after the item's last tile); mask (only tiles the
//     interval cuts and the tile crossing S_kv) and online softmax with exp2 and scale * log2(e)
//     folded into one FMA, overlapping the PV still running; wait for it, release V_{i-1}'s
//     stage, and round P_i to the storage type in registers in the A-fragment layout.
//   epilogue: O / l (0 for rows whose every key is hidden), written straight from registers.
//
// Masks: the kernel knows one interval per query, j in [i' - left, i' + right] (a negative bound
// is unbounded; causal is right = 0), plus j < S_kv. The K/V tile range is cut from it up front.
//
// Work items: one query tile of one (batch, output head), numbered query tile fastest with each
// head's last (heaviest causal) tile first. Blocks start in index order, so the blocks running at
// once mostly share one head's K/V in L2 (with heads fastest, 132 running blocks streamed 132
// heads' K/V from memory: 20-25% slower at S = 16k). A block takes items gridDim.x apart: the
// host launches one block per item, or a persistent grid of one block per multiprocessor where
// items are uniform and short (flash_hopper.cu), in which the producer loads the next item's Q and
// K/V while the consumers finish the current one (Q's buffer is released by q_empty).
#ifndef ATTNBENCH_KERNELS_CUDA_FLASH_HOPPER_CUH_
#define ATTNBENCH_KERNELS_CUDA_FLASH_HOPPER_CUH_

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cuda/ptx>

#include "kernels/cuda/common/attention_args.h"
#include "kernels/cuda/flash/flash_attention.cuh"
#include "kernels/cuda/flash/wgmma.cuh"

namespace attnbench::cuda::hopper {

template <int kD_, int kBc_, int kStages_>
struct HopperConfig {
  static constexpr int kD = kD_;  // D_qk = D_v
  static constexpr int kBc = kBc_;
  static constexpr int kStages = kStages_;
  static constexpr int kConsumers = 2;         // warpgroups of 64 query rows
  static constexpr int kBr = 64 * kConsumers;  // query rows per block
  static constexpr int kThreads = 128 * (kConsumers + 1);
  static constexpr int kPanels = kD / 64;  // 64-element (128-byte) column panels
  static constexpr int kQBytes = kBr * kD * 2;
  static constexpr int kKVBytes = kBc * kD * 2;  // one K or V stage
  static constexpr int kBarrierOffset = kQBytes + 2 * kStages * kKVBytes;
  static constexpr int kNumBarriers = 2 + 4 * kStages;  // q full/empty, k/v full, k/v empty
  // +1024: the dynamic shared memory base is aligned up to the 1024 bytes the swizzle needs.
  static constexpr int kSmemBytes = kBarrierOffset + 8 * kNumBarriers + 1024;
  static_assert(kD % 64 == 0 && kBc % 64 == 0, "whole 128-byte panels only");
};

// Per-launch values the host derives from AttentionArgs.
struct HopperFlags {
  float exp_scale = 0;  // scale * log2(e)
  // The interval mask: keep j in [i' - left, i' + right]; negative = unbounded that side.
  int64_t left = -1;
  int64_t right = -1;
};

// ---- PTX wrappers -------------------------------------------------------------------------------

__device__ __forceinline__ void WgmmaFence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void WgmmaCommit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int kPending>
__device__ __forceinline__ void WgmmaWait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
}
// Keeps the compiler from moving reads or writes of wgmma operands across the asynchronous
// instructions (it cannot see that they are still in use until the wait).
template <int kN>
__device__ __forceinline__ void FenceRegs(float (&r)[kN]) {
#pragma unroll
  for (int i = 0; i < kN; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
template <int kN>
__device__ __forceinline__ void FenceRegs(uint32_t (&r)[kN][4]) {
#pragma unroll
  for (int i = 0; i < kN; ++i) {
#pragma unroll
    for (int j = 0; j < 4; ++j) asm volatile("" : "+r"(r[i][j])::"memory");
  }
}

// A wgmma shared-memory matrix descriptor for a 128-byte-swizzled operand. For K-major tiles
// (Q, K) `stride` is the step between 8-row groups (1024 bytes) and `leading` is unused; for the
// MN-major V tile `leading` is the step between 64-column panels.
__device__ __forceinline__ uint64_t Descriptor(uint32_t smem_addr, uint32_t leading,
                                               uint32_t stride) {
  uint64_t desc = (smem_addr & 0x3FFFF) >> 4;
  desc |= static_cast<uint64_t>((leading >> 4) & 0x3FFF) << 16;
  desc |= static_cast<uint64_t>((stride >> 4) & 0x3FFF) << 32;
  desc |= uint64_t{1} << 62;  // 128-byte swizzle
  return desc;
}

__device__ __forceinline__ void WaitBarrier(uint64_t* bar, uint32_t parity) {
  while (!::cuda::ptx::mbarrier_try_wait_parity(bar, parity)) {
  }
}

// One TMA copy of a 64-column panel: box (64 elements, 1 head, rows, 1 batch) at the coords.
__device__ __forceinline__ void LoadPanel(void* dst, const CUtensorMap* map, int col, int head,
                                          int row, int batch, uint64_t* bar) {
  const int32_t coords[4] = {col, head, row, batch};
  ::cuda::ptx::cp_async_bulk_tensor(::cuda::ptx::space_cluster, ::cuda::ptx::space_global, dst, map,
                                    coords, bar);
}

// ---- the kernel ---------------------------------------------------------------------------------

template <typename T, typename Cfg>
__global__ void __launch_bounds__(Cfg::kThreads, 1)
    HopperForwardKernel(const __grid_constant__ CUtensorMap map_q,
                        const __grid_constant__ CUtensorMap map_k,
                        const __grid_constant__ CUtensorMap map_v, const AttentionArgs args,
                        const HopperFlags flags) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int kD = Cfg::kD;
  constexpr int kBc = Cfg::kBc;
  constexpr int kBr = Cfg::kBr;
  constexpr int kStages = Cfg::kStages;
  constexpr int kPanels = Cfg::kPanels;
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) &
                                             ~static_cast<uintptr_t>(1023));
  uint8_t* smem_q = smem;
  uint8_t* smem_k = smem + Cfg::kQBytes;
  uint8_t* smem_v = smem_k + kStages * Cfg::kKVBytes;
  uint64_t* bars = reinterpret_cast<uint64_t*>(smem + Cfg::kBarrierOffset);
  uint64_t* q_full = bars;
  uint64_t* k_full = bars + 1;
  uint64_t* v_full = k_full + kStages;
  uint64_t* k_empty = v_full + kStages;
  uint64_t* v_empty = k_empty + kStages;
  uint64_t* q_empty = v_empty + kStages;

  // Work items: query tiles of kBr rows of one (batch, output head), numbered query tile
  // fastest and heaviest (last) causal tile first, then heads, then batch. Blocks take items
  // gridDim.x apart: one each when the grid covers them all, several in a persistent launch,
  // where the producer loads the next item's Q and K/V while the consumers finish this one.
  const int64_t qtiles = (args.seq_q + kBr - 1) / kBr;
  const int64_t items = qtiles * args.heads_out * args.batch;
  struct Item {
    int64_t q0;
    int h, b, q_head, kv_head;
    int t_begin, t_end;  // kept K/V tiles
  };
  auto item_of = [&](int64_t index) {
    Item it;
    it.q0 = (qtiles - 1 - index % qtiles) * kBr;
    it.h = static_cast<int>((index / qtiles) % args.heads_out);
    it.b = static_cast<int>(index / (qtiles * args.heads_out));
    it.q_head = args.head_map[2 * it.h];
    it.kv_head = args.head_map[2 * it.h + 1];
    const int64_t q_last = (it.q0 + kBr < args.seq_q ? it.q0 + kBr : args.seq_q) - 1;
    int64_t kv_lo = 0;
    int64_t kv_hi = args.seq_kv;  // exclusive
    if (flags.left >= 0) kv_lo = it.q0 + args.offset - flags.left;
    if (flags.right >= 0) kv_hi = q_last + args.offset + flags.right + 1;
    if (kv_lo < 0) kv_lo = 0;
    if (kv_hi > args.seq_kv) kv_hi = args.seq_kv;
    it.t_begin = static_cast<int>(kv_lo / kBc);
    it.t_end = kv_hi > kv_lo ? static_cast<int>((kv_hi + kBc - 1) / kBc) : it.t_begin;
    return it;
  };

  const int warpgroup = threadIdx.x / 128;
  if (threadIdx.x == 0) {
    ::cuda::ptx::mbarrier_init(q_full, 1);
    ::cuda::ptx::mbarrier_init(q_empty, 4 * Cfg::kConsumers);  // lane 0 of each consumer warp
    for (int s = 0; s < kStages; ++s) {
      ::cuda::ptx::mbarrier_init(&k_full[s], 1);
      ::cuda::ptx::mbarrier_init(&v_full[s], 1);
      ::cuda::ptx::mbarrier_init(&k_empty[s], 4 * Cfg::kConsumers);
      ::cuda::ptx::mbarrier_init(&v_empty[s], 4 * Cfg::kConsumers);
    }
    ::cuda::ptx::fence_mbarrier_init(::cuda::ptx::sem_release, ::cuda::ptx::scope_cluster);
  }
  __syncthreads();

  if (warpgroup == 0) {
    // ---- producer ----
    asm volatile("setmaxnreg.dec.sync.aligned.u32 24;\n");
    if (threadIdx.x == 0) {
      int64_t n = 0;  // K/V tiles loaded so far, over all items: picks the stage and phase
      int round = 0;  // items so far
      for (int64_t index = blockIdx.x; index < items; index += gridDim.x, ++round) {
        const Item it = item_of(index);
        // Q's buffer is free once both consumers have finished the previous item's Q K^T.
        if (round > 0) WaitBarrier(q_empty, (round - 1) & 1);
        ::cuda::ptx::mbarrier_arrive_expect_tx(::cuda::ptx::sem_release, ::cuda::ptx::scope_cta,
                                               ::cuda::ptx::space_shared, q_full, Cfg::kQBytes);
        for (int p = 0; p < kPanels; ++p) {
          LoadPanel(smem_q + p * kBr * 128, &map_q, 64 * p, it.q_head, static_cast<int>(it.q0),
                    it.b, q_full);
        }
        for (int t = it.t_begin; t < it.t_end; ++t, ++n) {
          const int stage = static_cast<int>(n % kStages);
          const uint32_t parity = ((n / kStages) & 1) ^ 1;  // the previous round's phase
          if (n >= kStages) WaitBarrier(&k_empty[stage], parity);
          ::cuda::ptx::mbarrier_arrive_expect_tx(::cuda::ptx::sem_release, ::cuda::ptx::scope_cta,
                                                 ::cuda::ptx::space_shared, &k_full[stage],
                                                 Cfg::kKVBytes);
          for (int p = 0; p < kPanels; ++p) {
            LoadPanel(smem_k + stage * Cfg::kKVBytes + p * kBc * 128, &map_k, 64 * p, it.kv_head,
                      t * kBc, it.b, &k_full[stage]);
          }
          if (n >= kStages) WaitBarrier(&v_empty[stage], parity);
          ::cuda::ptx::mbarrier_arrive_expect_tx(::cuda::ptx::sem_release, ::cuda::ptx::scope_cta,
                                                 ::cuda::ptx::space_shared, &v_full[stage],
                                                 Cfg::kKVBytes);
          for (int p = 0; p < kPanels; ++p) {
            LoadPanel(smem_v + stage * Cfg::kKVBytes + p * kBc * 128, &map_v, 64 * p, it.kv_head,
                      t * kBc, it.b, &v_full[stage]);
          }
        }
      }
    }
  } else {
    // ---- consumers ----
    asm volatile("setmaxnreg.inc.sync.aligned.u32 240;\n");
    const int consumer = warpgroup - 1;
    const int warp = (threadIdx.x / 32) % 4;
    const int lane = threadIdx.x % 32;
    const int g = lane / 4;
    const int t4 = lane % 4;
    // Per item: positions i' of this thread's two rows, and the first/last of its warpgroup's 64.
    int64_t row0 = 0, pos0 = 0, pos1 = 0, wg_first_pos = 0, wg_last_pos = 0;
    float o[kD / 2];
    float m0, m1, l0, l1;
    const uint32_t q_addr = flash::SmemAddr(smem_q) + consumer * 64 * 128;
    const uint32_t k_addr = flash::SmemAddr(smem_k);
    const uint32_t v_addr = flash::SmemAddr(smem_v);

    // S = Q K^T for the tile in `stage` (asynchronous; committed as one group).
    auto issue_s = [&](float(&s)[kBc / 2], int stage) {
      WgmmaFence();
#pragma unroll
      for (int kk = 0; kk < kD / 16; ++kk) {
        const uint32_t panel = kk / 4;
        const uint32_t offset = (kk % 4) * 32;
        const uint64_t da = Descriptor(q_addr + panel * kBr * 128 + offset, 16, 1024);
        const uint64_t db =
            Descriptor(k_addr + stage * Cfg::kKVBytes + panel * kBc * 128 + offset, 16, 1024);
        Wgmma<kBc, T>::SS(s, da, db, kk > 0 ? 1 : 0);
      }
      WgmmaCommit();
    };
    // O += P V for the tile in `stage` (asynchronous).
    auto issue_pv = [&](uint32_t(&p)[kBc / 16][4], int stage) {
      FenceRegs(p);
      WgmmaFence();
#pragma unroll
      for (int kk = 0; kk < kBc / 16; ++kk) {
        const uint64_t db =
            Descriptor(v_addr + stage * Cfg::kKVBytes + kk * 16 * 128, kBc * 128, 1024);
        Wgmma<kD, T>::RS(o, p[kk], db, 1);
      }
      WgmmaCommit();
    };
    // Masks tile t's scores, updates the running max and sum, and leaves exp2 of the scaled,
    // shifted scores in s; alpha is how much the rows' earlier output must shrink.
    auto softmax = [&](float(&s)[kBc / 2], int t, float& alpha0, float& alpha1) {
      const int64_t j0 = static_cast<int64_t>(t) * kBc;
      const bool cut_right = flags.right >= 0 && j0 + kBc - 1 > wg_first_pos + flags.right;
      const bool cut_left = flags.left >= 0 && j0 < wg_last_pos - flags.left;
      if (cut_right || cut_left || j0 + kBc > args.seq_kv) {
#pragma unroll
        for (int n = 0; n < kBc / 8; ++n) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int64_t j = j0 + 8 * n + 2 * t4 + (e & 1);
            const int64_t pos = e < 2 ? pos0 : pos1;
            const bool keep = j < args.seq_kv && (flags.right < 0 || j <= pos + flags.right) &&
                              (flags.left < 0 || j >= pos - flags.left);
            if (!keep) s[4 * n + e] = -INFINITY;
          }
        }
      }
      // A quad of threads shares a row.
      float mx0 = m0, mx1 = m1;
#pragma unroll
      for (int n = 0; n < kBc / 8; ++n) {
        mx0 = fmaxf(mx0, fmaxf(s[4 * n], s[4 * n + 1]));
        mx1 = fmaxf(mx1, fmaxf(s[4 * n + 2], s[4 * n + 3]));
      }
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffff, mx0, 1));
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffff, mx0, 2));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffff, mx1, 1));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffff, mx1, 2));
      // A row with no kept key yet keeps max -inf; subtracting 0 then gives p = 0, not NaN.
      const float base0 = mx0 == -INFINITY ? 0.f : mx0 * flags.exp_scale;
      const float base1 = mx1 == -INFINITY ? 0.f : mx1 * flags.exp_scale;
      alpha0 = flash::FastExp2(m0 * flags.exp_scale - base0);
      alpha1 = flash::FastExp2(m1 * flags.exp_scale - base1);
      m0 = mx0;
      m1 = mx1;
      float sum0 = 0.f, sum1 = 0.f;
#pragma unroll
      for (int n = 0; n < kBc / 8; ++n) {
        s[4 * n] = flash::FastExp2(fmaf(s[4 * n], flags.exp_scale, -base0));
        s[4 * n + 1] = flash::FastExp2(fmaf(s[4 * n + 1], flags.exp_scale, -base0));
        s[4 * n + 2] = flash::FastExp2(fmaf(s[4 * n + 2], flags.exp_scale, -base1));
        s[4 * n + 3] = flash::FastExp2(fmaf(s[4 * n + 3], flags.exp_scale, -base1));
        sum0 += s[4 * n] + s[4 * n + 1];
        sum1 += s[4 * n + 2] + s[4 * n + 3];
      }
      l0 = l0 * alpha0 + sum0;
      l1 = l1 * alpha1 + sum1;
    };
    // P in the A-fragment layout of wgmma (that of mma.m16n8k16 for each warp's 16 rows).
    auto pack = [&](const float(&s)[kBc / 2], uint32_t(&p)[kBc / 16][4]) {
#pragma unroll
      for (int kk = 0; kk < kBc / 16; ++kk) {
        p[kk][0] = flash::Pack2<T>(s[8 * kk], s[8 * kk + 1]);
        p[kk][1] = flash::Pack2<T>(s[8 * kk + 2], s[8 * kk + 3]);
        p[kk][2] = flash::Pack2<T>(s[8 * kk + 4], s[8 * kk + 5]);
        p[kk][3] = flash::Pack2<T>(s[8 * kk + 6], s[8 * kk + 7]);
      }
    };
    auto rescale = [&](float alpha0, float alpha1) {
#pragma unroll
      for (int n = 0; n < kD / 8; ++n) {
        o[4 * n] *= alpha0;
        o[4 * n + 1] *= alpha0;
        o[4 * n + 2] *= alpha1;
        o[4 * n + 3] *= alpha1;
      }
    };
    // The two consumers take turns on the tensor cores (FlashAttention-3's ping-pong): each
    // issues its GEMMs between waiting on its own named barrier and arriving on the other's,
    // so one warpgroup's softmax runs while the other's GEMMs do.
    const int my_turn = 1 + consumer;
    const int their_turn = 2 - consumer;
    auto wait_turn = [&] { asm volatile("bar.sync %0, 256;\n" ::"r"(my_turn) : "memory"); };
    auto pass_turn = [&] { asm volatile("bar.arrive %0, 256;\n" ::"r"(their_turn) : "memory"); };
    if (consumer == 1) pass_turn();  // consumer 0 goes first

    int64_t n = 0;  // K/V tiles consumed so far, over all items
    int round = 0;
    for (int64_t index = blockIdx.x; index < items; index += gridDim.x, ++round) {
      const Item it = item_of(index);
      const int64_t wg_row0 = it.q0 + 64 * consumer;
      row0 = wg_row0 + 16 * warp + g;
      pos0 = row0 + args.offset;
      pos1 = pos0 + 8;
      wg_first_pos = wg_row0 + args.offset;
      wg_last_pos = wg_first_pos + 63;
#pragma unroll
      for (int i = 0; i < kD / 2; ++i) o[i] = 0.f;
      m0 = m1 = -INFINITY;
      l0 = l1 = 0.f;
      auto release_q = [&] {
        if (lane == 0) ::cuda::ptx::mbarrier_arrive(q_empty);
      };

      WaitBarrier(q_full, round & 1);
      uint32_t p[kBc / 16][4];
      float alpha0 = 1.f, alpha1 = 1.f;
      if (it.t_begin < it.t_end) {
        const int stage = static_cast<int>(n % kStages);
        float s[kBc / 2];
        WaitBarrier(&k_full[stage], (n / kStages) & 1);
        wait_turn();
        issue_s(s, stage);
        pass_turn();
        WgmmaWait<0>();
        FenceRegs(s);
        if (lane == 0) ::cuda::ptx::mbarrier_arrive(&k_empty[stage]);
        if (it.t_begin + 1 == it.t_end) release_q();
        softmax(s, it.t_begin, alpha0, alpha1);
        pack(s, p);
      } else {
        release_q();
      }
      // Tile i's S = Q K^T is issued together with tile i - 1's O += P V; S's softmax then
      // overlaps the PV still running.
      for (int t = it.t_begin + 1; t < it.t_end; ++t) {
        const int64_t i = n + (t - it.t_begin);
        const int stage = static_cast<int>(i % kStages);
        const int prev = static_cast<int>((i - 1) % kStages);
        float s[kBc / 2];
        WaitBarrier(&k_full[stage], (i / kStages) & 1);
        wait_turn();
        issue_s(s, stage);
        rescale(alpha0, alpha1);
        WaitBarrier(&v_full[prev], ((i - 1) / kStages) & 1);
        issue_pv(p, prev);
        pass_turn();
        WgmmaWait<1>();
        FenceRegs(s);
        if (lane == 0) ::cuda::ptx::mbarrier_arrive(&k_empty[stage]);
        if (t + 1 == it.t_end) release_q();
        softmax(s, t, alpha0, alpha1);
        WgmmaWait<0>();
        FenceRegs(o);
        FenceRegs(p);
        if (lane == 0) ::cuda::ptx::mbarrier_arrive(&v_empty[prev]);
        pack(s, p);
      }
      if (it.t_begin < it.t_end) {
        const int64_t i = n + (it.t_end - 1 - it.t_begin);
        const int last = static_cast<int>(i % kStages);
        rescale(alpha0, alpha1);
        WaitBarrier(&v_full[last], (i / kStages) & 1);
        issue_pv(p, last);
        WgmmaWait<0>();
        FenceRegs(o);
        if (lane == 0) ::cuda::ptx::mbarrier_arrive(&v_empty[last]);
      }
      n += it.t_end - it.t_begin;

      // Epilogue: O / l straight from the accumulators, two elements per store.
      l0 += __shfl_xor_sync(0xffffffff, l0, 1);
      l0 += __shfl_xor_sync(0xffffffff, l0, 2);
      l1 += __shfl_xor_sync(0xffffffff, l1, 1);
      l1 += __shfl_xor_sync(0xffffffff, l1, 2);
      const float inv0 = l0 > 0.f ? 1.f / l0 : 0.f;
      const float inv1 = l1 > 0.f ? 1.f / l1 : 0.f;
      T* out = static_cast<T*>(args.o);
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int64_t row = row0 + 8 * r;
        if (row >= args.seq_q) continue;
        const float inv = r == 0 ? inv0 : inv1;
        uint32_t* dst = reinterpret_cast<uint32_t*>(
            out + RowOffset(it.b, args.seq_q, row, args.heads_out, it.h, kD) + 2 * t4);
#pragma unroll
        for (int c = 0; c < kD / 8; ++c) {
          dst[4 * c] = flash::Pack2<T>(o[4 * c + 2 * r] * inv, o[4 * c + 2 * r + 1] * inv);
        }
      }
    }
    // Balance the turn barriers: consumer 1's last pass is still pending on consumer 0's.
    if (consumer == 0) wait_turn();
  }
#endif  // __CUDA_ARCH_FEAT_SM90_ALL
}

}  // namespace attnbench::cuda::hopper

#endif  // ATTNBENCH_KERNELS_CUDA_FLASH_HOPPER_CUH_
