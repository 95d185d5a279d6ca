// 2^x without the special-function unit, for the softmax's probabilities (x <= 0): the fused
// kernels' exp2 runs on the MUFU pipe at 16 results per clock per SM, an eighth of the FMA pipe's
// rate, and with small head dims or a softcap (whose tanh is a MUFU op too) that pipe, not the
// tensor cores, bounds a tile. Taking some columns' exp2 here moves their cost to the FMA and
// integer pipes (FlashAttention-4's exp2 emulation). Host and device, so a host test measures it.
#ifndef ATTNBENCH_KERNELS_CUDA_COMMON_POLY_EXP2_CUH_
#define ATTNBENCH_KERNELS_CUDA_COMMON_POLY_EXP2_CUH_

#ifndef __CUDACC_RTC__
#include <cmath>
#include <cstdint>
#include <cstring>
#endif

namespace attnbench::cuda {

__host__ __device__ __forceinline__ int PolyExp2FloatBits(float x) {
#ifdef __CUDA_ARCH__
  return __float_as_int(x);
#else
  int i;
  std::memcpy(&i, &x, sizeof i);
  return i;
#endif
}
__host__ __device__ __forceinline__ float PolyExp2BitsFloat(int i) {
#ifdef __CUDA_ARCH__
  return __int_as_float(i);
#else
  float x;
  std::memcpy(&x, &i, sizeof x);
  return x;
#endif
}

// x = n + f: adding 1.5 * 2^23 rounds x to the integer n, left in the low mantissa bits of t (an
// FADD rather than a float-to-int conversion, a slower-pipe op), and f = x - n lies in [-1/2, 1/2].
// 2^f comes from a cubic fitted to it (Chebyshev, float32 coefficients: relative error 1.0e-4 at
// most, under the rounding to 16 bits every P takes before P V), then n is added to its exponent
// field: t's bits shifted left by 23 are exactly n << 23, as the constant's own low 22 bits are
// zero. x < -125 gives 0 (-inf too), as ex2.approx.ftz flushes results below the normal range;
// NaN stays NaN.
__host__ __device__ __forceinline__ float PolyExp2(float x) {
  constexpr float kRound = 12582912.f;  // 1.5 * 2^23
  const float t = x + kRound;
  const float f = x - (t - kRound);
  const float p = fmaf(fmaf(fmaf(0.05583828f, f, 0.24263948f), f, 0.69313675f), f, 0.99992454f);
  const float y = PolyExp2BitsFloat(
      PolyExp2FloatBits(p) + static_cast<int>(static_cast<unsigned>(PolyExp2FloatBits(t)) << 23));
  return x < -125.f ? 0.f : y;
}

}  // namespace attnbench::cuda

#endif  // ATTNBENCH_KERNELS_CUDA_COMMON_POLY_EXP2_CUH_
