// The fused attention forward for Hopper (sm_90a), assembled from parts in the manner of
// FlashAttention-3's hopper/ folder: a tile scheduler and the mask's tile walk (scheduler.cuh), a
// warp-specialized mainloop (this file: a TMA producer warpgroup and two wgmma consumer
// warpgroups), a mask policy (tile_mask.cuh), a score-modifier policy (common/score_mods.cuh), RoPE
// of the Q tiles (rope_sm90.cuh; K arrives rotated by a pre-pass), the online softmax shared with
// the sm_80 kernel (common/softmax.cuh), and an epilogue. The compile-time shape is Sm90Config
// (sm90_config.cuh); the policies are template parameters, so a plain request runs code with no
// trace of the others. Client expressions (score_mod, mask_mod) are one more policy, instantiated
// only by cuda_flash's NVRTC build (flash_rtc.h, common/expr_hooks.cuh).
//
// Threads: 3 warpgroups (384). Warpgroup 0 produces: one thread issues every TMA copy (Q once per
// work item, K and V per tile, one copy per column panel) onto mbarriers; with RoPE, its warps
// 1-3 rotate each Q tile in shared memory once it lands (K was rotated by RotateKeys). Warpgroups 1
// and 2 consume, each owning 64 of the tile's 128 query rows.
//
// Pipeline: the producer runs up to kStages K/V tiles ahead; K and V have separate barriers, so
// the next K can land while the consumers still multiply by the current V. Consumer, per tile i
// after the first: wait for K_i; take its turn on the tensor cores (the two consumers alternate
// through named barriers: FlashAttention-3's ping-pong); issue S_i = Q K_i^T (wgmma SS), rescale
// O, issue O += P_{i-1} V_{i-1} (wgmma RS, V read MN-major), pass the turn; wait for S_i and
// release K_i's stage (and Q after the item's last tile); modifiers, mask and online softmax,
// overlapping the PV still running; wait for it, release V_{i-1}, round P_i to 16 bits in
// registers in the A-fragment layout. Epilogue: O / l, written from registers.
#ifndef ATTNBENCH_KERNELS_CUDA_FLASH_KERNEL_SM90_CUH_
#define ATTNBENCH_KERNELS_CUDA_FLASH_KERNEL_SM90_CUH_

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cuda/ptx>

#include "kernels/cuda/common/attention_args.h"
#include "kernels/cuda/common/expr_hooks.cuh"
#include "kernels/cuda/common/ptx.cuh"
#include "kernels/cuda/common/score_mods.cuh"
#include "kernels/cuda/common/softmax.cuh"
#include "kernels/cuda/common/storage.cuh"
#include "kernels/cuda/flash/rope_sm90.cuh"
#include "kernels/cuda/flash/scheduler.cuh"
#include "kernels/cuda/flash/sm90_config.cuh"
#include "kernels/cuda/flash/tile_mask.cuh"
#include "kernels/cuda/flash/wgmma.cuh"

