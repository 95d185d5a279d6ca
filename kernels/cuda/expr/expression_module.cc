#include "kernels/cuda/expr/expression_module.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/expr/cuda_source.h"

namespace attnbench::cuda {
namespace {

// The parameters every kernel shares.
constexpr char kCommonParams[] =
    "const AttnbenchAux* aux, const int* hq_of_h, const int* hkv_of_h, long long heads, "
    "long long seq_q, long long seq_kv";
// The chunk a per-pair kernel covers: pairs bh0 .. bh0 + bh_count - 1, query rows row0 ..
// row0 + rows - 1, stored [bh_count][rows][seq_kv]. A caller that materializes scores in chunks
// (cuda_unfused) passes its chunk; the whole problem is bh0 = row0 = 0, rows = seq_q.
constexpr char kChunkParams[] = "long long bh0, long long bh_count, long long row0, long long rows";
// Element t of the chunk as pair (b, h), query row i (positions are i + seq_kv - seq_q) and key j.
constexpr char kPairOfElement[] =
    "const long long j = t % seq_kv, i = row0 + (t / seq_kv) % rows;\n"
    "    const long long bh = bh0 + t / seq_kv / rows, b = bh / heads, h = bh % heads;";

constexpr char kMaskKernels[] = R"(
extern "C" __global__ void attnbench_mask_pairs(%PARAMS%, %CHUNK%, unsigned char* keep) {
  const long long n = bh_count * rows * seq_kv;
  for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < n;
       t += (long long)gridDim.x * blockDim.x) {
    %PAIR%
    keep[t] = attnbench_mask_mod(b, h, i + seq_kv - seq_q, j, hq_of_h[h], hkv_of_h[h], aux) ? 1 : 0;
  }
}

// Folds the mask into float scores laid out as keep: a pair mask_mod hides becomes -inf, which
// the softmax then weighs zero, so no keep buffer is needed between the two.
extern "C" __global__ void attnbench_mask_scores(%PARAMS%, %CHUNK%, float* scores) {
  const long long n = bh_count * rows * seq_kv;
  for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < n;
       t += (long long)gridDim.x * blockDim.x) {
    %PAIR%
    if (!attnbench_mask_mod(b, h, i + seq_kv - seq_q, j, hq_of_h[h], hkv_of_h[h], aux)) {
      scores[t] = __int_as_float((int)0xff800000u);
    }
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
extern "C" __global__ void attnbench_score_pairs(%PARAMS%, %CHUNK%, float* scores) {
  const long long n = bh_count * rows * seq_kv;
  for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < n;
       t += (long long)gridDim.x * blockDim.x) {
    %PAIR%
    scores[t] = attnbench_score_mod(scores[t], b, h, i + seq_kv - seq_q, j, hq_of_h[h],
                                    hkv_of_h[h], aux);
  }
}
)";

void ReplaceAll(std::string* text, const std::string& from, const std::string& to) {
  for (size_t at = text->find(from); at != std::string::npos;
       at = text->find(from, at + to.size())) {
    text->replace(at, from.size(), to);
  }
}

std::string WithParams(const char* text) {
  std::string out = text;
  ReplaceAll(&out, "%PARAMS%", kCommonParams);
  ReplaceAll(&out, "%CHUNK%", kChunkParams);
  ReplaceAll(&out, "%PAIR%", kPairOfElement);
  return out;
}

}  // namespace

std::string ExpressionArch(int cc_major, int cc_minor) {
  if (cc_major == 9 && cc_minor == 0) return "sm_90a";
  return absl::StrCat("sm_", cc_major, cc_minor);
}

std::string ExpressionModuleSource(const expr::Program* score_mod, const expr::Program* mask_mod) {
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
  return GetProgram(
      ExpressionModuleKey(score_mod, mask_mod, arch),
      [&] {
        NvrtcProgram program;
        program.source = ExpressionModuleSource(score_mod, mask_mod);
        return program;
      },
      "attnbench_expressions", arch, hit);
}

absl::StatusOr<std::shared_ptr<const ExpressionModule>> ExpressionModuleCache::GetProgram(
    const std::string& key, const std::function<NvrtcProgram()>& make, absl::string_view name,
    const std::string& arch, bool* hit) {
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
  absl::StatusOr<CompiledCubin> compiled = CompileProgram(make(), name, arch, &log);
  if (!compiled.ok()) {
    FailureLog failure_log;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.misses;
      ++stats_.failures;
      failure_log = failure_log_;
    }
    if (failure_log) failure_log(compiled.status(), log);
    return compiled.status();
  }
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.misses;
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

void ExpressionModuleCache::SetFailureLog(FailureLog log) {
  std::lock_guard<std::mutex> lock(mu_);
  failure_log_ = std::move(log);
}

ExpressionCacheStats ExpressionModuleCache::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  ExpressionCacheStats s = stats_;
  s.entries = lru_.size();
  return s;
}

ExpressionModuleCache& SharedExpressionModuleCache() {
  // Never destroyed: workloads on other threads may still hold images at exit.
  static ExpressionModuleCache* const cache = new ExpressionModuleCache();
  return *cache;
}

}  // namespace attnbench::cuda
