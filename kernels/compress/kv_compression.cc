#include "kernels/compress/kv_compression.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/compress/symmetric_eigen.h"
#include "kernels/reference/reference64.h"
#include "kernels/spec/dtype.h"
#include "kernels/spec/modifiers.h"
#include "kernels/spec/shapes.h"

namespace attnbench {
namespace {

int Threads(int64_t items) {
  const int64_t hw = std::max(1u, std::thread::hardware_concurrency());
  return static_cast<int>(std::clamp<int64_t>(items, 1, hw));
}

// fn(begin, end, thread) over [0, items) split across threads.
void ParallelRanges(int64_t items, const std::function<void(int64_t, int64_t, int)>& fn) {
  const int threads = Threads(items / 64);
  if (threads <= 1) {
    fn(0, items, 0);
    return;
  }
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back(fn, items * t / threads, items * (t + 1) / threads, t);
  }
  for (std::thread& w : workers) w.join();
}

// The cache one method compresses: K (rotated at its position when RoPE is on) or V.
struct Cache {
  const FloatTensor* tensor = nullptr;  // [B, S_kv, H_kv, dim]
  int64_t seq_kv = 0;
  int heads = 0;
  int dim = 0;
  const std::vector<double>* inv_freq = nullptr;  // empty: no RoPE
};

// Row `row` (= b * S_kv + s) of group j's concatenated cache, g * dim doubles.
void GroupRow(const Cache& c, int64_t row, int first_head, int g, double* out) {
  const float* src = c.tensor->values.data() + (row * c.heads + first_head) * c.dim;
  for (int64_t k = 0; k < int64_t{g} * c.dim; ++k) out[k] = src[k];
  if (!c.inv_freq->empty()) {
    for (int m = 0; m < g; ++m) ApplyRope(out + m * c.dim, row % c.seq_kv, *c.inv_freq);
  }
}

absl::StatusOr<GroupMaps> FitGroup(const Cache& c, int64_t rows, int first_head, int g,
                                   CompressionMethod method) {
  const int64_t dim = c.dim;
  const int64_t w = g * dim;
  GroupMaps maps;
  maps.compress.assign(w * dim, 0.0);
  maps.expand.assign(g, std::vector<double>(dim * dim, 0.0));
  if (method == CompressionMethod::kMeanPool) {
    for (int m = 0; m < g; ++m) {
      for (int64_t d = 0; d < dim; ++d) {
        maps.compress[(m * dim + d) * dim + d] = 1.0 / g;
        maps.expand[m][d * dim + d] = 1.0;
      }
    }
    return maps;
  }
  // The Gram matrix X^T X (lower triangle), one partial per thread.
  const int threads = Threads(rows / 64);
  std::vector<std::vector<double>> partial(threads);
  ParallelRanges(rows, [&](int64_t begin, int64_t end, int t) {
    std::vector<double>& gram = partial[t];
    gram.assign(w * w, 0.0);
    std::vector<double> x(w);
    for (int64_t row = begin; row < end; ++row) {
      GroupRow(c, row, first_head, g, x.data());
      for (int64_t i = 0; i < w; ++i) {
        const double xi = x[i];
        double* out = gram.data() + i * w;
        for (int64_t j = 0; j <= i; ++j) out[j] += xi * x[j];
      }
    }
  });
  std::vector<double> gram(w * w, 0.0);
  for (const std::vector<double>& p : partial) {
    for (size_t k = 0; k < p.size(); ++k) gram[k] += p[k];
  }
  absl::StatusOr<SymmetricEigenResult> eigen = SymmetricEigen(gram, w);
  if (!eigen.ok()) return eigen.status();
  for (int64_t i = 0; i < w; ++i) {
    for (int64_t e = 0; e < dim; ++e) maps.compress[i * dim + e] = eigen->vectors[i * w + e];
  }
  for (int m = 0; m < g; ++m) {
    for (int64_t e = 0; e < dim; ++e) {
      for (int64_t d = 0; d < dim; ++d) {
        maps.expand[m][e * dim + d] = maps.compress[(m * dim + d) * dim + e];
      }
    }
  }
  return maps;
}

struct Compressed {
  std::vector<GroupMaps> maps;
  FloatTensor tensor;  // [B, S_kv, G, dim]
  double relative_error = 0;
};

// Fits every group of the cache, projects it to [B, S_kv, G, dim] rounded to the dtype and
// measures the reconstruction error from the stored values.
absl::StatusOr<Compressed> CompressCache(const Cache& c, int64_t batch, int groups,
                                         CompressionMethod method, DType dtype) {
  const int g = c.heads / groups;
  const int64_t dim = c.dim;
  const int64_t w = g * dim;
  const int64_t rows = batch * c.seq_kv;
  Compressed out;
  out.tensor.dtype = dtype;
  out.tensor.shape = {batch, c.seq_kv, groups, dim};
  out.tensor.values.resize(rows * groups * dim);
  double diff2 = 0, ref2 = 0;
  for (int j = 0; j < groups; ++j) {
    absl::StatusOr<GroupMaps> maps = FitGroup(c, rows, j * g, g, method);
    if (!maps.ok()) return maps.status();
    const int threads = Threads(rows / 64);
    std::vector<std::pair<double, double>> errors(threads, {0.0, 0.0});
    ParallelRanges(rows, [&](int64_t begin, int64_t end, int t) {
      std::vector<double> x(w), kc(dim);
      for (int64_t row = begin; row < end; ++row) {
        GroupRow(c, row, j * g, g, x.data());
        float* dst = out.tensor.values.data() + (row * groups + j) * dim;
        for (int64_t e = 0; e < dim; ++e) {
          double acc = 0;
          for (int64_t i = 0; i < w; ++i) acc += x[i] * maps->compress[i * dim + e];
          dst[e] = RoundToDType(static_cast<float>(acc), dtype);
          kc[e] = dst[e];
        }
        for (int m = 0; m < g; ++m) {
          for (int64_t d = 0; d < dim; ++d) {
            double rec = 0;
            for (int64_t e = 0; e < dim; ++e) rec += kc[e] * maps->expand[m][e * dim + d];
            const double ref = x[m * dim + d];
            errors[t].first += (rec - ref) * (rec - ref);
            errors[t].second += ref * ref;
          }
        }
      }
    });
    for (const auto& [d2, r2] : errors) {
      diff2 += d2;
      ref2 += r2;
    }
    out.maps.push_back(*std::move(maps));
  }
  out.relative_error = ref2 > 0 ? std::sqrt(diff2 / ref2) : std::sqrt(diff2);
  return out;
}

HostTensor ToHostTensor(const FloatTensor& t) {
  HostTensor h;
  h.dtype = t.dtype;
  h.shape = t.shape;
  h.data = EncodeTensor(t);
  return h;
}

}  // namespace

