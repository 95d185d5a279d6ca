// The CUDA backends (MakeCudaBackends: cuda_flash, cuda_unfused, cuda_reference) against the
// non-finite contract of tests/kernels/non_finite_backend.h: client tensors holding NaN or +-inf
// and an input_scale that would overflow the dtype are refused by Prepare (INVALID_ARGUMENT naming
// the element or spec.input_scale) before the device does any work, and a non-finite element of a
// real GPU output, in a row the sampled check leaves out, is counted and fails the check. Every
// dtype each backend supports among float16, bfloat16 and float32. Skips (GTEST_SKIP) on a
// machine without a CUDA device; compiles wherever the CUDA backends do.
#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/backend/cuda_backend.h"
#include "tests/kernels/non_finite_backend.h"

namespace attnbench {
namespace {

// Owned by the test binary: measuring the ceilings happens once.
const std::vector<std::unique_ptr<Backend>>& Backends() {
  static const auto* const backends = new std::vector<std::unique_ptr<Backend>>(MakeCudaBackends());
  return *backends;
}

#define SKIP_WITHOUT_DEVICE() \
  if (Backends().empty()) GTEST_SKIP() << "no CUDA device on this machine"

// B = 2, S_q = 40, S_kv = 72, D = 64, GQA 4/2: a shape every CUDA kernel runs.
Problem Small(DType dtype) {
  Problem p;
  p.batch_size = 2;
  p.seq_len_q = 40;
  p.seq_len_kv = 72;
  p.head_dim_qk = 64;
  p.layout.kind = LayoutKind::kGqa;
  p.layout.num_query_heads = 4;
  p.layout.num_kv_heads = 2;
  p.dtype = dtype;
  p.seed = 17;
  return p;
}

// The dtypes `backend` runs Small in; every backend runs at least one.
std::vector<DType> SupportedDTypes(const Backend& backend) {
  std::vector<DType> dtypes;
  for (DType d : {DType::kFloat16, DType::kBFloat16, DType::kFloat32}) {
    if (backend.CheckSupported(NormalizeProblem(Small(d))).ok()) dtypes.push_back(d);
  }
  EXPECT_FALSE(dtypes.empty()) << backend.Name() << " runs none of float16, bfloat16, float32";
  return dtypes;
}

TEST(CudaNonFiniteTest, PrepareRefusesNonFiniteClientTensors) {
  SKIP_WITHOUT_DEVICE();
  for (const auto& backend : Backends()) {
    for (DType d : SupportedDTypes(*backend)) {
      testing::ExpectPrepareRefusesNonFiniteInputs(*backend, Small(d));
    }
  }
}

TEST(CudaNonFiniteTest, PrepareRefusesAnInputScaleThatOverflows) {
  SKIP_WITHOUT_DEVICE();
  for (const auto& backend : Backends()) {
    for (DType d : SupportedDTypes(*backend)) {
      testing::ExpectPrepareRefusesOverflowingInputScale(*backend, Small(d));
    }
  }
}

TEST(CudaNonFiniteTest, NonFiniteOutputFailsTheCheckOutsideTheSampledRows) {
  SKIP_WITHOUT_DEVICE();
  for (const auto& backend : Backends()) {
    for (DType d : SupportedDTypes(*backend)) {
      testing::ExpectNonFiniteOutputFailsTheCheck(*backend, Small(d));
    }
  }
}

}  // namespace
}  // namespace attnbench
