// cuda_flash's mma.sync kernel (sm_80 and newer), the FlashAttention-2 forward: one thread block
// computes a tile of kBr query rows of one (batch, output head) against every K/V tile that the
// mask keeps, with the online softmax (common/softmax.cuh, shared with the Hopper kernel), so
// scores and probabilities never leave the chip. launch_sm80.cu picks a row of kSm80Tiles
// (configs.h) per head dim and launches it; this header holds the template only, so a benchmark
// driver can instantiate other configurations to compare.
//
// Tiles and work split (per thread block, Cfg = FlashConfig<...>):
//   - kWarps warps, each owning kM m-tiles of 16 query rows: kBr = 16 * kM * kWarps (128 in the
//     shipped configs). Every warp reads the whole K/V tile, so warps never exchange softmax
//     state. kM = 2 (32 rows a warp) lets each K/V fragment read from shared memory feed two
//     mmas: with 16 rows a warp the ldmatrix traffic, not the tensor cores, bounded the loop
//     (measured on an H100: 220 -> 257 TFLOP/s at D = 64); kM = 1 where registers run out.
//   - K/V tiles of kBc keys (32 to 128, smaller for large head dims to stay within registers).
//   - Shared memory: the Q tile [kBr][kD], two K stages [kBc][kD] and two V stages [kBc][kDv],
//     each row padded by 16 bytes so that the 8 row addresses of one ldmatrix phase fall in
//     different bank groups (the padding works for every head dim; an XOR swizzle does not fit
//     rows of 96 elements). The Q region is reused to stage the output tile at the end.
//
// Pipeline (double-buffered, one K/V tile ahead):
//   prologue: cp.async Q and the first kept K/V tile into stage 0.
//   per kept tile t: issue cp.async of the next kept tile into the other stage, wait for tile t,
//     barrier (kOneBarrier: wait for tile t, one barrier that also frees the other stage, then
//     issue the next tile's copies); S = Q K^T (ldmatrix + mma.sync.m16n8k16, float32
//     accumulators); ALiBi and softcap (FragmentScoreMods, §4 order) when enabled; mask (only in
//     partially covered tiles and in the tile that crosses S_kv); online softmax with ex2.approx
//     and scale * log2(e) folded into one FMA; P is rounded to the storage type in registers and
//     used directly as the A operand of O += P V (V through ldmatrix.trans); barrier before the
//     stage is overwritten (not with kOneBarrier).
//   epilogue: O / l (0 for rows whose every key is hidden), staged in shared memory and written
//     with 16-byte stores where alignment allows.
//
// Tile skipping: the K/V tile range is cut up front from the causal / window bounds, so tiles
// outside it are never visited; inside it TileCoverage classifies each tile (kNone: skipped with
// no loads, kAll: no per-element mask test, kPartial: MaskKeeps per element).
//
// Two builds per configuration (template flag kGeneral): the general one handles everything
// below; the common-case one (kGeneral = false, picked by the host when the request allows)
// compiles out the plain-load paths, ALiBi / softcap and the block mask. At D = 128 that takes the
// register spill from ~110 to ~50 bytes (sm_90a) and halves the loop's code.
//
// Registers: at D = 128 the accumulators alone (O: kM * kDv / 2 = 128 floats, S: kM * kBc / 2 = 64)
// leave ~50 registers for everything else, so the loop keeps its other state small: P is packed to
// the storage type right after exp2 (the float scores die before O += P V), the cp.async loads
// walk one pointer per thread instead of hoisting a 64-bit offset per chunk, ldmatrix addresses
// are 32-bit shared addresses with compile-time offsets, and the mask works in 32-bit columns.
//
// Loads: cp.async 16-byte copies with zero-fill when the tensor's rows are 16-byte aligned
// (dim % 8 == 0 and an aligned base pointer); otherwise, and for Q and K under RoPE (rotated in
// float from the host-built table, then rounded to the storage type), plain predicated loads
// through registers. Elements beyond the real head dim (a smaller dim run on a larger compiled
// one) and rows beyond S_q / S_kv load as zeros; key columns >= S_kv are masked to -inf and
// rows >= S_q are never stored.
#ifndef ATTNBENCH_KERNELS_CUDA_FLASH_KERNEL_SM80_CUH_
#define ATTNBENCH_KERNELS_CUDA_FLASH_KERNEL_SM80_CUH_

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/cuda/common/attention_args.h"
#include "kernels/cuda/common/expr_hooks.cuh"
#include "kernels/cuda/common/mask.cuh"
#include "kernels/cuda/common/ptx.cuh"
#include "kernels/cuda/common/score_mods.cuh"
#include "kernels/cuda/common/softmax.cuh"
#include "kernels/cuda/common/storage.cuh"
#include "kernels/cuda/flash/configs.h"
#include "kernels/cuda/flash/row_keep_bits.cuh"

