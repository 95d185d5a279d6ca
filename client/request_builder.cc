#include "client/request_builder.h"

#include <cstring>
#include <limits>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/aux_files.h"
#include "client/file_bytes.h"
#include "client/flags.h"
#include "client/layout_syntax.h"
#include "client/lists.h"
#include "client/names.h"

namespace attnbench::client {
namespace {

absl::Status FlagError(absl::string_view flag, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", message));
}

// Prefixes a parse error with the flag it came from.
absl::Status Named(absl::string_view flag, const absl::Status& status) {
  return FlagError(flag, status.message());
}

// Which of a family's flags were given, by name.
using FlagSet = std::vector<std::pair<absl::string_view, bool>>;

FlagSet LayoutFlagsGiven() {
  return {{"heads", absl::GetFlag(FLAGS_heads).has_value()},
          {"query_heads", absl::GetFlag(FLAGS_query_heads).has_value()},
          {"kv_heads", absl::GetFlag(FLAGS_kv_heads).has_value()},
          {"query_groups", absl::GetFlag(FLAGS_query_groups).has_value()},
          {"kv_groups", absl::GetFlag(FLAGS_kv_groups).has_value()},
          {"head_map", absl::GetFlag(FLAGS_head_map).has_value()}};
}

FlagSet MaskFlagsGiven() {
  return {{"window_left", absl::GetFlag(FLAGS_window_left).has_value()},
          {"window_right", absl::GetFlag(FLAGS_window_right).has_value()},
          {"block_q", absl::GetFlag(FLAGS_block_q).has_value()},
          {"block_kv", absl::GetFlag(FLAGS_block_kv).has_value()},
          {"blocks", absl::GetFlag(FLAGS_blocks).has_value()},
          {"block_causal", absl::GetFlag(FLAGS_block_causal)},
          {"prob_c", absl::GetFlag(FLAGS_prob_c).has_value()},
          {"prob_alpha", absl::GetFlag(FLAGS_prob_alpha).has_value()},
          {"mask_seed", absl::GetFlag(FLAGS_mask_seed).has_value()}};
}

bool Given(const FlagSet& flags, absl::string_view name) {
  for (const auto& [flag, given] : flags) {
    if (flag == name) return given;
  }
  return false;
}

// Requires every flag of `required` and rejects any given flag of the family outside `required`
// and `allowed`; `owner` names what they belong to ("--layout=gqa").
absl::Status CheckFamily(const FlagSet& flags, absl::string_view owner,
                         const std::set<absl::string_view>& required,
                         const std::set<absl::string_view>& allowed) {
  for (absl::string_view name : required) {
    if (!Given(flags, name)) return FlagError(name, absl::StrCat("required by ", owner));
  }
  for (const auto& [name, given] : flags) {
    if (given && required.count(name) == 0 && allowed.count(name) == 0) {
      return FlagError(name, absl::StrCat("does not apply to ", owner));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::HeadLayout> LayoutFromFlags(const std::string& name) {
  const FlagSet flags = LayoutFlagsGiven();
  const std::string owner = absl::StrCat("--layout=", name);
  auto check = [&](const std::set<absl::string_view>& required,
                   const std::set<absl::string_view>& allowed) {
    return CheckFamily(flags, owner, required, allowed);
  };
  const auto heads = absl::GetFlag(FLAGS_heads);
  const auto query_heads = absl::GetFlag(FLAGS_query_heads);
  const auto kv_heads = absl::GetFlag(FLAGS_kv_heads);
  v1::HeadLayout layout;
  absl::Status status;
  if (name == "mha" || name == "mqa" || name == "ssqa") {
    status = check({"heads"}, {});
    if (name == "mha") layout.mutable_mha()->set_num_heads(heads.value_or(0));
    if (name == "mqa") layout.mutable_mqa()->set_num_heads(heads.value_or(0));
    if (name == "ssqa") layout.mutable_symmetric_sqa()->set_baseline_heads(heads.value_or(0));
  } else if (name == "gqa") {
    // H_q is --query_heads, or --heads when that is what was given.
    status = query_heads.has_value() ? check({"query_heads", "kv_heads"}, {})
                                     : check({"heads", "kv_heads"}, {});
    layout.mutable_gqa()->set_num_query_heads(query_heads.value_or(heads.value_or(0)));
    layout.mutable_gqa()->set_num_kv_heads(kv_heads.value_or(0));
  } else if (name == "sqa") {
    status = check({"heads", "query_heads", "kv_heads"}, {});
    layout.mutable_sqa()->set_baseline_heads(heads.value_or(0));
    layout.mutable_sqa()->set_num_query_heads(query_heads.value_or(0));
    layout.mutable_sqa()->set_num_kv_heads(kv_heads.value_or(0));
  } else if (name == "xsqa") {
    status = check({"heads"}, {"query_heads"});
    layout.mutable_extreme_sqa()->set_baseline_heads(heads.value_or(0));
    if (query_heads.has_value()) layout.mutable_extreme_sqa()->set_num_query_heads(*query_heads);
  } else if (name == "gqkva") {
    status = check({"query_groups", "kv_groups"}, {});
    layout.mutable_gqkva()->set_query_groups(absl::GetFlag(FLAGS_query_groups).value_or(0));
    layout.mutable_gqkva()->set_kv_groups(absl::GetFlag(FLAGS_kv_groups).value_or(0));
  } else if (name == "explicit") {
    status = check({"query_heads", "kv_heads", "head_map"}, {});
    if (status.ok()) {
      absl::StatusOr<std::vector<v1::HeadLayout::HeadPair>> pairs =
          ParseHeadMap(*absl::GetFlag(FLAGS_head_map));
      if (!pairs.ok()) return Named("head_map", pairs.status());
      v1::HeadLayout::ExplicitMap* map = layout.mutable_explicit_map();
      map->set_num_query_heads(*query_heads);
      map->set_num_kv_heads(*kv_heads);
      for (v1::HeadLayout::HeadPair& pair : *pairs) *map->add_pairs() = std::move(pair);
    }
  } else {
    return FlagError("layout",
                     absl::StrCat("unknown layout '", name, "' (expected ", kLayoutNames, ")"));
  }
  if (!status.ok()) return status;
  return layout;
}

// The spec's layout: from --layout, or mha when only --heads is given, or unset.
absl::Status SetLayout(v1::AttentionSpec* spec) {
  std::optional<std::string> name = absl::GetFlag(FLAGS_layout);
  if (!name.has_value()) {
    const FlagSet flags = LayoutFlagsGiven();
    for (const auto& [flag, given] : flags) {
      if (given && flag != "heads") return FlagError(flag, "needs --layout");
    }
    if (!Given(flags, "heads")) return absl::OkStatus();
    name = "mha";
  }
  absl::StatusOr<v1::HeadLayout> layout = LayoutFromFlags(*name);
  if (!layout.ok()) return layout.status();
  *spec->mutable_layout() = *std::move(layout);
  return absl::OkStatus();
}

constexpr absl::string_view kMaskNames = "none|causal|window|block_sparse|prob_block_sparse";

// The mask flags a mask kind takes: first the required ones, then the optional ones.
absl::StatusOr<std::pair<std::vector<absl::string_view>, std::vector<absl::string_view>>>
MaskParams(absl::string_view name) {
  using Names = std::vector<absl::string_view>;
  if (name == "none" || name == "causal") return std::make_pair(Names{}, Names{});
  if (name == "window") return std::make_pair(Names{}, Names{"window_left", "window_right"});
  if (name == "block_sparse") {
    return std::make_pair(Names{"block_q", "block_kv", "blocks"}, Names{"block_causal"});
  }
  if (name == "prob_block_sparse") {
    return std::make_pair(Names{"block_q", "block_kv", "prob_c", "prob_alpha"}, Names{"mask_seed"});
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown mask '", name, "' (expected ", kMaskNames, ")"));
}

// Builds mask `name` from the mask flags, which must include its required ones. Which flags may
// be given at all is checked once per request by CheckMaskFlags.
absl::StatusOr<v1::Mask> MaskFromFlags(absl::string_view flag, absl::string_view name) {
  auto params = MaskParams(name);
  if (!params.ok()) return Named(flag, params.status());
  const FlagSet flags = MaskFlagsGiven();
  for (absl::string_view required : params->first) {
    if (!Given(flags, required)) {
      return FlagError(required, absl::StrCat("required by mask ", name));
    }
  }
  v1::Mask mask;
  if (name == "none") {
    mask.mutable_none();
  } else if (name == "causal") {
    mask.mutable_causal();
  } else if (name == "window") {
    v1::Mask::SlidingWindow* window = mask.mutable_sliding_window();
    if (auto left = absl::GetFlag(FLAGS_window_left)) window->set_left_tokens(*left);
    if (auto right = absl::GetFlag(FLAGS_window_right)) window->set_right_tokens(*right);
  } else if (name == "block_sparse") {
    absl::StatusOr<std::vector<v1::Mask::Block>> blocks = ParseBlocks(*absl::GetFlag(FLAGS_blocks));
    if (!blocks.ok()) return Named("blocks", blocks.status());
    v1::Mask::BlockSparse* sparse = mask.mutable_block_sparse();
    sparse->set_query_block_tokens(*absl::GetFlag(FLAGS_block_q));
    sparse->set_kv_block_tokens(*absl::GetFlag(FLAGS_block_kv));
    for (v1::Mask::Block& block : *blocks) *sparse->add_blocks() = std::move(block);
    sparse->set_intersect_causal(absl::GetFlag(FLAGS_block_causal));
  } else {
    v1::Mask::ProbabilisticBlockSparse* sparse = mask.mutable_probabilistic_block_sparse();
    sparse->set_query_block_tokens(*absl::GetFlag(FLAGS_block_q));
    sparse->set_kv_block_tokens(*absl::GetFlag(FLAGS_block_kv));
    sparse->set_c_coefficient(*absl::GetFlag(FLAGS_prob_c));
    sparse->set_alpha(*absl::GetFlag(FLAGS_prob_alpha));
    if (auto seed = absl::GetFlag(FLAGS_mask_seed)) sparse->set_seed(*seed);
  }
  return mask;
}

// Rejects mask flags that none of the masks in use (`names`) takes.
absl::Status CheckMaskFlags(const std::vector<std::string>& names) {
  std::set<absl::string_view> accepted;
  for (const std::string& name : names) {
    auto params = MaskParams(name);
    if (!params.ok()) continue;  // Reported where the mask is built.
    accepted.insert(params->first.begin(), params->first.end());
    accepted.insert(params->second.begin(), params->second.end());
  }
  for (const auto& [flag, given] : MaskFlagsGiven()) {
    if (!given || accepted.count(flag) != 0) continue;
    if (names.empty()) return FlagError(flag, "needs --mask");
    return FlagError(flag, absl::StrCat("does not apply to mask ", absl::StrJoin(names, ",")));
  }
  return absl::OkStatus();
}

// Sets an enum field from an optional flag through `parse`.
template <typename Enum, typename Parse, typename Set>
absl::Status SetEnum(absl::string_view flag, const std::optional<std::string>& value, Parse parse,
                     Set set) {
  if (!value.has_value()) return absl::OkStatus();
  absl::StatusOr<Enum> parsed = parse(*value);
  if (!parsed.ok()) return Named(flag, parsed.status());
  set(*parsed);
  return absl::OkStatus();
}

absl::Status SetShape(v1::AttentionSpec* spec) {
  if (auto batch = absl::GetFlag(FLAGS_batch)) spec->set_batch_size(*batch);
  if (auto seq_len = absl::GetFlag(FLAGS_seq_len)) {
    spec->set_seq_len_q(*seq_len);
    spec->set_seq_len_kv(*seq_len);
  }
  if (auto seq_len_q = absl::GetFlag(FLAGS_seq_len_q)) spec->set_seq_len_q(*seq_len_q);
  if (auto seq_len_kv = absl::GetFlag(FLAGS_seq_len_kv)) spec->set_seq_len_kv(*seq_len_kv);
  if (auto head_dim = absl::GetFlag(FLAGS_head_dim)) spec->set_head_dim_qk(*head_dim);
  if (auto head_dim_v = absl::GetFlag(FLAGS_head_dim_v)) spec->set_head_dim_v(*head_dim_v);
  return absl::OkStatus();
}

absl::Status SetModifiers(v1::AttentionSpec* spec) {
  if (absl::GetFlag(FLAGS_rope)) {
    v1::Rope* rope = spec->mutable_rope();
    if (auto theta = absl::GetFlag(FLAGS_rope_theta)) rope->set_theta(*theta);
    if (auto dims = absl::GetFlag(FLAGS_rotary_dims)) rope->set_rotary_dims(*dims);
  } else if (absl::GetFlag(FLAGS_rope_theta).has_value()) {
    return FlagError("rope_theta", "needs --rope");
  } else if (absl::GetFlag(FLAGS_rotary_dims).has_value()) {
    return FlagError("rotary_dims", "needs --rope");
  }

  const auto schedule = absl::GetFlag(FLAGS_alibi);
  const auto base_slope = absl::GetFlag(FLAGS_alibi_base_slope);
  if (schedule.has_value()) {
    absl::StatusOr<v1::AlibiSchedule> parsed = ParseAlibiSchedule(*schedule);
    if (!parsed.ok()) return Named("alibi", parsed.status());
    spec->mutable_alibi()->set_schedule(*parsed);
  }
  if (base_slope.has_value()) {
    if (!spec->has_alibi() || spec->alibi().schedule() != v1::ALIBI_SCHEDULE_HARMONIC) {
      return FlagError("alibi_base_slope", "needs --alibi=harmonic");
    }
    spec->mutable_alibi()->set_harmonic_base_slope(*base_slope);
  }

  if (auto cap = absl::GetFlag(FLAGS_softcap)) spec->mutable_softcap()->set_cap(*cap);
  if (auto scale = absl::GetFlag(FLAGS_scale)) spec->set_scale(*scale);
  return absl::OkStatus();
}

// --score_mod, --mask_mod and --aux. The expressions go as written: parsing, types and bounds
// are the server's to check (they depend on the shape, and its errors name the column).
absl::Status SetExpressions(v1::AttentionSpec* spec) {
  const auto score_mod = absl::GetFlag(FLAGS_score_mod);
  const auto mask_mod = absl::GetFlag(FLAGS_mask_mod);
  if (score_mod.has_value()) {
    if (absl::StripAsciiWhitespace(*score_mod).empty())
      return FlagError("score_mod", "empty expression");
    spec->mutable_score_mod()->set_expression(*score_mod);
  }
  if (mask_mod.has_value()) {
    if (absl::StripAsciiWhitespace(*mask_mod).empty())
      return FlagError("mask_mod", "empty expression");
    spec->mutable_mask_mod()->set_expression(*mask_mod);
  }
  const auto aux = absl::GetFlag(FLAGS_aux);
  if (!aux.has_value()) return absl::OkStatus();
  if (!score_mod.has_value() && !mask_mod.has_value()) {
    return FlagError("aux", "needs --score_mod or --mask_mod (the expressions index it)");
  }
  absl::StatusOr<std::vector<AuxFile>> files = ParseAuxList(*aux);
  if (!files.ok()) return Named("aux", files.status());
  for (const AuxFile& file : *files) {
    absl::StatusOr<v1::Tensor> tensor = ReadAuxTensor(file.path);
    if (!tensor.ok())
      return FlagError("aux",
                       absl::StrCat("tensor '", file.name, "': ", tensor.status().message()));
    v1::NamedTensor* named = spec->add_aux();
    named->set_name(file.name);
    *named->mutable_tensor() = *std::move(tensor);
  }
  return absl::OkStatus();
}

// --fp8_scales and the scale lists: spec.float8, sent as given (the server checks them against
// the dtype and the head counts).
absl::Status SetFloat8Scales(v1::AttentionSpec* spec) {
  if (auto granularity = absl::GetFlag(FLAGS_fp8_scales)) {
    const std::string g = absl::AsciiStrToLower(*granularity);
    if (g != "tensor" && g != "head") return FlagError("fp8_scales", "must be tensor or head");
    spec->mutable_float8()->set_granularity(g == "head" ? v1::SCALE_GRANULARITY_HEAD
                                                        : v1::SCALE_GRANULARITY_TENSOR);
  }
  struct List {
    const char* flag;
    std::optional<std::string> text;
    google::protobuf::RepeatedField<float>* (v1::Float8Scaling::*field)();
  };
  const List lists[] = {
      {"query_scales", absl::GetFlag(FLAGS_query_scales), &v1::Float8Scaling::mutable_query_scales},
      {"key_scales", absl::GetFlag(FLAGS_key_scales), &v1::Float8Scaling::mutable_key_scales},
      {"value_scales", absl::GetFlag(FLAGS_value_scales),
       &v1::Float8Scaling::mutable_value_scales}};
  for (const List& list : lists) {
    if (!list.text.has_value()) continue;
    absl::StatusOr<std::vector<float>> values = ParseFloatList(*list.text);
    if (!values.ok()) return Named(list.flag, values.status());
    (spec->mutable_float8()->*list.field)()->Add(values->begin(), values->end());
  }
  return absl::OkStatus();
}

absl::Status SetTypePhaseScope(v1::AttentionSpec* spec) {
  absl::Status status = SetEnum<v1::DType>("dtype", absl::GetFlag(FLAGS_dtype), ParseDType,
                                           [&](v1::DType d) { spec->set_dtype(d); });
  if (!status.ok()) return status;
  status = SetEnum<v1::Phase>("phase", absl::GetFlag(FLAGS_phase), ParsePhase,
                              [&](v1::Phase p) { spec->set_phase(p); });
  if (!status.ok()) return status;
  status = SetEnum<v1::Scope>("scope", absl::GetFlag(FLAGS_scope), ParseScope,
                              [&](v1::Scope s) { spec->set_scope(s); });
  if (!status.ok()) return status;
  if (auto d_model = absl::GetFlag(FLAGS_d_model)) spec->set_d_model(*d_model);
  if (auto seed = absl::GetFlag(FLAGS_seed)) spec->set_seed(*seed);
  if (auto input_scale = absl::GetFlag(FLAGS_input_scale)) spec->set_input_scale(*input_scale);
  if (absl::Status s = SetFloat8Scales(spec); !s.ok()) return s;
  const auto decay = absl::GetFlag(FLAGS_kv_spectrum_decay);
  const auto rank = absl::GetFlag(FLAGS_kv_spectrum_rank);
  if (rank.has_value() && !decay.has_value()) {
    return FlagError("kv_spectrum_rank", "needs --kv_spectrum_decay");
  }
  if (decay.has_value()) {
    spec->mutable_kv_spectrum()->set_decay(*decay);
    if (rank.has_value()) spec->mutable_kv_spectrum()->set_rank(*rank);
  }
  if (auto heads = absl::GetFlag(FLAGS_kv_compression_heads)) {
    spec->mutable_kv_compression()->set_target_kv_heads(*heads);
  }
  return absl::OkStatus();
}

absl::Status SetKvCache(v1::AttentionSpec* spec) {
  if (auto page_size = absl::GetFlag(FLAGS_page_size)) {
    spec->mutable_kv_cache()->mutable_paging()->set_page_size_tokens(*page_size);
  }
  const auto format = absl::GetFlag(FLAGS_cache_format);
  const auto saq = absl::GetFlag(FLAGS_saq);
  if (format.has_value() && saq.has_value()) {
    return FlagError("saq", "cannot be combined with --cache_format (each band has its format)");
  }
  absl::Status status =
      SetEnum<v1::CacheFormat>("cache_format", format, ParseCacheFormat,
                               [&](v1::CacheFormat f) { spec->mutable_kv_cache()->set_format(f); });
  if (!status.ok()) return status;
  if (saq.has_value()) {
    absl::StatusOr<std::vector<v1::KvCache::SaqBand>> bands = ParseSaqBands(*saq);
    if (!bands.ok()) return Named("saq", bands.status());
    for (v1::KvCache::SaqBand& band : *bands) {
      *spec->mutable_kv_cache()->add_saq_bands() = std::move(band);
    }
  }
  return absl::OkStatus();
}

absl::Status SetMeasurement(v1::RunRequest* request) {
  auto measurement = [request] { return request->mutable_measurement(); };
  if (auto v = absl::GetFlag(FLAGS_warmup)) measurement()->set_warmup_iterations(*v);
  if (auto v = absl::GetFlag(FLAGS_min_iters)) measurement()->set_min_iterations(*v);
  if (auto v = absl::GetFlag(FLAGS_max_iters)) measurement()->set_max_iterations(*v);
  if (auto v = absl::GetFlag(FLAGS_max_seconds)) measurement()->set_max_duration_seconds(*v);
  if (auto v = absl::GetFlag(FLAGS_target_noise)) measurement()->set_target_relative_noise(*v);
  if (absl::GetFlag(FLAGS_cuda_graph)) measurement()->set_use_cuda_graph(true);
  if (absl::GetFlag(FLAGS_deterministic)) measurement()->set_deterministic(true);
  if (absl::GetFlag(FLAGS_samples)) measurement()->set_return_samples(true);
  absl::Status status =
      SetEnum<v1::CacheMode>("cache", absl::GetFlag(FLAGS_cache), ParseCacheMode,
                             [&](v1::CacheMode m) { measurement()->set_cache_mode(m); });
  if (!status.ok()) return status;
  status = SetEnum<v1::CheckMode>("check", absl::GetFlag(FLAGS_check), ParseCheckMode,
                                  [&](v1::CheckMode m) { request->mutable_check()->set_mode(m); });
  if (!status.ok()) return status;
  status = SetEnum<v1::BackwardTiming>(
      "backward_timing", absl::GetFlag(FLAGS_backward_timing), ParseBackwardTiming,
      [&](v1::BackwardTiming t) { measurement()->set_backward_timing(t); });
  if (!status.ok()) return status;
  if (auto rows = absl::GetFlag(FLAGS_check_rows)) {
    request->mutable_check()->set_max_sampled_rows(*rows);
  }
  return absl::OkStatus();
}

// Everything but the mask, which run and sweep treat differently.
absl::StatusOr<v1::RunRequest> RequestWithoutMask() {
  v1::RunRequest request;
  if (auto backend = absl::GetFlag(FLAGS_backend)) request.set_backend(*backend);
  if (auto device = absl::GetFlag(FLAGS_device_index)) request.set_device_index(*device);
  v1::AttentionSpec* spec = request.mutable_spec();
  for (absl::Status status :
       {SetShape(spec), SetLayout(spec), SetModifiers(spec), SetExpressions(spec),
        SetTypePhaseScope(spec), SetKvCache(spec), SetMeasurement(&request)}) {
    if (!status.ok()) return status;
  }
  return request;
}

// Adds the base request's mask, if --mask is given.
absl::Status SetBaseMask(v1::RunRequest* request) {
  const auto name = absl::GetFlag(FLAGS_mask);
  if (!name.has_value()) return absl::OkStatus();
  absl::StatusOr<v1::Mask> mask = MaskFromFlags("mask", *name);
  if (!mask.ok()) return mask.status();
  *request->mutable_spec()->mutable_mask() = *std::move(mask);
  return absl::OkStatus();
}

// Bytes of one stored element.
int64_t ElementBytes(v1::DType dtype) {
  switch (dtype) {
    case v1::DTYPE_FLOAT32:
      return 4;
    case v1::DTYPE_FLOAT16:
    case v1::DTYPE_BFLOAT16:
      return 2;
    case v1::DTYPE_FLOAT8_E4M3:
      return 1;
    default:
      return 0;
  }
}

// A client tensor from a file of raw little-endian elements of --dtype (the format --output
// writes) into `out`, with `shape`: the file's size must match; its values are the server's to
// judge. `what` names the tensor in errors ("dO [B, S_q, H_out, D_v]").
absl::Status ReadInputFile(const std::string& flag, const std::string& path,
                           const std::string& what, const std::vector<int64_t>& shape,
                           v1::DType dtype, v1::Tensor* out) {
  if (path.empty()) return FlagError(flag, "empty path");
  absl::StatusOr<std::string> read = ReadFileBytes(path);
  if (!read.ok()) return FlagError(flag, read.status().message());
  std::string data = *std::move(read);
  // The bytes the shape needs, or -1 past what any file holds (no overflow on absurd flags).
  int64_t needed = ElementBytes(dtype);
  for (int64_t d : shape) {
    needed = needed > std::numeric_limits<int64_t>::max() / d ? -1 : needed * d;
    if (needed < 0) break;
  }
  if (needed != static_cast<int64_t>(data.size())) {
    return FlagError(flag,
                     absl::StrCat(path, " has ", data.size(), " bytes; ", what, " [",
                                  absl::StrJoin(shape, ","), "] of ", DTypeName(dtype), " needs ",
                                  needed < 0 ? "more than any file holds" : absl::StrCat(needed)));
  }
  out->set_dtype(dtype);
  for (int64_t d : shape) out->add_shape(d);
  out->set_data(std::move(data));
  return absl::OkStatus();
}

// --grad_output: dO [B, S_q, H_out, D_v] from a file (ReadInputFile), its shape from the shape,
// layout and dtype flags.
absl::Status SetGradOutput(v1::RunRequest* request) {
  const std::optional<std::string> path = absl::GetFlag(FLAGS_grad_output);
  if (!path.has_value()) return absl::OkStatus();
  const v1::AttentionSpec& spec = request->spec();
  if (spec.phase() != v1::PHASE_BACKWARD) return FlagError("grad_output", "needs --phase=backward");
  const int64_t heads = OutputHeads(spec.layout());
  const int64_t dim_v = spec.has_head_dim_v() ? spec.head_dim_v() : spec.head_dim_qk();
  std::vector<std::string> missing;
  if (spec.batch_size() <= 0) missing.push_back("--batch");
  if (spec.seq_len_q() <= 0) missing.push_back("--seq_len (or --seq_len_q)");
  if (heads <= 0) missing.push_back("a layout with its heads");
  if (dim_v <= 0) missing.push_back("--head_dim");
  if (ElementBytes(spec.dtype()) == 0) missing.push_back("--dtype");
  if (!missing.empty()) {
    return FlagError("grad_output", absl::StrCat("dO's shape [B, S_q, H_out, D_v] needs ",
                                                 absl::StrJoin(missing, ", ")));
  }
  return ReadInputFile("grad_output", *path, "dO",
                       {spec.batch_size(), spec.seq_len_q(), heads, dim_v}, spec.dtype(),
                       request->mutable_spec()->mutable_inputs()->mutable_grad_output());
}

// --x, --w_q, --w_k, --w_v, --w_o: a layer's X [B, S, d_model] and weights from files
// (ReadInputFile), their shapes from the shape, layout, --d_model and dtype flags (§6).
absl::Status SetLayerInputs(v1::RunRequest* request) {
  const v1::AttentionSpec& spec = request->spec();
  const HeadCounts heads = HeadsOf(spec.layout());
  const int64_t dm = spec.d_model();
  const int64_t dqk = spec.head_dim_qk();
  const int64_t dv = spec.has_head_dim_v() ? spec.head_dim_v() : dqk;
  struct Slot {
    const char* flag;
    std::optional<std::string> path;
    const char* what;
    std::vector<int64_t> shape;
    v1::Tensor* (v1::InputTensors::*field)();
  };
  const Slot slots[] = {
      {"x",
       absl::GetFlag(FLAGS_x),
       "X [B, S, d_model]",
       {spec.batch_size(), spec.seq_len_q(), dm},
       &v1::InputTensors::mutable_x},
      {"w_q",
       absl::GetFlag(FLAGS_w_q),
       "W_q [d_model, H_q * D_qk]",
       {dm, heads.query * dqk},
       &v1::InputTensors::mutable_w_q},
      {"w_k",
       absl::GetFlag(FLAGS_w_k),
       "W_k [d_model, H_kv * D_qk]",
       {dm, heads.kv * dqk},
       &v1::InputTensors::mutable_w_k},
      {"w_v",
       absl::GetFlag(FLAGS_w_v),
       "W_v [d_model, H_kv * D_v]",
       {dm, heads.kv * dv},
       &v1::InputTensors::mutable_w_v},
      {"w_o",
       absl::GetFlag(FLAGS_w_o),
       "W_o [H_out * D_v, d_model]",
       {heads.output * dv, dm},
       &v1::InputTensors::mutable_w_o},
  };
  for (const Slot& slot : slots) {
    if (!slot.path.has_value()) continue;
    if (spec.scope() != v1::SCOPE_LAYER) return FlagError(slot.flag, "needs --scope=layer");
    std::vector<std::string> missing;
    if (spec.batch_size() <= 0) missing.push_back("--batch");
    if (spec.seq_len_q() <= 0) missing.push_back("--seq_len");
    if (heads.output <= 0) missing.push_back("a layout with its heads");
    if (dqk <= 0) missing.push_back("--head_dim");
    if (dm <= 0) missing.push_back("--d_model");
    if (ElementBytes(spec.dtype()) == 0) missing.push_back("--dtype");
    if (!missing.empty()) {
      return FlagError(slot.flag, absl::StrCat("the shape of ", slot.what, " needs ",
                                               absl::StrJoin(missing, ", ")));
    }
    v1::Tensor* out = (request->mutable_spec()->mutable_inputs()->*slot.field)();
    if (absl::Status s =
            ReadInputFile(slot.flag, *slot.path, slot.what, slot.shape, spec.dtype(), out);
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

// --- Sweep axes ---------------------------------------------------------------------------

using AxisBuilder = absl::Status (*)(const std::string& text, v1::SweepAxis* axis);

absl::Status Int64Axis(const std::string& text, google::protobuf::RepeatedField<int64_t>* out) {
  absl::StatusOr<std::vector<int64_t>> values = ParseInt64List(text);
  if (!values.ok()) return values.status();
  out->Add(values->begin(), values->end());
  return absl::OkStatus();
}

absl::Status BackendAxis(const std::string& text, v1::SweepAxis* axis) {
  absl::StatusOr<std::vector<std::string>> names = SplitList(text);
  if (!names.ok()) return names.status();
  for (std::string& name : *names) axis->mutable_backend()->add_values(std::move(name));
  return absl::OkStatus();
}

absl::Status LayoutAxis(const std::string& text, v1::SweepAxis* axis) {
  absl::StatusOr<std::vector<std::string>> items = SplitList(text);
  if (!items.ok()) return items.status();
  for (const std::string& item : *items) {
    absl::StatusOr<v1::HeadLayout> layout = ParseLayoutSpec(item);
    if (!layout.ok()) return layout.status();
    *axis->mutable_layout()->add_values() = *std::move(layout);
  }
  return absl::OkStatus();
}

absl::Status MaskAxis(const std::string& text, v1::SweepAxis* axis) {
  absl::StatusOr<std::vector<std::string>> items = SplitList(text);
  if (!items.ok()) return items.status();
  for (const std::string& item : *items) {
    absl::StatusOr<v1::Mask> mask = absl::StartsWith(item, "window:")
                                        ? ParseWindowSpec(item)
                                        : MaskFromFlags("sweep_mask", item);
    if (!mask.ok()) return mask.status();
    *axis->mutable_mask()->add_values() = *std::move(mask);
  }
  return absl::OkStatus();
}

absl::Status DTypeAxis(const std::string& text, v1::SweepAxis* axis) {
  absl::StatusOr<std::vector<std::string>> items = SplitList(text);
  if (!items.ok()) return items.status();
  for (const std::string& item : *items) {
    absl::StatusOr<v1::DType> dtype = ParseDType(item);
    if (!dtype.ok()) return dtype.status();
    axis->mutable_dtype()->add_values(*dtype);
  }
  return absl::OkStatus();
}

absl::Status PhaseAxis(const std::string& text, v1::SweepAxis* axis) {
  absl::StatusOr<std::vector<std::string>> items = SplitList(text);
  if (!items.ok()) return items.status();
  for (const std::string& item : *items) {
    absl::StatusOr<v1::Phase> phase = ParsePhase(item);
    if (!phase.ok()) return phase.status();
    axis->mutable_phase()->add_values(*phase);
  }
  return absl::OkStatus();
}

absl::Status BatchAxis(const std::string& text, v1::SweepAxis* axis) {
  return Int64Axis(text, axis->mutable_batch_size()->mutable_values());
}
absl::Status SeqLenAxis(const std::string& text, v1::SweepAxis* axis) {
  return Int64Axis(text, axis->mutable_seq_len()->mutable_values());
}
absl::Status SeqLenQAxis(const std::string& text, v1::SweepAxis* axis) {
  return Int64Axis(text, axis->mutable_seq_len_q()->mutable_values());
}
absl::Status SeqLenKvAxis(const std::string& text, v1::SweepAxis* axis) {
  return Int64Axis(text, axis->mutable_seq_len_kv()->mutable_values());
}
absl::Status HeadDimAxis(const std::string& text, v1::SweepAxis* axis) {
  absl::StatusOr<std::vector<int32_t>> values = ParseInt32List(text);
  if (!values.ok()) return values.status();
  axis->mutable_head_dim()->mutable_values()->Add(values->begin(), values->end());
  return absl::OkStatus();
}

absl::Status KvCompressionAxis(const std::string& text, v1::SweepAxis* axis) {
  absl::StatusOr<std::vector<int32_t>> values = ParseInt32List(text);
  if (!values.ok()) return values.status();
  axis->mutable_kv_compression_heads()->mutable_values()->Add(values->begin(), values->end());
  return absl::OkStatus();
}

struct AxisFlag {
  absl::string_view name;
  std::optional<std::string> value;
  AxisBuilder build;
};

// The sweep flags in grid order (the last varies fastest).
std::vector<AxisFlag> AxisFlags() {
  return {{"sweep_backend", absl::GetFlag(FLAGS_sweep_backend), BackendAxis},
          {"sweep_layout", absl::GetFlag(FLAGS_sweep_layout), LayoutAxis},
          {"sweep_mask", absl::GetFlag(FLAGS_sweep_mask), MaskAxis},
          {"sweep_dtype", absl::GetFlag(FLAGS_sweep_dtype), DTypeAxis},
          {"sweep_phase", absl::GetFlag(FLAGS_sweep_phase), PhaseAxis},
          {"sweep_batch", absl::GetFlag(FLAGS_sweep_batch), BatchAxis},
          {"sweep_seq_len", absl::GetFlag(FLAGS_sweep_seq_len), SeqLenAxis},
          {"sweep_seq_len_q", absl::GetFlag(FLAGS_sweep_seq_len_q), SeqLenQAxis},
          {"sweep_seq_len_kv", absl::GetFlag(FLAGS_sweep_seq_len_kv), SeqLenKvAxis},
          {"sweep_head_dim", absl::GetFlag(FLAGS_sweep_head_dim), HeadDimAxis},
          {"sweep_kv_compression_heads", absl::GetFlag(FLAGS_sweep_kv_compression_heads),
           KvCompressionAxis}};
}

// The mask kinds a sweep uses: the base --mask and the named items of --sweep_mask.
std::vector<std::string> SweepMaskNames() {
  std::vector<std::string> names;
  if (auto base = absl::GetFlag(FLAGS_mask)) names.push_back(*base);
  if (auto axis = absl::GetFlag(FLAGS_sweep_mask)) {
    absl::StatusOr<std::vector<std::string>> items = SplitList(*axis);
    if (items.ok()) {
      for (const std::string& item : *items) {
        names.push_back(absl::StartsWith(item, "window:") ? "window" : item);
      }
    }
  }
  return names;
}

}  // namespace

absl::StatusOr<v1::RunRequest> RunRequestFromFlags() {
  absl::StatusOr<v1::RunRequest> request = RequestWithoutMask();
  if (!request.ok()) return request.status();
  std::vector<std::string> mask_names;
  if (auto name = absl::GetFlag(FLAGS_mask)) mask_names.push_back(*name);
  absl::Status status = SetBaseMask(&*request);
  if (status.ok()) status = CheckMaskFlags(mask_names);
  if (!status.ok()) return status;
  if (absl::GetFlag(FLAGS_backward_timing).has_value() &&
      request->spec().phase() != v1::PHASE_BACKWARD) {
    return FlagError("backward_timing", "needs --phase=backward");
  }
  status = SetGradOutput(&*request);
  if (status.ok()) status = SetLayerInputs(&*request);
  if (!status.ok()) return status;
  if (absl::GetFlag(FLAGS_output).has_value()) request->set_return_output(true);
  return request;
}

absl::StatusOr<v1::SweepRequest> SweepRequestFromFlags() {
  absl::StatusOr<v1::RunRequest> base = RequestWithoutMask();
  if (!base.ok()) return base.status();
  v1::SweepRequest sweep;
  *sweep.mutable_base() = *std::move(base);
  absl::Status status = SetBaseMask(sweep.mutable_base());
  if (!status.ok()) return status;
  for (const AxisFlag& flag : AxisFlags()) {
    if (!flag.value.has_value()) continue;
    status = flag.build(*flag.value, sweep.add_axes());
    if (!status.ok()) {
      // Mask items report the block flag they lack under that flag's name.
      if (absl::StartsWith(status.message(), "--")) return status;
      return Named(flag.name, status);
    }
  }
  status = CheckMaskFlags(SweepMaskNames());
  if (!status.ok()) return status;
  if (absl::GetFlag(FLAGS_backward_timing).has_value()) {
    // Every point's phase: the phase axis's values, else the base's.
    std::vector<int> phases = {sweep.base().spec().phase()};
    for (const v1::SweepAxis& axis : sweep.axes()) {
      if (axis.has_phase()) {
        phases.assign(axis.phase().values().begin(), axis.phase().values().end());
      }
    }
    for (int phase : phases) {
      if (phase == v1::PHASE_BACKWARD) continue;
      return FlagError("backward_timing",
                       phase == v1::PHASE_UNSPECIFIED
                           ? std::string("needs --phase=backward")
                           : absl::StrCat("needs every point's phase to be backward (the server "
                                          "refuses it at the ",
                                          PhaseName(static_cast<v1::Phase>(phase)), " points)"));
    }
  }
  if (sweep.axes().empty()) {
    return absl::InvalidArgumentError(
        "sweep needs at least one axis flag (--sweep_seq_len, --sweep_layout, ...)");
  }
  sweep.set_continue_on_error(absl::GetFlag(FLAGS_continue_on_error));
  return sweep;
}

}  // namespace attnbench::client
