#include "kernels/reference/layer_backward64.h"

#include <algorithm>
#include <cstdint>
#include <thread>
#include <tuple>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/reference/backward64.h"
#include "kernels/reference/reference64.h"
#include "kernels/spec/dtype.h"
#include "kernels/spec/shapes.h"

namespace attnbench {
namespace {

// A value as the layer stores it: the double rounded to float32, then to the dtype.
double Stored(double x, DType dtype) { return RoundToDType(static_cast<float>(x), dtype); }

// fn(begin, end) over `threads` contiguous slices of [0, n), each on its own thread.
template <typename F>
void ParallelSlices(int64_t n, int threads, F fn) {
  const int64_t count = std::clamp<int64_t>(threads, 1, std::max<int64_t>(1, n));
  std::vector<std::thread> workers;
  for (int64_t t = 1; t < count; ++t) {
    workers.emplace_back([&, t] { fn(n * t / count, n * (t + 1) / count); });
  }
  fn(0, n / count);
  for (std::thread& w : workers) w.join();
}

// The three products of the layer, in double, each output row on one thread. Operands are
// row-major [rows, cols] matrices of float (inputs and weights) or double (intermediates).
//   c[m, n] = sum_k a[m, k] b[k, n]             Product
//   c[m, n] = sum_k a[k, m] b[k, n]             ProductTransposedA (a^T b)
//   c[m, n] = sum_k a[m, k] b[n, k]             ProductTransposedB (a b^T)
template <typename A, typename B>
std::vector<double> Product(const A* a, const B* b, int64_t m, int64_t k, int64_t n, int threads) {
  std::vector<double> c(m * n, 0.0);
  ParallelSlices(m, threads, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t kk = 0; kk < k; ++kk) {
        const double ar = a[r * k + kk];
        for (int64_t col = 0; col < n; ++col) c[r * n + col] += ar * b[kk * n + col];
      }
    }
  });
  return c;
}
template <typename A, typename B>
std::vector<double> ProductTransposedA(const A* a, const B* b, int64_t m, int64_t k, int64_t n,
                                       int threads) {
  std::vector<double> c(m * n, 0.0);
  ParallelSlices(m, threads, [&](int64_t r0, int64_t r1) {
    for (int64_t kk = 0; kk < k; ++kk) {
      for (int64_t r = r0; r < r1; ++r) {
        const double ar = a[kk * m + r];
        for (int64_t col = 0; col < n; ++col) c[r * n + col] += ar * b[kk * n + col];
      }
    }
  });
  return c;
}
template <typename A, typename B>
std::vector<double> ProductTransposedB(const A* a, const B* b, int64_t m, int64_t k, int64_t n,
                                       int threads) {
  std::vector<double> c(m * n, 0.0);
  ParallelSlices(m, threads, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t col = 0; col < n; ++col) {
        double sum = 0;
        for (int64_t kk = 0; kk < k; ++kk)
          sum += static_cast<double>(a[r * k + kk]) * b[col * k + kk];
        c[r * n + col] = sum;
      }
    }
  });
  return c;
}

// A double matrix as the float tensor of `shape` the layer stores, rounded to the dtype.
FloatTensor StoredTensor(const std::vector<double>& values, const Shape& shape, DType dtype) {
  FloatTensor t;
  t.dtype = dtype;
  t.shape = shape;
  t.values.resize(values.size());
  for (size_t k = 0; k < values.size(); ++k)
    t.values[k] = static_cast<float>(Stored(values[k], dtype));
  return t;
}

