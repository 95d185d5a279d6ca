// AttentionSpec <-> Problem and the enums they share.
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/convert.h"

namespace attnbench::server {
namespace {

absl::Status UnknownEnum(absl::string_view field, int value) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": unknown enum value ", value));
}

HostTensor TensorFromProto(const pb::Tensor& t, DType dtype) {
  HostTensor out;
  out.dtype = dtype;
  out.shape.assign(t.shape().begin(), t.shape().end());
  out.data = t.data();
  return out;
}

void HostTensorToProto(const HostTensor& t, bool include_data, pb::Tensor* out) {
  out->set_dtype(DTypeToProto(t.dtype));
  for (int64_t d : t.shape) out->add_shape(d);
  if (include_data) out->set_data(t.data);
}

HeadLayout LayoutFromProto(const pb::HeadLayout& in) {
  HeadLayout out;
  switch (in.layout_case()) {
    case pb::HeadLayout::kMha:
      out.kind = LayoutKind::kMha;
      out.num_heads = in.mha().num_heads();
      break;
    case pb::HeadLayout::kMqa:
      out.kind = LayoutKind::kMqa;
      out.num_heads = in.mqa().num_heads();
      break;
    case pb::HeadLayout::kGqa:
      out.kind = LayoutKind::kGqa;
      out.num_query_heads = in.gqa().num_query_heads();
      out.num_kv_heads = in.gqa().num_kv_heads();
      break;
    case pb::HeadLayout::kSqa:
      out.kind = LayoutKind::kSqa;
      out.baseline_heads = in.sqa().baseline_heads();
      out.num_query_heads = in.sqa().num_query_heads();
      out.num_kv_heads = in.sqa().num_kv_heads();
      break;
    case pb::HeadLayout::kSymmetricSqa:
      out.kind = LayoutKind::kSymmetricSqa;
      out.baseline_heads = in.symmetric_sqa().baseline_heads();
      break;
    case pb::HeadLayout::kExtremeSqa:
      out.kind = LayoutKind::kExtremeSqa;
      out.baseline_heads = in.extreme_sqa().baseline_heads();
      if (in.extreme_sqa().has_num_query_heads()) {
        out.extreme_query_heads = in.extreme_sqa().num_query_heads();
      }
      break;
    case pb::HeadLayout::kGqkva:
      out.kind = LayoutKind::kGqkva;
      out.query_groups = in.gqkva().query_groups();
      out.kv_groups = in.gqkva().kv_groups();
      break;
    case pb::HeadLayout::kExplicitMap:
      out.kind = LayoutKind::kExplicit;
      out.num_query_heads = in.explicit_map().num_query_heads();
      out.num_kv_heads = in.explicit_map().num_kv_heads();
      for (const auto& p : in.explicit_map().pairs()) {
        out.pairs.push_back(HeadPair{p.query_head(), p.kv_head()});
      }
      break;
    case pb::HeadLayout::LAYOUT_NOT_SET:
      out.kind = LayoutKind::kUnspecified;
      break;
  }
  return out;
}

void LayoutToProto(const HeadLayout& in, pb::HeadLayout* out) {
  switch (in.kind) {
    case LayoutKind::kMha:
      out->mutable_mha()->set_num_heads(in.num_heads);
      break;
    case LayoutKind::kMqa:
      out->mutable_mqa()->set_num_heads(in.num_heads);
      break;
    case LayoutKind::kGqa:
      out->mutable_gqa()->set_num_query_heads(in.num_query_heads);
      out->mutable_gqa()->set_num_kv_heads(in.num_kv_heads);
      break;
    case LayoutKind::kSqa:
      out->mutable_sqa()->set_baseline_heads(in.baseline_heads);
      out->mutable_sqa()->set_num_query_heads(in.num_query_heads);
      out->mutable_sqa()->set_num_kv_heads(in.num_kv_heads);
      break;
    case LayoutKind::kSymmetricSqa:
      out->mutable_symmetric_sqa()->set_baseline_heads(in.baseline_heads);
      break;
    case LayoutKind::kExtremeSqa: {
      auto* x = out->mutable_extreme_sqa();
      x->set_baseline_heads(in.baseline_heads);
      if (in.extreme_query_heads.has_value()) x->set_num_query_heads(*in.extreme_query_heads);
      break;
    }
    case LayoutKind::kGqkva:
      out->mutable_gqkva()->set_query_groups(in.query_groups);
      out->mutable_gqkva()->set_kv_groups(in.kv_groups);
      break;
    case LayoutKind::kExplicit: {
      auto* m = out->mutable_explicit_map();
      m->set_num_query_heads(in.num_query_heads);
      m->set_num_kv_heads(in.num_kv_heads);
      for (const HeadPair& p : in.pairs) {
        auto* pair = m->add_pairs();
        pair->set_query_head(p.query_head);
        pair->set_kv_head(p.kv_head);
      }
      break;
    }
    case LayoutKind::kUnspecified:
      break;
  }
}