namespace attnbench::cuda::flash {

// One kernel configuration (a row of kSm80Tiles, plus kOneBarrier for bench/flash_dev). kQInRegs
// keeps the warp's Q fragments in registers for the whole loop (saves one ldmatrix per k-step;
// worth it while kD <= 128, too many registers beyond). kTilesInY: the grid layout (FlashGrid);
// kOneBarrier: one barrier per K/V tile instead of two (see the kernel's loop). Measured on an H100
// (bench/flash_dev/NOTES.md, v3): tiles in y +2-5% for causal D = 64 and mixed at D = 128; one
// barrier neutral at D = 64 and 3-5% slower at D = 128. Only the D = 64 config sets kTilesInY;
// kOneBarrier is kept for bench/flash_dev.
template <int kD_, int kDv_, int kWarps_, int kM_, int kBc_, bool kQInRegs_, int kMinBlocks_,
          bool kTilesInY_ = false, bool kOneBarrier_ = false>
struct FlashConfig {
  static constexpr int kD = kD_;
  static constexpr int kDv = kDv_;
  static constexpr int kWarps = kWarps_;
  static constexpr int kM = kM_;  // 16-row m-tiles per warp
  static constexpr int kBr = 16 * kM_ * kWarps_;
  static constexpr int kBc = kBc_;
  static constexpr bool kQInRegs = kQInRegs_;
  static constexpr int kMinBlocks = kMinBlocks_;
  static constexpr bool kTilesInY = kTilesInY_;
  static constexpr bool kOneBarrier = kOneBarrier_;
  static constexpr int kThreads = 32 * kWarps_;
  // Row strides in elements (+8 elements = 16 bytes of padding against bank conflicts). The Q
  // region also stages the output tile, so its stride covers both dims.
  static constexpr int kQStride = (kD > kDv ? kD : kDv) + 8;
  static constexpr int kKStride = kD + 8;
  static constexpr int kVStride = kDv + 8;
  static constexpr int kQElems = kBr * kQStride;
  static constexpr int kKElems = kBc * kKStride;  // one stage
  static constexpr int kVElems = kBc * kVStride;  // one stage
  static constexpr int kSmemBytes = (kQElems + 2 * kKElems + 2 * kVElems) * 2;
  static_assert(kD % 16 == 0 && kDv % 16 == 0 && kBc % 16 == 0, "mma tiles are 16 wide");
};

// The configuration of row kTile of kSm80Tiles (configs.h).
template <int kTile, bool kOneBarrier = false>
using Sm80Config =
    FlashConfig<kSm80Tiles[kTile].dim_qk, kSm80Tiles[kTile].dim_v, kSm80Tiles[kTile].warps,
                kSm80Tiles[kTile].m_tiles, kSm80Tiles[kTile].block_kv, kSm80Tiles[kTile].q_in_regs,
                kSm80Tiles[kTile].min_blocks, kSm80Tiles[kTile].tiles_in_y, kOneBarrier>;

// Per-launch choices made on the host (all uniform across the grid).
struct FlashFlags {
  bool async_q = false;   // cp.async for Q (aligned rows, no RoPE)
  bool async_k = false;   // cp.async for K (aligned rows, no RoPE)
  bool async_v = false;   // cp.async for V
  bool vector_o = false;  // 16-byte stores of O
  int mods = kModsNone;   // ScoreModBits the general build applies (score_mods.cuh)
  // The saving build (kSave) only: what the backward starts from (BackwardArgs), the natural
  // log-sum-exp of each row [B, H_out, S_q] (-inf for a row whose every key is hidden) and O in
  // float32 before its rounding [B, S_q, H_out, D_v].
  float* lse = nullptr;
  float* out_f32 = nullptr;
};

// The launch grid: (heads_out, query tiles, batch), the query tiles in reverse (the last tile
// runs first). The hardware starts blocks x-fastest, so each batch's heads start their heaviest
// causal tiles first, then the next ones, and light tiles fill the end of the launch instead of
// heavy ones starting last (a list-scheduling model of the H100, 264 blocks at a time, put the
// causal tail at 6-8% of the time with the tiles in x, 0.2-2% so). The blocks running at one
// time stay within one or two batches, a few query tiles apart per head, so the K/V tiles they
// read still meet in L2. Measured, this helped causal D = 64 (+2-5%) but not clearly D = 128,
// and cost D = 128 non-causal at 16k 3-4% (less K/V reuse through L2 among the running blocks),
// so it is a per-config choice; kTilesInY = false keeps (query tiles, heads, batch).
template <bool kTilesInY>
inline dim3 FlashGrid(const AttentionArgs& args, int64_t qtiles) {
  const unsigned q = static_cast<unsigned>(qtiles);
  const unsigned heads = static_cast<unsigned>(args.heads_out);
  const unsigned batch = static_cast<unsigned>(args.batch);
  return kTilesInY ? dim3(heads, q, batch) : dim3(q, heads, batch);
}

// ---- tile loads ---------------------------------------------------------------------------------

// Copies rows [0, rows_valid) x columns [0, dim_valid) of a BSHD tile (row r at src +
// r * row_stride) into shared memory [kRows][kStride] with cp.async, zero-filling the rest of
// the kRows x kDim tile. Needs dim_valid % 8 == 0 and 16-byte aligned rows.
template <int kThreads, int kRows, int kDim, int kStride, typename T>
__device__ __forceinline__ void LoadTileAsync(T* smem, const T* src, int64_t row_stride,
                                              int rows_valid, int dim_valid, int tid) {
  constexpr int kChunks = kDim / 8;
  constexpr int kTotal = kRows * kChunks;
  if constexpr (kThreads % kChunks == 0 && kRows % (kThreads / kChunks) == 0) {
    // Each thread copies one fixed column chunk of every kRowStep-th row. The pointers advance
    // by one step at a time, so no per-chunk 64-bit offsets stay live across the main loop.
    constexpr int kRowStep = kThreads / kChunks;
    const int r0 = tid / kChunks;
    const int col = (tid % kChunks) * 8;
    const bool col_ok = col < dim_valid;
    const int64_t step = kRowStep * row_stride;
    const T* g = src + r0 * row_stride + col;
    uint32_t dst = SmemAddr(smem + r0 * kStride + col);
#pragma unroll
    for (int i = 0; i < kRows / kRowStep; ++i) {
      const bool pred = col_ok && r0 + i * kRowStep < rows_valid;
      CpAsync16(dst, pred ? g : src, pred);
      g += step;
      dst += kRowStep * kStride * sizeof(T);
    }
  } else {
#pragma unroll
    for (int c0 = 0; c0 < kTotal; c0 += kThreads) {
      const int c = c0 + tid;
      if (kTotal % kThreads == 0 || c < kTotal) {
        const int r = c / kChunks;
        const int col = (c % kChunks) * 8;
        const bool pred = r < rows_valid && col < dim_valid;
        const T* g = pred ? src + r * row_stride + col : src;
        CpAsync16(SmemAddr(smem + r * kStride + col), g, pred);
      }
    }
  }
}

// The same tile through registers, element by element: any alignment, and RoPE when `rope`
// (row r sits at position pos0 + r). Slow path.
template <int kThreads, int kRows, int kDim, int kStride, typename T>
__device__ __forceinline__ void LoadTileSync(T* smem, const T* src, int64_t row_stride,
                                             int rows_valid, int dim_valid, bool rope, int64_t pos0,
                                             const AttentionArgs& args, int tid) {
  for (int e = tid; e < kRows * kDim; e += kThreads) {
    const int r = e / kDim;
    const int d = e % kDim;
    float x = 0.f;
    if (r < rows_valid && d < dim_valid) {
      const T* row = src + r * row_stride;
      x = rope ? RopedElement(args, row, pos0 + r, d) : ToFloat(row[d]);
    }
    smem[r * kStride + d] = FromFloat<T>(x);
  }
}

// ---- the kernel ---------------------------------------------------------------------------------

// Grid: FlashGrid<Cfg::kTilesInY>; dynamic shared memory Cfg::kSmemBytes. kGeneral = false
// compiles the common case only (see the header comment): every load through cp.async, no
// ALiBi / softcap, no block mask; the host picks it whenever a request allows (FastPathOk).
// Expr: client expressions (common/expr_hooks.cuh), set only by cuda_flash's NVRTC build, on the
// general build: score_mod after the built-in modifiers, mask_mod per element in the tiles that
// neither the mask's coverage nor the mask_mod's tile classes decide whole.
// kSave: the forward of cuda_flash's backward (backward_sm80.cuh), on the general build without
// expressions: it also writes the log-sum-exp and O in float32 (FlashFlags::lse, out_f32), and
// takes the softcap's tanh exactly (tanhf instead of tanh.approx, whose 2^-11 relative error
// would reach the backward's 1 - tanh^2 near saturation), as the backward recomputes it.
template <typename T, typename Cfg, bool kGeneral, typename Expr = NoExpressions,
          bool kSave = false>
__global__ void __launch_bounds__(Cfg::kThreads, Cfg::kMinBlocks)
    FlashForwardKernel(const AttentionArgs args, const FlashFlags flags) {
  static_assert(kGeneral || (!Expr::kScoreMod && !Expr::kMaskMod), "expressions: general build");
  static_assert(!kSave || (kGeneral && !Expr::kScoreMod && !Expr::kMaskMod),
                "the saving build is the general one without expressions");
  constexpr int kD = Cfg::kD;
  constexpr int kDv = Cfg::kDv;
  constexpr int kBr = Cfg::kBr;
  constexpr int kBc = Cfg::kBc;
  constexpr int kThreads = Cfg::kThreads;
  constexpr int kNT = kBc / 8;  // score n-tiles per warp
  constexpr int kOT = kDv / 8;  // output n-tiles per warp

  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* s_q = reinterpret_cast<T*>(smem_raw);
  T* s_k = s_q + Cfg::kQElems;
  T* s_v = s_k + 2 * Cfg::kKElems;

  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;
  // Causal tiles near the end of the sequence do the most work: start them first (FlashGrid).
  const int qtile = Cfg::kTilesInY ? gridDim.y - 1 - blockIdx.y : gridDim.x - 1 - blockIdx.x;
  const int h = Cfg::kTilesInY ? blockIdx.x : blockIdx.y;
  const int b = blockIdx.z;
  const int qh = args.head_map[2 * h];
  const int kh = args.head_map[2 * h + 1];

  const int64_t seq_q = args.seq_q;
  const int64_t seq_kv = args.seq_kv;
  const int64_t i0 = static_cast<int64_t>(qtile) * kBr;
  const int64_t i1 = i0 + kBr < seq_q ? i0 + kBr : seq_q;
  const int rows_q = static_cast<int>(i1 - i0);

  // Keys [lo, hi) may be kept by some row of the tile; tiles outside are never visited.
  const KeyInterval keys = KeysKeptByRows(args, i0, i1 - 1);
  const int t_end = keys.hi > keys.lo ? static_cast<int>((keys.hi + kBc - 1) / kBc) : 0;
  const int t_begin = keys.hi > keys.lo ? static_cast<int>(keys.lo / kBc) : 0;

  // The first kept tile at or after t (t_end when none) and its coverage.
  auto next_tile = [&](int t, Coverage& cov) {
    for (; t < t_end; ++t) {
      const int64_t j0 = static_cast<int64_t>(t) * kBc;
      const int64_t j1 = j0 + kBc < seq_kv ? j0 + kBc : seq_kv;
      cov = TileCoverage(args, b, h, i0, i1, j0, j1);
      if constexpr (Expr::kMaskMod) {
        if (cov != Coverage::kNone) {
          const int c = MaskModTileClass(static_cast<const ExpressionArgs*>(args.expressions), b, h,
                                         args.heads_out, qtile, t);
          if (c == 0) cov = Coverage::kNone;
          if (c == 1) cov = Coverage::kPartial;
        }
      }
      if (cov != Coverage::kNone) return t;
    }
    return t_end;
  };

  const T* q_ptr =
      static_cast<const T*>(args.q) + RowOffset(b, seq_q, i0, args.heads_q, qh, args.dim_qk);
  const int64_t q_stride = static_cast<int64_t>(args.heads_q) * args.dim_qk;
  const int64_t k_stride = static_cast<int64_t>(args.heads_kv) * args.dim_qk;
  const int64_t v_stride = static_cast<int64_t>(args.heads_kv) * args.dim_v;
  const bool rope = args.rope_cos_sin != nullptr;

  auto load_kv = [&](int t, int stage) {
    const int64_t j0 = static_cast<int64_t>(t) * kBc;
    const int rows = static_cast<int>(seq_kv - j0 < kBc ? seq_kv - j0 : kBc);
    const T* k_ptr =
        static_cast<const T*>(args.k) + RowOffset(b, seq_kv, j0, args.heads_kv, kh, args.dim_qk);
    const T* v_ptr =
        static_cast<const T*>(args.v) + RowOffset(b, seq_kv, j0, args.heads_kv, kh, args.dim_v);
    T* sk = s_k + stage * Cfg::kKElems;
    T* sv = s_v + stage * Cfg::kVElems;
    if (!kGeneral || flags.async_k) {
      LoadTileAsync<kThreads, kBc, kD, Cfg::kKStride>(sk, k_ptr, k_stride, rows, args.dim_qk, tid);
    } else {
      LoadTileSync<kThreads, kBc, kD, Cfg::kKStride>(sk, k_ptr, k_stride, rows, args.dim_qk, rope,
                                                     j0, args, tid);
    }
    if (!kGeneral || flags.async_v) {
      LoadTileAsync<kThreads, kBc, kDv, Cfg::kVStride>(sv, v_ptr, v_stride, rows, args.dim_v, tid);
    } else {
      LoadTileSync<kThreads, kBc, kDv, Cfg::kVStride>(sv, v_ptr, v_stride, rows, args.dim_v, false,
                                                      j0, args, tid);
    }
  };

  Coverage cov = Coverage::kNone;
  int t = next_tile(t_begin, cov);
  if (t < t_end) {
    if (!kGeneral || flags.async_q) {
      LoadTileAsync<kThreads, kBr, kD, Cfg::kQStride>(s_q, q_ptr, q_stride, rows_q, args.dim_qk,
                                                      tid);
    } else {
      LoadTileSync<kThreads, kBr, kD, Cfg::kQStride>(s_q, q_ptr, q_stride, rows_q, args.dim_qk,
                                                     rope, i0 + args.offset, args, tid);
    }
    load_kv(t, 0);
    CpAsyncCommit();
  }

  // Per-thread state: for each of the warp's kM m-tiles of 16 rows, lane (g = lane / 4,
  // c = lane % 4) holds rows g and g + 8, columns 2c and 2c + 1 of every 8-wide n-tile (the mma
  // accumulator layout). Row state index 2 * mi + r: m-tile mi, row g + 8 r.
  constexpr int kM = Cfg::kM;
  float o_acc[kM][kOT][4];
#pragma unroll
  for (int mi = 0; mi < kM; ++mi) {
#pragma unroll
    for (int n = 0; n < kOT; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) o_acc[mi][n][e] = 0.f;
    }
  }
  SoftmaxRows rows[kM];  // per m-tile: rows g and g + 8
  uint32_t q_frag[Cfg::kQInRegs ? kM : 1][Cfg::kQInRegs ? kD / 16 : 1][4];

