// Names, defaults and head maps of a Problem (validation lives in validate.cc).
#include "kernels/spec/problem.h"

#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/spec/validate_layout.h"

namespace attnbench {

int DTypeBytes(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return 4;
    case DType::kFloat16:
    case DType::kBFloat16:
      return 2;
    case DType::kFloat8E4M3:
      return 1;
    case DType::kUnspecified:
      break;
  }
  return 0;
}

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return "float32";
    case DType::kFloat16:
      return "float16";
    case DType::kBFloat16:
      return "bfloat16";
    case DType::kFloat8E4M3:
      return "float8_e4m3";
    case DType::kUnspecified:
      break;
  }
  return "unspecified";
}

const char* LayoutName(LayoutKind kind) {
  switch (kind) {
    case LayoutKind::kMha:
      return "mha";
    case LayoutKind::kMqa:
      return "mqa";
    case LayoutKind::kGqa:
      return "gqa";
    case LayoutKind::kSqa:
      return "sqa";
    case LayoutKind::kSymmetricSqa:
      return "symmetric_sqa";
    case LayoutKind::kExtremeSqa:
      return "extreme_sqa";
    case LayoutKind::kGqkva:
      return "gqkva";
    case LayoutKind::kExplicit:
      return "explicit_map";
    case LayoutKind::kUnspecified:
      break;
  }
  return "unspecified";
}

const char* MaskName(MaskKind kind) {
  switch (kind) {
    case MaskKind::kNone:
      return "none";
    case MaskKind::kCausal:
      return "causal";
    case MaskKind::kSlidingWindow:
      return "sliding_window";
    case MaskKind::kBlockSparse:
      return "block_sparse";
    case MaskKind::kProbabilisticBlockSparse:
      return "probabilistic_block_sparse";
  }
  return "unknown";
}

Problem NormalizeProblem(const Problem& problem) {
  Problem p = problem;
  if (!p.head_dim_v.has_value()) p.head_dim_v = p.head_dim_qk;
  if (!p.scale.has_value() && p.head_dim_qk > 0) {
    p.scale = 1.0 / std::sqrt(static_cast<double>(p.head_dim_qk));
  }
  if (p.output_dtype == DType::kUnspecified) {
    p.output_dtype = p.dtype == DType::kFloat8E4M3 ? DType::kBFloat16 : p.dtype;
  }
  if (p.dtype == DType::kFloat8E4M3 && p.float8.granularity == ScaleGranularity::kUnspecified) {
    p.float8.granularity = ScaleGranularity::kTensor;
  }
  if (p.phase == Phase::kUnspecified) p.phase = Phase::kPrefill;
  if (p.scope == Scope::kUnspecified) p.scope = Scope::kCore;
  if (p.rope.enabled) {
    if (!p.rope.theta.has_value()) p.rope.theta = 10000.0;
    if (!p.rope.rotary_dims.has_value()) p.rope.rotary_dims = p.head_dim_qk;
  }
  if (p.alibi.enabled) {
    if (p.alibi.schedule == AlibiSchedule::kUnspecified) {
      p.alibi.schedule = AlibiSchedule::kGeometric;
    }
    if (p.alibi.schedule == AlibiSchedule::kHarmonic && !p.alibi.harmonic_base_slope.has_value()) {
      p.alibi.harmonic_base_slope = 1.0;
    }
  }
  // The cache format only means something in decode; with SAQ bands it must stay unspecified.
  if (p.phase == Phase::kDecode && p.kv_cache.format == CacheFormat::kUnspecified &&
      p.kv_cache.saq_bands.empty()) {
    p.kv_cache.format = CacheFormat::kNative;
  }
  if (!p.input_scale.has_value()) p.input_scale = 1.0;
  if (p.layout.kind == LayoutKind::kExtremeSqa && !p.layout.extreme_query_heads.has_value()) {
    p.layout.extreme_query_heads = p.layout.baseline_heads / 4;
  }
  return p;
}

absl::StatusOr<HeadConfig> ResolveHeads(const HeadLayout& layout) {
  if (absl::Status s = ValidateLayout(layout); !s.ok()) return s;
  HeadConfig c;
  switch (layout.kind) {
    case LayoutKind::kMha:
      c.num_query_heads = c.num_kv_heads = c.num_output_heads = layout.num_heads;
      break;
    case LayoutKind::kMqa:
      c.num_query_heads = c.num_output_heads = layout.num_heads;
      c.num_kv_heads = 1;
      break;
    case LayoutKind::kGqa:
    case LayoutKind::kSqa:
      c.num_query_heads = c.num_output_heads = layout.num_query_heads;
      c.num_kv_heads = layout.num_kv_heads;
      break;
    case LayoutKind::kSymmetricSqa:
      c.num_query_heads = c.num_kv_heads = c.num_output_heads = layout.baseline_heads / 2;
      break;
    case LayoutKind::kExtremeSqa:
      c.num_query_heads = c.num_kv_heads = c.num_output_heads =
          layout.extreme_query_heads.value_or(layout.baseline_heads / 4);
      break;
    case LayoutKind::kGqkva:
      c.num_query_heads = layout.query_groups;
      c.num_kv_heads = layout.kv_groups;
      c.num_output_heads = layout.query_groups * layout.kv_groups;
      break;
    case LayoutKind::kExplicit:
      c.num_query_heads = layout.num_query_heads;
      c.num_kv_heads = layout.num_kv_heads;
      c.num_output_heads = static_cast<int>(layout.pairs.size());
      break;
    case LayoutKind::kUnspecified:
      return absl::InvalidArgumentError("spec.layout must be set");
  }
  switch (layout.kind) {
    case LayoutKind::kSqa:
    case LayoutKind::kSymmetricSqa:
    case LayoutKind::kExtremeSqa:
      c.baseline_heads = layout.baseline_heads;
      break;
    default:
      c.baseline_heads = c.num_query_heads;
  }
  c.map.resize(c.num_output_heads);
  for (int h = 0; h < c.num_output_heads; ++h) {
    switch (layout.kind) {
      case LayoutKind::kGqkva:
        c.map[h] = {h / layout.kv_groups, h % layout.kv_groups};
        break;
      case LayoutKind::kExplicit:
        c.map[h] = layout.pairs[h];
        break;
      default:
        // MHA, MQA, GQA and the SQA family: query head h, key/value group of h.
        c.map[h] = {h, h / (c.num_query_heads / c.num_kv_heads)};
    }
  }
  return c;
}

Problem CoreProblemOfLayer(const Problem& layer) {
  Problem core = layer;
  core.scope = Scope::kCore;
  core.d_model.reset();
  core.x.reset();
  core.w_q.reset();
  core.w_k.reset();
  core.w_v.reset();
  core.w_o.reset();
  core.grad_output.reset();
  return core;
}

}  // namespace attnbench
