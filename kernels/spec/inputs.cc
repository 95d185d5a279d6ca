#include "kernels/spec/inputs.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/spec/dtype.h"
#include "kernels/spec/float8.h"
#include "kernels/spec/parallel_fill.h"
#include "kernels/spec/philox.h"

namespace attnbench {
namespace {

constexpr double kTwoPi = 6.283185307179586476925286766559;
constexpr double kTwoTo32 = 4294967296.0;

absl::StatusOr<FloatTensor> DecodeClientTensor(const HostTensor& tensor, const Shape& shape,
                                               DType dtype) {
  absl::StatusOr<std::vector<float>> values = DecodeValues(tensor.data, dtype);
  if (!values.ok()) return values.status();
  if (static_cast<int64_t>(values->size()) != NumElements(shape)) {
    return absl::InvalidArgumentError(absl::StrCat("client tensor has ", values->size(),
                                                   " elements; expected ", NumElements(shape)));
  }
  FloatTensor out;
  out.dtype = dtype;
  out.shape = shape;
  out.values = *std::move(values);
  return out;
}

}  // namespace

double StandardNormal(uint64_t seed, uint32_t tensor_id, uint64_t index) {
  const PhiloxCounter counter = {static_cast<uint32_t>(index & 0xffffffffu),
                                 static_cast<uint32_t>(index >> 32), tensor_id, 0u};
  const PhiloxCounter w = Philox4x32_10(counter, PhiloxKeyFromSeed(seed));
  const double u1 = (static_cast<double>(w[0]) + 0.5) / kTwoTo32;
  const double u2 = (static_cast<double>(w[1]) + 0.5) / kTwoTo32;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(kTwoPi * u2);
}

double LargestAbsStandardNormal() { return std::sqrt(-2.0 * std::log(0.5 / kTwoTo32)); }

namespace {

// w_0 .. w_{r-1} of the spectrum recipe, by repeated multiplication (exact IEEE steps, so any
// language reproduces them bit for bit, unlike pow).
std::vector<double> SpectrumWeights(double decay, int64_t r) {
  std::vector<double> w(static_cast<size_t>(std::max<int64_t>(r, 0)));
  double x = 1.0;
  for (int64_t k = 0; k < r; ++k) {
    w[k] = x;
    x *= decay;
  }
  return w;
}

double SpectrumNorm(const std::vector<double>& w) {
  double sum = 0;
  for (double x : w) sum += x * x;
  return 1.0 / std::sqrt(sum);
}

}  // namespace

FloatTensor GenerateTensor(uint64_t seed, uint32_t tensor_id, const Shape& shape, double factor,
                           DType dtype) {
  FloatTensor t;
  t.dtype = dtype;
  t.shape = shape;
  const int64_t n = NumElements(shape);
  t.values.resize(n);
  ParallelFill(n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const double z = StandardNormal(seed, tensor_id, static_cast<uint64_t>(k));
      t.values[k] = RoundToDType(static_cast<float>(z * factor), dtype);
    }
  });
  return t;
}

int64_t SpectrumRank(const KvSpectrum& spectrum, int64_t n) {
  // r_decay by the recipe's own weights, capped at n first so a decay near 1 stays cheap.
  int64_t r = 0;
  double w = 1.0;
  while (r < n && w >= 1e-4) {
    ++r;
    w *= spectrum.decay;
  }
  if (spectrum.rank.has_value()) r = std::min<int64_t>(r, *spectrum.rank);
  return r;
}

double SpectrumLargestAbs(double decay, int64_t r) {
  const std::vector<double> w = SpectrumWeights(decay, r);
  double sum = 0;
  for (double x : w) sum += x;
  const double z = LargestAbsStandardNormal();
  return z * z * SpectrumNorm(w) * sum;
}