const char* CompressionMethodName(CompressionMethod method) {
  switch (method) {
    case CompressionMethod::kPca:
      return "pca";
    case CompressionMethod::kMeanPool:
      return "mean_pool";
  }
  return "unknown";
}

absl::Status CheckCompressionCost(const Problem& problem) {
  absl::StatusOr<ProblemShapes> s = ShapesOf(problem);
  if (!s.ok()) return s.status();
  const int target = problem.kv_compression.target_kv_heads;
  const int64_t g = s->heads.num_kv_heads / std::max(1, target);
  const int64_t width = g * std::max(s->dim_qk, s->dim_v);
  if (width <= kMaxCompressedGroupWidth) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat(
      "spec.kv_compression.target_kv_heads (", target, "): groups of ", g, " KV heads of width ",
      std::max(s->dim_qk, s->dim_v), " concatenate to ", width, " columns, over the ",
      kMaxCompressedGroupWidth,
      " the principal-component fit allows (its eigensolver is cubic in it); ask for more KV "
      "heads (smaller groups)"));
}

double CompressionHostFlops(const Problem& problem) {
  absl::StatusOr<ProblemShapes> s = ShapesOf(problem);
  if (!s.ok()) return 0;
  const double g = s->heads.num_kv_heads / std::max(1, problem.kv_compression.target_kv_heads);
  const double groups = problem.kv_compression.target_kv_heads;
  const double rows = static_cast<double>(s->batch * s->seq_kv);
  double flops = 0;
  for (const double dim : {static_cast<double>(s->dim_qk), static_cast<double>(s->dim_v)}) {
    const double w = g * dim;
    // pca: Gram (half of w^2 multiply-adds a row), the eigensolver (~10 w^3 FLOPs, but scalar
    // and memory-bound: 6 s at w = 1024, which the work limit's 1.2e10 counted FLOPs a second
    // makes ~60 w^3), then both methods' projection and reconstruction (2 * w * dim
    // multiply-adds a row each).
    flops += groups * (rows * w * w + 60 * w * w * w);
    flops += 2 * groups * rows * 4 * w * dim;
  }
  // Q' per method: a dim x dim product per query row and head.
  flops += 2 * 2.0 * static_cast<double>(s->batch * s->seq_q * s->heads.num_output_heads) *
           static_cast<double>(s->dim_qk * s->dim_qk);
  return flops;
}

