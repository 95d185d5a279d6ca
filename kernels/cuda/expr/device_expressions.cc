#include "kernels/cuda/expr/device_expressions.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/backend/cuda_status.h"

namespace attnbench::cuda {
namespace {

// The emitted AttnbenchAux (kernels/expr/cuda_source.h), as the host lays it out.
struct DeviceAux {
  const float* data;
  long long rows, cols;  // NOLINT(runtime/int): the emitted struct's types
};
static_assert(sizeof(DeviceAux) == 24, "AttnbenchAux is a pointer and two 64-bit integers");

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 2147483647;

}  // namespace

absl::StatusOr<std::unique_ptr<DeviceExpressions>> DeviceExpressions::Create(
    const ProblemExpressions& exprs, const std::vector<int32_t>& query_heads,
    const std::vector<int32_t>& kv_heads, int64_t seq_q, int64_t seq_kv, const std::string& arch,
    ExpressionModuleCache& cache) {
  const expr::Program* score = exprs.score_mod ? &*exprs.score_mod : nullptr;
  const expr::Program* mask = exprs.mask_mod ? &*exprs.mask_mod : nullptr;
  if ((score == nullptr && mask == nullptr) || query_heads.empty() ||
      query_heads.size() != kv_heads.size()) {
    return absl::InvalidArgumentError(
        "device expressions need a score_mod or a mask_mod and one head-map entry per head");
  }
  std::unique_ptr<DeviceExpressions> d(new DeviceExpressions());
  d->heads_ = static_cast<int64_t>(query_heads.size());
  d->seq_q_ = seq_q;
  d->seq_kv_ = seq_kv;
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<std::shared_ptr<const ExpressionModule>> module =
      cache.Get(score, mask, arch, &d->cache_hit_);
  if (!module.ok()) return module.status();
  // A miss's wall time (source emission and NVRTC); a hit compiled nothing.
  if (!d->cache_hit_) {
    d->compile_seconds_ =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  d->module_ = *std::move(module);
  const std::string& cubin = d->module_->compiled.cubin;
  ATTNBENCH_CUDA_RETURN_IF_ERROR(
      cudaLibraryLoadData(&d->library_, cubin.data(), nullptr, nullptr, 0, nullptr, nullptr, 0));
  if (score != nullptr) {
    ATTNBENCH_CUDA_RETURN_IF_ERROR(
        cudaLibraryGetKernel(&d->score_pairs_, d->library_, "attnbench_score_pairs"));
  }
  if (mask != nullptr) {
    ATTNBENCH_CUDA_RETURN_IF_ERROR(
        cudaLibraryGetKernel(&d->mask_scores_, d->library_, "attnbench_mask_scores"));
    ATTNBENCH_CUDA_RETURN_IF_ERROR(
        cudaLibraryGetKernel(&d->mask_tiles_, d->library_, "attnbench_mask_tiles"));
  }

  // Aux tensors, each in its own allocation, and the table of them the emitted code indexes
  // (aux[k] is exprs.aux[k], the order the programs were compiled against).
  std::vector<DeviceAux> table;
  for (size_t k = 0; k < exprs.aux.size(); ++k) {
    const expr::AuxTensor& t = exprs.aux[k];
    absl::StatusOr<DeviceBuffer> data =
        DeviceBuffer::Upload(t.values.data(), t.values.size() * sizeof(float),
                             absl::StrCat("aux tensor '", t.name, "'"));
    if (!data.ok()) return data.status();
    table.push_back({data->as<const float>(), static_cast<long long>(t.shape[0]),
                     static_cast<long long>(t.shape.size() == 2 ? t.shape[1] : 1)});
    d->aux_data_.push_back(*std::move(data));
  }
  if (!table.empty()) {
    absl::StatusOr<DeviceBuffer> b = DeviceBuffer::Upload(
        table.data(), table.size() * sizeof(DeviceAux), "the aux tensor table");
    if (!b.ok()) return b.status();
    d->aux_table_ = *std::move(b);
  }
  absl::StatusOr<DeviceBuffer> qh = DeviceBuffer::Upload(
      query_heads.data(), query_heads.size() * sizeof(int32_t), "the expressions' query heads");
  if (!qh.ok()) return qh.status();
  d->query_heads_ = *std::move(qh);
  absl::StatusOr<DeviceBuffer> kh = DeviceBuffer::Upload(
      kv_heads.data(), kv_heads.size() * sizeof(int32_t), "the expressions' KV heads");
  if (!kh.ok()) return kh.status();
  d->kv_heads_ = *std::move(kh);
  return d;
}

DeviceExpressions::~DeviceExpressions() {
  if (library_ != nullptr) cudaLibraryUnload(library_);
}

cudaError_t DeviceExpressions::LaunchPairs(cudaKernel_t kernel, float* scores, int64_t bh0,
                                           int64_t bh_count, int64_t row0, int64_t rows,
                                           cudaStream_t stream) const {
  const int64_t n = bh_count * rows * seq_kv_;
  if (kernel == nullptr || n <= 0) return cudaSuccess;
  // The kernels' parameters, exactly as declared (kCommonParams, kChunkParams).
  const void* aux = aux_table_.get();
  const int* hq = query_heads_.as<const int>();
  const int* hkv = kv_heads_.as<const int>();
  long long heads = heads_, sq = seq_q_, skv = seq_kv_;     // NOLINT(runtime/int)
  long long p0 = bh0, pn = bh_count, r0 = row0, rn = rows;  // NOLINT(runtime/int)
  void* args[] = {&aux, &hq, &hkv, &heads, &sq, &skv, &p0, &pn, &r0, &rn, &scores};
  const dim3 grid(static_cast<unsigned int>(std::min((n + kThreads - 1) / kThreads, kMaxBlocks)));
  return cudaLaunchKernel(reinterpret_cast<const void*>(kernel), grid, dim3(kThreads), args, 0,
                          stream);
}

cudaError_t DeviceExpressions::ApplyScoreMod(float* scores, int64_t bh0, int64_t bh_count,
                                             int64_t row0, int64_t rows,
                                             cudaStream_t stream) const {
  return LaunchPairs(score_pairs_, scores, bh0, bh_count, row0, rows, stream);
}

cudaError_t DeviceExpressions::ApplyMaskMod(float* scores, int64_t bh0, int64_t bh_count,
                                            int64_t row0, int64_t rows, cudaStream_t stream) const {
  return LaunchPairs(mask_scores_, scores, bh0, bh_count, row0, rows, stream);
}

cudaError_t DeviceExpressions::ClassifyMaskTiles(int tile_q, int tile_kv, int64_t bh_count,
                                                 uint8_t* tiles, cudaStream_t stream) const {
  if (mask_tiles_ == nullptr || tiles == nullptr || tile_q <= 0 || tile_kv <= 0 || bh_count <= 0) {
    return cudaErrorInvalidValue;
  }
  const int64_t q_tiles = (seq_q_ + tile_q - 1) / tile_q;
  const int64_t kv_tiles = (seq_kv_ + tile_kv - 1) / tile_kv;
  if (kv_tiles > kMaxBlocks || q_tiles > 65535 || bh_count > 65535) {
    return cudaErrorInvalidConfiguration;
  }
  // The kernel's parameters, exactly as declared (kCommonParams, then the tiles).
  const void* aux = aux_table_.get();
  const int* hq = query_heads_.as<const int>();
  const int* hkv = kv_heads_.as<const int>();
  long long heads = heads_, sq = seq_q_, skv = seq_kv_;  // NOLINT(runtime/int)
  int tq = tile_q, tkv = tile_kv;
  void* args[] = {&aux, &hq, &hkv, &heads, &sq, &skv, &tq, &tkv, &tiles};
  const dim3 grid(static_cast<unsigned>(kv_tiles), static_cast<unsigned>(q_tiles),
                  static_cast<unsigned>(bh_count));
  return cudaLaunchKernel(reinterpret_cast<const void*>(mask_tiles_), grid, dim3(kThreads), args, 0,
                          stream);
}

}  // namespace attnbench::cuda
