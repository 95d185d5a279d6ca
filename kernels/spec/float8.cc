#include "kernels/spec/float8.h"

#include <algorithm>
#include <cmath>
#include <thread>

#include "kernels/spec/dtype.h"
#include "kernels/spec/parallel_fill.h"

namespace attnbench {
namespace {

// Dimension 2 of BSHD: the head an element belongs to is (index / D) % H.
struct HeadIndex {
  int64_t heads;
  int64_t dim;
  int64_t operator()(int64_t index) const { return (index / dim) % heads; }
};

HeadIndex HeadsOf(const FloatTensor& t) {
  return HeadIndex{t.shape.size() == 4 ? t.shape[2] : 1, t.shape.empty() ? 1 : t.shape.back()};
}

}  // namespace

float DerivedFloat8Scale(float amax) { return amax > 0 ? amax / kFloat8LargestCode : 1.0f; }

FloatTensor QuantizeFloat8(const FloatTensor& values, ScaleGranularity granularity,
                           const std::vector<float>& given) {
  const HeadIndex head_of = HeadsOf(values);
  const bool per_head = granularity == ScaleGranularity::kHead;
  const int64_t groups = per_head ? head_of.heads : 1;
  FloatTensor out;
  out.dtype = DType::kFloat8E4M3;
  out.shape = values.shape;
  out.scales = given;
  const int64_t n = static_cast<int64_t>(values.values.size());
  if (out.scales.empty()) {
    // The largest magnitude of each group, over threads' partial maxima (max is exact in any
    // order, so the split does not change the scale).
    const int64_t hardware = std::max(1u, std::thread::hardware_concurrency());
    std::vector<std::vector<float>> partial(hardware, std::vector<float>(groups, 0.0f));
    const int64_t chunks = std::min<int64_t>(hardware, std::max<int64_t>(1, n >> 16));
    ParallelFill(chunks, int64_t{1} << 16, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        std::vector<float>& amax = partial[c];
        for (int64_t k = n * c / chunks; k < n * (c + 1) / chunks; ++k) {
          const int64_t g = per_head ? head_of(k) : 0;
          amax[g] = std::max(amax[g], std::fabs(values.values[k]));
        }
      }
    });
    out.scales.assign(groups, 0.0f);
    for (int64_t g = 0; g < groups; ++g) {
      float amax = 0;
      for (const std::vector<float>& p : partial) amax = std::max(amax, p[g]);
      out.scales[g] = DerivedFloat8Scale(amax);
    }
  }
  out.values.resize(n);
  ParallelFill(n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const float scale = out.scales[per_head ? head_of(k) : 0];
      out.values[k] = RoundToDType(values.values[k] / scale, DType::kFloat8E4M3);
    }
  });
  return out;
}

void AttachFloat8Scales(ScaleGranularity granularity, const std::vector<float>& given,
                        FloatTensor* codes) {
  if (!given.empty()) {
    codes->scales = given;
    return;
  }
  const int64_t groups = granularity == ScaleGranularity::kHead ? HeadsOf(*codes).heads : 1;
  codes->scales.assign(groups, 1.0f);
}

}  // namespace attnbench