absl::StatusOr<CompressedKv> CompressKv(const Problem& problem, const AttentionInputs& inputs,
                                        CompressionMethod method) {
  absl::StatusOr<ProblemShapes> s = ShapesOf(problem);
  if (!s.ok()) return s.status();
  const int groups = problem.kv_compression.target_kv_heads;
  const int heads_kv = s->heads.num_kv_heads;
  const int g = heads_kv / groups;
  const std::vector<double> inv_freq =
      problem.rope.enabled
          ? RopeInverseFrequencies(problem.rope.theta.value_or(10000.0),
                                   problem.rope.rotary_dims.value_or(problem.head_dim_qk))
          : std::vector<double>();
  const std::vector<double> none;
  const Cache keys{&inputs.key, s->seq_kv, heads_kv, static_cast<int>(s->dim_qk), &inv_freq};
  const Cache values{&inputs.value, s->seq_kv, heads_kv, static_cast<int>(s->dim_v), &none};
  absl::StatusOr<Compressed> k = CompressCache(keys, s->batch, groups, method, problem.dtype);
  if (!k.ok()) return k.status();
  absl::StatusOr<Compressed> v = CompressCache(values, s->batch, groups, method, problem.dtype);
  if (!v.ok()) return v.status();

  CompressedKv out;
  out.method = method;
  out.groups = groups;
  out.group_size = g;
  out.key_error = k->relative_error;
  out.value_error = v->relative_error;
  out.key_maps = std::move(k->maps);
  out.value_maps = std::move(v->maps);

  // Q'[b, i, h] = RoPE(Q[b, i, qh(h)]) B_m^T for the KV head kh(h) = j * g + m it read.
  const int64_t dim = s->dim_qk;
  const int heads_out = s->heads.num_output_heads;
  const int heads_q = s->heads.num_query_heads;
  FloatTensor q;
  q.dtype = problem.dtype;
  q.shape = {s->batch, s->seq_q, heads_out, dim};
  q.values.resize(NumElements(q.shape));
  const int64_t query_rows = s->batch * s->seq_q;
  ParallelRanges(query_rows, [&](int64_t begin, int64_t end, int) {
    std::vector<double> x(dim);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t position = row % s->seq_q + (s->seq_kv - s->seq_q);
      for (int h = 0; h < heads_out; ++h) {
        const HeadPair pair = s->heads.map[h];
        const float* src = inputs.query.values.data() + (row * heads_q + pair.query_head) * dim;
        for (int64_t d = 0; d < dim; ++d) x[d] = src[d];
        if (!inv_freq.empty()) ApplyRope(x.data(), position, inv_freq);
        const std::vector<double>& b = out.key_maps[pair.kv_head / g].expand[pair.kv_head % g];
        float* dst = q.values.data() + (row * heads_out + h) * dim;
        for (int64_t e = 0; e < dim; ++e) {
          double acc = 0;
          for (int64_t d = 0; d < dim; ++d) acc += x[d] * b[e * dim + d];
          dst[e] = RoundToDType(static_cast<float>(acc), problem.dtype);
        }
      }
    }
  });

  Problem c = problem;
  c.layout = HeadLayout();
  c.layout.kind = LayoutKind::kGqa;
  c.layout.num_query_heads = heads_out;
  c.layout.num_kv_heads = groups;
  c.rope = Rope();  // folded into Q' and K_c
  c.scale = problem.scale;
  c.kv_spectrum = KvSpectrum();
  c.kv_compression = KvCompression();
  c.query = ToHostTensor(q);
  c.key = ToHostTensor(k->tensor);
  c.value = ToHostTensor(v->tensor);
  c = NormalizeProblem(c);
  if (absl::Status st = ValidateProblem(c); !st.ok()) {
    return absl::Status(st.code(),
                        absl::StrCat("spec.kv_compression (", CompressionMethodName(method),
                                     "): the compressed problem: ", st.message()));
  }
  out.problem = std::move(c);
  out.inputs.query = std::move(q);
  out.inputs.key = std::move(k->tensor);
  out.inputs.value = std::move(v->tensor);
  return out;
}

