#include "kernels/cpu/cpu_backend.h"

#include <chrono>
#include <cmath>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/backend_support.h"
#include "kernels/cpu/cpu_attention.h"
#include "kernels/cpu/cpu_backward_workload.h"
#include "kernels/cpu/cpu_device.h"
#include "kernels/cpu/cpu_kv_source.h"
#include "kernels/cpu/cpu_layer_backward_workload.h"
#include "kernels/cpu/cpu_matmul.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/spec/expressions.h"
#include "kernels/spec/inputs.h"
#include "kernels/spec/shapes.h"

namespace attnbench {
namespace {

class CpuWorkload : public Workload {
 public:
  CpuWorkload(Problem problem, ProblemShapes shapes, AttentionInputs inputs, int num_threads,
              std::shared_ptr<const ProblemExpressions> exprs, double expression_compile_seconds)
      : expression_compile_seconds_(expression_compile_seconds),
        problem_(std::move(problem)),
        shapes_(std::move(shapes)),
        inputs_(std::move(inputs)),
        pool_(num_threads),
        attention_(problem_, shapes_, pool_.num_threads(), std::move(exprs)) {
    q_work_.resize(NumElements(shapes_.query));
    output_.resize(NumElements(shapes_.output));
    if (shapes_.layer) {
      q_proj_.resize(NumElements(shapes_.query));
      k_proj_.resize(NumElements(shapes_.key));
      v_proj_.resize(NumElements(shapes_.value));
      o_core_.resize(NumElements(shapes_.core_output));
    }
    if (!inputs_.query.scales.empty()) {
      // FP8 codes (§1b): the float32 math runs on what they stand for, code * scale.
      dequantized_q_ = DequantizedValues(inputs_.query);
      dequantized_k_ = DequantizedValues(inputs_.key);
      dequantized_v_ = DequantizedValues(inputs_.value);
    }
    if (problem_.phase == Phase::kDecode) {
      // A decode cache holds keys after RoPE, as the prefill that filled it left them; rotating
      // happens once here, not in every timed step.
      const std::vector<float>* keys = &inputs_.key.values;
      std::vector<float> rotated;
      if (problem_.rope.enabled) {
        rotated.resize(inputs_.key.values.size());
        attention_.RotateKeys(pool_, keys->data(), rotated.data());
        keys = &rotated;
      }
      cache_ = std::make_unique<PagedKvCache>(problem_, *keys, inputs_.value.values,
                                              shapes_.heads.num_kv_heads, &pool_);
    } else if (problem_.rope.enabled) {
      k_work_.resize(NumElements(shapes_.key));
    }
  }

  double ExpressionCompileSeconds() const override { return expression_compile_seconds_; }

  absl::Status BeforeIteration(const IterationOptions& options) override {
    options_ = options;
    if (options.flush_cache) FlushLastLevelCache(options.stop);
    return absl::OkStatus();
  }

  absl::StatusOr<double> RunTimed() override {
    const auto start = std::chrono::steady_clock::now();
    Compute(options_.stop);
    const auto end = std::chrono::steady_clock::now();
    if (options_.stop != nullptr && options_.stop->stopped()) {
      ran_ = false;  // the output is partly written
      return absl::CancelledError("cpu_reference: the iteration was stopped midway");
    }
    ran_ = true;
    return std::chrono::duration<double>(end - start).count();
  }

  const AttentionInputs& Inputs() const override { return inputs_; }

  absl::StatusOr<FloatTensor> Output() override {
    if (!ran_) return absl::FailedPreconditionError("Output() before any RunTimed()");
    FloatTensor t;
    t.dtype = problem_.output_dtype;
    t.shape = shapes_.output;
    t.values = output_;
    return t;
  }

  std::optional<LayerSplit> LastLayerSplit() const override {
    if (!shapes_.layer || !ran_) return std::nullopt;
    return split_;
  }

  DeviceDescription Device() const override { return CpuDevice(); }

 private:
  using Clock = std::chrono::steady_clock;
  static double Seconds(Clock::time_point from, Clock::time_point to) {
    return std::chrono::duration<double>(to - from).count();
  }

