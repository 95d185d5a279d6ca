#include "kernels/cpu/cpu_layer_backward_workload.h"

#include <algorithm>
#include <chrono>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "kernels/cpu/cpu_attention.h"
#include "kernels/cpu/cpu_backward.h"
#include "kernels/cpu/cpu_device.h"
#include "kernels/cpu/cpu_kv_source.h"
#include "kernels/cpu/cpu_matmul.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/spec/dtype.h"

namespace attnbench {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

// The transpose of w [rows, cols] written into out [cols, rows] (row-major both).
void TransposeInto(const std::vector<float>& w, int64_t rows, int64_t cols, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) out[c * rows + r] = w[r * cols + c];
  }
}

class CpuLayerBackwardWorkload : public Workload {
 public:
  CpuLayerBackwardWorkload(Problem problem, ProblemShapes shapes, AttentionInputs inputs,
                           int num_threads, std::shared_ptr<const ProblemExpressions> exprs,
                           double expression_compile_seconds)
      : expression_compile_seconds_(expression_compile_seconds),
        problem_(std::move(problem)),
        shapes_(std::move(shapes)),
        core_problem_(CoreProblemOfLayer(problem_)),
        core_shapes_(*ShapesOf(core_problem_)),
        inputs_(std::move(inputs)),
        pool_(num_threads),
        attention_(core_problem_, core_shapes_, pool_.num_threads(), exprs),
        backward_(core_problem_, core_shapes_, pool_.num_threads(), exprs),
        tokens_(shapes_.batch * shapes_.seq_q),
        dm_(shapes_.d_model),
        nq_(shapes_.w_q[1]),
        nk_(shapes_.w_k[1]),
        nv_(shapes_.w_v[1]),
        no_(shapes_.w_o[0]) {
    const int64_t ncat = nq_ + nk_ + nv_;
    wo_t_.resize(dm_ * no_);
    TransposeInto(inputs_.w_o.values, no_, dm_, wo_t_.data());
    // [W_q W_k W_v]^T: the rows of W_q^T, then W_k^T's, then W_v^T's.
    wqkv_t_.resize(ncat * dm_);
    TransposeInto(inputs_.w_q.values, dm_, nq_, wqkv_t_.data());
    TransposeInto(inputs_.w_k.values, dm_, nk_, wqkv_t_.data() + nq_ * dm_);
    TransposeInto(inputs_.w_v.values, dm_, nv_, wqkv_t_.data() + (nq_ + nk_) * dm_);
    q_.resize(tokens_ * nq_);
    k_.resize(tokens_ * nk_);
    v_.resize(tokens_ * nv_);
    q_work_.resize(tokens_ * nq_);
    if (problem_.rope.enabled) k_work_.resize(tokens_ * nk_);
    o_raw_.resize(tokens_ * no_);
    o_.resize(tokens_ * no_);
    lse_.resize(shapes_.batch * shapes_.heads.num_output_heads * shapes_.seq_q);
    y_.resize(tokens_ * dm_);
    do_.resize(tokens_ * no_);
    dq_.resize(tokens_ * nq_);
    dk_.resize(tokens_ * nk_);
    dv_.resize(tokens_ * nv_);
    dqkv_.resize(tokens_ * ncat);
    dx_.resize(tokens_ * dm_);
    dw_q_.resize(dm_ * nq_);
    dw_k_.resize(dm_ * nk_);
    dw_v_.resize(dm_ * nv_);
    dw_o_.resize(no_ * dm_);
  }

  double ExpressionCompileSeconds() const override { return expression_compile_seconds_; }

  absl::Status BeforeIteration(const IterationOptions& options) override {
    options_ = options;
    if (!problem_.training_step && !forward_done_) {
      // Untimed: what a backward-only measurement starts from, computed once.
      LayerSplit ignored;
      Forward(options.stop, ignored);
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
      LayerSplit ignored;
      Forward(options_.stop, ignored);
      forward_done_ = options_.stop == nullptr || !options_.stop->stopped();
    }
    LayerSplit split;
    const Clock::time_point start = Clock::now();
    // A step's forward leaves the queries and keys prepared; the backward alone prepares them.
    if (problem_.training_step) Forward(options_.stop, split);
    Backward(options_.stop, !problem_.training_step, split);
    const Clock::time_point end = Clock::now();
    if (options_.stop != nullptr && options_.stop->stopped()) {
      ran_ = false;  // the gradients (and, in a step, Y) are partly written
      return absl::CancelledError("cpu_reference: the iteration was stopped midway");
    }
    split_ = split;
    ran_ = true;
    return Seconds(start, end);
  }

  const AttentionInputs& Inputs() const override { return inputs_; }