FloatTensor GenerateSpectrumTensor(uint64_t seed, uint32_t tensor_id, uint32_t basis_id,
                                   const Shape& shape, const KvSpectrum& spectrum, double factor,
                                   DType dtype) {
  FloatTensor t;
  t.dtype = dtype;
  t.shape = shape;
  const int64_t rows = shape[0] * shape[1];  // (b, s)
  const int64_t n = shape[2] * shape[3];     // H_kv * D
  const int64_t r = SpectrumRank(spectrum, n);
  const std::vector<double> w = SpectrumWeights(spectrum.decay, r);
  const double scale = factor * SpectrumNorm(w);
  // U is drawn once: r * n values, bounded by validation (kMaxSpectrumBasisElements).
  std::vector<double> basis(static_cast<size_t>(r * n));
  ParallelFill(r * n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      basis[k] = StandardNormal(seed, basis_id, static_cast<uint64_t>(k));
    }
  });
  t.values.resize(static_cast<size_t>(rows * n));
  ParallelFill(rows, r * n, [&](int64_t begin, int64_t end) {
    std::vector<double> a(static_cast<size_t>(r));
    std::vector<double> acc(static_cast<size_t>(n));
    for (int64_t row = begin; row < end; ++row) {
      for (int64_t k = 0; k < r; ++k) {
        a[k] = w[k] * StandardNormal(seed, tensor_id, static_cast<uint64_t>(row * r + k));
      }
      std::fill(acc.begin(), acc.end(), 0.0);
      // k outermost keeps the recipe's summation order per element and streams U row by row.
      for (int64_t k = 0; k < r; ++k) {
        const double* u = basis.data() + k * n;
        for (int64_t c = 0; c < n; ++c) acc[c] += a[k] * u[c];
      }
      float* out = t.values.data() + row * n;
      for (int64_t c = 0; c < n; ++c) {
        out[c] = RoundToDType(static_cast<float>(scale * acc[c]), dtype);
      }
    }
  });
  return t;
}

namespace {

// The output's gradient of PHASE_BACKWARD (dO at core scope, dY [B, S, d_model] at layer scope:
// the shape of ProblemShapes::output either way): the client's, decoded, or tensor id 3 of the
// recipe.
absl::StatusOr<FloatTensor> GradOutputFor(const Problem& problem, const ProblemShapes& shapes) {
  if (problem.grad_output.has_value()) {
    return DecodeClientTensor(*problem.grad_output, shapes.output, problem.dtype);
  }
  return GenerateTensor(problem.seed, kTensorGradOutput, shapes.output,
                        problem.input_scale.value_or(1.0), problem.dtype);
}

// Q, K, V of a core problem in `dtype`: the client's, decoded, or drawn by the recipe.
absl::StatusOr<AttentionInputs> CoreInputs(const Problem& problem, const ProblemShapes& shapes,
                                           DType dtype) {
  const double input_scale = problem.input_scale.value_or(1.0);
  const uint64_t seed = problem.seed;
  AttentionInputs in;
  if (HasClientCoreInputs(problem)) {
    absl::StatusOr<FloatTensor> q = DecodeClientTensor(*problem.query, shapes.query, dtype);
    if (!q.ok()) return q.status();
    absl::StatusOr<FloatTensor> k = DecodeClientTensor(*problem.key, shapes.key, dtype);
    if (!k.ok()) return k.status();
    absl::StatusOr<FloatTensor> v = DecodeClientTensor(*problem.value, shapes.value, dtype);
    if (!v.ok()) return v.status();
    in.query = *std::move(q);
    in.key = *std::move(k);
    in.value = *std::move(v);
    return in;
  }
  in.query = GenerateTensor(seed, kTensorQuery, shapes.query, input_scale, dtype);
  if (problem.kv_spectrum.enabled) {
    in.key = GenerateSpectrumTensor(seed, kTensorKey, kTensorKeyBasis, shapes.key,
                                    problem.kv_spectrum, input_scale, dtype);
    in.value = GenerateSpectrumTensor(seed, kTensorValue, kTensorValueBasis, shapes.value,
                                      problem.kv_spectrum, input_scale, dtype);
    return in;
  }
  in.key = GenerateTensor(seed, kTensorKey, shapes.key, input_scale, dtype);
  in.value = GenerateTensor(seed, kTensorValue, shapes.value, input_scale, dtype);
  return in;
}

}  // namespace

