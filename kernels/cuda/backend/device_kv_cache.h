// A decode problem's paged or quantized KV cache made resident on its CUDA device: the host builds
// the stored cache once (kernels/spec/kv_cache_store.h, keys rotated by RoPE first, as a decode
// cache holds them) and uploads its pools, page table and format ranges as they are, so the
// device reads exactly the bytes the CPU backend reads. KvCacheArgs describes them to kernels.
#ifndef ATTNBENCH_KERNELS_CUDA_BACKEND_DEVICE_KV_CACHE_H_
#define ATTNBENCH_KERNELS_CUDA_BACKEND_DEVICE_KV_CACHE_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cuda/backend/device_buffer.h"
#include "kernels/cuda/common/kv_cache_args.h"
#include "kernels/spec/problem.h"
#include "kernels/spec/shapes.h"
#include "kernels/spec/tensors.h"

namespace attnbench::cuda {

class DeviceKvCache {
 public:
  // How native rows are uploaded: as float (cuda_reference reads every format as float), or in
  // the problem's dtype, their stored width (cuda_flash's decode kernel: KvCachePool::stored).
  enum class NativeRows { kFloat, kStorage };

  // Whether a decode problem's cache is read through KvCacheArgs: paged, quantized or banded.
  // A contiguous native cache is read from AttentionArgs::k and ::v like a prefill.
  static bool Needed(const Problem& problem);

  // Device bytes Create allocates (the stored pools, the page table, the format ranges), native
  // rows counted as float (an upper bound with NativeRows::kStorage). Needs no device.
  static uint64_t EstimateBytes(const Problem& problem, const ProblemShapes& shapes);

  // On the current device, for a normalized, valid decode problem that Needed() holds for;
  // `inputs` from GenerateInputs.
  static absl::StatusOr<std::unique_ptr<DeviceKvCache>> Create(
      const Problem& problem, const ProblemShapes& shapes, const AttentionInputs& inputs,
      NativeRows native = NativeRows::kFloat);

  const KvCacheArgs& Args() const { return args_; }

 private:
  DeviceKvCache() = default;

  KvCacheArgs args_;
  std::vector<DeviceBuffer> buffers_;
};

}  // namespace attnbench::cuda

#endif  // ATTNBENCH_KERNELS_CUDA_BACKEND_DEVICE_KV_CACHE_H_