  absl::StatusOr<FloatTensor> Output() override {
    if (!ran_) return absl::FailedPreconditionError("Output() before any RunTimed()");
    return Tensor(shapes_.output, y_);
  }

  absl::StatusOr<GradientTensors> Gradients() override {
    if (!ran_) return absl::FailedPreconditionError("Gradients() before any RunTimed()");
    GradientTensors g;
    g.dx = Tensor(shapes_.x, dx_);
    g.dw_q = Tensor(shapes_.w_q, dw_q_);
    g.dw_k = Tensor(shapes_.w_k, dw_k_);
    g.dw_v = Tensor(shapes_.w_v, dw_v_);
    g.dw_o = Tensor(shapes_.w_o, dw_o_);
    return g;
  }

  std::optional<LayerSplit> LastLayerSplit() const override {
    if (!ran_) return std::nullopt;
    return split_;
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

  const float* Keys() const { return problem_.rope.enabled ? k_work_.data() : k_.data(); }

  // Queries rotated at i' and scaled, keys rotated at j: what the core's passes read.
  void PrepareOperands(const StopCheck* stop) {
    attention_.PrepareQueries(pool_, q_.data(), q_work_.data(), stop);
    if (problem_.rope.enabled) attention_.RotateKeys(pool_, k_.data(), k_work_.data(), stop);
  }

  // Adds the forward's time to `split`.
  void Forward(const StopCheck* stop, LayerSplit& split) {
    const DType dtype = problem_.dtype;
    const float* x = inputs_.x.values.data();
    const Clock::time_point start = Clock::now();
    MatMulRounded(pool_, x, inputs_.w_q.values.data(), q_.data(), tokens_, dm_, nq_, dtype, stop);
    MatMulRounded(pool_, x, inputs_.w_k.values.data(), k_.data(), tokens_, dm_, nk_, dtype, stop);
    MatMulRounded(pool_, x, inputs_.w_v.values.data(), v_.data(), tokens_, dm_, nv_, dtype, stop);
    const Clock::time_point core_start = Clock::now();
    PrepareOperands(stop);
    const ContiguousKv kv(Keys(), v_.data(), core_shapes_.seq_kv, core_shapes_.heads.num_kv_heads,
                          core_shapes_.dim_qk, core_shapes_.dim_v);
    attention_.RunSavingLse(pool_, q_work_.data(), kv, o_raw_.data(), lse_.data(), stop);
    // The layer stores O in the dtype (what dW_o and Y read); D = <dO, O> reads it unrounded.
    std::transform(o_raw_.begin(), o_raw_.end(), o_.begin(),
                   [dtype](float v) { return RoundToDType(v, dtype); });
    const Clock::time_point core_end = Clock::now();
    MatMulRounded(pool_, o_.data(), inputs_.w_o.values.data(), y_.data(), tokens_, no_, dm_, dtype,
                  stop);
    split.core_seconds += Seconds(core_start, core_end);
    split.projections_seconds += Seconds(start, core_start) + Seconds(core_end, Clock::now());
  }

  // Adds the backward's time to `split`. `prepare`: rotate and scale the queries and rotate the
  // keys first (unless the forward just did).
  void Backward(const StopCheck* stop, bool prepare, LayerSplit& split) {
    const DType dtype = problem_.dtype;
    const float* x = inputs_.x.values.data();
    const float* dy = inputs_.grad_output.values.data();
    const Clock::time_point start = Clock::now();
    MatMulTransposedARounded(pool_, o_.data(), dy, dw_o_.data(), no_, tokens_, dm_, dtype, stop);
    MatMulRounded(pool_, dy, wo_t_.data(), do_.data(), tokens_, dm_, no_, dtype, stop);
    const Clock::time_point core_start = Clock::now();
    if (prepare) PrepareOperands(stop);
    BackwardOperands in;
    in.queries = q_work_.data();
    in.keys = Keys();
    in.values = v_.data();
    in.grad_out = do_.data();
    in.out = o_raw_.data();
    in.lse = lse_.data();
    BackwardResults out;
    out.dq = dq_.data();
    out.dk = dk_.data();
    out.dv = dv_.data();
    backward_.Run(pool_, in, out, stop);
    const Clock::time_point core_end = Clock::now();
    MatMulTransposedARounded(pool_, x, dq_.data(), dw_q_.data(), dm_, tokens_, nq_, dtype, stop);
    MatMulTransposedARounded(pool_, x, dk_.data(), dw_k_.data(), dm_, tokens_, nk_, dtype, stop);
    MatMulTransposedARounded(pool_, x, dv_.data(), dw_v_.data(), dm_, tokens_, nv_, dtype, stop);
    // dX = dQ W_q^T + dK W_k^T + dV W_v^T as one product: [dQ dK dV] side by side per token
    // against [W_q W_k W_v]^T, so the sum is rounded once.
    const int64_t ncat = nq_ + nk_ + nv_;
    pool_.ParallelFor(tokens_, [&](int64_t t, int) {
      float* row = dqkv_.data() + t * ncat;
      std::copy_n(dq_.data() + t * nq_, nq_, row);
      std::copy_n(dk_.data() + t * nk_, nk_, row + nq_);
      std::copy_n(dv_.data() + t * nv_, nv_, row + nq_ + nk_);
    });
    MatMulRounded(pool_, dqkv_.data(), wqkv_t_.data(), dx_.data(), tokens_, ncat, dm_, dtype, stop);
    split.core_seconds += Seconds(core_start, core_end);
    split.projections_seconds += Seconds(start, core_start) + Seconds(core_end, Clock::now());
  }

  const double expression_compile_seconds_;
  const Problem problem_;
  const ProblemShapes shapes_;
  const Problem core_problem_;  // what attention_ and backward_ run
  const ProblemShapes core_shapes_;
  const AttentionInputs inputs_;
  ThreadPool pool_;
  CpuAttention attention_;
  CpuBackward backward_;
  const int64_t tokens_, dm_, nq_, nk_, nv_, no_;  // B * S, d_model, the weights' widths
  std::vector<float> wo_t_, wqkv_t_;               // W_o^T, [W_q W_k W_v]^T
  std::vector<float> q_, k_, v_, q_work_, k_work_;
  std::vector<float> o_raw_, o_, lse_, y_;  // O before and after rounding, the lse, Y
  std::vector<float> do_, dq_, dk_, dv_, dqkv_;
  std::vector<float> dx_, dw_q_, dw_k_, dw_v_, dw_o_;
  IterationOptions options_;  // the last BeforeIteration's
  LayerSplit split_;          // the last RunTimed's
  bool forward_done_ = false;
  bool ran_ = false;
};

}  // namespace