namespace attnbench::cuda::flash {

// The policies one kernel is compiled with. Expr: client expressions (common/expr_hooks.cuh), set
// only by cuda_flash's NVRTC build; a mask_mod walks tile lists (kTileList) built from its tile
// classes, and tests mask_mod only in the tiles they mark partial. kPolyExp2Of4: the softmax's
// exp2 split (SoftmaxStep), -1 for the table's choice (Sm90PolyExp2Of4, configs.h).
template <int kMods_, bool kRope_, bool kTileList_, bool kPackedTanh_ = kSm90PackedTanh,
          typename Expr_ = NoExpressions, int kPolyExp2Of4_ = -1>
struct Sm90Policy {
  static constexpr int kMods = kMods_;               // ScoreModBits
  static constexpr bool kRope = kRope_;              // RoPE rotation of the Q tiles
  static constexpr bool kTileList = kTileList_;      // block-sparse tile lists, else an interval
  static constexpr bool kPackedTanh = kPackedTanh_;  // softcap's tanh (FragmentScoreMods)
  static constexpr int kPolyExp2Of4 = kPolyExp2Of4_;
  using Expr = Expr_;
  static_assert(!Expr::kMaskMod || kTileList, "a mask_mod's tiles come from tile lists");
};

// A wgmma shared-memory matrix descriptor (PTX ISA "matrix descriptor"): start address, leading
// and stride byte offsets, swizzle mode. K-major operands (Q, K): `stride` steps between 8-row
// groups, `leading` is unused; the MN-major V: `leading` steps between column panels.
template <typename Layout>
__device__ __forceinline__ uint64_t Descriptor(uint32_t smem_addr, uint32_t leading) {
  uint64_t desc = (smem_addr & 0x3FFFF) >> 4;
  desc |= static_cast<uint64_t>((leading >> 4) & 0x3FFF) << 16;
  desc |= static_cast<uint64_t>((Layout::kGroupBytes >> 4) & 0x3FFF) << 32;
  desc |= Layout::kDescriptorMode << 62;
  return desc;
}

// One TMA copy of a column panel: box (panel, 1 head, rows, 1 batch) at the coordinates.
__device__ __forceinline__ void LoadPanel(void* dst, const CUtensorMap* map, int col, int head,
                                          int row, int batch, uint64_t* bar) {
  const int32_t coords[4] = {col, head, row, batch};
  ::cuda::ptx::cp_async_bulk_tensor(::cuda::ptx::space_cluster, ::cuda::ptx::space_global, dst, map,
                                    coords, bar);
}

__device__ __forceinline__ void ExpectBytes(uint64_t* bar, uint32_t bytes) {
  ::cuda::ptx::mbarrier_arrive_expect_tx(::cuda::ptx::sem_release, ::cuda::ptx::scope_cta,
                                         ::cuda::ptx::space_shared, bar, bytes);
}

template <typename T, typename Cfg, typename Policy>
__global__ void __launch_bounds__(Cfg::kThreads, 1)
    Sm90ForwardKernel(const __grid_constant__ CUtensorMap map_q,
                      const __grid_constant__ CUtensorMap map_k,
                      const __grid_constant__ CUtensorMap map_v, const AttentionArgs args) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int kDqk = Cfg::kDqk;
  constexpr int kDv = Cfg::kDv;
  constexpr int kBc = Cfg::kBc;
  constexpr int kBr = Cfg::kBr;
  constexpr int kStages = Cfg::kStages;
  using QK = typename Cfg::QK;
  using VL = typename Cfg::V;
  constexpr bool kRope = Policy::kRope;
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) &
                                             ~static_cast<uintptr_t>(1023));
  uint8_t* smem_q = smem;
  uint8_t* smem_k = smem + Cfg::kKOffset;
  uint8_t* smem_v = smem + Cfg::kVOffset;
  uint64_t* bars = reinterpret_cast<uint64_t*>(smem + Cfg::kBarrierOffset);
  uint64_t* q_full = bars;
  uint64_t* q_empty = bars + 1;
  uint64_t* q_raw = bars + 2;  // RoPE: Q landed, not yet rotated
  uint64_t* k_full = bars + 3;
  uint64_t* v_full = k_full + kStages;
  uint64_t* k_empty = v_full + kStages;
  uint64_t* v_empty = k_empty + kStages;

  const TileScheduler<kBr> sched(args);
  const int warpgroup = threadIdx.x / 128;
  if (threadIdx.x == 0) {
    // Q is ready when the rotating threads have arrived under RoPE, the one TMA thread otherwise.
    ::cuda::ptx::mbarrier_init(q_full, kRope ? Cfg::kRopeThreads : 1);
    ::cuda::ptx::mbarrier_init(q_empty, 4 * Cfg::kConsumers);  // lane 0 of each consumer warp
    ::cuda::ptx::mbarrier_init(q_raw, 1);
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
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(Cfg::kProducerRegs));
    if (threadIdx.x == 0) {
      int64_t n = 0;  // K/V tiles loaded so far, over all items: picks the stage and phase
      int round = 0;  // items so far
      for (int64_t index = blockIdx.x; index < sched.items; index += gridDim.x, ++round) {
        const WorkItem it = sched.Item(args, index);
        const TileWalk<Policy::kTileList, kBr, kBc> walk(args, it, sched.qtiles);
        // Q's buffer is free once both consumers have finished the previous item's Q K^T.
        if (round > 0) WaitBarrier(q_empty, (round - 1) & 1);
        uint64_t* q_bar = kRope ? q_raw : q_full;
        ExpectBytes(q_bar, Cfg::kQBytes);
        for (int p = 0; p < QK::kPanels; ++p) {
          LoadPanel(smem_q + p * kBr * QK::kSwizzleBytes, &map_q, QK::kPanel * p, it.q_head,
                    static_cast<int>(it.q0), it.b, q_bar);
        }
        for (int k = 0; k < walk.count; ++k, ++n) {
          const int t = walk.Tile(k);
          const int stage = static_cast<int>(n % kStages);
          const uint32_t parity = ((n / kStages) & 1) ^ 1;  // the previous round's phase
          if (n >= kStages) WaitBarrier(&k_empty[stage], parity);
          ExpectBytes(&k_full[stage], Cfg::kKBytes);
          for (int p = 0; p < QK::kPanels; ++p) {
            LoadPanel(smem_k + stage * Cfg::kKBytes + p * kBc * QK::kSwizzleBytes, &map_k,
                      QK::kPanel * p, it.kv_head, t * kBc, it.b, &k_full[stage]);
          }
          if (n >= kStages) WaitBarrier(&v_empty[stage], parity);
          ExpectBytes(&v_full[stage], Cfg::kVBytes);
          for (int p = 0; p < VL::kPanels; ++p) {
            LoadPanel(smem_v + stage * Cfg::kVBytes + p * kBc * VL::kSwizzleBytes, &map_v,
                      VL::kPanel * p, it.kv_head, t * kBc, it.b, &v_full[stage]);
          }
        }
      }
    } else if constexpr (kRope) {
      if (threadIdx.x >= 32) {
        // Warps 1-3: rotate each item's Q tile once it lands, then mark it ready.
        const RopeLane lane(args, threadIdx.x - 32, Cfg::kRopeThreads);
        int round = 0;
        for (int64_t index = blockIdx.x; index < sched.items; index += gridDim.x, ++round) {
          const WorkItem it = sched.Item(args, index);
          WaitBarrier(q_raw, round & 1);
          const int q_rows = static_cast<int>(args.seq_q - it.q0 < kBr ? args.seq_q - it.q0 : kBr);
          RotateTile<T, QK, kBr>(smem_q, args, lane, it.q0 + args.offset, q_rows);
          FenceProxyAsyncShared();
          ::cuda::ptx::mbarrier_arrive(q_full);
        }
      }
    }
  } else {
    // ---- consumers ----
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(Cfg::kConsumerRegs));
    const int consumer = warpgroup - 1;
    const int warp = (threadIdx.x / 32) % 4;
    const int lane = threadIdx.x % 32;
    const int t4 = lane % 4;
    float o[kDv / 2];
    SoftmaxRows rows;
    TileRows where{};
    // This consumer's 64 rows in every Q panel.
    const uint32_t q_addr = SmemAddr(smem_q) + consumer * 64 * QK::kSwizzleBytes;
    const uint32_t k_addr = SmemAddr(smem_k);
    const uint32_t v_addr = SmemAddr(smem_v);

    // S = Q K^T for the tile in `stage` (asynchronous; committed as one group).
    auto issue_s = [&](float(&s)[kBc / 2], int stage) {
      WgmmaFence();
#pragma unroll
      for (int kk = 0; kk < kDqk / 16; ++kk) {
        constexpr int kSteps = QK::kPanel / 16;      // k-steps per panel
        const uint32_t offset = (kk % kSteps) * 32;  // 16 elements a k-step
        const uint32_t panel = kk / kSteps;
        const uint64_t da = Descriptor<QK>(q_addr + panel * kBr * QK::kSwizzleBytes + offset, 16);
        const uint64_t db = Descriptor<QK>(
            k_addr + stage * Cfg::kKBytes + panel * kBc * QK::kSwizzleBytes + offset, 16);
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
        const uint64_t db = Descriptor<VL>(
            v_addr + stage * Cfg::kVBytes + kk * 16 * VL::kSwizzleBytes, kBc * VL::kSwizzleBytes);
        Wgmma<kDv, T>::RS(o, p[kk], db, 1);
      }
      WgmmaCommit();
    };
    // Modifiers, mask and the online softmax of tile k's scores; leaves the probabilities in s.
    using Mods = FragmentScoreMods<Policy::kMods, Policy::kPackedTanh>;
    auto softmax = [&](float(&s)[kBc / 2], const Mods& mods, const WorkItem& it, int64_t j0,
                       bool partial, float(&alpha)[2]) {
      const int64_t jl = j0 + 2 * t4;
      if constexpr (Policy::kMods != kModsNone) {
        const float rel[2] = {static_cast<float>(jl - where.pos[0]),
                              static_cast<float>(jl - where.pos[1])};
        mods.template Apply<kBc / 8>(s, rel);
      }
      // Client expressions (NVRTC builds only; compiled out otherwise).
      using Expr = typename Policy::Expr;
      [[maybe_unused]] auto place = [&] {
        return FragmentPlace{it.b, it.h, it.q_head, it.kv_head, {where.pos[0], where.pos[1]}, jl};
      };
      [[maybe_unused]] auto aux = [&] {
        return static_cast<const ExpressionArgs*>(args.expressions)->aux;
      };
      if constexpr (Expr::kScoreMod) {
        ScoreModFragment<Expr, kBc / 8>(s, ScoreUnit(mods, args), place(), aux());
      }
      MaskTile<Policy::kTileList, kBc>(s, args, where, it.b, it.h, j0, jl, partial);
      if constexpr (Expr::kMaskMod) {
        if (partial) MaskModFragment<Expr, kBc / 8>(s, place(), aux());
      }
      const float exp_scale = Expr::kScoreMod ? kLog2e : mods.exp_scale;
      constexpr int kPoly = Policy::kPolyExp2Of4 >= 0
                                ? Policy::kPolyExp2Of4
                                : Sm90PolyExp2Of4(Cfg::kShape, (Policy::kMods & kModsSoftcap) != 0);
      SoftmaxStep<kBc / 8, kPoly>(s, rows, exp_scale, alpha, [&](int n, int r, float p0, float p1) {
        s[4 * n + 2 * r] = p0;
        s[4 * n + 2 * r + 1] = p1;
      });
    };
    // P in the A-fragment layout of wgmma (that of mma.m16n8k16 for each warp's 16 rows).
    auto pack = [&](const float(&s)[kBc / 2], uint32_t(&p)[kBc / 16][4]) {
#pragma unroll
      for (int kk = 0; kk < kBc / 16; ++kk) {
        p[kk][0] = Pack2<T>(s[8 * kk], s[8 * kk + 1]);
        p[kk][1] = Pack2<T>(s[8 * kk + 2], s[8 * kk + 3]);
        p[kk][2] = Pack2<T>(s[8 * kk + 4], s[8 * kk + 5]);
        p[kk][3] = Pack2<T>(s[8 * kk + 6], s[8 * kk + 7]);
      }
    };
    auto rescale = [&](const float(&alpha)[2]) {
#pragma unroll
      for (int n = 0; n < kDv / 8; ++n) {
        o[4 * n] *= alpha[0];
        o[4 * n + 1] *= alpha[0];
        o[4 * n + 2] *= alpha[1];
        o[4 * n + 3] *= alpha[1];
      }
    };
    // The two consumers take turns on the tensor cores (FlashAttention-3's ping-pong): each
    // issues its GEMMs between waiting on its own named barrier and arriving on the other's, so
    // one warpgroup's softmax runs while the other's GEMMs do.
    const int my_turn = 1 + consumer;
    const int their_turn = 2 - consumer;
    auto wait_turn = [&] { NamedBarrierSync(my_turn, 256); };
    auto pass_turn = [&] { NamedBarrierArrive(their_turn, 256); };
    if (consumer == 1) pass_turn();  // consumer 0 goes first

    int64_t n = 0;  // K/V tiles consumed so far, over all items
    int round = 0;
    for (int64_t index = blockIdx.x; index < sched.items; index += gridDim.x, ++round) {
      const WorkItem it = sched.Item(args, index);
      const TileWalk<Policy::kTileList, kBr, kBc> walk(args, it, sched.qtiles);
      const Mods mods(args, it.h);
      const int64_t wg_row0 = it.q0 + 64 * consumer;
      where.row[0] = wg_row0 + 16 * warp + lane / 4;
      where.row[1] = where.row[0] + 8;
      where.pos[0] = where.row[0] + args.offset;
      where.pos[1] = where.row[1] + args.offset;
      where.first_pos = wg_row0 + args.offset;
      where.last_pos = where.first_pos + 63;
#pragma unroll
      for (int i = 0; i < kDv / 2; ++i) o[i] = 0.f;
      rows = SoftmaxRows();
      auto release_q = [&] {
        if (lane == 0) ::cuda::ptx::mbarrier_arrive(q_empty);
      };

      WaitBarrier(q_full, round & 1);
      uint32_t p[kBc / 16][4];
      float alpha[2] = {1.f, 1.f};
      if (walk.count > 0) {
        const int stage = static_cast<int>(n % kStages);
        float s[kBc / 2];
        WaitBarrier(&k_full[stage], (n / kStages) & 1);
        wait_turn();
        issue_s(s, stage);
        pass_turn();
        WgmmaWait<0>();
        FenceRegs(s);
        if (lane == 0) ::cuda::ptx::mbarrier_arrive(&k_empty[stage]);
        if (walk.count == 1) release_q();
        softmax(s, mods, it, static_cast<int64_t>(walk.Tile(0)) * kBc, walk.Partial(0), alpha);
        pack(s, p);
      } else {
        release_q();
      }
      // Tile k's S = Q K^T is issued together with tile k - 1's O += P V; S's softmax then
      // overlaps the PV still running.
      for (int k = 1; k < walk.count; ++k) {
        const int64_t i = n + k;
        const int stage = static_cast<int>(i % kStages);
        const int prev = static_cast<int>((i - 1) % kStages);
        float s[kBc / 2];
        WaitBarrier(&k_full[stage], (i / kStages) & 1);
        wait_turn();
        issue_s(s, stage);
        rescale(alpha);
        WaitBarrier(&v_full[prev], ((i - 1) / kStages) & 1);
        issue_pv(p, prev);
        pass_turn();
        WgmmaWait<1>();
        FenceRegs(s);
        if (lane == 0) ::cuda::ptx::mbarrier_arrive(&k_empty[stage]);
        if (k + 1 == walk.count) release_q();
        softmax(s, mods, it, static_cast<int64_t>(walk.Tile(k)) * kBc, walk.Partial(k), alpha);
        WgmmaWait<0>();
        FenceRegs(o);
        FenceRegs(p);
        if (lane == 0) ::cuda::ptx::mbarrier_arrive(&v_empty[prev]);
        pack(s, p);
      }
      if (walk.count > 0) {
        const int64_t i = n + walk.count - 1;
        const int last = static_cast<int>(i % kStages);
        rescale(alpha);
        WaitBarrier(&v_full[last], (i / kStages) & 1);
        issue_pv(p, last);
        WgmmaWait<0>();
        FenceRegs(o);
        if (lane == 0) ::cuda::ptx::mbarrier_arrive(&v_empty[last]);
      }
      n += walk.count;

      // Epilogue: O / l straight from the accumulators, two elements per store; columns past a
      // padded D_v are not stored.
      float inv[2];
      FinishRows(rows, inv);
      T* out = static_cast<T*>(args.o);
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        if (where.row[r] >= args.seq_q) continue;
        T* dst = out + RowOffset(it.b, args.seq_q, where.row[r], args.heads_out, it.h, args.dim_v) +
                 2 * t4;
#pragma unroll
        for (int c = 0; c < kDv / 8; ++c) {
          if (8 * c + 2 * t4 < args.dim_v) {
            *reinterpret_cast<uint32_t*>(dst + 8 * c) =
                Pack2<T>(o[4 * c + 2 * r] * inv[r], o[4 * c + 2 * r + 1] * inv[r]);
          }
        }
      }
    }
    // Balance the turn barriers: consumer 1's last pass is still pending on consumer 0's.
    if (consumer == 0) wait_turn();
  }
#endif  // __CUDA_ARCH_FEAT_SM90_ALL
}

}  // namespace attnbench::cuda::flash

#endif  // ATTNBENCH_KERNELS_CUDA_FLASH_KERNEL_SM90_CUH_