  // The general build applies the modifiers the launch asks for; the common one has none.
  const FragmentScoreMods<kGeneral ? kModsRuntime : kModsNone> mods(args, h);
  const int warp_rows = warp * 16 * kM;            // the warp's first row within the tile
  const int64_t row0 = i0 + warp_rows + lane / 4;  // global row of m-tile 0, r = 0

  // ldmatrix lane offsets (elements). A (Q, row-major): rows lane % 16, column half lane / 16.
  const int a_off = (warp_rows + lane % 16) * Cfg::kQStride + (lane / 16) * 8;
  // B from K (non-transposed): key rows (lane % 8) + 8 * (lane / 16), column half (lane / 8) % 2.
  const int k_off = ((lane % 8) + 8 * (lane / 16)) * Cfg::kKStride + ((lane / 8) % 2) * 8;
  // B from V (transposed): key rows (lane % 8) + 8 * ((lane / 8) % 2), column half lane / 16.
  const int v_off = ((lane % 8) + 8 * ((lane / 8) % 2)) * Cfg::kVStride + (lane / 16) * 8;

  // Shared-memory byte addresses of this lane's ldmatrix rows (stage 0 for K and V).
  const uint32_t q_addr = SmemAddr(s_q + a_off);
  const uint32_t k_addr = SmemAddr(s_k + k_off);
  const uint32_t v_addr = SmemAddr(s_v + v_off);
  constexpr uint32_t kQRowBytes = Cfg::kQStride * sizeof(T);
  constexpr uint32_t kKRowBytes = Cfg::kKStride * sizeof(T);
  constexpr uint32_t kVRowBytes = Cfg::kVStride * sizeof(T);

