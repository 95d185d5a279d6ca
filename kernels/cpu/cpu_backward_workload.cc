#include "kernels/cpu/cpu_backward_workload.h"

#include <chrono>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "kernels/cpu/cpu_attention.h"
#include "kernels/cpu/cpu_backward.h"
#include "kernels/cpu/cpu_device.h"
#include "kernels/cpu/cpu_kv_source.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/spec/dtype.h"

namespace attnbench {
namespace {

class CpuBackwardWorkload : public Workload {
 public:
  CpuBackwardWorkload(Problem problem, ProblemShapes shapes, AttentionInputs inputs,
                      int num_threads, std::shared_ptr<const ProblemExpressions> exprs,
                      double expression_compile_seconds)
      : expression_compile_seconds_(expression_compile_seconds),
        problem_(std::move(problem)),
        shapes_(std::move(shapes)),
        inputs_(std::move(inputs)),
        pool_(num_threads),
        attention_(problem_, shapes_, pool_.num_threads(), exprs),
        backward_(problem_, shapes_, pool_.num_threads(), exprs) {
    q_work_.resize(NumElements(shapes_.query));
    if (problem_.rope.enabled) k_work_.resize(NumElements(shapes_.key));
    out_.resize(NumElements(shapes_.core_output));
    lse_.resize(shapes_.batch * shapes_.heads.num_output_heads * shapes_.seq_q);
    dq_.resize(NumElements(shapes_.query));
    dk_.resize(NumElements(shapes_.key));
    dv_.resize(NumElements(shapes_.value));
  }

  double ExpressionCompileSeconds() const override { return expression_compile_seconds_; }

  absl::Status BeforeIteration(const IterationOptions& options) override {
    options_ = options;
    if (!problem_.training_step && !forward_done_) {
      // Untimed: what a backward-only measurement starts from, computed once.
      PrepareOperands(options.stop);
      Forward(options.stop);
      if (options.stop != nullptr && options.stop->stopped()) {
        return absl::CancelledError("cpu_reference: the forward before the backward was stopped");
      }
      forward_done_ = true;
    }
    if (options.flush_cache) FlushLastLevelCache(options.stop);
    return absl::OkStatus();
  }

  absl::StatusOr<double> RunTimed() override {
    if (!problem_.training_step && !forward_done_) {
      // RunTimed without a BeforeIteration: the forward still stays outside the timed region.
      PrepareOperands(options_.stop);
      Forward(options_.stop);
      forward_done_ = options_.stop == nullptr || !options_.stop->stopped();
    }
    const auto start = std::chrono::steady_clock::now();
    PrepareOperands(options_.stop);
    if (problem_.training_step) Forward(options_.stop);
    backward_.Run(pool_, Operands(), Results(), options_.stop);
    const auto end = std::chrono::steady_clock::now();
    if (options_.stop != nullptr && options_.stop->stopped()) {
      ran_ = false;  // the gradients (and, in a step, O) are partly written
      return absl::CancelledError("cpu_reference: the iteration was stopped midway");
    }
    ran_ = true;
    return std::chrono::duration<double>(end - start).count();
  }

  const AttentionInputs& Inputs() const override { return inputs_; }

  absl::StatusOr<FloatTensor> Output() override {
    if (!ran_) return absl::FailedPreconditionError("Output() before any RunTimed()");
    FloatTensor t = Tensor(shapes_.core_output, out_);
    for (float& v : t.values) v = RoundToDType(v, problem_.dtype);
    return t;
  }

  absl::StatusOr<GradientTensors> Gradients() override {
    if (!ran_) return absl::FailedPreconditionError("Gradients() before any RunTimed()");
    GradientTensors g;
    g.dq = Tensor(shapes_.query, dq_);
    g.dk = Tensor(shapes_.key, dk_);
    g.dv = Tensor(shapes_.value, dv_);
    return g;
  }

  DeviceDescription Device() const override { return CpuDevice(); }

 private:
  FloatTensor Tensor(const Shape& shape, const std::vector<float>& values) const {
    FloatTensor t;
    t.dtype = problem_.dtype;
    t.shape = shape;
    t.values = values;
    return t;
  }

