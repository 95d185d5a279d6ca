// The backward counterparts of score_mods.cuh on the device (docs/variants.md §5): RoPE's
// transpose, which takes a gradient with respect to a rotated row back to the row before RoPE,
// and the derivative of the modified score with respect to scale * <q, k>, which dS is multiplied
// by (the softcap's 1 - tanh^2; ALiBi adds a constant and has none). A header of its own so that
// the forward kernels, which never need these, do not recompile when they change.
#ifndef ATTNBENCH_KERNELS_CUDA_COMMON_SCORE_GRADS_CUH_
#define ATTNBENCH_KERNELS_CUDA_COMMON_SCORE_GRADS_CUH_

#include <cstdint>

#include "kernels/cuda/common/attention_args.h"
#include "kernels/cuda/common/storage.cuh"

namespace attnbench::cuda {

// Element d of R(pos)^T g, where g (the row `grad`) is a gradient with respect to a row rotated by
// RoPE at position pos (RopedElement): the rotation by -angle, from the same cos/sin table.
// Dimensions past rope_dims pass through, as they do without RoPE.
template <typename T>
__device__ __forceinline__ float RopeTransposedElement(const AttentionArgs& a, const T* grad,
                                                       int64_t pos, int d) {
  const float g = ToFloat(grad[d]);
  if (a.rope_cos_sin == nullptr || d >= a.rope_dims) return g;
  const int half = a.rope_dims / 2;
  const int m = d < half ? d : d - half;
  const float c = a.rope_cos_sin[2 * (pos * half + m)];
  const float s = a.rope_cos_sin[2 * (pos * half + m) + 1];
  // Forward: y_m = x_m c - x_{m+h} s, y_{m+h} = x_{m+h} c + x_m s; its transpose swaps the signs.
  if (d < half) return g * c + ToFloat(grad[d + half]) * s;
  return g * c - ToFloat(grad[d - half]) * s;
}

// d s / d t, where s = ModifyScore(a, h, i, j, t) is the final score (passed in: the softcap's
// derivative 1 - tanh^2(t / cap) is 1 - (s / cap)^2) and t = scale * <q, k>.
__device__ __forceinline__ float ModifiedScoreSlope(const AttentionArgs& a, float s) {
  if (a.softcap > 0) {
    const float r = s / a.softcap;
    return 1.0f - r * r;
  }
  return 1.0f;
}

}  // namespace attnbench::cuda

#endif  // ATTNBENCH_KERNELS_CUDA_COMMON_SCORE_GRADS_CUH_