Mask MaskFromProto(const pb::Mask& in) {
  Mask out;
  switch (in.kind_case()) {
    case pb::Mask::kNone:
    case pb::Mask::KIND_NOT_SET:
      out.kind = MaskKind::kNone;
      break;
    case pb::Mask::kCausal:
      out.kind = MaskKind::kCausal;
      break;
    case pb::Mask::kSlidingWindow:
      out.kind = MaskKind::kSlidingWindow;
      if (in.sliding_window().has_left_tokens())
        out.left_tokens = in.sliding_window().left_tokens();
      if (in.sliding_window().has_right_tokens()) {
        out.right_tokens = in.sliding_window().right_tokens();
      }
      break;
    case pb::Mask::kBlockSparse: {
      const auto& b = in.block_sparse();
      out.kind = MaskKind::kBlockSparse;
      out.query_block_tokens = b.query_block_tokens();
      out.kv_block_tokens = b.kv_block_tokens();
      for (const auto& blk : b.blocks())
        out.blocks.push_back(Block{blk.query_block(), blk.kv_block()});
      out.intersect_causal = b.intersect_causal();
      break;
    }
    case pb::Mask::kProbabilisticBlockSparse: {
      const auto& p = in.probabilistic_block_sparse();
      out.kind = MaskKind::kProbabilisticBlockSparse;
      out.query_block_tokens = p.query_block_tokens();
      out.kv_block_tokens = p.kv_block_tokens();
      out.c_coefficient = p.c_coefficient();
      out.alpha = p.alpha();
      out.seed = p.seed();
      break;
    }
  }
  return out;
}

void MaskToProto(const Mask& in, pb::Mask* out) {
  switch (in.kind) {
    case MaskKind::kNone:
      out->mutable_none();
      break;
    case MaskKind::kCausal:
      out->mutable_causal();
      break;
    case MaskKind::kSlidingWindow: {
      auto* w = out->mutable_sliding_window();
      if (in.left_tokens.has_value()) w->set_left_tokens(*in.left_tokens);
      if (in.right_tokens.has_value()) w->set_right_tokens(*in.right_tokens);
      break;
    }
    case MaskKind::kBlockSparse: {
      auto* b = out->mutable_block_sparse();
      b->set_query_block_tokens(in.query_block_tokens);
      b->set_kv_block_tokens(in.kv_block_tokens);
      for (const Block& blk : in.blocks) {
        auto* o = b->add_blocks();
        o->set_query_block(blk.query_block);
        o->set_kv_block(blk.kv_block);
      }
      b->set_intersect_causal(in.intersect_causal);
      break;
    }
    case MaskKind::kProbabilisticBlockSparse: {
      auto* p = out->mutable_probabilistic_block_sparse();
      p->set_query_block_tokens(in.query_block_tokens);
      p->set_kv_block_tokens(in.kv_block_tokens);
      p->set_c_coefficient(in.c_coefficient);
      p->set_alpha(in.alpha);
      p->set_seed(in.seed);
      break;
    }
  }
}

absl::StatusOr<KvCache> KvCacheFromProto(const pb::KvCache& in) {
  KvCache out;
  if (in.has_paging()) {
    out.paged = true;
    out.page_size_tokens = in.paging().page_size_tokens();
    out.page_table.assign(in.paging().page_table().begin(), in.paging().page_table().end());
  }
  absl::StatusOr<CacheFormat> format = CacheFormatFromProto(in.format(), "spec.kv_cache.format");
  if (!format.ok()) return format.status();
  out.format = *format;
  for (int i = 0; i < in.saq_bands_size(); ++i) {
    const auto& band = in.saq_bands(i);
    SaqBand b;
    if (band.has_num_tokens()) b.num_tokens = band.num_tokens();
    absl::StatusOr<CacheFormat> f = CacheFormatFromProto(
        band.format(), absl::StrCat("spec.kv_cache.saq_bands[", i, "].format"));
    if (!f.ok()) return f.status();
    b.format = *f;
    out.saq_bands.push_back(b);
  }
  return out;
}