std::unique_ptr<Workload> MakeCpuLayerBackwardWorkload(
    Problem problem, ProblemShapes shapes, AttentionInputs inputs, int num_threads,
    std::shared_ptr<const ProblemExpressions> exprs, double expression_compile_seconds) {
  return std::make_unique<CpuLayerBackwardWorkload>(std::move(problem), std::move(shapes),
                                                    std::move(inputs), num_threads,
                                                    std::move(exprs), expression_compile_seconds);
}

uint64_t CpuLayerBackwardWorkloadBytes(const Problem& problem, const ProblemShapes& s,
                                       int num_threads) {
  const uint64_t x = NumElements(s.x);
  const uint64_t w =
      NumElements(s.w_q) + NumElements(s.w_k) + NumElements(s.w_v) + NumElements(s.w_o);
  const uint64_t q = NumElements(s.query), k = NumElements(s.key), v = NumElements(s.value);
  const uint64_t o = NumElements(s.core_output);
  const uint64_t rows =
      static_cast<uint64_t>(s.batch) * s.heads.num_output_heads * static_cast<uint64_t>(s.seq_q);
  uint64_t floats = x + w + x;            // inputs: X, the weights, dY (Y's shape, X's size)
  floats += w;                            // W_o^T, [W_q W_k W_v]^T
  floats += 2 * q + k + v;                // Q, K, V, prepared queries
  if (problem.rope.enabled) floats += k;  // rotated keys
  floats += 3 * o + rows + x;             // O unrounded and rounded, dO, the lse, Y
  floats += 2 * (q + k + v);              // dQ, dK, dV and [dQ dK dV]
  floats += 2 * (x + w);                  // dX, the weight gradients and Gradients()' copies
  floats += x;                            // the copy Output() returns
  // The workload's copies of the problem carry the client's encoded tensors and block list.
  uint64_t problem_bytes = uint64_t{1} << 20;
  for (const auto* t :
       {&problem.x, &problem.w_q, &problem.w_k, &problem.w_v, &problem.w_o, &problem.grad_output}) {
    if (t->has_value()) problem_bytes += (*t)->data.size();
  }
  problem_bytes += 2 * 3 * sizeof(Block) * problem.mask.blocks.size();
  const absl::StatusOr<ProblemShapes> core = ShapesOf(CoreProblemOfLayer(problem));
  const uint64_t kernels = core.ok() ? num_threads * CpuAttention::ScratchBytes(*core) +
                                           CpuBackward::BytesFor(*core, num_threads)
                                     : 0;
  return 4 * floats + kernels + problem_bytes;
}

}  // namespace attnbench
