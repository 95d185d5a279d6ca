// The interface every backend implements (CPU reference, CUDA kernels). The server drives it:
// CheckSupported -> EstimateBytes -> Prepare, then per iteration BeforeIteration (untimed: cache
// flush, input rotation) and RunTimed, and finally Output and Inputs for the correctness check.
#ifndef ATTNBENCH_KERNELS_BACKEND_H_
#define ATTNBENCH_KERNELS_BACKEND_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/spec/modifiers.h"
#include "kernels/spec/problem.h"
#include "kernels/spec/tensors.h"
#include "kernels/stop_check.h"

namespace attnbench {

struct DeviceDescription {
  std::string name;
  std::string kind;  // "cpu" or "cuda"
  int index = 0;
  int compute_units = 0;  // hardware threads or SMs
  uint64_t memory_bytes = 0;
  std::string compute_capability;  // empty on the CPU
  double peak_tflops = 0;          // measured ceilings (0 when not measured)
  double peak_gbps = 0;
};

// One kernel of a backend with several (cuda_flash), as GetCapabilities reports it: the
// allow-lists the kernel's own support check uses (KernelSupport in the proto).
struct KernelSupport {
  std::string name;  // the prefix of Workload::KernelName()
  std::vector<std::string> compute_capabilities;
  std::vector<DType> dtypes;
  std::vector<Phase> phases;
  std::vector<MaskKind> masks;
  std::vector<Modifier> modifiers;
  std::vector<std::pair<int, int>> head_dims;  // (D_qk, D_v) tiles; empty: any
  std::vector<std::string> requirements;
};

// What a backend can run, for GetCapabilities and for `auto` selection.
struct BackendSupport {
  std::vector<DType> dtypes;
  std::vector<Phase> phases;
  std::vector<Scope> scopes;
  std::vector<LayoutKind> layouts;
  std::vector<MaskKind> masks;
  std::vector<Modifier> modifiers;
  std::vector<CacheFormat> cache_formats;
  bool paged_kv_cache = false;
  // PHASE_BACKWARD at SCOPE_LAYER (dX and the weight gradients, §5): the phase and scope lists
  // each hold their value for other combinations, so this one combination is listed apart. Off:
  // a backward runs at core scope only.
  bool layer_backward = false;
  // The phases run deterministically: the same problem gives the same bits on the same device
  // (no sum whose order varies between runs). Problem::deterministic asks for it.
  std::vector<Phase> deterministic_phases;
  std::vector<int> head_dims;  // empty: any
  std::vector<std::string> limitations;
  // Whether RunTimed can replay a captured CUDA graph (IterationOptions::use_cuda_graph).
  bool cuda_graphs = false;
  // Higher runs first under `auto` among backends that support a problem.
  int auto_priority = 0;
  // Where a backend has several kernels: what each runs, most specific first.
  std::vector<KernelSupport> kernels;
};

struct IterationOptions {
  bool flush_cache = true;      // evict the last-level cache before the timed region
  bool use_cuda_graph = false;  // time the replay of a captured graph (small shapes)
  // Polled inside a long iteration by backends able to stop one midway (the CPU backend), whose
  // RunTimed then returns CANCELLED early. Null: never stop. Must outlive the iteration.
  const StopCheck* stop = nullptr;
};

// SCOPE_LAYER: how one iteration's time divides between the projections (X W_q, X W_k, X W_v and
// O W_o together) and the attention core, in seconds, measured the way RunTimed measures.
struct LayerSplit {
  double projections_seconds = 0;
  double core_seconds = 0;
};

// One prepared problem on one device: inputs generated and resident, outputs allocated.
class Workload {
 public:
  virtual ~Workload() = default;
  // Untimed work before an iteration (cache flush, input rotation).
  virtual absl::Status BeforeIteration(const IterationOptions& options) = 0;
  // Runs the computation once, as the last BeforeIteration's options say; returns its duration in
  // seconds measured the backend's way (CUDA events on the GPU, the steady clock on the CPU).
  virtual absl::StatusOr<double> RunTimed() = 0;
  // The inputs as the computation read them (after rounding to the dtype; unquantized).
  virtual const AttentionInputs& Inputs() const = 0;
  // The output of the last run: O [B, S_q, H_out, D_v] (layer scope: Y [B, S, d_model]).
  virtual absl::StatusOr<FloatTensor> Output() = 0;
  // PHASE_BACKWARD: dQ, dK, dV of the last run. Backends without backward never get here (their
  // allow-lists refuse the phase).
  virtual absl::StatusOr<GradientTensors> Gradients() {
    return absl::UnimplementedError("this workload computes no gradients");
  }
  // The last RunTimed's LayerSplit at layer scope; nullopt at core scope, and where a backend
  // cannot split an iteration (a replayed CUDA graph has no events between its parts).
  virtual std::optional<LayerSplit> LastLayerSplit() const { return std::nullopt; }
  virtual DeviceDescription Device() const = 0;
  // SM clock in MHz now, or 0 where not known.
  virtual int CurrentClockMhz() const { return 0; }
  // Which of the backend's kernels ran it, where a backend has several (cuda_flash: its Hopper
  // wgmma path or its mma.sync one, with the tile configuration); empty otherwise.
  virtual std::string KernelName() const { return ""; }
  // Seconds Prepare spent building the kernel's work lists for a block-sparse mask (cuda_flash:
  // kept KV tiles per query tile), already part of the preparation the server times; 0 if none.
  virtual double MaskPreparationSeconds() const { return 0; }
  // Seconds Prepare spent compiling spec.score_mod / spec.mask_mod for this backend, also part of
  // the preparation; 0 without expressions.
  virtual double ExpressionCompileSeconds() const { return 0; }
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string Name() const = 0;
  virtual std::string Description() const = 0;
  virtual std::vector<DeviceDescription> Devices() const = 0;
  virtual BackendSupport Support() const = 0;
  // OK when this backend can run the normalized, valid problem; FAILED_PRECONDITION naming what
  // it lacks otherwise.
  virtual absl::Status CheckSupported(const Problem& problem) const = 0;
  // Memory the workload would allocate on its device, to refuse it before allocating.
  virtual uint64_t EstimateBytes(const Problem& problem) const = 0;
  virtual absl::StatusOr<std::unique_ptr<Workload>> Prepare(const Problem& problem,
                                                            int device_index) = 0;
};

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_BACKEND_H_
