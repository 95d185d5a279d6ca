// The score modifiers of §4: rotate-half RoPE on q and k, ALiBi slopes and bias, softcap. One
// implementation of each formula, in float and double, shared by the CPU kernel and the float64
// oracle. Order per score: RoPE (on q, k), s = scale * <q, k>, s += ALiBi, softcap, then the mask.
#ifndef ATTNBENCH_KERNELS_SPEC_MODIFIERS_H_
#define ATTNBENCH_KERNELS_SPEC_MODIFIERS_H_

#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/spec/problem.h"

namespace attnbench {

// The score modifiers a problem can enable: the axis on which backends and kernels declare
// support (BackendSupport::modifiers, the CUDA kernels' AttentionArgs::modifiers bits, where bit
// 1 << m stands for Modifier m). A new modifier gets a value here, its name, a line in
// ModifiersOf, and a place in the allow-lists of the backends that compute it; every other
// backend and kernel then refuses it.
// score_mod and mask_mod are the client-written expressions (docs/expressions.md).
enum class Modifier { kRope = 0, kAlibi = 1, kSoftcap = 2, kScoreMod = 3, kMaskMod = 4 };
inline constexpr Modifier kAllModifiers[] = {Modifier::kRope, Modifier::kAlibi, Modifier::kSoftcap,
                                             Modifier::kScoreMod, Modifier::kMaskMod};
// "rope", "alibi", "softcap", "score_mod", "mask_mod" (the AttentionSpec field names);
// "unknown" otherwise.
const char* ModifierName(Modifier m);
// The modifiers `problem` enables, in kAllModifiers order.
std::vector<Modifier> ModifiersOf(const Problem& problem);

// theta^(-2m / rotary_dims) for m < rotary_dims / 2, in double.
std::vector<double> RopeInverseFrequencies(double theta, int rotary_dims);

// Rotates the first rotary_dims elements of v in place for position pos: element m pairs with
// m + rotary_dims / 2 (m < rotary_dims / 2) at angle pos * inv_freq[m] (computed in double).
void ApplyRope(double* v, int64_t pos, const std::vector<double>& inv_freq);
// The same with cos/sin already evaluated for the position (cos_sin[2m], cos_sin[2m + 1]).
void ApplyRope(float* v, const float* cos_sin, int half);
// The transpose (and inverse) of ApplyRope: rotates by -angle. A gradient with respect to a
// rotated vector becomes the gradient with respect to the vector before RoPE this way, since the
// rotation is orthogonal; dimensions past rotary_dims pass through.
void ApplyRopeTranspose(double* v, int64_t pos, const std::vector<double>& inv_freq);
void ApplyRopeTranspose(float* v, const float* cos_sin, int half);
// cos_sin[2m], cos_sin[2m + 1] = cos, sin of pos * inv_freq[m], evaluated in double.
void RopeCosSin(int64_t pos, const std::vector<double>& inv_freq, float* cos_sin);
// Key rows [row0, row1) of a BSHD key tensor (row = b * seq_kv + j, each `heads` x `dim` floats)
// copied from `in` to `out` rotated at position j, as a decode cache holds keys. inv_freq empty:
// copied unrotated.
void RotateKeyRows(const std::vector<double>& inv_freq, int64_t seq_kv, int64_t heads, int64_t dim,
                   int64_t row0, int64_t row1, const float* in, float* out);

// ALiBi slope of every output head (§4): geometric 2^(-8(h+1)/n) for n a power of two, else the
// ALiBi paper's interpolation (the slopes of the largest power of two m < n, followed by the
// first n - m even-indexed slopes of the 2m schedule); harmonic s0 / (h + 1).
std::vector<double> AlibiSlopes(const Alibi& alibi, int num_output_heads);

inline double Softcap(double s, double cap) { return cap * std::tanh(s / cap); }
inline float Softcap(float s, float cap) { return cap * std::tanh(s / cap); }
// d/dt [cap tanh(t / cap)] = 1 - tanh^2(t / cap), written through the capped score c = Softcap(t)
// (tanh(t / cap) = c / cap), which a backward pass has already computed.
inline double SoftcapDerivative(double capped, double cap) {
  const double r = capped / cap;
  return 1.0 - r * r;
}
inline float SoftcapDerivative(float capped, float cap) {
  const float r = capped / cap;
  return 1.0f - r * r;
}

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_SPEC_MODIFIERS_H_