  bool q_loaded = false;
  int stage = 0;
  while (t < t_end) {
    Coverage next_cov = Coverage::kNone;
    const int nt = next_tile(t + 1, next_cov);
    if constexpr (Cfg::kOneBarrier) {
      // One barrier per tile: after it tile t is visible to every warp and every warp is done
      // with the other stage (it held tile t - 1), so the next tile's copies may go there now.
      CpAsyncWait<0>();
      __syncthreads();
      if (nt < t_end) {
        load_kv(nt, stage ^ 1);
        CpAsyncCommit();
      }
    } else {
      // Copies of the next tile first (its stage was released by the barrier that ended the last
      // iteration), then wait for tile t only.
      if (nt < t_end) {
        load_kv(nt, stage ^ 1);
        CpAsyncCommit();
        CpAsyncWait<1>();
      } else {
        CpAsyncWait<0>();
      }
      __syncthreads();
    }

    if constexpr (Cfg::kQInRegs) {
      if (!q_loaded) {
#pragma unroll
        for (int mi = 0; mi < kM; ++mi) {
#pragma unroll
          for (int kk = 0; kk < kD / 16; ++kk) {
            Ldmatrix4(q_addr + mi * 16 * kQRowBytes + kk * 32, q_frag[mi][kk][0], q_frag[mi][kk][1],
                      q_frag[mi][kk][2], q_frag[mi][kk][3]);
          }
        }
        q_loaded = true;
      }
    }

    // S = Q K^T for this warp's rows and the tile's kBc keys. Each K fragment feeds kM mmas.
    const uint32_t sk = k_addr + stage * (Cfg::kKElems * sizeof(T));
    float s[kM][kNT][4];
#pragma unroll
    for (int mi = 0; mi < kM; ++mi) {
#pragma unroll
      for (int n = 0; n < kNT; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) s[mi][n][e] = 0.f;
      }
    }
#pragma unroll
    for (int kk = 0; kk < kD / 16; ++kk) {
      uint32_t a[kM][4];
#pragma unroll
      for (int mi = 0; mi < kM; ++mi) {
        if constexpr (Cfg::kQInRegs) {
#pragma unroll
          for (int e = 0; e < 4; ++e) a[mi][e] = q_frag[mi][kk][e];
        } else {
          Ldmatrix4(q_addr + mi * 16 * kQRowBytes + kk * 32, a[mi][0], a[mi][1], a[mi][2],
                    a[mi][3]);
        }
      }
#pragma unroll
      for (int np = 0; np < kNT / 2; ++np) {
        uint32_t b0, b1, b2, b3;
        Ldmatrix4(sk + np * 16 * kKRowBytes + kk * 32, b0, b1, b2, b3);
#pragma unroll
        for (int mi = 0; mi < kM; ++mi) {
          Mma16816<T>(s[mi][2 * np], a[mi], b0, b1);
          Mma16816<T>(s[mi][2 * np + 1], a[mi], b2, b3);
        }
      }
    }

