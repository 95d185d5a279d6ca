#include "kernels/cuda/expr/expression_module.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/expr/cuda_source.h"

namespace attnbench::cuda {
namespace {

// The parameters every kernel shares, and the variables of pair (bh, i, j) from them.
constexpr char kCommonParams[] =
    "const AttnbenchAux* aux, const int* hq_of_h, const int* hkv_of_h, long long heads, "
    "long long seq_q, long long seq_kv";

constexpr char kMaskKernels[] = R"(
extern "C" __global__ void attnbench_mask_pairs(%PARAMS%, long long bh_count,
                                                unsigned char* keep) {
  const long long n = bh_count * seq_q * seq_kv;
  for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < n;
       t += (long long)gridDim.x * blockDim.x) {
    const long long j = t % seq_kv, i = (t / seq_kv) % seq_q, bh = t / seq_kv / seq_q;
    const long long b = bh / heads, h = bh % heads;
    keep[t] = attnbench_mask_mod(b, h, i + seq_kv - seq_q, j, hq_of_h[h], hkv_of_h[h], aux) ? 1 : 0;
  }
}

extern "C" __global__ void attnbench_mask_tiles(%PARAMS%, int tile_q, int tile_kv,
                                                unsigned char* tiles) {
  const long long bh = blockIdx.z, b = bh / heads, h = bh % heads;
  const long long i0 = (long long)blockIdx.y * tile_q, j0 = (long long)blockIdx.x * tile_kv;
  const long long i1 = i0 + tile_q < seq_q ? i0 + tile_q : seq_q;
  const long long j1 = j0 + tile_kv < seq_kv ? j0 + tile_kv : seq_kv;
  const long long width = j1 - j0, pairs = (i1 - i0) * width;
  int any = 0, all = 1;
  for (long long t = threadIdx.x; t < pairs; t += blockDim.x) {
    const long long i = i0 + t / width, j = j0 + t % width;
    const bool k = attnbench_mask_mod(b, h, i + seq_kv - seq_q, j, hq_of_h[h], hkv_of_h[h], aux);
    any |= k;
    all &= k;
  }
  any = __syncthreads_or(any);
  all = __syncthreads_and(all);
  if (threadIdx.x == 0) {
    tiles[(bh * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x] = all ? 2 : any ? 1 : 0;
  }
}
)";

constexpr char kScoreKernel[] = R"(
extern "C" __global__ void attnbench_score_pairs(%PARAMS%, long long bh_count, float* scores) {
  const long long n = bh_count * seq_q * seq_kv;
  for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < n;
       t += (long long)gridDim.x * blockDim.x) {
    const long long j = t % seq_kv, i = (t / seq_kv) % seq_q, bh = t / seq_kv / seq_q;
    const long long b = bh / heads, h = bh % heads;
    scores[t] = attnbench_score_mod(scores[t], b, h, i + seq_kv - seq_q, j, hq_of_h[h],
                                    hkv_of_h[h], aux);
  }
}
)";

std::string WithParams(const char* text) {
  std::string out = text;
  for (size_t at = out.find("%PARAMS%"); at != std::string::npos; at = out.find("%PARAMS%")) {
    out.replace(at, 8, kCommonParams);
  }
  return out;
}

}  // namespace

std::string ExpressionModuleSource(const expr::Program* score_mod,
                                   const expr::Program* mask_mod) {
  std::string out = expr::CudaPrelude();
  if (score_mod != nullptr) {
    out += expr::CudaFunction(*score_mod, "attnbench_score_mod");
    out += WithParams(kScoreKernel);
  }
  if (mask_mod != nullptr) {
    out += expr::CudaFunction(*mask_mod, "attnbench_mask_mod");
    out += WithParams(kMaskKernels);
  }
  return out;
}

std::string ExpressionModuleKey(const expr::Program* score_mod, const expr::Program* mask_mod,
                                const std::string& arch) {
  std::string key = arch;
  for (const expr::Program* p : {score_mod, mask_mod}) {
    if (p == nullptr) {
      key += "|-";
      continue;
    }
    absl::StrAppend(&key, "|", p->normalized, "|Sq=", p->seq_q, "|Skv=", p->seq_kv,
                    p->ints_fit_32 ? "|i32" : "|i64");
  }
  return key;
}

absl::StatusOr<std::shared_ptr<const ExpressionModule>> ExpressionModuleCache::Get(
    const expr::Program* score_mod, const expr::Program* mask_mod, const std::string& arch,
    bool* hit) {
  const std::string key = ExpressionModuleKey(score_mod, mask_mod, arch);
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = index_.find(key);
    if (it != index_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second);
      ++stats_.hits;
      if (hit != nullptr) *hit = true;
      return *it->second;
    }
  }
  if (hit != nullptr) *hit = false;
  // Compiled outside the lock: seconds of NVRTC must not hold up other requests' hits.
  std::string log;
  absl::StatusOr<CompiledCubin> compiled = CompileToCubin(
      ExpressionModuleSource(score_mod, mask_mod), "attnbench_expressions", arch, {}, &log);
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.misses;
  if (!compiled.ok()) {
    ++stats_.failures;
    return compiled.status();
  }
  stats_.compile_seconds += compiled->seconds;
  auto module = std::make_shared<ExpressionModule>();
  module->key = key;
  module->compiled = *std::move(compiled);
  if (index_.count(key) == 0) {
    lru_.push_front(module);
    index_[key] = lru_.begin();
    while (lru_.size() > capacity_) {
      index_.erase(lru_.back()->key);
      lru_.pop_back();
      ++stats_.evictions;
    }
  }
  return std::shared_ptr<const ExpressionModule>(std::move(module));
}

ExpressionCacheStats ExpressionModuleCache::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  ExpressionCacheStats s = stats_;
  s.entries = lru_.size();
  return s;
}

}  // namespace attnbench::cuda
