// The online softmax of FlashAttention-2, one tile step at a time, written once for both fused
// kernels. Scores arrive in an accumulator fragment (fragment.cuh), already modified and masked;
// `exp_scale` turns them into base-2 units (scale * log2 e for raw scores, folded with the score
// modifiers otherwise: score_mods.cuh), so each probability is one FMA and one ex2.
#ifndef ATTNBENCH_KERNELS_CUDA_COMMON_SOFTMAX_CUH_
#define ATTNBENCH_KERNELS_CUDA_COMMON_SOFTMAX_CUH_

#include "kernels/cuda/common/fragment.cuh"
#include "kernels/cuda/common/poly_exp2.cuh"
#include "kernels/cuda/common/ptx.cuh"

namespace attnbench::cuda {

// Running state of the two rows a thread holds: the max score so far (in score units) and this
// thread's part of the sum of probabilities (reduced over the quad once, at the end).
struct SoftmaxRows {
  float max[2] = {kNegInf, kNegInf};
  float sum[2] = {0.f, 0.f};
};

// Folds one tile of scores into `rows`: new row maxima, alpha[r] = how much the row's earlier
// output and sum must shrink, and each probability p = 2^(s * exp_scale - max * exp_scale)
// handed to emit(n, r, p0, p1) for columns (8 n + 2 (lane % 4), + 1) as soon as it exists (the
// sm_80 kernel packs it to 16 bits right away, which keeps the float scores' registers short-
// lived). A row whose keys are all hidden so far keeps max -inf; its offset is taken as 0, so
// 2^(-inf - 0) = 0 and no inf - inf appears. kPolyOf4: of every 4 column groups, how many take
// their exp2 on the FMA pipes (PolyExp2) rather than the MUFU's ex2, to balance the two where the
// MUFU bounds the tile (small head dims, softcap); 0 everywhere but where measured to pay.
template <int kN8, int kPolyOf4 = 0, typename Frag, typename Emit>
__device__ __forceinline__ void SoftmaxStep(Frag& s, SoftmaxRows& rows, float exp_scale,
                                            float (&alpha)[2], Emit&& emit) {
  static_assert(kPolyOf4 >= 0 && kPolyOf4 <= 4, "groups of 4");
  auto exp2 = [](int n, float x) { return n % 4 < kPolyOf4 ? PolyExp2(x) : FastExp2(x); };
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float mx = rows.max[r];
#pragma unroll
    for (int n = 0; n < kN8; ++n) {
      mx = fmaxf(mx, fmaxf(FragAt(s, n, 2 * r), FragAt(s, n, 2 * r + 1)));
    }
    mx = QuadMax(mx);
    const float base = mx == kNegInf ? 0.f : mx * exp_scale;
    alpha[r] = FastExp2(rows.max[r] * exp_scale - base);
    rows.max[r] = mx;
    float sum = 0.f;
#pragma unroll
    for (int n = 0; n < kN8; ++n) {
      const float p0 = exp2(n, fmaf(FragAt(s, n, 2 * r), exp_scale, -base));
      const float p1 = exp2(n, fmaf(FragAt(s, n, 2 * r + 1), exp_scale, -base));
      emit(n, r, p0, p1);
      sum += p0 + p1;
    }
    rows.sum[r] = rows.sum[r] * alpha[r] + sum;
  }
}

// 1 / (the row's whole sum), or 0 for a row whose every key is hidden (its output is zeros, §1).
__device__ __forceinline__ void FinishRows(const SoftmaxRows& rows, float (&inv)[2]) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float l = QuadSum(rows.sum[r]);
    inv[r] = l > 0.f ? 1.f / l : 0.f;
  }
}

}  // namespace attnbench::cuda

#endif  // ATTNBENCH_KERNELS_CUDA_COMMON_SOFTMAX_CUH_