void KvCacheToProto(const KvCache& in, pb::KvCache* out) {
  if (in.paged) {
    auto* paging = out->mutable_paging();
    paging->set_page_size_tokens(in.page_size_tokens);
    for (int32_t p : in.page_table) paging->add_page_table(p);
  }
  out->set_format(CacheFormatToProto(in.format));
  for (const SaqBand& b : in.saq_bands) {
    auto* band = out->add_saq_bands();
    if (b.num_tokens.has_value()) band->set_num_tokens(*b.num_tokens);
    band->set_format(CacheFormatToProto(b.format));
  }
}

}  // namespace

absl::StatusOr<ScaleGranularity> ScaleGranularityFromProto(int value, absl::string_view field) {
  switch (value) {
    case pb::SCALE_GRANULARITY_UNSPECIFIED:
      return ScaleGranularity::kUnspecified;
    case pb::SCALE_GRANULARITY_TENSOR:
      return ScaleGranularity::kTensor;
    case pb::SCALE_GRANULARITY_HEAD:
      return ScaleGranularity::kHead;
  }
  return UnknownEnum(field, value);
}

pb::ScaleGranularity ScaleGranularityToProto(ScaleGranularity granularity) {
  switch (granularity) {
    case ScaleGranularity::kTensor:
      return pb::SCALE_GRANULARITY_TENSOR;
    case ScaleGranularity::kHead:
      return pb::SCALE_GRANULARITY_HEAD;
    case ScaleGranularity::kUnspecified:
      break;
  }
  return pb::SCALE_GRANULARITY_UNSPECIFIED;
}

absl::StatusOr<DType> DTypeFromProto(int value, absl::string_view field) {
  switch (value) {
    case pb::DTYPE_UNSPECIFIED:
      return DType::kUnspecified;
    case pb::DTYPE_FLOAT32:
      return DType::kFloat32;
    case pb::DTYPE_FLOAT16:
      return DType::kFloat16;
    case pb::DTYPE_BFLOAT16:
      return DType::kBFloat16;
    case pb::DTYPE_FLOAT8_E4M3:
      return DType::kFloat8E4M3;
  }
  return UnknownEnum(field, value);
}

absl::StatusOr<Phase> PhaseFromProto(int value, absl::string_view field) {
  switch (value) {
    case pb::PHASE_UNSPECIFIED:
      return Phase::kUnspecified;
    case pb::PHASE_PREFILL:
      return Phase::kPrefill;
    case pb::PHASE_DECODE:
      return Phase::kDecode;
    case pb::PHASE_BACKWARD:
      return Phase::kBackward;
  }
  return UnknownEnum(field, value);
}

absl::StatusOr<Scope> ScopeFromProto(int value, absl::string_view field) {
  switch (value) {
    case pb::SCOPE_UNSPECIFIED:
      return Scope::kUnspecified;
    case pb::SCOPE_CORE:
      return Scope::kCore;
    case pb::SCOPE_LAYER:
      return Scope::kLayer;
  }
  return UnknownEnum(field, value);
}

absl::StatusOr<AlibiSchedule> AlibiScheduleFromProto(int value, absl::string_view field) {
  switch (value) {
    case pb::ALIBI_SCHEDULE_UNSPECIFIED:
      return AlibiSchedule::kUnspecified;
    case pb::ALIBI_SCHEDULE_GEOMETRIC:
      return AlibiSchedule::kGeometric;
    case pb::ALIBI_SCHEDULE_HARMONIC:
      return AlibiSchedule::kHarmonic;
  }
  return UnknownEnum(field, value);
}

absl::StatusOr<CacheFormat> CacheFormatFromProto(int value, absl::string_view field) {
  switch (value) {
    case pb::CACHE_FORMAT_UNSPECIFIED:
      return CacheFormat::kUnspecified;
    case pb::CACHE_FORMAT_NATIVE:
      return CacheFormat::kNative;
    case pb::CACHE_FORMAT_INT8:
      return CacheFormat::kInt8;
    case pb::CACHE_FORMAT_INT4:
      return CacheFormat::kInt4;
  }
  return UnknownEnum(field, value);
}

