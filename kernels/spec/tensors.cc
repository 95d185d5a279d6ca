#include "kernels/spec/tensors.h"

#include <cmath>

#include "kernels/spec/dtype.h"

namespace attnbench {

std::string EncodeTensor(const FloatTensor& tensor) {
  std::string out;
  out.reserve(tensor.values.size() * static_cast<size_t>(std::max(1, DTypeBytes(tensor.dtype))));
  for (float v : tensor.values) AppendEncoded(v, tensor.dtype, &out);
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