absl::Status CheckShape(const char* name, const FloatTensor& t, const Shape& expected) {
  if (t.shape != expected || static_cast<int64_t>(t.values.size()) != NumElements(expected)) {
    return absl::InvalidArgumentError(
        absl::StrCat("input ", name, " has shape [", absl::StrJoin(t.shape, ", "), "] and ",
                     t.values.size(), " values; expected [", absl::StrJoin(expected, ", "), "]"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<LayerGradients64> LayerBackward64(const Problem& problem,
                                                 const AttentionInputs& inputs, int threads) {
  absl::StatusOr<ProblemShapes> shapes_or = ShapesOf(problem);
  if (!shapes_or.ok()) return shapes_or.status();
  const ProblemShapes& s = *shapes_or;
  if (!s.layer || problem.phase != Phase::kBackward) {
    return absl::InvalidArgumentError(
        "the layer backward oracle takes layer-scope PHASE_BACKWARD problems only");
  }
  for (auto [name, t, shape] :
       {std::tuple{"x", &inputs.x, &s.x}, std::tuple{"w_q", &inputs.w_q, &s.w_q},
        std::tuple{"w_k", &inputs.w_k, &s.w_k}, std::tuple{"w_v", &inputs.w_v, &s.w_v},
        std::tuple{"w_o", &inputs.w_o, &s.w_o},
        std::tuple{"grad_output", &inputs.grad_output, &s.output}}) {
    if (auto st = CheckShape(name, *t, *shape); !st.ok()) return st;
  }
  const DType dtype = problem.dtype;
  const int64_t tokens = s.batch * s.seq_q, dm = s.d_model;
  const int64_t nq = s.w_q[1], nk = s.w_k[1], nv = s.w_v[1], no = s.w_o[0];
  const float* x = inputs.x.values.data();
  const float* dy = inputs.grad_output.values.data();

  // The core problem the layer contains: its Q, K, V are the stored projections, its dO the
  // stored dY W_o^T; every other field (layout, mask, modifiers, scale) is the layer's.
  const Problem core = CoreProblemOfLayer(problem);
  AttentionInputs core_inputs;
  core_inputs.query =
      StoredTensor(Product(x, inputs.w_q.values.data(), tokens, dm, nq, threads), s.query, dtype);
  core_inputs.key =
      StoredTensor(Product(x, inputs.w_k.values.data(), tokens, dm, nk, threads), s.key, dtype);
  core_inputs.value =
      StoredTensor(Product(x, inputs.w_v.values.data(), tokens, dm, nv, threads), s.value, dtype);
  core_inputs.grad_output =
      StoredTensor(ProductTransposedB(dy, inputs.w_o.values.data(), tokens, dm, no, threads),
                   s.core_output, dtype);

  // O, stored: row (b * H_out + h) * S + i of the forward oracle is O[b, i, h, :].
  const int64_t hout = s.heads.num_output_heads, hq = s.heads.num_query_heads;
  const int64_t hkv = s.heads.num_kv_heads, dqk = s.dim_qk, dv = s.dim_v, seq = s.seq_q;
  std::vector<double> o(tokens * no);
  std::vector<double> dq(tokens * nq), dk(tokens * nk), dvv(tokens * nv);
  // Creating an oracle fails only on what the probes below check, the same for every thread.
  absl::StatusOr<Reference64> forward_probe = Reference64::Create(core, core_inputs);
  if (!forward_probe.ok()) return forward_probe.status();
  absl::StatusOr<Backward64> backward = Backward64::Create(core, core_inputs);
  if (!backward.ok()) return backward.status();
  ParallelSlices(s.batch * hout * seq, threads, [&](int64_t r0, int64_t r1) {
    absl::StatusOr<Reference64> forward = Reference64::Create(core, core_inputs);
    for (int64_t r = r0; r < r1 && forward.ok(); ++r) {
      const int64_t b = r / (hout * seq), h = (r / seq) % hout, i = r % seq;
      const std::vector<double> row = forward->Row(r);
      for (int64_t d = 0; d < dv; ++d) o[(b * seq + i) * no + h * dv + d] = Stored(row[d], dtype);
    }
  });
  // dQ row by row (ordered by (b, query head, i) for the oracle's key cache), dK and dV a
  // (b, kv head) group at a time.
  ParallelSlices(s.batch * hq * seq, threads, [&](int64_t r0, int64_t r1) {
    absl::StatusOr<Backward64> oracle = Backward64::Create(core, core_inputs);
    for (int64_t r = r0; r < r1 && oracle.ok(); ++r) {
      const int64_t b = r / (hq * seq), qh = (r / seq) % hq, i = r % seq;
      const std::vector<double> row = oracle->QueryGradRow(b, i, static_cast<int>(qh));
      for (int64_t d = 0; d < dqk; ++d) {
        dq[(b * seq + i) * nq + qh * dqk + d] = Stored(row[d], dtype);
      }
    }
  });
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int64_t kh = 0; kh < hkv; ++kh) {
      const Backward64::KeyValueGrads g =
          backward->KeyValueGradGroup(b, static_cast<int>(kh), threads);
      for (int64_t j = 0; j < seq; ++j) {
        for (int64_t d = 0; d < dqk; ++d) {
          dk[(b * seq + j) * nk + kh * dqk + d] = Stored(g.dk[j * dqk + d], dtype);
        }
        for (int64_t d = 0; d < dv; ++d) {
          dvv[(b * seq + j) * nv + kh * dv + d] = Stored(g.dv[j * dv + d], dtype);
        }
      }
    }
  }

  LayerGradients64 out;
  out.dw_o = ProductTransposedA(o.data(), dy, no, tokens, dm, threads);
  out.dw_q = ProductTransposedA(x, dq.data(), dm, tokens, nq, threads);
  out.dw_k = ProductTransposedA(x, dk.data(), dm, tokens, nk, threads);
  out.dw_v = ProductTransposedA(x, dvv.data(), dm, tokens, nv, threads);
  out.dx = ProductTransposedB(dq.data(), inputs.w_q.values.data(), tokens, nq, dm, threads);
  const std::vector<double> from_k =
      ProductTransposedB(dk.data(), inputs.w_k.values.data(), tokens, nk, dm, threads);
  const std::vector<double> from_v =
      ProductTransposedB(dvv.data(), inputs.w_v.values.data(), tokens, nv, dm, threads);
  for (size_t k = 0; k < out.dx.size(); ++k) out.dx[k] += from_k[k] + from_v[k];
  return out;
}

}  // namespace attnbench
