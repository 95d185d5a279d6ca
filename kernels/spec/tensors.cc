#include "kernels/spec/tensors.h"

#include <cmath>

#include "kernels/spec/dtype.h"
#include "kernels/spec/parallel_fill.h"

namespace attnbench {

std::vector<float> DequantizedValues(const FloatTensor& t) {
  if (t.scales.empty()) return t.values;
  const int64_t n = static_cast<int64_t>(t.values.size());
  const int64_t dim = t.shape.empty() ? 1 : t.shape.back();
  const int64_t heads = t.shape.size() == 4 ? t.shape[2] : 1;
  std::vector<float> out(n);
  ParallelFill(n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      out[k] = t.values[k] * static_cast<float>(ScaleOfHead(t, (k / dim) % heads));
    }
  });
  return out;
}

std::string EncodeTensor(const FloatTensor& tensor) {
  // kUnspecified is written as float32 (EncodeElement).
  const int64_t width = tensor.dtype == DType::kUnspecified ? 4 : DTypeBytes(tensor.dtype);
  const int64_t n = static_cast<int64_t>(tensor.values.size());
  std::string out(static_cast<size_t>(n * width), '\0');
  auto* bytes = reinterpret_cast<unsigned char*>(out.data());
  // Each element has its own bytes, so chunks encode concurrently (the keys of a long decode
  // cache are hundreds of millions of elements, encoded while a GPU backend prepares).
  ParallelFill(n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      EncodeElement(tensor.values[k], tensor.dtype, bytes + k * width);
    }
  });
  return out;
}

int64_t CountNonFinite(const FloatTensor& tensor) {
  int64_t count = 0;
  for (float v : tensor.values) count += !std::isfinite(RoundToDType(v, tensor.dtype));
  return count;
}

OutputSummary SummarizeTensor(const FloatTensor& tensor) {
  OutputSummary summary;
  // FNV-1a 64 over the encoded bytes, so the checksum identifies what a client would receive.
  uint64_t hash = 0xcbf29ce484222325ull;
  const std::string bytes = EncodeTensor(tensor);
  for (unsigned char c : bytes) {
    hash ^= c;
    hash *= 0x100000001b3ull;
  }
  summary.checksum = hash;
  double sum = 0;
  double abs_max = 0;
  for (float v : tensor.values) {
    const float stored = RoundToDType(v, tensor.dtype);
    // CountNonFinite's count, in the pass that rounds each element anyway.
    summary.non_finite_elements += !std::isfinite(stored);
    sum += stored;
    abs_max = std::max(abs_max, std::fabs(static_cast<double>(stored)));
  }
  summary.num_elements = static_cast<int64_t>(tensor.values.size());
  summary.mean = tensor.values.empty() ? 0.0 : sum / static_cast<double>(tensor.values.size());
  summary.abs_max = abs_max;
  return summary;
}

}  // namespace attnbench