    // Modifiers, then the mask. Element (n, 2 r + e) of m-tile mi: row row0 + 16 mi + 8 r, key
    // jl + 8 n + e.
    const int64_t j0 = static_cast<int64_t>(t) * kBc;
    const int64_t jl = j0 + 2 * (lane % 4);
    if constexpr (kGeneral) {
#pragma unroll
      for (int mi = 0; mi < kM; ++mi) {
        const int64_t pos = row0 + 16 * mi + args.offset;
        const float rel[2] = {static_cast<float>(jl - pos), static_cast<float>(jl - pos - 8)};
        if constexpr (kSave) {
          if (mods.softcap) {
            // The same steps with the softcap's tanh exact (see the template's comment): ALiBi's
            // FMAs when on (Apply without the softcap), else the multiplication by mul that
            // Apply makes only under some modifier, then tanhf.
            auto linear = mods;
            linear.softcap = false;
            linear.template Apply<kNT>(s[mi], rel);
#pragma unroll
            for (int n = 0; n < kNT; ++n) {
#pragma unroll
              for (int e = 0; e < 4; ++e) {
                const float x = s[mi][n][e];
                s[mi][n][e] = tanhf(mods.alibi ? x : x * mods.mul);
              }
            }
          } else {
            mods.template Apply<kNT>(s[mi], rel);
          }
        } else {
          mods.template Apply<kNT>(s[mi], rel);
        }
      }
    }
    // Client expressions (NVRTC builds only; compiled out otherwise).
    [[maybe_unused]] auto place = [&](int mi) {
      const int64_t pos = row0 + 16 * mi + args.offset;
      return FragmentPlace{b, h, qh, kh, {pos, pos + 8}, jl};
    };
    [[maybe_unused]] auto aux = [&] {
      return static_cast<const ExpressionArgs*>(args.expressions)->aux;
    };
    if constexpr (Expr::kScoreMod) {
#pragma unroll
      for (int mi = 0; mi < kM; ++mi) {
        ScoreModFragment<Expr, kNT>(s[mi], ScoreUnit(mods, args), place(mi), aux());
      }
    }
    if (cov == Coverage::kPartial || j0 + kBc > seq_kv) {
      const bool partial = cov == Coverage::kPartial;
      if (!kGeneral || !partial ||
          (!Expr::kMaskMod && (args.mask == MaskCode::kCausal || args.mask == MaskCode::kWindow))) {
        // Interval masks: each row keeps keys lo <= j <= hi. The bounds are taken relative to
        // this thread's first key jl for m-tile 0, row g, clamped to [kClampLo, kClampHi] (a
        // bound below or above every column of the tile stays so after adding a row offset
        // 16 mi + 8 r < 16 kM), and the per-row work is then 32-bit.
        constexpr int kClampLo = -16 * kM - 1;
        constexpr int kClampHi = kBc + 1;
        auto clamp_col = [](int64_t x) {
          return static_cast<int>(max(min(x, int64_t{kClampHi}), int64_t{kClampLo}));
        };
        const int64_t ip0 = row0 + args.offset - jl;   // i' - jl of m-tile 0, row g
        const int kv_hi = clamp_col(seq_kv - 1 - jl);  // columns past S_kv: fixed per thread
        int hi0 = kClampHi;
        int lo0 = kClampLo;
        if (partial) {
          if (args.mask == MaskCode::kCausal) hi0 = clamp_col(ip0);
          if (args.mask == MaskCode::kWindow) {
            if (args.window_right >= 0) hi0 = clamp_col(ip0 + args.window_right);
            if (args.window_left >= 0) lo0 = clamp_col(ip0 - args.window_left);
          }
        }
#pragma unroll
        for (int mi = 0; mi < kM; ++mi) {
          const int lo[2] = {lo0 + 16 * mi, lo0 + 16 * mi + 8};
          const int hi[2] = {min(hi0 + 16 * mi, kv_hi), min(hi0 + 16 * mi + 8, kv_hi)};
          MaskFragmentColumns<kNT>(s[mi], lo, hi);
        }
      } else {
        // Block masks (and a mask_mod's partial tiles): a bit per column of this thread from the
        // mask's predicate (row_keep_bits.cuh), then the mask_mod on the kept ones, in a rolled
        // loop (unrolled, its table loads would all be hoisted into registers).
#pragma unroll
        for (int mi = 0; mi < kM; ++mi) {
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            const int64_t i = row0 + 16 * mi + 8 * r;
            uint32_t keep = RowKeepBits<2 * kNT>(args, b, h, i, jl);
            if constexpr (Expr::kMaskMod) {
#pragma unroll 1
              for (int c = 0; c < 2 * kNT; ++c) {
                const int64_t j = jl + 8 * (c / 2) + c % 2;
                if (((keep >> c) & 1u) != 0 &&
                    !Expr::MaskMod(b, h, i + args.offset, j, qh, kh, aux())) {
                  keep &= ~(1u << c);
                }
              }
            }
#pragma unroll
            for (int n = 0; n < kNT; ++n) {
#pragma unroll
              for (int e = 0; e < 2; ++e) {
                if (((keep >> (2 * n + e)) & 1u) == 0) s[mi][n][2 * r + e] = kNegInf;
              }
            }
          }
        }
      }
    }

    uint32_t p[kM][kNT][2];  // P in the storage type: n-tile n, row half r
