// The GPU backends' test cases (tests/kernels/cuda/cuda_backends_test.cc), shared with the host
// test that emulates a tensor-core kernel's roundings on exactly these problems and seeds
// (tests/kernels/closeness_test.cc), so the tolerance the GPU run applies is measured here first.
#ifndef ATTNBENCH_TESTS_KERNELS_KERNEL_CASES_H_
#define ATTNBENCH_TESTS_KERNELS_KERNEL_CASES_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "kernels/spec/problem.h"

namespace attnbench::testing {

// B = 2, S_q = 77, S_kv = 131, D = 64, GQA 6/2, bfloat16: 59,136 output elements.
Problem GpuBaseProblem();

struct KernelCase {
  std::string name;
  std::function<void(Problem&)> edit;
};

// Every layout, mask and modifier on odd sizes, padded head dims, decode shapes.
std::vector<KernelCase> GpuKernelCases();

// The problem case `index` runs in `dtype`, with the seed the GPU test uses; not normalized.
Problem GpuCaseProblem(int index, DType dtype);

// Decode cache formats every backend that reads quantized caches is tested on (cpu_reference,
// cuda_reference): int8, int4 and two SAQ staircases, one ending in native tokens; the edit sets
// the problem's kv_cache format or bands only.
struct CacheFormatCase {
  std::string name;
  std::function<void(KvCache&)> edit;
};
std::vector<CacheFormatCase> QuantizedCacheCases();

}  // namespace attnbench::testing

#endif  // ATTNBENCH_TESTS_KERNELS_KERNEL_CASES_H_