std::vector<double> ExpandOutputRow(const CompressedKv& compressed, const Problem& problem,
                                    int64_t row, const std::vector<double>& compressed_row) {
  absl::StatusOr<HeadConfig> heads = ResolveHeads(problem.layout);
  const int64_t dim = static_cast<int64_t>(compressed_row.size());
  const int h = static_cast<int>((row / problem.seq_len_q) % heads->num_output_heads);
  const int kv = heads->map[h].kv_head;
  const int g = compressed.group_size;
  const std::vector<double>& b = compressed.value_maps[kv / g].expand[kv % g];
  std::vector<double> out(dim, 0.0);
  for (int64_t e = 0; e < dim; ++e) {
    for (int64_t d = 0; d < dim; ++d) out[d] += compressed_row[e] * b[e * dim + d];
  }
  return out;
}

absl::StatusOr<OutputErrorReport> CompressedOutputError(const Problem& problem,
                                                        const AttentionInputs& inputs,
                                                        const CompressedKv& compressed,
                                                        const CheckOptions& options) {
  absl::StatusOr<Reference64> probe = Reference64::Create(problem, inputs);
  if (!probe.ok()) return probe.status();
  std::vector<int64_t> rows = CheckedRows(probe->shapes().rows_total, options);
  // Rows sharing (batch, kv head) together, so both oracles reuse their cached keys (compressed
  // heads are unions of consecutive original ones, so the order suits both).
  std::sort(rows.begin(), rows.end(), [&](int64_t a, int64_t b) {
    return std::make_pair(probe->RowKeyGroup(a), a) < std::make_pair(probe->RowKeyGroup(b), b);
  });
  const int64_t count = static_cast<int64_t>(rows.size());
  const int threads = Threads(count / 64);
  std::vector<std::pair<double, double>> partial(threads, {0.0, 0.0});
  std::vector<absl::Status> statuses(threads);
  ParallelRanges(count, [&](int64_t begin, int64_t end, int t) {
    absl::StatusOr<Reference64> original = Reference64::Create(problem, inputs);
    absl::StatusOr<Reference64> reduced =
        Reference64::Create(compressed.problem, compressed.inputs);
    if (!original.ok() || !reduced.ok()) {
      statuses[t] = !original.ok() ? original.status() : reduced.status();
      return;
    }
    for (int64_t k = begin; k < end; ++k) {
      const std::vector<double> ref = original->Row(rows[k]);
      const std::vector<double> got =
          ExpandOutputRow(compressed, problem, rows[k], reduced->Row(rows[k]));
      for (size_t d = 0; d < ref.size(); ++d) {
        partial[t].first += (got[d] - ref[d]) * (got[d] - ref[d]);
        partial[t].second += ref[d] * ref[d];
      }
    }
  });
  double diff2 = 0, ref2 = 0;
  for (int t = 0; t < threads; ++t) {
    if (!statuses[t].ok()) return statuses[t];
    diff2 += partial[t].first;
    ref2 += partial[t].second;
  }
  OutputErrorReport report;
  report.rows = count;
  report.relative_error = ref2 > 0 ? std::sqrt(diff2 / ref2) : std::sqrt(diff2);
  return report;
}

}  // namespace attnbench
