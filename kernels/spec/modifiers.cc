#include "kernels/spec/modifiers.h"

namespace attnbench {
namespace {

std::vector<double> GeometricSlopes(int n) {
  int m = 1;
  while (m * 2 <= n) m *= 2;
  std::vector<double> slopes;
  for (int h = 0; h < m; ++h) slopes.push_back(std::exp2(-8.0 * (h + 1) / m));
  // Non-power-of-two counts: borrow every other slope of the 2m schedule (indices 0, 2, 4, ...).
  for (int k = 0; k < n - m; ++k) slopes.push_back(std::exp2(-8.0 * (2 * k + 1) / (2 * m)));
  return slopes;
}

}  // namespace

const char* ModifierName(Modifier m) {
  switch (m) {
    case Modifier::kRope:
      return "rope";
    case Modifier::kAlibi:
      return "alibi";
    case Modifier::kSoftcap:
      return "softcap";
    case Modifier::kScoreMod:
      return "score_mod";
    case Modifier::kMaskMod:
      return "mask_mod";
  }
  return "unknown";
}

std::vector<Modifier> ModifiersOf(const Problem& problem) {
  std::vector<Modifier> out;
  if (problem.rope.enabled) out.push_back(Modifier::kRope);
  if (problem.alibi.enabled) out.push_back(Modifier::kAlibi);
  if (problem.softcap.enabled) out.push_back(Modifier::kSoftcap);
  if (problem.score_mod.has_value()) out.push_back(Modifier::kScoreMod);
  if (problem.mask_mod.has_value()) out.push_back(Modifier::kMaskMod);
  return out;
}

std::vector<double> RopeInverseFrequencies(double theta, int rotary_dims) {
  std::vector<double> inv(rotary_dims / 2);
  for (int m = 0; m < rotary_dims / 2; ++m) {
    inv[m] = std::pow(theta, -2.0 * m / rotary_dims);
  }
  return inv;
}

void ApplyRope(double* v, int64_t pos, const std::vector<double>& inv_freq) {
  const int half = static_cast<int>(inv_freq.size());
  for (int m = 0; m < half; ++m) {
    const double angle = static_cast<double>(pos) * inv_freq[m];
    const double c = std::cos(angle);
    const double s = std::sin(angle);
    const double x1 = v[m];
    const double x2 = v[m + half];
    v[m] = x1 * c - x2 * s;
    v[m + half] = x2 * c + x1 * s;
  }
}

void ApplyRopeTranspose(double* v, int64_t pos, const std::vector<double>& inv_freq) {
  const int half = static_cast<int>(inv_freq.size());
  for (int m = 0; m < half; ++m) {
    const double angle = static_cast<double>(pos) * inv_freq[m];
    const double c = std::cos(angle);
    const double s = std::sin(angle);
    const double x1 = v[m];
    const double x2 = v[m + half];
    v[m] = x1 * c + x2 * s;
    v[m + half] = x2 * c - x1 * s;
  }
}

void ApplyRopeTranspose(float* v, const float* cos_sin, int half) {
  for (int m = 0; m < half; ++m) {
    const float c = cos_sin[2 * m];
    const float s = cos_sin[2 * m + 1];
    const float x1 = v[m];
    const float x2 = v[m + half];
    v[m] = x1 * c + x2 * s;
    v[m + half] = x2 * c - x1 * s;
  }
}

void RopeCosSin(int64_t pos, const std::vector<double>& inv_freq, float* cos_sin) {
  for (size_t m = 0; m < inv_freq.size(); ++m) {
    // The angle in double: at positions near 1e6 a float angle would be off by ~0.06 rad.
    const double angle = static_cast<double>(pos) * inv_freq[m];
    cos_sin[2 * m] = static_cast<float>(std::cos(angle));
    cos_sin[2 * m + 1] = static_cast<float>(std::sin(angle));
  }
}

void RotateKeyRows(const std::vector<double>& inv_freq, int64_t seq_kv, int64_t heads, int64_t dim,
                   int64_t row0, int64_t row1, const float* in, float* out) {
  const int half = static_cast<int>(inv_freq.size());
  std::vector<float> cos_sin(2 * half);
  for (int64_t row = row0; row < row1; ++row) {
    if (half > 0) RopeCosSin(row % seq_kv, inv_freq, cos_sin.data());
    for (int64_t h = 0; h < heads; ++h) {
      const float* src = in + (row * heads + h) * dim;
      float* dst = out + (row * heads + h) * dim;
      std::copy(src, src + dim, dst);
      if (half > 0) ApplyRope(dst, cos_sin.data(), half);
    }
  }
}

void ApplyRope(float* v, const float* cos_sin, int half) {
  for (int m = 0; m < half; ++m) {
    const float c = cos_sin[2 * m];
    const float s = cos_sin[2 * m + 1];
    const float x1 = v[m];
    const float x2 = v[m + half];
    v[m] = x1 * c - x2 * s;
    v[m + half] = x2 * c + x1 * s;
  }
}

std::vector<double> AlibiSlopes(const Alibi& alibi, int num_output_heads) {
  if (alibi.schedule == AlibiSchedule::kHarmonic) {
    const double s0 = alibi.harmonic_base_slope.value_or(1.0);
    std::vector<double> slopes(num_output_heads);
    for (int h = 0; h < num_output_heads; ++h) slopes[h] = s0 / (h + 1);
    return slopes;
  }
  return GeometricSlopes(num_output_heads);
}

}  // namespace attnbench
