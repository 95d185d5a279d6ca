// Client expressions (docs/variants.md §4b) inside the fused kernels: the hook type a kernel is
// instantiated with, and the fragment-level steps that call it (what they read beside
// AttentionArgs: expression_args.h). Every nvcc instantiation takes NoExpressions, under which the
// steps are compiled out (`if constexpr` on its flags): the precompiled kernels carry no trace of
// them. cuda_flash's NVRTC build (kernels/cuda/flash/flash_rtc.h) defines a hook type whose
// ScoreMod / MaskMod call the functions emitted for the request (kernels/expr/cuda_source.h) and
// instantiates a kernel with it.
//
// Order (§4): the built-in modifiers, then score_mod on the score s they leave, then the built-in
// mask, then mask_mod (false hides the pair: -inf).
#ifndef ATTNBENCH_KERNELS_CUDA_COMMON_EXPR_HOOKS_CUH_
#define ATTNBENCH_KERNELS_CUDA_COMMON_EXPR_HOOKS_CUH_

#include <cstdint>

#include "kernels/cuda/common/attention_args.h"
#include "kernels/cuda/common/expression_args.h"
#include "kernels/cuda/common/fragment.cuh"
#include "kernels/cuda/common/ptx.cuh"

namespace attnbench::cuda {

// The hooks of a kernel without client expressions. A hook type with kScoreMod / kMaskMod set
// also has
//   static __device__ float ScoreMod(float s, int64_t b, int64_t h, int64_t q, int64_t kv,
//                                    int64_t hq, int64_t hkv, const void* aux);
//   static __device__ bool MaskMod(int64_t b, int64_t h, int64_t q, int64_t kv, int64_t hq,
//                                  int64_t hkv, const void* aux);
// with q = i' (the query's absolute position) and kv = j.
struct NoExpressions {
  static constexpr bool kScoreMod = false;
  static constexpr bool kMaskMod = false;
};

// Where one thread's scores of a tile sit: (b, h) and the head map's (hq, hkv), the positions i'
// of its two rows, and its first key of the tile (element (n, 2 r + e) is key jl + 8 n + e).
struct FragmentPlace {
  int b, h, hq, hkv;
  int64_t pos[2];
  int64_t jl;
};

// The factor that turns a fused kernel's score after FragmentScoreMods (score_mods.cuh: scaled by
// log2 e or by 1 / cap) back into the score s of §4.
template <typename Mods>
__device__ __forceinline__ float ScoreUnit(const Mods& mods, const AttentionArgs& a) {
  return mods.softcap ? a.softcap : mods.alibi ? 1.f / kLog2e : a.scale;
}

// score_mod on every element of a fragment: x becomes score_mod(x * to_score), in score units, so
// the softmax that follows takes exp_scale = log2 e.
template <typename Expr, int kN8, typename Frag>
__device__ __forceinline__ void ScoreModFragment(Frag& s, float to_score, const FragmentPlace& p,
                                                 const void* aux) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
#pragma unroll
    for (int n = 0; n < kN8; ++n) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        float& x = FragAt(s, n, 2 * r + e);
        x = Expr::ScoreMod(x * to_score, p.b, p.h, p.pos[r], p.jl + 8 * n + e, p.hq, p.hkv, aux);
      }
    }
  }
}

// mask_mod on every element of a fragment: the pairs it hides become -inf. A rolled loop fills a
// bit per column (unrolled, an expression's table loads would all be hoisted into registers).
template <typename Expr, int kN8, typename Frag>
__device__ __forceinline__ void MaskModFragment(Frag& s, const FragmentPlace& p, const void* aux) {
  static_assert(kN8 <= 16, "one bit per column of a thread's row");
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    uint32_t keep = 0;
#pragma unroll 1
    for (int c = 0; c < 2 * kN8; ++c) {
      const int64_t j = p.jl + 8 * (c >> 1) + (c & 1);
      if (Expr::MaskMod(p.b, p.h, p.pos[r], j, p.hq, p.hkv, aux)) keep |= 1u << c;
    }
#pragma unroll
    for (int n = 0; n < kN8; ++n) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        if (((keep >> (2 * n + e)) & 1u) == 0) FragAt(s, n, 2 * r + e) = kNegInf;
      }
    }
  }
}

// The mask_mod's class of tile (qt, kt) for the sm_80 kernel (ExpressionArgs::mask_tiles): 0 keeps
// no pair, 1 some (or not classified), 2 every pair.
__device__ __forceinline__ int MaskModTileClass(const ExpressionArgs* e, int b, int h,
                                                int heads_out, int64_t qt, int64_t kt) {
  if (e == nullptr || e->mask_tiles == nullptr) return 1;
  const int64_t p = e->per_head ? static_cast<int64_t>(b) * heads_out + h : 0;
  return e->mask_tiles[(p * e->q_tiles + qt) * e->kv_tiles + kt];
}

}  // namespace attnbench::cuda

#endif  // ATTNBENCH_KERNELS_CUDA_COMMON_EXPR_HOOKS_CUH_