  // Queries rotated at i' and scaled, keys rotated at j: what both passes read.
  void PrepareOperands(const StopCheck* stop) {
    attention_.PrepareQueries(pool_, inputs_.query.values.data(), q_work_.data(), stop);
    if (problem_.rope.enabled) {
      attention_.RotateKeys(pool_, inputs_.key.values.data(), k_work_.data(), stop);
    }
  }

  const float* Keys() const {
    return problem_.rope.enabled ? k_work_.data() : inputs_.key.values.data();
  }

  void Forward(const StopCheck* stop) {
    const ContiguousKv kv(Keys(), inputs_.value.values.data(), shapes_.seq_kv,
                          shapes_.heads.num_kv_heads, shapes_.dim_qk, shapes_.dim_v);
    attention_.RunSavingLse(pool_, q_work_.data(), kv, out_.data(), lse_.data(), stop);
  }

  BackwardOperands Operands() const {
    BackwardOperands in;
    in.queries = q_work_.data();
    in.keys = Keys();
    in.values = inputs_.value.values.data();
    in.grad_out = inputs_.grad_output.values.data();
    in.out = out_.data();
    in.lse = lse_.data();
    return in;
  }

  BackwardResults Results() {
    BackwardResults out;
    out.dq = dq_.data();
    out.dk = dk_.data();
    out.dv = dv_.data();
    return out;
  }

  const double expression_compile_seconds_;
  const Problem problem_;
  const ProblemShapes shapes_;
  const AttentionInputs inputs_;
  ThreadPool pool_;
  CpuAttention attention_;
  CpuBackward backward_;
  std::vector<float> q_work_, k_work_;
  std::vector<float> out_;  // O before rounding, what D = <dO, O> reads
  std::vector<float> lse_;
  std::vector<float> dq_, dk_, dv_;
  IterationOptions options_;  // the last BeforeIteration's
  bool forward_done_ = false;
  bool ran_ = false;
};

}  // namespace

std::unique_ptr<Workload> MakeCpuBackwardWorkload(Problem problem, ProblemShapes shapes,
                                                  AttentionInputs inputs, int num_threads,
                                                  std::shared_ptr<const ProblemExpressions> exprs,
                                                  double expression_compile_seconds) {
  return std::make_unique<CpuBackwardWorkload>(std::move(problem), std::move(shapes),
                                               std::move(inputs), num_threads, std::move(exprs),
                                               expression_compile_seconds);
}

uint64_t CpuBackwardWorkloadBytes(const Problem& problem, const ProblemShapes& s, int num_threads) {
  const uint64_t q = NumElements(s.query), k = NumElements(s.key), v = NumElements(s.value);
  const uint64_t o = NumElements(s.core_output);
  const uint64_t rows =
      static_cast<uint64_t>(s.batch) * s.heads.num_output_heads * static_cast<uint64_t>(s.seq_q);
  uint64_t floats = q + k + v + o;        // inputs: Q, K, V, dO
  floats += q;                            // prepared queries
  if (problem.rope.enabled) floats += k;  // rotated keys
  floats += o + rows;                     // O and the log-sum-exp
  floats += 2 * (q + k + v);              // dQ, dK, dV and the copies Gradients() returns
  floats += o;                            // the copy Output() returns
  // The workload's copy of the problem carries the client's encoded tensors and block list; the
  // rest (head maps, mask indexes, the pool's threads) stays under a MiB.
  uint64_t problem_bytes = uint64_t{1} << 20;
  for (const auto* t : {&problem.query, &problem.key, &problem.value, &problem.grad_output}) {
    if (t->has_value()) problem_bytes += (*t)->data.size();
  }
  problem_bytes += 3 * sizeof(Block) * problem.mask.blocks.size();  // the problem's, two indexes
  return 4 * floats + num_threads * CpuAttention::ScratchBytes(s) +
         CpuBackward::BytesFor(s, num_threads) + problem_bytes;
}

}  // namespace attnbench