absl::StatusOr<AttentionInputs> GenerateInputs(const Problem& problem) {
  absl::StatusOr<ProblemShapes> shapes = ShapesOf(problem);
  if (!shapes.ok()) return shapes.status();
  const DType dtype = problem.dtype;
  const double input_scale = problem.input_scale.value_or(1.0);
  const uint64_t seed = problem.seed;
  AttentionInputs in;
  if (problem.phase == Phase::kBackward) {
    absl::StatusOr<FloatTensor> grad_output = GradOutputFor(problem, *shapes);
    if (!grad_output.ok()) return grad_output.status();
    in.grad_output = *std::move(grad_output);
  }
  if (shapes->layer) {
    // Each tensor the client's, decoded, or drawn: X at input_scale, a weight at 1 / sqrt(fan_in).
    struct Slot {
      const std::optional<HostTensor>* client;
      uint32_t id;
      const Shape* shape;
      FloatTensor* out;
    };
    const Slot slots[] = {{&problem.x, kTensorX, &shapes->x, &in.x},
                          {&problem.w_q, kTensorWq, &shapes->w_q, &in.w_q},
                          {&problem.w_k, kTensorWk, &shapes->w_k, &in.w_k},
                          {&problem.w_v, kTensorWv, &shapes->w_v, &in.w_v},
                          {&problem.w_o, kTensorWo, &shapes->w_o, &in.w_o}};
    for (const Slot& slot : slots) {
      if (slot.client->has_value()) {
        absl::StatusOr<FloatTensor> t = DecodeClientTensor(**slot.client, *slot.shape, dtype);
        if (!t.ok()) return t.status();
        *slot.out = *std::move(t);
        continue;
      }
      const double factor = slot.id == kTensorX
                                ? input_scale
                                : 1.0 / std::sqrt(static_cast<double>((*slot.shape)[0]));
      *slot.out = GenerateTensor(seed, slot.id, *slot.shape, factor, dtype);
    }
    return in;
  }
  if (dtype != DType::kFloat8E4M3) {
    absl::StatusOr<AttentionInputs> core = CoreInputs(problem, *shapes, dtype);
    if (!core.ok()) return core.status();
    core->grad_output = std::move(in.grad_output);
    return core;
  }
  // §1b: a client's codes take the given scales (or 1); drawn values are drawn in float32, then
  // quantized under the given scales or ones derived from them.
  const bool client = HasClientCoreInputs(problem);
  absl::StatusOr<AttentionInputs> core =
      CoreInputs(problem, *shapes, client ? DType::kFloat8E4M3 : DType::kFloat32);
  if (!core.ok()) return core.status();
  const Float8Scaling& f = problem.float8;
  struct Slot {
    FloatTensor* tensor;
    const std::vector<float>* given;
  };
  for (const Slot& slot : {Slot{&core->query, &f.query_scales}, Slot{&core->key, &f.key_scales},
                           Slot{&core->value, &f.value_scales}}) {
    if (client) {
      AttachFloat8Scales(f.granularity, *slot.given, slot.tensor);
    } else {
      *slot.tensor = QuantizeFloat8(*slot.tensor, f.granularity, *slot.given);
    }
  }
  return core;
}

bool HasClientCoreInputs(const Problem& problem) {
  return problem.query.has_value() && problem.key.has_value() && problem.value.has_value();
}

std::optional<AttentionInputs> UnquantizedInputs(const Problem& problem) {
  if (problem.dtype != DType::kFloat8E4M3 || HasClientCoreInputs(problem)) return std::nullopt;
  absl::StatusOr<ProblemShapes> shapes = ShapesOf(problem);
  if (!shapes.ok()) return std::nullopt;
  absl::StatusOr<AttentionInputs> drawn = CoreInputs(problem, *shapes, DType::kFloat32);
  if (!drawn.ok()) return std::nullopt;
  return *std::move(drawn);
}

std::vector<int32_t> GeneratePageTable(uint64_t seed, int64_t num_pages) {
  std::vector<int32_t> perm(num_pages);
  for (int64_t k = 0; k < num_pages; ++k) perm[k] = static_cast<int32_t>(k);
  const PhiloxKey key = PhiloxKeyFromSeed(seed);
  for (int64_t t = num_pages - 1; t >= 1; --t) {
    const uint64_t step = static_cast<uint64_t>(t);
    const PhiloxCounter w = Philox4x32_10({static_cast<uint32_t>(step & 0xffffffffu),
                                           static_cast<uint32_t>(step >> 32), kTensorPageTable, 0u},
                                          key);
    const uint64_t r = (static_cast<uint64_t>(w[1]) << 32) | w[0];
    const int64_t j = static_cast<int64_t>(r % (step + 1));
    std::swap(perm[t], perm[j]);
  }
  return perm;
}

std::vector<int32_t> PageTableFor(const Problem& problem) {
  if (!problem.kv_cache.page_table.empty()) return problem.kv_cache.page_table;
  const int64_t page = problem.kv_cache.page_size_tokens;
  const int64_t per_sequence = (problem.seq_len_kv + page - 1) / page;
  return GeneratePageTable(problem.seed, problem.batch_size * per_sequence);
}

}  // namespace attnbench