#pragma unroll
    for (int mi = 0; mi < kM; ++mi) {
      float alpha[2];
      SoftmaxStep<kNT>(s[mi], rows[mi], Expr::kScoreMod ? kLog2e : mods.exp_scale, alpha,
                       [&](int n, int r, float p0, float p1) { p[mi][n][r] = Pack2<T>(p0, p1); });
#pragma unroll
      for (int n = 0; n < kOT; ++n) {
        o_acc[mi][n][0] *= alpha[0];
        o_acc[mi][n][1] *= alpha[0];
        o_acc[mi][n][2] *= alpha[1];
        o_acc[mi][n][3] *= alpha[1];
      }
    }

    // O += P V, P rounded to the storage type in registers as the A operand; each V fragment
    // feeds kM mmas.
    const uint32_t sv = v_addr + stage * (Cfg::kVElems * sizeof(T));
#pragma unroll
    for (int kk = 0; kk < kBc / 16; ++kk) {
      uint32_t a[kM][4];
#pragma unroll
      for (int mi = 0; mi < kM; ++mi) {
        a[mi][0] = p[mi][2 * kk][0];
        a[mi][1] = p[mi][2 * kk][1];
        a[mi][2] = p[mi][2 * kk + 1][0];
        a[mi][3] = p[mi][2 * kk + 1][1];
      }
#pragma unroll
      for (int np = 0; np < kOT / 2; ++np) {
        uint32_t b0, b1, b2, b3;
        Ldmatrix4Trans(sv + kk * 16 * kVRowBytes + np * 32, b0, b1, b2, b3);
#pragma unroll
        for (int mi = 0; mi < kM; ++mi) {
          Mma16816<T>(o_acc[mi][2 * np], a[mi], b0, b1);
          Mma16816<T>(o_acc[mi][2 * np + 1], a[mi], b2, b3);
        }
      }
    }
    if constexpr (!Cfg::kOneBarrier) {
      __syncthreads();  // every warp is done with this stage before it is refilled
    }
    stage ^= 1;
    t = nt;
    cov = next_cov;
  }

  // Epilogue: normalize, stage the warp's rows in its own part of the Q region, store.
  float inv[kM][2];