  void Compute(const StopCheck* stop) {
    const Clock::time_point start = Clock::now();
    const bool fp8 = !dequantized_q_.empty();
    const float* q = fp8 ? dequantized_q_.data() : inputs_.query.values.data();
    const float* k = fp8 ? dequantized_k_.data() : inputs_.key.values.data();
    const float* v = fp8 ? dequantized_v_.data() : inputs_.value.values.data();
    const int64_t tokens = shapes_.batch * shapes_.seq_q;
    if (shapes_.layer) {
      const int64_t dm = shapes_.d_model;
      MatMulRounded(pool_, inputs_.x.values.data(), inputs_.w_q.values.data(), q_proj_.data(),
                    tokens, dm, shapes_.w_q[1], problem_.dtype, stop);
      MatMulRounded(pool_, inputs_.x.values.data(), inputs_.w_k.values.data(), k_proj_.data(),
                    tokens, dm, shapes_.w_k[1], problem_.dtype, stop);
      MatMulRounded(pool_, inputs_.x.values.data(), inputs_.w_v.values.data(), v_proj_.data(),
                    tokens, dm, shapes_.w_v[1], problem_.dtype, stop);
      q = q_proj_.data();
      k = k_proj_.data();
      v = v_proj_.data();
    }
    const Clock::time_point core_start = Clock::now();
    attention_.PrepareQueries(pool_, q, q_work_.data(), stop);
    float* core_out = shapes_.layer ? o_core_.data() : output_.data();
    if (cache_ != nullptr) {
      attention_.Run(pool_, q_work_.data(), *cache_, core_out, stop);
    } else {
      if (problem_.rope.enabled) {
        attention_.RotateKeys(pool_, k, k_work_.data(), stop);
        k = k_work_.data();
      }
      const ContiguousKv kv(k, v, shapes_.seq_kv, shapes_.heads.num_kv_heads, shapes_.dim_qk,
                            shapes_.dim_v);
      attention_.Run(pool_, q_work_.data(), kv, core_out, stop);
    }
    if (shapes_.layer) {
      const Clock::time_point core_end = Clock::now();
      MatMulRounded(pool_, o_core_.data(), inputs_.w_o.values.data(), output_.data(), tokens,
                    shapes_.w_o[0], shapes_.d_model, problem_.dtype, stop);
      split_.core_seconds = Seconds(core_start, core_end);
      split_.projections_seconds = Seconds(start, core_start) + Seconds(core_end, Clock::now());
    }
  }

  const double expression_compile_seconds_;
  const Problem problem_;
  const ProblemShapes shapes_;
  const AttentionInputs inputs_;
  ThreadPool pool_;
  CpuAttention attention_;
  std::vector<float> q_work_, k_work_, q_proj_, k_proj_, v_proj_, o_core_, output_;
  std::vector<float> dequantized_q_, dequantized_k_, dequantized_v_;  // FP8 only
  std::unique_ptr<PagedKvCache> cache_;
  IterationOptions options_;  // the last BeforeIteration's
  LayerSplit split_;          // the last Compute's, at layer scope
  bool ran_ = false;
};

class CpuReferenceBackend : public Backend {
 public:
  explicit CpuReferenceBackend(int num_threads) : num_threads_(num_threads) {}

  std::string Name() const override { return kCpuReferenceBackend; }
  std::string Description() const override {
    return "Attention of every layout, mask and modifier on the host CPU: float32 math with a "
           "streaming softmax over key blocks, multi-threaded over batch, heads and query tiles; "
           "paged and int8/int4/SAQ-quantized decode caches; the backward (dQ, dK, dV) from the "
           "saved log-sum-exp, tile by tile, in a key pass and a query pass without atomics, "
           "and a whole layer's backward (dX and the weight gradients) around it.";
  }
  std::vector<DeviceDescription> Devices() const override { return {CpuDevice()}; }

  BackendSupport Support() const override {
    BackendSupport s;
    s.dtypes = {DType::kFloat32, DType::kFloat16, DType::kBFloat16, DType::kFloat8E4M3};
    s.phases = {Phase::kPrefill, Phase::kDecode, Phase::kBackward};
    s.scopes = {Scope::kCore, Scope::kLayer};
    s.layouts = {LayoutKind::kMha,   LayoutKind::kMqa,          LayoutKind::kGqa,
                 LayoutKind::kSqa,   LayoutKind::kSymmetricSqa, LayoutKind::kExtremeSqa,
                 LayoutKind::kGqkva, LayoutKind::kExplicit};
    s.masks = {MaskKind::kNone, MaskKind::kCausal, MaskKind::kSlidingWindow, MaskKind::kBlockSparse,
               MaskKind::kProbabilisticBlockSparse};
    s.modifiers = {Modifier::kRope, Modifier::kAlibi, Modifier::kSoftcap, Modifier::kScoreMod,
                   Modifier::kMaskMod};
    s.cache_formats = {CacheFormat::kNative, CacheFormat::kInt8, CacheFormat::kInt4};
    s.paged_kv_cache = true;
    s.layer_backward = true;
    // Every sum has one order whatever the thread count (cpu_backend_test, cpu_backward_test).
    s.deterministic_phases = s.phases;
    s.limitations = {
        "dtypes are storage only: math is float32 on every dtype (FP8 codes times their scales)",
        "PHASE_BACKWARD recomputes the scores and dP in a separate dQ pass (seven matmuls per "
        "kept pair where the FLOP count has five) so that no accumulation needs atomics"};
    s.auto_priority = 0;
    return s;
  }

