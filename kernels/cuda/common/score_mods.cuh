// The score modifiers of docs/variants.md §4 on the device: RoPE on query and key rows from the
// host-built cos/sin table, and ALiBi then softcap on scores. Two forms of the same formulas:
// per element (RopedElement, ModifyScore: the reference and unfused kernels, exact tanhf), and
// per accumulator fragment for the fused kernels (FragmentScoreMods), where the scale, the
// ALiBi slope, 1 / cap and log2 e are folded into two FMAs and one tanh per score.
#ifndef ATTNBENCH_KERNELS_CUDA_COMMON_SCORE_MODS_CUH_
#define ATTNBENCH_KERNELS_CUDA_COMMON_SCORE_MODS_CUH_

#include <cstdint>

#include "kernels/cuda/common/attention_args.h"
#include "kernels/cuda/common/fragment.cuh"
#include "kernels/cuda/common/ptx.cuh"
#include "kernels/cuda/common/storage.cuh"

namespace attnbench::cuda {

// The value element d of a row takes after RoPE at position pos: row[d] is the unrotated row.
template <typename T>
__device__ __forceinline__ float RopedElement(const AttentionArgs& a, const T* row, int64_t pos,
                                              int d) {
  const float x = ToFloat(row[d]);
  if (a.rope_cos_sin == nullptr || d >= a.rope_dims) return x;
  const int half = a.rope_dims / 2;
  const int m = d < half ? d : d - half;
  const float c = a.rope_cos_sin[2 * (pos * half + m)];
  const float s = a.rope_cos_sin[2 * (pos * half + m) + 1];
  if (d < half) return x * c - ToFloat(row[d + half]) * s;
  return x * c + ToFloat(row[d - half]) * s;
}

// s (already scale * <q, k>) after ALiBi and softcap, for output head h, query i, key j.
__device__ __forceinline__ float ModifyScore(const AttentionArgs& a, int h, int64_t i, int64_t j,
                                             float s) {
  if (a.alibi_slopes != nullptr) {
    s += a.alibi_slopes[h] * static_cast<float>(j - (i + a.offset));
  }
  if (a.softcap > 0) s = a.softcap * tanhf(s / a.softcap);
  return s;
}

// ---- fused kernels ------------------------------------------------------------------------------

// The modifiers a fused kernel is compiled for, as bits: its score path has exactly these steps.
// kModsRuntime: the steps are chosen per launch from the arguments (the sm_80 general build).
enum ScoreModBits : int { kModsNone = 0, kModsAlibi = 1, kModsSoftcap = 2, kModsRuntime = 4 };

// The bits a request needs. A non-positive scale also takes the ALiBi path (with slope 0):
// without modifiers the scale is folded into exp_scale after the row max, which is only right
// for scale > 0.
__host__ __device__ inline int ScoreModsOf(const AttentionArgs& a) {
  int mods = kModsNone;
  if ((a.modifiers & kModifierAlibi) != 0 || !(a.scale > 0)) mods |= kModsAlibi;
  if ((a.modifiers & kModifierSoftcap) != 0) mods |= kModsSoftcap;
  return mods;
}

// Per (launch, output head): with u = 1 / cap under softcap and log2 e otherwise, scores become
//   t = mul * s + slope_u * (j - i')            (ALiBi; mul * s without it)
//   t = tanh(t)                                 (softcap)
// and the softmax multiplies t by exp_scale (cap log2 e under softcap, 1 under ALiBi alone, and
// scale log2 e with no modifier at all, where s stays raw).
// kPackedTanh: the softcap's tanh two scores at a time at half precision (FastTanhPair), which
// halves its load on the special-function unit; FastTanh per score otherwise.
template <int kMods, bool kPackedTanh = false>
struct FragmentScoreMods {
  bool alibi = false;
  bool softcap = false;
  float mul = 1.f;
  float slope_u = 0.f;
  float exp_scale = 0.f;

  __device__ __forceinline__ FragmentScoreMods(const AttentionArgs& a, int h) {
    const int mods = kMods == kModsRuntime ? ScoreModsOf(a) : kMods;
    alibi = (mods & kModsAlibi) != 0;
    softcap = (mods & kModsSoftcap) != 0;
    const float u = softcap ? 1.f / a.softcap : kLog2e;
    mul = a.scale * u;
    if (alibi) slope_u = a.alibi_slopes != nullptr ? a.alibi_slopes[h] * u : 0.f;
    exp_scale = softcap ? a.softcap * kLog2e : alibi ? 1.f : a.scale * kLog2e;
  }

  // Modifies one tile's scores in place. key_minus_pos[r] = j - i' of the thread's first column
  // in row r (as float: distances stay far below 2^24 in any tile a kernel keeps).
  template <int kN8, typename Frag>
  __device__ __forceinline__ void Apply(Frag& s, const float (&key_minus_pos)[2]) const {
    if constexpr (kMods == kModsNone) return;
    if (!alibi && !softcap) return;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float bias0 = slope_u * key_minus_pos[r];
#pragma unroll
      for (int n = 0; n < kN8; ++n) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float& x = FragAt(s, n, 2 * r + e);
          x = alibi ? fmaf(x, mul, fmaf(slope_u, static_cast<float>(8 * n + e), bias0)) : x * mul;
          if (softcap && !kPackedTanh) x = FastTanh(x);
        }
        if (softcap && kPackedTanh) FastTanhPair(FragAt(s, n, 2 * r), FragAt(s, n, 2 * r + 1));
      }
    }
  }
};

}  // namespace attnbench::cuda

#endif  // ATTNBENCH_KERNELS_CUDA_COMMON_SCORE_MODS_CUH_
