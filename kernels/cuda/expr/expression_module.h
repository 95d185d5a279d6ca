// A problem's score_mod / mask_mod as device code: the CUDA source NVRTC compiles (the emitted
// expression functions of kernels/expr/cuda_source.h and small kernels around them), and a bounded
// cache of the compiled images, so a second request with the same expressions pays no compile.
//
// The kernels, all extern "C", over a problem's (b, h) pairs of heads (bh = b * H_out + h) with
// the head map in hq_of_h / hkv_of_h and the aux tensors as an AttnbenchAux array in device memory.
// The per-pair ones take a chunk, pairs bh0 .. bh0 + bh_count - 1 and query rows row0 .. row0 +
// rows - 1 laid out [bh_count][rows][S_kv] (the whole problem: bh0 = row0 = 0, rows = S_q), so a
// backend that materializes scores in chunks applies them chunk by chunk; S_q and S_kv stay the
// problem's, as the positions (query row i is at i + S_kv - S_q) and the emitted code need them:
//   attnbench_mask_pairs(aux, hq_of_h, hkv_of_h, heads, S_q, S_kv, bh0, bh_count, row0, rows, keep)
//       keep[(p * rows + r) * S_kv + j] = mask_mod at pair bh0 + p, query row row0 + r, key j
//   attnbench_mask_scores(... same ..., scores)
//       scores[...] = -inf where mask_mod hides the pair, untouched elsewhere
//   attnbench_mask_tiles(aux, hq_of_h, hkv_of_h, heads, S_q, S_kv, tile_q, tile_kv, tiles)
//       one block per (bh, query tile, KV tile), grid (KV tiles, query tiles, bh_count):
//       tiles[...] = 0 when the tile keeps no pair, 1 some, 2 every pair (FlexAttention's block
//       mask: what lets a kernel skip empty tiles and drop the per-element test on full ones)
//   attnbench_score_pairs(... as mask_pairs ..., scores)
//       scores[...] = score_mod(scores[...]) in place
// Only the kernels of the expressions the problem has are emitted.
#ifndef ATTNBENCH_KERNELS_CUDA_EXPR_EXPRESSION_MODULE_H_
#define ATTNBENCH_KERNELS_CUDA_EXPR_EXPRESSION_MODULE_H_

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/cuda/expr/nvrtc_compiler.h"
#include "kernels/expr/program.h"

namespace attnbench::cuda {

// The NVRTC architecture for a device of compute capability major.minor: "sm_90a" on Hopper (the
// same image the flash kernels target), else "sm_<major><minor>".
std::string ExpressionArch(int cc_major, int cc_minor);

// The source for `score_mod` and/or `mask_mod` (either may be null, not both).
std::string ExpressionModuleSource(const expr::Program* score_mod, const expr::Program* mask_mod);

// What the compiled image depends on: the normalized expressions and everything the emitter
// writes into the code besides them (S_q and S_kv, the integer width), and the architecture.
std::string ExpressionModuleKey(const expr::Program* score_mod, const expr::Program* mask_mod,
                                const std::string& arch);

struct ExpressionModule {
  std::string key;
  CompiledCubin compiled;
};

struct ExpressionCacheStats {
  uint64_t hits = 0, misses = 0, evictions = 0, failures = 0;
  double compile_seconds = 0;  // summed over misses
  size_t entries = 0;
};

// Least-recently-used, at most `capacity` images; thread-safe. Two requests missing on the same
// key at once may both compile (the second result replaces nothing and is dropped): simpler than
// waiting, and rare.
class ExpressionModuleCache {
 public:
  explicit ExpressionModuleCache(size_t capacity = 64) : capacity_(capacity) {}

  // The image for these expressions on `arch`, compiled on a miss; *hit says which.
  absl::StatusOr<std::shared_ptr<const ExpressionModule>> Get(const expr::Program* score_mod,
                                                              const expr::Program* mask_mod,
                                                              const std::string& arch,
                                                              bool* hit = nullptr);
  // The image cached under `key` (which must say everything the program depends on, the
  // architecture included), compiled from make() on a miss: how cuda_flash caches its kernels
  // built with a request's expressions (kernels/cuda/flash/flash_rtc.h) in the same bounded cache,
  // counted in the same statistics.
  absl::StatusOr<std::shared_ptr<const ExpressionModule>> GetProgram(
      const std::string& key, const std::function<NvrtcProgram()>& make, absl::string_view name,
      const std::string& arch, bool* hit = nullptr);
  ExpressionCacheStats Stats() const;

  // Receives, for every failed compile, the status and NVRTC's log (which the status leaves out:
  // it is the server's, not the client's). Called on the compiling thread; null drops them.
  using FailureLog = std::function<void(const absl::Status& status, const std::string& log)>;
  void SetFailureLog(FailureLog log);

 private:
  const size_t capacity_;
  mutable std::mutex mu_;
  FailureLog failure_log_;
  std::list<std::shared_ptr<const ExpressionModule>> lru_;  // front: most recent
  std::unordered_map<std::string, std::list<std::shared_ptr<const ExpressionModule>>::iterator>
      index_;
  ExpressionCacheStats stats_;
};

// The one cache of the process, shared by every CUDA backend and device (an image is keyed by
// its architecture), so a second request with the same expressions compiles nothing; the
// server's metrics read its Stats().
ExpressionModuleCache& SharedExpressionModuleCache();

}  // namespace attnbench::cuda

#endif  // ATTNBENCH_KERNELS_CUDA_EXPR_EXPRESSION_MODULE_H_