#pragma unroll
  for (int mi = 0; mi < kM; ++mi) FinishRows(rows[mi], inv[mi]);
  if constexpr (kSave) {
    // The log-sum-exp in natural units: the softmax ran in base 2 on t * exp_scale, so
    // lse = (max * exp_scale + log2 l) ln 2. O in float32, straight from the accumulators.
#pragma unroll
    for (int mi = 0; mi < kM; ++mi) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const float l = QuadSum(rows[mi].sum[r]);
        const int64_t i = row0 + 16 * mi + 8 * r;
        if (i < seq_q) {
          if (lane % 4 == 0) {
            const float lse2 = l > 0.f ? fmaf(rows[mi].max[r], mods.exp_scale, log2f(l)) : kNegInf;
            flags.lse[(static_cast<int64_t>(b) * args.heads_out + h) * seq_q + i] =
                lse2 * 0.69314718055994531f;
          }
          float* o_row = flags.out_f32 + RowOffset(b, seq_q, i, args.heads_out, h, args.dim_v);
#pragma unroll
          for (int n = 0; n < kOT; ++n) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const int col = 8 * n + 2 * (lane % 4) + e;
              if (col < args.dim_v) o_row[col] = o_acc[mi][n][2 * r + e] * inv[mi][r];
            }
          }
        }
      }
    }
  }
  __syncwarp();
  T* s_o = s_q + warp_rows * Cfg::kQStride;