pb::DType DTypeToProto(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return pb::DTYPE_FLOAT32;
    case DType::kFloat16:
      return pb::DTYPE_FLOAT16;
    case DType::kBFloat16:
      return pb::DTYPE_BFLOAT16;
    case DType::kFloat8E4M3:
      return pb::DTYPE_FLOAT8_E4M3;
    case DType::kUnspecified:
      break;
  }
  return pb::DTYPE_UNSPECIFIED;
}

pb::Phase PhaseToProto(Phase phase) {
  switch (phase) {
    case Phase::kPrefill:
      return pb::PHASE_PREFILL;
    case Phase::kDecode:
      return pb::PHASE_DECODE;
    case Phase::kBackward:
      return pb::PHASE_BACKWARD;
    case Phase::kUnspecified:
      break;
  }
  return pb::PHASE_UNSPECIFIED;
}

pb::Scope ScopeToProto(Scope scope) {
  switch (scope) {
    case Scope::kCore:
      return pb::SCOPE_CORE;
    case Scope::kLayer:
      return pb::SCOPE_LAYER;
    case Scope::kUnspecified:
      break;
  }
  return pb::SCOPE_UNSPECIFIED;
}

pb::AlibiSchedule AlibiScheduleToProto(AlibiSchedule schedule) {
  switch (schedule) {
    case AlibiSchedule::kGeometric:
      return pb::ALIBI_SCHEDULE_GEOMETRIC;
    case AlibiSchedule::kHarmonic:
      return pb::ALIBI_SCHEDULE_HARMONIC;
    case AlibiSchedule::kUnspecified:
      break;
  }
  return pb::ALIBI_SCHEDULE_UNSPECIFIED;
}

pb::CacheFormat CacheFormatToProto(CacheFormat format) {
  switch (format) {
    case CacheFormat::kNative:
      return pb::CACHE_FORMAT_NATIVE;
    case CacheFormat::kInt8:
      return pb::CACHE_FORMAT_INT8;
    case CacheFormat::kInt4:
      return pb::CACHE_FORMAT_INT4;
    case CacheFormat::kUnspecified:
      break;
  }
  return pb::CACHE_FORMAT_UNSPECIFIED;
}

