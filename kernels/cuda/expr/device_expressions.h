// A problem's score_mod / mask_mod made ready to launch on a CUDA device: the compiled image
// (from the process-wide ExpressionModuleCache) loaded with the CUDA runtime's library API, and
// what its kernels read uploaded once — the aux tensors with their AttnbenchAux table and the
// head map as the query-head and KV-head columns. Built at Prepare, outside the timed
// iterations; the Apply* calls only enqueue kernels, so they can be captured in a CUDA graph.
#ifndef ATTNBENCH_KERNELS_CUDA_EXPR_DEVICE_EXPRESSIONS_H_
#define ATTNBENCH_KERNELS_CUDA_EXPR_DEVICE_EXPRESSIONS_H_

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cuda/backend/device_buffer.h"
#include "kernels/cuda/expr/expression_module.h"
#include "kernels/spec/expressions.h"

namespace attnbench::cuda {

class DeviceExpressions {
 public:
  // For `exprs` (at least one expression) of a problem with `heads` output heads whose head map
  // maps h to (query_heads[h], kv_heads[h]), on the current device of architecture `arch`
  // (ExpressionArch). Compiles through `cache` on a miss: FAILED_PRECONDITION when libnvrtc is
  // missing, INTERNAL when NVRTC rejects the source (its log goes to the server's log, not the
  // status); device allocation failures RESOURCE_EXHAUSTED.
  static absl::StatusOr<std::unique_ptr<DeviceExpressions>> Create(
      const ProblemExpressions& exprs, const std::vector<int32_t>& query_heads,
      const std::vector<int32_t>& kv_heads, int64_t seq_q, int64_t seq_kv, const std::string& arch,
      ExpressionModuleCache& cache);
  ~DeviceExpressions();
  DeviceExpressions(const DeviceExpressions&) = delete;
  DeviceExpressions& operator=(const DeviceExpressions&) = delete;

  bool has_score_mod() const { return score_pairs_ != nullptr; }
  bool has_mask_mod() const { return mask_scores_ != nullptr; }
  // Whether the image came from the cache, and the seconds Create spent compiling it (0 on a hit).
  bool cache_hit() const { return cache_hit_; }
  double compile_seconds() const { return compile_seconds_; }

  // On float32 scores of a chunk, pairs bh0 .. bh0 + bh_count - 1 (bh = b * H_out + h) and query
  // rows row0 .. row0 + rows - 1 stored [bh_count][rows][S_kv]: the score_mod in place, or the
  // mask_mod folded in as -inf on the pairs it hides. No-ops (cudaSuccess) for an expression the
  // problem does not have. Enqueue on `stream`; return the launch status.
  cudaError_t ApplyScoreMod(float* scores, int64_t bh0, int64_t bh_count, int64_t row0,
                            int64_t rows, cudaStream_t stream) const;
  cudaError_t ApplyMaskMod(float* scores, int64_t bh0, int64_t bh_count, int64_t row0, int64_t rows,
                           cudaStream_t stream) const;

  // For kernels compiled with the expressions themselves (cuda_flash's NVRTC builds): the
  // AttnbenchAux table in device memory (null without aux tensors), and the mask_mod's class of
  // every tile of tile_q query rows x tile_kv keys of pairs bh = 0 .. bh_count - 1 (bh_count 1
  // when the mask_mod reads neither b nor a head: the classes of every pair) written to
  // tiles[(bh * q_tiles + qt) * kv_tiles + kt]: 0 keeps no pair, 1 some, 2 every pair
  // (attnbench_mask_tiles, every pair evaluated). Enqueued on `stream`; cudaErrorInvalidValue
  // without a mask_mod, cudaErrorInvalidConfiguration past the grid's limits.
  const void* aux_table() const { return aux_table_.get(); }
  cudaError_t ClassifyMaskTiles(int tile_q, int tile_kv, int64_t bh_count, uint8_t* tiles,
                                cudaStream_t stream) const;

 private:
  DeviceExpressions() = default;
  cudaError_t LaunchPairs(cudaKernel_t kernel, float* scores, int64_t bh0, int64_t bh_count,
                          int64_t row0, int64_t rows, cudaStream_t stream) const;

  std::shared_ptr<const ExpressionModule> module_;  // keeps the image the library was loaded from
  cudaLibrary_t library_ = nullptr;
  cudaKernel_t score_pairs_ = nullptr;
  cudaKernel_t mask_scores_ = nullptr;
  cudaKernel_t mask_tiles_ = nullptr;
  std::vector<DeviceBuffer> aux_data_;
  DeviceBuffer aux_table_, query_heads_, kv_heads_;
  int64_t heads_ = 0, seq_q_ = 0, seq_kv_ = 0;
  bool cache_hit_ = false;
  double compile_seconds_ = 0;
};

}  // namespace attnbench::cuda

#endif  // ATTNBENCH_KERNELS_CUDA_EXPR_DEVICE_EXPRESSIONS_H_