#pragma unroll
  for (int mi = 0; mi < kM; ++mi) {
#pragma unroll
    for (int n = 0; n < kOT; ++n) {
      const int col = 8 * n + 2 * (lane % 4);
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const float f = inv[mi][r];
        const uint32_t packed = Pack2<T>(o_acc[mi][n][2 * r] * f, o_acc[mi][n][2 * r + 1] * f);
        *reinterpret_cast<uint32_t*>(s_o + (16 * mi + lane / 4 + 8 * r) * Cfg::kQStride + col) =
            packed;
      }
    }
  }
  __syncwarp();
  constexpr int kWarpRows = 16 * kM;
  const int64_t o_stride = static_cast<int64_t>(args.heads_out) * args.dim_v;
  const int64_t warp_row0 = i0 + warp_rows;
  T* o_ptr =
      static_cast<T*>(args.o) + RowOffset(b, seq_q, warp_row0, args.heads_out, h, args.dim_v);
  if (flags.vector_o) {
    constexpr int kChunks = kDv / 8;
#pragma unroll
    for (int c = lane; c < kWarpRows * kChunks; c += 32) {
      const int r = c / kChunks;
      const int col = (c % kChunks) * 8;
      if (warp_row0 + r < seq_q && col < args.dim_v) {
        *reinterpret_cast<uint4*>(o_ptr + r * o_stride + col) =
            *reinterpret_cast<const uint4*>(s_o + r * Cfg::kQStride + col);
      }
    }
  } else {
    for (int e = lane; e < kWarpRows * kDv; e += 32) {
      const int r = e / kDv;
      const int d = e % kDv;
      if (warp_row0 + r < seq_q && d < args.dim_v) {
        o_ptr[r * o_stride + d] = s_o[r * Cfg::kQStride + d];
      }
    }
  }
}

}  // namespace attnbench::cuda::flash

#endif  // ATTNBENCH_KERNELS_CUDA_FLASH_KERNEL_SM80_CUH_