  absl::Status CheckSupported(const Problem& problem) const override {
    if (absl::Status s = CheckSupport(Support(), problem, Name()); !s.ok()) return s;
    return absl::OkStatus();
  }

  uint64_t EstimateBytes(const Problem& problem) const override {
    absl::StatusOr<ProblemShapes> shapes = ShapesOf(problem);
    if (!shapes.ok()) return 0;
    const ProblemShapes& s = *shapes;
    const int threads = num_threads_ > 0 ? num_threads_ : CpuDevice().compute_units;
    if (problem.phase == Phase::kBackward) {
      return s.layer ? CpuLayerBackwardWorkloadBytes(problem, s, threads)
                     : CpuBackwardWorkloadBytes(problem, s, threads);
    }
    uint64_t floats = 0;
    if (s.layer) {
      floats += NumElements(s.x) + NumElements(s.w_q) + NumElements(s.w_k) + NumElements(s.w_v) +
                NumElements(s.w_o);  // inputs
      floats += NumElements(s.query) + NumElements(s.key) + NumElements(s.value) +
                NumElements(s.core_output);  // projections and O
    } else {
      floats += NumElements(s.query) + NumElements(s.key) + NumElements(s.value);
      // FP8: the codes' values too, as float32 (CpuWorkload's dequantized copies).
      if (problem.dtype == DType::kFloat8E4M3) {
        floats += NumElements(s.query) + NumElements(s.key) + NumElements(s.value);
      }
    }
    floats += NumElements(s.query) + NumElements(s.output);  // prepared queries, output
    uint64_t bytes = 4 * floats;
    if (problem.phase == Phase::kDecode) {
      bytes += PagedKvCache::BytesFor(problem, s.heads.num_kv_heads);
    } else if (problem.rope.enabled) {
      bytes += 4 * static_cast<uint64_t>(NumElements(s.key));
    }
    bytes += threads * CpuAttention::ScratchBytes(s);
    // The cache-flush buffer is shared by the process (FlushLastLevelCache), not counted here.
    return bytes;
  }

  absl::StatusOr<std::unique_ptr<Workload>> Prepare(const Problem& problem,
                                                    int device_index) override {
    if (device_index != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "device_index (", device_index, ") must be 0: backend cpu_reference has one device"));
    }
    if (absl::Status s = ValidateProblem(problem); !s.ok()) return s;
    if (absl::Status s = CheckSupported(problem); !s.ok()) return s;
    absl::StatusOr<ProblemShapes> shapes = ShapesOf(problem);
    if (!shapes.ok()) return shapes.status();
    // Refused before anything is allocated: a std::vector too large for the host would end the
    // process instead of the request.
    const uint64_t estimate = EstimateBytes(problem);
    const uint64_t memory = CpuDevice().memory_bytes;
    if (memory > 0 && estimate > memory) {
      return absl::ResourceExhaustedError(
          absl::StrCat("backend cpu_reference: this problem needs about ", estimate,
                       " bytes of host memory, more than the host's ", memory));
    }
    const auto compile_start = std::chrono::steady_clock::now();
    absl::StatusOr<std::shared_ptr<const ProblemExpressions>> exprs = CompileExpressions(problem);
    if (!exprs.ok()) return exprs.status();
    const double compile_seconds =
        *exprs == nullptr
            ? 0.0
            : std::chrono::duration<double>(std::chrono::steady_clock::now() - compile_start)
                  .count();
    absl::StatusOr<AttentionInputs> inputs = GenerateInputs(problem);
    if (!inputs.ok()) return inputs.status();
    if (problem.phase == Phase::kBackward && shapes->layer) {
      return MakeCpuLayerBackwardWorkload(problem, *std::move(shapes), *std::move(inputs),
                                          num_threads_, *std::move(exprs), compile_seconds);
    }
    if (problem.phase == Phase::kBackward) {
      return MakeCpuBackwardWorkload(problem, *std::move(shapes), *std::move(inputs), num_threads_,
                                     *std::move(exprs), compile_seconds);
    }
    return std::unique_ptr<Workload>(new CpuWorkload(problem, *std::move(shapes),
                                                     *std::move(inputs), num_threads_,
                                                     *std::move(exprs), compile_seconds));
  }

 private:
  const int num_threads_;
};

}  // namespace

std::unique_ptr<Backend> MakeCpuReferenceBackend(int num_threads) {
  return std::make_unique<CpuReferenceBackend>(num_threads);
}

}  // namespace attnbench
