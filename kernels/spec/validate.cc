// ValidateProblem: every rule of docs/variants.md §1-§8 and the proto comments, each failure
// naming the proto path of the offending field, the rule, and the values involved.
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/spec/expressions.h"
#include "kernels/spec/finite_inputs.h"
#include "kernels/spec/float8.h"
#include "kernels/spec/inputs.h"
#include "kernels/spec/problem.h"
#include "kernels/spec/shapes.h"
#include "kernels/spec/validate_layout.h"

namespace attnbench {
namespace {

// Largest tensor any problem may imply; far above what fits in memory, and small enough that
// element counts times widths, and sums of a few tensors, stay within int64.
constexpr int64_t kMaxTensorElements = int64_t{1} << 40;

// GCC and Clang have 128-bit integers; __extension__ keeps -Wpedantic quiet about it.
__extension__ typedef __int128 Wide;

absl::Status Invalid(const std::string& message) { return absl::InvalidArgumentError(message); }

absl::Status Positive(const std::string& path, int64_t value) {
  if (value <= 0) return Invalid(absl::StrCat(path, " (", value, ") must be > 0"));
  return absl::OkStatus();
}

absl::Status PositiveFinite(const std::string& path, double value) {
  if (!std::isfinite(value) || value <= 0) {
    return Invalid(absl::StrCat(path, " (", value, ") must be finite and > 0"));
  }
  return absl::OkStatus();
}

int64_t CeilDiv(int64_t a, int64_t b) { return a / b + (a % b != 0); }

// Element count of `dims` (all positive) or -1 when above kMaxTensorElements.
int64_t BoundedProduct(const std::vector<int64_t>& dims) {
  Wide n = 1;
  for (int64_t d : dims) {
    n *= d;
    if (n > kMaxTensorElements) return -1;
  }
  return static_cast<int64_t>(n);
}

absl::Status CheckTensorSize(const std::string& name, const std::string& fields,
                             const Shape& shape) {
  if (BoundedProduct(shape) < 0) {
    return Invalid(absl::StrCat(fields, " imply a ", name, " tensor of shape [",
                                absl::StrJoin(shape, ", "), "], more than 2^40 (",
                                kMaxTensorElements, ") elements"));
  }
  return absl::OkStatus();
}

absl::Status ValidateDims(const Problem& p) {
  if (auto s = Positive("spec.batch_size", p.batch_size); !s.ok()) return s;
  if (auto s = Positive("spec.seq_len_q", p.seq_len_q); !s.ok()) return s;
  if (auto s = Positive("spec.seq_len_kv", p.seq_len_kv); !s.ok()) return s;
  if (auto s = Positive("spec.head_dim_qk", p.head_dim_qk); !s.ok()) return s;
  if (p.head_dim_v.has_value()) {
    if (auto s = Positive("spec.head_dim_v", *p.head_dim_v); !s.ok()) return s;
  }
  if (p.dtype == DType::kUnspecified) {
    return Invalid(
        "spec.dtype must be set (DTYPE_FLOAT32, DTYPE_FLOAT16, DTYPE_BFLOAT16 or "
        "DTYPE_FLOAT8_E4M3)");
  }
  return absl::OkStatus();
}

absl::Status ValidateSizes(const ProblemShapes& s) {
  const std::string heads = "spec.layout";
  if (auto st = CheckTensorSize(
          "query", "spec.batch_size, spec.seq_len_q, " + heads + " and spec.head_dim_qk", s.query);
      !st.ok()) {
    return st;
  }
  if (auto st = CheckTensorSize(
          "key", "spec.batch_size, spec.seq_len_kv, " + heads + " and spec.head_dim_qk", s.key);
      !st.ok()) {
    return st;
  }
  if (auto st = CheckTensorSize(
          "value", "spec.batch_size, spec.seq_len_kv, " + heads + " and spec.head_dim_v", s.value);
      !st.ok()) {
    return st;
  }
  if (auto st = CheckTensorSize(
          "output", "spec.batch_size, spec.seq_len_q, " + heads + " and spec.head_dim_v",
          s.core_output);
      !st.ok()) {
    return st;
  }
  if (s.layer) {
    const std::string f = "spec.d_model with spec.batch_size, spec.seq_len_q and " + heads;
    for (const auto& [name, shape] : std::vector<std::pair<std::string, Shape>>{
             {"x", s.x}, {"w_q", s.w_q}, {"w_k", s.w_k}, {"w_v", s.w_v}, {"w_o", s.w_o}}) {
      if (auto st = CheckTensorSize(name, f, shape); !st.ok()) return st;
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateMask(const Problem& p) {
  const Mask& m = p.mask;
  switch (m.kind) {
    case MaskKind::kNone:
    case MaskKind::kCausal:
      return absl::OkStatus();
    case MaskKind::kSlidingWindow:
      if (m.left_tokens.has_value() && *m.left_tokens < 0) {
        return Invalid(absl::StrCat("spec.mask.sliding_window.left_tokens (", *m.left_tokens,
                                    ") must be >= 0 (leave it unset for unbounded)"));
      }
      if (m.right_tokens.has_value() && *m.right_tokens < 0) {
        return Invalid(absl::StrCat("spec.mask.sliding_window.right_tokens (", *m.right_tokens,
                                    ") must be >= 0 (leave it unset for unbounded)"));
      }
      return absl::OkStatus();
    case MaskKind::kBlockSparse: {
      const std::string p0 = "spec.mask.block_sparse.";
      if (auto s = Positive(p0 + "query_block_tokens", m.query_block_tokens); !s.ok()) return s;
      if (auto s = Positive(p0 + "kv_block_tokens", m.kv_block_tokens); !s.ok()) return s;
      const int64_t rows = CeilDiv(p.seq_len_q, m.query_block_tokens);
      const int64_t cols = CeilDiv(p.seq_len_kv, m.kv_block_tokens);
      for (size_t k = 0; k < m.blocks.size(); ++k) {
        const Block& b = m.blocks[k];
        if (b.query_block < 0 || b.query_block >= rows) {
          return Invalid(
              absl::StrCat(p0, "blocks[", k, "].query_block (", b.query_block, ") must be in [0, ",
                           rows, ") (ceil(spec.seq_len_q / query_block_tokens) = ", p.seq_len_q,
                           " / ", m.query_block_tokens, " rounded up)"));
        }
        if (b.kv_block < 0 || b.kv_block >= cols) {
          return Invalid(absl::StrCat(p0, "blocks[", k, "].kv_block (", b.kv_block,
                                      ") must be in [0, ", cols,
                                      ") (ceil(spec.seq_len_kv / kv_block_tokens) = ", p.seq_len_kv,
                                      " / ", m.kv_block_tokens, " rounded up)"));
        }
      }
      return absl::OkStatus();
    }
    case MaskKind::kProbabilisticBlockSparse: {
      const std::string p0 = "spec.mask.probabilistic_block_sparse.";
      if (auto s = Positive(p0 + "query_block_tokens", m.query_block_tokens); !s.ok()) return s;
      if (auto s = Positive(p0 + "kv_block_tokens", m.kv_block_tokens); !s.ok()) return s;
      if (auto s = PositiveFinite(p0 + "c_coefficient", m.c_coefficient); !s.ok()) return s;
      if (!std::isfinite(m.alpha) || m.alpha < 0) {
        return Invalid(absl::StrCat(p0, "alpha (", m.alpha, ") must be finite and >= 0"));
      }
      return absl::OkStatus();
    }
  }
  return Invalid("spec.mask has an unknown kind");
}

bool HasClientTensors(const Problem& p) {
  return p.query.has_value() || p.key.has_value() || p.value.has_value();
}

// Whether GenerateInputs draws any tensor from the seed (what spec.input_scale scales): Q, K, V
// unless the client sent them, and for PHASE_BACKWARD dO unless the client sent it.
bool GeneratesAnInput(const Problem& p) {
  const Phase phase = p.phase == Phase::kUnspecified ? Phase::kPrefill : p.phase;
  const bool draws_grad = phase == Phase::kBackward && !p.grad_output.has_value();
  // At layer scope input_scale scales X and dY alone (the weights are drawn at 1 / sqrt(fan_in)).
  if (p.scope == Scope::kLayer) return !p.x.has_value() || draws_grad;
  return !HasClientTensors(p) || draws_grad;
}

absl::Status ValidateModifiers(const Problem& p) {
  if (p.rope.enabled) {
    if (p.rope.theta.has_value()) {
      if (auto s = PositiveFinite("spec.rope.theta", *p.rope.theta); !s.ok()) return s;
    }
    const int dims = p.rope.rotary_dims.value_or(p.head_dim_qk);
    if (dims <= 0 || dims % 2 != 0 || dims > p.head_dim_qk) {
      return Invalid(absl::StrCat("spec.rope.rotary_dims (", dims,
                                  ") must be even, > 0 and <= spec.head_dim_qk (", p.head_dim_qk,
                                  ")"));
    }
  }
  if (p.alibi.enabled && p.alibi.harmonic_base_slope.has_value()) {
    if (p.alibi.schedule != AlibiSchedule::kHarmonic) {
      return Invalid(
          "spec.alibi.harmonic_base_slope is only valid with spec.alibi.schedule = "
          "ALIBI_SCHEDULE_HARMONIC");
    }
    if (auto s = PositiveFinite("spec.alibi.harmonic_base_slope", *p.alibi.harmonic_base_slope);
        !s.ok()) {
      return s;
    }
  }
  if (p.softcap.enabled) {
    if (auto s = PositiveFinite("spec.softcap.cap", p.softcap.cap); !s.ok()) return s;
  }
  if (p.scale.has_value()) {
    if (auto s = PositiveFinite("spec.scale", *p.scale); !s.ok()) return s;
  }
  if (p.input_scale.has_value()) {
    if (auto s = PositiveFinite("spec.input_scale", *p.input_scale); !s.ok()) return s;
    // Client tensors replace the generated inputs, and with them what input_scale scales.
    if (GeneratesAnInput(p)) {
      if (auto s = CheckInputScaleFits(*p.input_scale, p.dtype); !s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateScope(const Problem& p) {
  const Phase phase = p.phase == Phase::kUnspecified ? Phase::kPrefill : p.phase;
  if (p.scope != Scope::kLayer) {
    if (p.d_model.has_value()) {
      return Invalid(absl::StrCat("spec.d_model (", *p.d_model,
                                  ") must be unset unless spec.scope = SCOPE_LAYER"));
    }
    return absl::OkStatus();
  }
  if (!p.d_model.has_value())
    return Invalid("spec.d_model must be set for spec.scope = SCOPE_LAYER");
  if (auto s = Positive("spec.d_model", *p.d_model); !s.ok()) return s;
  if (p.seq_len_q != p.seq_len_kv) {
    return Invalid(absl::StrCat("spec.seq_len_q (", p.seq_len_q, ") must equal spec.seq_len_kv (",
                                p.seq_len_kv, ") for spec.scope = SCOPE_LAYER (self-attention)"));
  }
  // A layer is self-attention over a whole sequence: its forward (prefill) and its backward (dX
  // and the weight gradients from dY), never a decode step against a cache.
  if (phase != Phase::kPrefill && phase != Phase::kBackward) {
    return Invalid(
        "spec.phase must be PHASE_PREFILL or PHASE_BACKWARD for spec.scope = SCOPE_LAYER");
  }
  if (HasClientTensors(p)) {
    return Invalid(
        "spec.inputs.query, .key and .value must be unset for spec.scope = SCOPE_LAYER (Q, K "
        "and V are projections of X; send spec.inputs.x and the weights instead)");
  }
  return absl::OkStatus();
}

absl::Status ValidatePageTable(const Problem& p) {
  const KvCache& c = p.kv_cache;
  if (auto s = Positive("spec.kv_cache.paging.page_size_tokens", c.page_size_tokens); !s.ok()) {
    return s;
  }
  if (c.page_table.empty()) return absl::OkStatus();
  const int64_t pages = p.batch_size * CeilDiv(p.seq_len_kv, c.page_size_tokens);
  if (static_cast<int64_t>(c.page_table.size()) != pages) {
    return Invalid(absl::StrCat("spec.kv_cache.paging.page_table has ", c.page_table.size(),
                                " entries; it must be empty or have spec.batch_size * "
                                "ceil(spec.seq_len_kv / page_size_tokens) = ",
                                pages, " entries"));
  }
  std::vector<bool> seen(pages, false);
  for (size_t k = 0; k < c.page_table.size(); ++k) {
    const int64_t page = c.page_table[k];
    if (page < 0 || page >= pages) {
      return Invalid(absl::StrCat("spec.kv_cache.paging.page_table[", k, "] (", page,
                                  ") must be in [0, ", pages, ")"));
    }
    if (seen[page]) {
      return Invalid(absl::StrCat(
          "spec.kv_cache.paging.page_table[", k, "] (", page,
          ") repeats a physical page; the table must be a permutation of [0, ", pages, ")"));
    }
    seen[page] = true;
  }
  return absl::OkStatus();
}

absl::Status ValidateCache(const Problem& p) {
  const KvCache& c = p.kv_cache;
  const Phase phase = p.phase == Phase::kUnspecified ? Phase::kPrefill : p.phase;
  const bool quantized_format =
      c.format != CacheFormat::kUnspecified && c.format != CacheFormat::kNative;
  if (phase != Phase::kDecode) {
    if (c.paged)
      return Invalid("spec.kv_cache.paging is only valid with spec.phase = PHASE_DECODE");
    if (quantized_format) {
      return Invalid("spec.kv_cache.format is only valid with spec.phase = PHASE_DECODE");
    }
    if (!c.saq_bands.empty()) {
      return Invalid("spec.kv_cache.saq_bands is only valid with spec.phase = PHASE_DECODE");
    }
    return absl::OkStatus();
  }
  if (p.seq_len_q > p.seq_len_kv) {
    return Invalid(absl::StrCat("spec.seq_len_q (", p.seq_len_q, ") must be <= spec.seq_len_kv (",
                                p.seq_len_kv, ") for spec.phase = PHASE_DECODE"));
  }
  if (c.paged) {
    if (auto s = ValidatePageTable(p); !s.ok()) return s;
  }
  if (!c.saq_bands.empty()) {
    if (c.format != CacheFormat::kUnspecified) {
      return Invalid(
          "spec.kv_cache.format must be CACHE_FORMAT_UNSPECIFIED when spec.kv_cache.saq_bands is "
          "given (each band names its format)");
    }
    for (size_t k = 0; k < c.saq_bands.size(); ++k) {
      const SaqBand& band = c.saq_bands[k];
      const std::string path = absl::StrCat("spec.kv_cache.saq_bands[", k, "]");
      if (band.format == CacheFormat::kUnspecified) {
        return Invalid(path + ".format must be set");
      }
      if (band.num_tokens.has_value()) {
        if (auto s = Positive(path + ".num_tokens", *band.num_tokens); !s.ok()) return s;
      } else if (k + 1 != c.saq_bands.size()) {
        return Invalid(path + ".num_tokens must be set: only the last band may leave it unset");
      }
    }
  }
  return absl::OkStatus();
}

// A training step times the forward and the backward; any other phase has no backward to add.
absl::Status ValidateTrainingStep(const Problem& p) {
  if (!p.training_step || p.phase == Phase::kBackward) return absl::OkStatus();
  return Invalid(
      "measurement.backward_timing = BACKWARD_TIMING_TRAINING_STEP is only valid with "
      "spec.phase = PHASE_BACKWARD");
}

// "[2, 16, 4, 8]"; a client's shape may have any number of dimensions, so only the first few are
// written (an error message travels in a size-limited gRPC trailer).
std::string ShapeText(const std::vector<int64_t>& shape) {
  constexpr size_t kShown = 8;
  if (shape.size() <= kShown) return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
  return absl::StrCat("[", absl::StrJoin(shape.begin(), shape.begin() + kShown, ", "), ", ... (",
                      shape.size(), " dimensions)]");
}

// `layout` names the order of `expected`'s dimensions in the error text ("BSHD").
absl::Status ValidateClientTensor(const Problem& p, const std::string& name, const HostTensor& t,
                                  const Shape& expected, const char* layout = "BSHD") {
  const std::string path = "spec.inputs." + name;
  if (t.dtype != p.dtype) {
    return Invalid(absl::StrCat(path, ".dtype (", DTypeName(t.dtype), ") must equal spec.dtype (",
                                DTypeName(p.dtype), ")"));
  }
  if (t.shape != expected) {
    return Invalid(absl::StrCat(path, ".shape ", ShapeText(t.shape), " must be ",
                                ShapeText(expected), " (", layout, ")"));
  }
  const int64_t bytes = NumElements(expected) * DTypeBytes(p.dtype);
  if (static_cast<int64_t>(t.data.size()) != bytes) {
    return Invalid(absl::StrCat(path, ".data has ", t.data.size(), " bytes; shape [",
                                absl::StrJoin(expected, ", "), "] of ", DTypeName(p.dtype),
                                " needs ", bytes));
  }
  return CheckFiniteClientTensor(path, t);
}

// The gradient of PHASE_BACKWARD's output: dO at core scope, dY at layer scope (the shape of
// ProblemShapes::output either way). Optional (generated when unset), and meaningless in any other
// phase.
absl::Status ValidateGradOutput(const Problem& p, const ProblemShapes& s) {
  if (!p.grad_output.has_value()) return absl::OkStatus();
  if (p.phase != Phase::kBackward) {
    return Invalid("spec.inputs.grad_output is only valid with spec.phase = PHASE_BACKWARD");
  }
  return ValidateClientTensor(
      p, "grad_output", *p.grad_output, s.output,
      s.layer ? "batch, seq, d_model: dY at spec.scope = SCOPE_LAYER" : "BSHD");
}

// X and the four weights of SCOPE_LAYER: x alone, the weights alone, or all five; none at core
// scope, whose inputs are Q, K and V.
absl::Status ValidateLayerInputs(const Problem& p, const ProblemShapes& s) {
  struct Slot {
    const char* name;
    const std::optional<HostTensor>* tensor;
    const Shape* shape;
    const char* layout;
  };
  const Slot slots[] = {{"x", &p.x, &s.x, "batch, seq, d_model"},
                        {"w_q", &p.w_q, &s.w_q, "d_model, H_q * D_qk"},
                        {"w_k", &p.w_k, &s.w_k, "d_model, H_kv * D_qk"},
                        {"w_v", &p.w_v, &s.w_v, "d_model, H_kv * D_v"},
                        {"w_o", &p.w_o, &s.w_o, "H_out * D_v, d_model"}};
  if (!s.layer) {
    for (const Slot& slot : slots) {
      if (slot.tensor->has_value()) {
        return Invalid(absl::StrCat("spec.inputs.", slot.name,
                                    " is only valid with spec.scope = SCOPE_LAYER"));
      }
    }
    return absl::OkStatus();
  }
  const int weights = p.w_q.has_value() + p.w_k.has_value() + p.w_v.has_value() + p.w_o.has_value();
  if (weights != 0 && weights != 4) {
    return Invalid(absl::StrCat("spec.inputs must give all of w_q, w_k, w_v and w_o or none (",
                                p.w_q ? "w_q " : "", p.w_k ? "w_k " : "", p.w_v ? "w_v " : "",
                                p.w_o ? "w_o " : "", "given)"));
  }
  for (const Slot& slot : slots) {
    if (!slot.tensor->has_value()) continue;
    if (auto st = ValidateClientTensor(p, slot.name, **slot.tensor, *slot.shape, slot.layout);
        !st.ok()) {
      return st;
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateInputs(const Problem& p, const ProblemShapes& s) {
  if (auto st = ValidateGradOutput(p, s); !st.ok()) return st;
  if (auto st = ValidateLayerInputs(p, s); !st.ok()) return st;
  const int given = p.query.has_value() + p.key.has_value() + p.value.has_value();
  if (given == 0) return absl::OkStatus();
  if (given != 3) {
    return Invalid(absl::StrCat("spec.inputs must give all of query, key and value or none (",
                                p.query ? "query " : "", p.key ? "key " : "",
                                p.value ? "value " : "", "given)"));
  }
  if (auto st = ValidateClientTensor(p, "query", *p.query, s.query); !st.ok()) return st;
  if (auto st = ValidateClientTensor(p, "key", *p.key, s.key); !st.ok()) return st;
  return ValidateClientTensor(p, "value", *p.value, s.value);
}

// §8: the spectrum's rule and its cost bounds (the basis U is held whole; each element costs r
// multiply-adds), then the overflow rule of input_scale with the spectrum's own largest value.
absl::Status ValidateKvSpectrum(const Problem& p, const ProblemShapes& s) {
  const KvSpectrum& k = p.kv_spectrum;
  if (!k.enabled) return absl::OkStatus();
  const std::string p0 = "spec.kv_spectrum.";
  if (!std::isfinite(k.decay) || k.decay <= 0 || k.decay >= 1) {
    return Invalid(absl::StrCat(p0, "decay (", k.decay, ") must be in (0, 1)"));
  }
  if (k.rank.has_value()) {
    if (auto st = Positive(p0 + "rank", *k.rank); !st.ok()) return st;
  }
  if (s.layer) {
    return Invalid(
        "spec.kv_spectrum is only valid with spec.scope = SCOPE_CORE (at SCOPE_LAYER K and V are "
        "projections of a generated X)");
  }
  if (p.key.has_value() || p.value.has_value()) {
    return Invalid(
        "spec.kv_spectrum is only valid with generated K and V; spec.inputs.key and "
        "spec.inputs.value are the client's (send low-rank tensors directly instead)");
  }
  for (const Shape* shape : {&s.key, &s.value}) {
    const int64_t n = (*shape)[2] * (*shape)[3];
    const int64_t r = SpectrumRank(k, n);
    if (static_cast<Wide>(r) * n > kMaxSpectrumBasisElements ||
        static_cast<Wide>(r) * n * (*shape)[0] * (*shape)[1] > kMaxSpectrumMultiplyAdds) {
      return Invalid(
          absl::StrCat(p0, "decay (", k.decay, ") gives rank r = ", r, " over n = H_kv * D = ", n,
                       " columns: the basis (r * n) must stay within ", kMaxSpectrumBasisElements,
                       " elements and the generation (batch * seq_len_kv * r * n) within ",
                       kMaxSpectrumMultiplyAdds,
                       " multiply-adds; set a smaller spec.kv_spectrum.rank or decay"));
    }
    // The spectrum's values are bounded by input_scale times SpectrumLargestAbs, which must fit
    // the dtype as the plain generator's bound must (CheckInputScaleFits); the margin covers the
    // double rounding of the sum.
    if (auto st = CheckSpectrumScaleFits(p.input_scale.value_or(1.0), k.decay, r, p.dtype);
        !st.ok()) {
      return st;
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateKvCompression(const Problem& p, const ProblemShapes& s) {
  const KvCompression& c = p.kv_compression;
  if (!c.enabled) return absl::OkStatus();
  const std::string path = "spec.kv_compression.target_kv_heads";
  if (auto st = Positive(path, c.target_kv_heads); !st.ok()) return st;
  // The allow-list: what the compressed problem (GQA over G KV heads, client Q', K_c, V_c, RoPE
  // folded into Q' and K_c) represents exactly apart from the method's own error.
  if (p.scope == Scope::kLayer) {
    return Invalid(
        "spec.kv_compression is only valid with spec.scope = SCOPE_CORE (it compresses the K and "
        "V caches the core reads)");
  }
  const Phase phase = p.phase == Phase::kUnspecified ? Phase::kPrefill : p.phase;
  if (phase != Phase::kPrefill && phase != Phase::kDecode) {
    return Invalid(
        "spec.kv_compression is only valid with spec.phase = PHASE_PREFILL or PHASE_DECODE (a "
        "compressed cache has no gradients of the original K and V)");
  }
  if (p.layout.kind != LayoutKind::kMha && p.layout.kind != LayoutKind::kGqa) {
    return Invalid(absl::StrCat(
        "spec.kv_compression is only valid with spec.layout mha or gqa (KV heads in equal groups "
        "of consecutive heads, each output head reading its own query head); got ",
        LayoutName(p.layout.kind)));
  }
  const int kv_heads = s.heads.num_kv_heads;
  if (c.target_kv_heads >= kv_heads || kv_heads % c.target_kv_heads != 0) {
    return Invalid(absl::StrCat(path, " (", c.target_kv_heads,
                                ") must be less than the layout's KV heads (", kv_heads,
                                ") and divide them into equal groups"));
  }
  if (p.score_mod.has_value() || p.mask_mod.has_value()) {
    return Invalid(
        "spec.kv_compression is not valid with spec.score_mod or spec.mask_mod: an expression may "
        "read hkv, the KV head that compression renumbers");
  }
  return absl::OkStatus();
}

}  // namespace

// §1b: where FP8 inputs are defined, their scales, and what the output is stored in.
absl::Status ValidateFloat8(const Problem& p, const ProblemShapes& s) {
  const bool fp8 = p.dtype == DType::kFloat8E4M3;
  const DType allowed_output = fp8 ? DType::kBFloat16 : p.dtype;
  if (p.output_dtype != allowed_output) {
    return Invalid(
        absl::StrCat("spec.output_dtype (", DTypeName(p.output_dtype), ") must be ",
                     DTypeName(allowed_output), " with spec.dtype ", DTypeName(p.dtype),
                     fp8 ? " (§1b)" : " (only FP8 inputs have a separate output dtype)"));
  }
  const Float8Scaling& f = p.float8;
  if (!fp8) {
    if (f.granularity != ScaleGranularity::kUnspecified || !f.query_scales.empty() ||
        !f.key_scales.empty() || !f.value_scales.empty()) {
      return Invalid(absl::StrCat(
          "spec.float8 is only valid with spec.dtype DTYPE_FLOAT8_E4M3, not ", DTypeName(p.dtype)));
    }
    return absl::OkStatus();
  }
  if (p.phase != Phase::kPrefill || p.scope != Scope::kCore || p.kv_compression.enabled) {
    return Invalid(
        "spec.dtype DTYPE_FLOAT8_E4M3 is defined for PHASE_PREFILL at SCOPE_CORE without "
        "spec.kv_compression (§1b)");
  }
  struct List {
    const char* path;
    const std::vector<float>* scales;
    int heads;
  };
  const List lists[] = {{"spec.float8.query_scales", &f.query_scales, s.heads.num_query_heads},
                        {"spec.float8.key_scales", &f.key_scales, s.heads.num_kv_heads},
                        {"spec.float8.value_scales", &f.value_scales, s.heads.num_kv_heads}};
  for (const List& list : lists) {
    if (list.scales->empty()) continue;
    const bool per_head = f.granularity == ScaleGranularity::kHead;
    const size_t want = per_head ? static_cast<size_t>(list.heads) : 1;
    if (list.scales->size() != want) {
      return Invalid(absl::StrCat(list.path, " has ", list.scales->size(), " scales; ",
                                  per_head ? "SCALE_GRANULARITY_HEAD" : "SCALE_GRANULARITY_TENSOR",
                                  " needs ", want, " (or none, to derive them from the data)"));
    }
    for (size_t i = 0; i < list.scales->size(); ++i) {
      const float scale = (*list.scales)[i];
      if (!std::isfinite(scale) || scale <= 0 || scale > kFloat8LargestScale) {
        return Invalid(absl::StrCat(list.path, "[", i, "] (", scale,
                                    ") must be finite, > 0 and at most ", kFloat8LargestScale,
                                    " (448 times it must stay finite in float32)"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateProblem(const Problem& p) {
  if (auto s = ValidateDims(p); !s.ok()) return s;
  if (auto s = ValidateLayout(p.layout); !s.ok()) return s;
  if (auto s = ValidateScope(p); !s.ok()) return s;
  absl::StatusOr<ProblemShapes> shapes = ShapesOf(p);
  if (!shapes.ok()) return shapes.status();
  if (auto s = ValidateSizes(*shapes); !s.ok()) return s;
  if (auto s = ValidateFloat8(p, *shapes); !s.ok()) return s;
  if (auto s = ValidateMask(p); !s.ok()) return s;
  if (auto s = ValidateModifiers(p); !s.ok()) return s;
  if (auto s = ValidateCache(p); !s.ok()) return s;
  if (auto s = ValidateTrainingStep(p); !s.ok()) return s;
  if (auto s = ValidateInputs(p, *shapes); !s.ok()) return s;
  if (auto s = ValidateKvSpectrum(p, *shapes); !s.ok()) return s;
  if (auto s = ValidateKvCompression(p, *shapes); !s.ok()) return s;
  return CompileExpressions(p).status();
}

}  // namespace attnbench