absl::StatusOr<Problem> ProblemFromProto(const pb::AttentionSpec& spec) {
  Problem p;
  p.batch_size = spec.batch_size();
  p.seq_len_q = spec.seq_len_q();
  p.seq_len_kv = spec.seq_len_kv();
  p.head_dim_qk = spec.head_dim_qk();
  if (spec.has_head_dim_v()) p.head_dim_v = spec.head_dim_v();
  p.layout = LayoutFromProto(spec.layout());
  p.mask = MaskFromProto(spec.mask());
  if (spec.has_rope()) {
    p.rope.enabled = true;
    if (spec.rope().has_theta()) p.rope.theta = spec.rope().theta();
    if (spec.rope().has_rotary_dims()) p.rope.rotary_dims = spec.rope().rotary_dims();
  }
  if (spec.has_alibi()) {
    p.alibi.enabled = true;
    absl::StatusOr<AlibiSchedule> schedule =
        AlibiScheduleFromProto(spec.alibi().schedule(), "spec.alibi.schedule");
    if (!schedule.ok()) return schedule.status();
    p.alibi.schedule = *schedule;
    if (spec.alibi().has_harmonic_base_slope()) {
      p.alibi.harmonic_base_slope = spec.alibi().harmonic_base_slope();
    }
  }
  if (spec.has_softcap()) {
    p.softcap.enabled = true;
    p.softcap.cap = spec.softcap().cap();
  }
  if (spec.has_scale()) p.scale = spec.scale();
  absl::StatusOr<DType> dtype = DTypeFromProto(spec.dtype(), "spec.dtype");
  if (!dtype.ok()) return dtype.status();
  p.dtype = *dtype;
  absl::StatusOr<DType> output_dtype = DTypeFromProto(spec.output_dtype(), "spec.output_dtype");
  if (!output_dtype.ok()) return output_dtype.status();
  p.output_dtype = *output_dtype;
  if (spec.has_float8()) {
    const pb::Float8Scaling& f = spec.float8();
    absl::StatusOr<ScaleGranularity> granularity =
        ScaleGranularityFromProto(f.granularity(), "spec.float8.granularity");
    if (!granularity.ok()) return granularity.status();
    p.float8.granularity = *granularity;
    p.float8.query_scales.assign(f.query_scales().begin(), f.query_scales().end());
    p.float8.key_scales.assign(f.key_scales().begin(), f.key_scales().end());
    p.float8.value_scales.assign(f.value_scales().begin(), f.value_scales().end());
  }
  absl::StatusOr<Phase> phase = PhaseFromProto(spec.phase(), "spec.phase");
  if (!phase.ok()) return phase.status();
  p.phase = *phase;
  absl::StatusOr<Scope> scope = ScopeFromProto(spec.scope(), "spec.scope");
  if (!scope.ok()) return scope.status();
  p.scope = *scope;
  if (spec.has_d_model()) p.d_model = spec.d_model();
  absl::StatusOr<KvCache> cache = KvCacheFromProto(spec.kv_cache());
  if (!cache.ok()) return cache.status();
  p.kv_cache = *std::move(cache);
  p.seed = spec.seed();
  if (spec.has_input_scale()) p.input_scale = spec.input_scale();
  if (spec.has_inputs()) {
    const pb::InputTensors& in = spec.inputs();
    struct Slot {
      bool present;
      const pb::Tensor* tensor;
      std::optional<HostTensor>* target;
      const char* field;
    };
    const Slot slots[] = {
        {in.has_query(), &in.query(), &p.query, "spec.inputs.query.dtype"},
        {in.has_key(), &in.key(), &p.key, "spec.inputs.key.dtype"},
        {in.has_value(), &in.value(), &p.value, "spec.inputs.value.dtype"},
        {in.has_grad_output(), &in.grad_output(), &p.grad_output, "spec.inputs.grad_output.dtype"},
        {in.has_x(), &in.x(), &p.x, "spec.inputs.x.dtype"},
        {in.has_w_q(), &in.w_q(), &p.w_q, "spec.inputs.w_q.dtype"},
        {in.has_w_k(), &in.w_k(), &p.w_k, "spec.inputs.w_k.dtype"},
        {in.has_w_v(), &in.w_v(), &p.w_v, "spec.inputs.w_v.dtype"},
        {in.has_w_o(), &in.w_o(), &p.w_o, "spec.inputs.w_o.dtype"},
    };
    for (const Slot& slot : slots) {
      if (!slot.present) continue;
      absl::StatusOr<DType> t = DTypeFromProto(slot.tensor->dtype(), slot.field);
      if (!t.ok()) return t.status();
      *slot.target = TensorFromProto(*slot.tensor, *t);
    }
  }
  if (spec.has_score_mod()) p.score_mod = spec.score_mod().expression();
  if (spec.has_mask_mod()) p.mask_mod = spec.mask_mod().expression();
  for (int k = 0; k < spec.aux_size(); ++k) {
    const pb::NamedTensor& in = spec.aux(k);
    absl::StatusOr<DType> t =
        DTypeFromProto(in.tensor().dtype(), absl::StrCat("spec.aux[", k, "].tensor.dtype"));
    if (!t.ok()) return t.status();
    p.aux.push_back({in.name(), TensorFromProto(in.tensor(), *t)});
  }
  if (spec.has_kv_spectrum()) {
    p.kv_spectrum.enabled = true;
    p.kv_spectrum.decay = spec.kv_spectrum().decay();
    if (spec.kv_spectrum().has_rank()) p.kv_spectrum.rank = spec.kv_spectrum().rank();
  }
  if (spec.has_kv_compression()) {
    p.kv_compression.enabled = true;
    p.kv_compression.target_kv_heads = spec.kv_compression().target_kv_heads();
  }
  return p;
}

pb::AttentionSpec ProblemToProto(const Problem& p, bool include_input_data) {
  pb::AttentionSpec spec;
  spec.set_batch_size(p.batch_size);
  spec.set_seq_len_q(p.seq_len_q);
  spec.set_seq_len_kv(p.seq_len_kv);
  spec.set_head_dim_qk(p.head_dim_qk);
  if (p.head_dim_v.has_value()) spec.set_head_dim_v(*p.head_dim_v);
  LayoutToProto(p.layout, spec.mutable_layout());
  MaskToProto(p.mask, spec.mutable_mask());
  if (p.rope.enabled) {
    auto* rope = spec.mutable_rope();
    if (p.rope.theta.has_value()) rope->set_theta(*p.rope.theta);
    if (p.rope.rotary_dims.has_value()) rope->set_rotary_dims(*p.rope.rotary_dims);
  }
  if (p.alibi.enabled) {
    auto* alibi = spec.mutable_alibi();
    alibi->set_schedule(AlibiScheduleToProto(p.alibi.schedule));
    if (p.alibi.harmonic_base_slope.has_value()) {
      alibi->set_harmonic_base_slope(*p.alibi.harmonic_base_slope);
    }
  }
  if (p.softcap.enabled) spec.mutable_softcap()->set_cap(p.softcap.cap);
  if (p.scale.has_value()) spec.set_scale(*p.scale);
  spec.set_dtype(DTypeToProto(p.dtype));
  spec.set_output_dtype(DTypeToProto(p.output_dtype));
  const Float8Scaling& f = p.float8;
  if (p.dtype == DType::kFloat8E4M3 || f.granularity != ScaleGranularity::kUnspecified ||
      !f.query_scales.empty() || !f.key_scales.empty() || !f.value_scales.empty()) {
    pb::Float8Scaling* out = spec.mutable_float8();
    out->set_granularity(ScaleGranularityToProto(f.granularity));
    out->mutable_query_scales()->Add(f.query_scales.begin(), f.query_scales.end());
    out->mutable_key_scales()->Add(f.key_scales.begin(), f.key_scales.end());
    out->mutable_value_scales()->Add(f.value_scales.begin(), f.value_scales.end());
  }
  spec.set_phase(PhaseToProto(p.phase));
  spec.set_scope(ScopeToProto(p.scope));
  if (p.d_model.has_value()) spec.set_d_model(*p.d_model);
  // An all-default cache stays absent so core-scope prefill echoes carry no empty sub-message.
  if (p.kv_cache.paged || p.kv_cache.format != CacheFormat::kUnspecified ||
      !p.kv_cache.saq_bands.empty()) {
    KvCacheToProto(p.kv_cache, spec.mutable_kv_cache());
  }
  spec.set_seed(p.seed);
  if (p.input_scale.has_value()) spec.set_input_scale(*p.input_scale);
  const std::pair<const std::optional<HostTensor>*, pb::Tensor* (pb::InputTensors::*)()> inputs[] =
      {{&p.query, &pb::InputTensors::mutable_query},
       {&p.key, &pb::InputTensors::mutable_key},
       {&p.value, &pb::InputTensors::mutable_value},
       {&p.grad_output, &pb::InputTensors::mutable_grad_output},
       {&p.x, &pb::InputTensors::mutable_x},
       {&p.w_q, &pb::InputTensors::mutable_w_q},
       {&p.w_k, &pb::InputTensors::mutable_w_k},
       {&p.w_v, &pb::InputTensors::mutable_w_v},
       {&p.w_o, &pb::InputTensors::mutable_w_o}};
  for (const auto& [tensor, field] : inputs) {
    if (tensor->has_value()) {
      HostTensorToProto(**tensor, include_input_data, (spec.mutable_inputs()->*field)());
    }
  }
  if (p.score_mod.has_value()) spec.mutable_score_mod()->set_expression(*p.score_mod);
  if (p.mask_mod.has_value()) spec.mutable_mask_mod()->set_expression(*p.mask_mod);
  for (const NamedTensor& t : p.aux) {
    pb::NamedTensor* out = spec.add_aux();
    out->set_name(t.name);
    HostTensorToProto(t.tensor, include_input_data, out->mutable_tensor());
  }
  if (p.kv_spectrum.enabled) {
    spec.mutable_kv_spectrum()->set_decay(p.kv_spectrum.decay);
    if (p.kv_spectrum.rank.has_value()) spec.mutable_kv_spectrum()->set_rank(*p.kv_spectrum.rank);
  }
  if (p.kv_compression.enabled) {
    spec.mutable_kv_compression()->set_target_kv_heads(p.kv_compression.target_kv_heads);
  }
  return spec;
}

}  // namespace attnbench::server
