#include "client/flags.h"

#include <algorithm>
#include <set>
#include <string>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

// Help texts name the accepted values; client/names.h and client/layout_syntax.h hold the tables.
ABSL_FLAG(
    std::string, server, "localhost:50051",
    "gRPC target of the attnbench server: host:port, or any gRPC URI such as dns:///host:port");
ABSL_FLAG(std::string, format, "table", "Output format: table|csv|json");
ABSL_FLAG(std::optional<double>, deadline_seconds, std::nullopt,
          "Deadline of the whole RPC in seconds (unset: none)");
ABSL_FLAG(bool, tls, false,
          "Connect over TLS, verifying the server with the system's root CAs (implied by the other "
          "--tls_* flags)");
ABSL_FLAG(std::optional<std::string>, tls_ca_file, std::nullopt,
          "PEM CA certificates to verify the server with (enables TLS)");
ABSL_FLAG(std::optional<std::string>, tls_cert_file, std::nullopt,
          "PEM client certificate for mutual TLS (with --tls_key_file)");
ABSL_FLAG(std::optional<std::string>, tls_key_file, std::nullopt,
          "PEM private key of --tls_cert_file");
ABSL_FLAG(std::optional<std::string>, token, std::nullopt,
          "Bearer token sent with every call (visible to other local users in the process list; "
          "prefer --token_file)");
ABSL_FLAG(std::optional<std::string>, token_file, std::nullopt,
          "File holding the bearer token sent with every call");
ABSL_FLAG(std::optional<std::string>, tenant, std::nullopt,
          "Tenant to run as on a server without token auth (x-attnbench-tenant)");
ABSL_FLAG(std::optional<std::string>, output, std::nullopt,
          "Write the output tensor's raw little-endian bytes to this file (uses StreamRun); with "
          "--phase=backward also dQ, dK and dV to FILE.dq, FILE.dk and FILE.dv (with --scope=layer "
          "dX and the weight gradients to FILE.dx, FILE.dw_q, FILE.dw_k, FILE.dw_v and FILE.dw_o)");

ABSL_FLAG(std::optional<std::string>, backend, std::nullopt,
          "Backend name from `attnbench caps`, or auto (server default: auto)");
ABSL_FLAG(std::optional<int32_t>, device_index, std::nullopt, "Device index within the backend");

ABSL_FLAG(std::optional<int64_t>, batch, std::nullopt, "Batch size B");
ABSL_FLAG(std::optional<int64_t>, seq_len, std::nullopt, "Sets both S_q and S_kv");
ABSL_FLAG(std::optional<int64_t>, seq_len_q, std::nullopt,
          "Query length S_q (overrides --seq_len)");
ABSL_FLAG(std::optional<int64_t>, seq_len_kv, std::nullopt,
          "Key/value length S_kv (overrides --seq_len)");
ABSL_FLAG(std::optional<int32_t>, head_dim, std::nullopt, "Head dimension D_qk");
ABSL_FLAG(std::optional<int32_t>, head_dim_v, std::nullopt,
          "Value head dimension D_v (unset: D_qk)");

ABSL_FLAG(std::optional<std::string>, layout, std::nullopt,
          "Head layout: mha|mqa|gqa|sqa|ssqa|xsqa|gqkva|explicit (unset with --heads: mha)");
ABSL_FLAG(std::optional<int32_t>, heads, std::nullopt,
          "H: heads of mha/mqa, baseline heads of sqa/ssqa/xsqa, query heads of gqa");
ABSL_FLAG(std::optional<int32_t>, query_heads, std::nullopt, "H_q of gqa/sqa/xsqa/explicit");
ABSL_FLAG(std::optional<int32_t>, kv_heads, std::nullopt, "H_kv of gqa/sqa/explicit");
ABSL_FLAG(std::optional<int32_t>, query_groups, std::nullopt, "g_q of gqkva");
ABSL_FLAG(std::optional<int32_t>, kv_groups, std::nullopt, "g_kv of gqkva");
ABSL_FLAG(std::optional<std::string>, head_map, std::nullopt,
          "Explicit head map qh:kh,qh:kh,... (output head h = item h)");

ABSL_FLAG(std::optional<std::string>, mask, std::nullopt,
          "Mask: none|causal|window|block_sparse|prob_block_sparse (server default: none)");
ABSL_FLAG(std::optional<int64_t>, window_left, std::nullopt,
          "Window: tokens left (unset: unbounded)");
ABSL_FLAG(std::optional<int64_t>, window_right, std::nullopt,
          "Window: tokens right (unset: unbounded; 0 makes it causal)");
ABSL_FLAG(std::optional<int64_t>, block_q, std::nullopt, "Block-sparse masks: query block tokens");
ABSL_FLAG(std::optional<int64_t>, block_kv, std::nullopt, "Block-sparse masks: key block tokens");
ABSL_FLAG(std::optional<std::string>, blocks, std::nullopt,
          "block_sparse: kept blocks row:col,row:col,...");
ABSL_FLAG(bool, block_causal, false, "block_sparse: also intersect with causal");
ABSL_FLAG(std::optional<double>, prob_c, std::nullopt, "prob_block_sparse: coefficient c");
ABSL_FLAG(std::optional<double>, prob_alpha, std::nullopt, "prob_block_sparse: exponent alpha");
ABSL_FLAG(std::optional<uint64_t>, mask_seed, std::nullopt, "prob_block_sparse: seed");

ABSL_FLAG(bool, rope, false, "Apply rotate-half RoPE to q and k");
ABSL_FLAG(std::optional<double>, rope_theta, std::nullopt, "RoPE base theta (needs --rope)");
ABSL_FLAG(std::optional<int32_t>, rotary_dims, std::nullopt,
          "Rotate only the first N dimensions (needs --rope)");
ABSL_FLAG(std::optional<std::string>, alibi, std::nullopt,
          "ALiBi bias schedule: geometric|harmonic");
ABSL_FLAG(std::optional<double>, alibi_base_slope, std::nullopt,
          "Base slope s0 of the harmonic schedule (needs --alibi=harmonic)");
ABSL_FLAG(std::optional<double>, softcap, std::nullopt, "Soft cap: s = cap * tanh(s / cap)");
ABSL_FLAG(std::optional<double>, scale, std::nullopt, "Score scale (unset: 1/sqrt(D_qk))");

ABSL_FLAG(std::optional<std::string>, score_mod, std::nullopt,
          "Score modifier expression, e.g. '30 * tanh(s / 30)' (docs/expressions.md); applied "
          "after --scale and the built-in modifiers");
ABSL_FLAG(std::optional<std::string>, mask_mod, std::nullopt,
          "Mask expression, true keeps the pair, e.g. 'kv < 4 || q - kv < 1024'; intersected "
          "with --mask");
ABSL_FLAG(std::optional<std::string>, aux, std::nullopt,
          "Aux tensors the expressions index: name=FILE, repeatable or comma-separated; FILE is "
          ".npy (float32/float64/int32/int64, 1-D or 2-D) or text (numbers, one row per line)");

ABSL_FLAG(std::optional<std::string>, dtype, std::nullopt, "Storage type: fp32|fp16|bf16|fp8");
ABSL_FLAG(std::optional<std::string>, fp8_scales, std::nullopt,
          "fp8: one scale per tensor or per head (tensor|head; default tensor), each derived from "
          "the data unless given (docs/variants.md §1b)");
ABSL_FLAG(std::optional<std::string>, query_scales, std::nullopt,
          "fp8: Q's scale, or one per query head with --fp8_scales=head (e.g. 0.01,0.02)");
ABSL_FLAG(std::optional<std::string>, key_scales, std::nullopt,
          "fp8: K's scale, or one per KV head with --fp8_scales=head");
ABSL_FLAG(std::optional<std::string>, value_scales, std::nullopt,
          "fp8: V's scale, or one per KV head with --fp8_scales=head");
ABSL_FLAG(std::optional<std::string>, phase, std::nullopt, "Phase: prefill|decode|backward");
ABSL_FLAG(std::optional<std::string>, scope, std::nullopt, "Scope: core|layer");
ABSL_FLAG(std::optional<int32_t>, d_model, std::nullopt, "Layer width (scope layer)");
ABSL_FLAG(std::optional<int32_t>, page_size, std::nullopt, "Decode: paged KV cache, tokens a page");
ABSL_FLAG(std::optional<std::string>, cache_format, std::nullopt,
          "Decode: KV cache format native|int8|int4");
ABSL_FLAG(std::optional<std::string>, saq, std::nullopt,
          "Decode: staircase quantization bands tokens:format,...,rest:format "
          "(e.g. 512:native,2048:int8,rest:int4)");
ABSL_FLAG(std::optional<uint64_t>, seed, std::nullopt, "Seed of the generated inputs");
ABSL_FLAG(std::optional<double>, input_scale, std::nullopt, "Scale of the generated inputs");
ABSL_FLAG(std::optional<double>, kv_spectrum_decay, std::nullopt,
          "Generate K and V with singular values falling by this factor (0 < decay < 1; "
          "docs/variants.md §8)");
ABSL_FLAG(std::optional<int32_t>, kv_spectrum_rank, std::nullopt,
          "With --kv_spectrum_decay: cap the spectrum's rank");
ABSL_FLAG(std::optional<int32_t>, kv_compression_heads, std::nullopt,
          "Also run the problem with its KV heads compressed to this many, by PCA and by "
          "mean-pooling, reporting each method's errors and timing (docs/variants.md §5b)");
ABSL_FLAG(std::optional<std::string>, grad_output, std::nullopt,
          "Backward: file of dO's raw little-endian bytes in --dtype, shape [B, S_q, H_out, D_v] "
          "(the format --output writes; unset: generated from the seed)");
ABSL_FLAG(std::optional<std::string>, x, std::nullopt,
          "Layer scope: file of X's raw little-endian bytes in --dtype, shape [B, S, d_model] "
          "(unset: generated from the seed)");
ABSL_FLAG(std::optional<std::string>, w_q, std::nullopt,
          "Layer scope: file of W_q [d_model, H_q * D_qk] (give all four weights or none)");
ABSL_FLAG(std::optional<std::string>, w_k, std::nullopt,
          "Layer scope: file of W_k [d_model, H_kv * D_qk]");
ABSL_FLAG(std::optional<std::string>, w_v, std::nullopt,
          "Layer scope: file of W_v [d_model, H_kv * D_v]");
ABSL_FLAG(std::optional<std::string>, w_o, std::nullopt,
          "Layer scope: file of W_o [H_out * D_v, d_model]");

ABSL_FLAG(std::optional<int32_t>, warmup, std::nullopt, "Warmup iterations");
ABSL_FLAG(std::optional<int32_t>, min_iters, std::nullopt, "Minimum timed iterations");
ABSL_FLAG(std::optional<int32_t>, max_iters, std::nullopt, "Maximum timed iterations");
ABSL_FLAG(std::optional<double>, max_seconds, std::nullopt,
          "Stop measuring after this long once min_iters are done");
ABSL_FLAG(std::optional<double>, target_noise, std::nullopt,
          "Stop early once stdev/mean falls below this");
ABSL_FLAG(std::optional<std::string>, cache, std::nullopt,
          "Device cache between iterations: cold|warm");
ABSL_FLAG(bool, cuda_graph, false, "Replay a captured CUDA graph per iteration (GPU backends)");
ABSL_FLAG(bool, deterministic, false,
          "Require the same bits over runs (no float atomics); backends that cannot refuse");
ABSL_FLAG(bool, samples, false, "Return every timing sample (shown by --format=json)");
ABSL_FLAG(std::optional<std::string>, check, std::nullopt,
          "Compare with the float64 reference: off|auto|full");
ABSL_FLAG(std::optional<int32_t>, check_rows, std::nullopt, "Rows sampled by --check=auto");
ABSL_FLAG(std::optional<std::string>, backward_timing, std::nullopt,
          "Backward: what an iteration times, backward_only|training_step (forward then "
          "backward) (server default: backward_only)");

ABSL_FLAG(std::optional<std::string>, sweep_backend, std::nullopt, "Axis: backends b1,b2,...");
ABSL_FLAG(std::optional<std::string>, sweep_layout, std::nullopt,
          "Axis: layouts, e.g. mha:8,gqa:8/2,sqa:16/8/4,ssqa:16,xsqa:16,gqkva:2/4,"
          "explicit:2/1/0-0+1-0 (mha:H mqa:H gqa:Hq/Hkv sqa:H/Hq/Hkv ssqa:H xsqa:H[/Hq] "
          "gqkva:Gq/Gkv explicit:Hq/Hkv/q-k+q-k...)");
ABSL_FLAG(std::optional<std::string>, sweep_mask, std::nullopt,
          "Axis: masks none,causal,window:L/R (empty side: unbounded),block_sparse,"
          "prob_block_sparse (the block masks take the --block_* and --prob_* flags)");
ABSL_FLAG(std::optional<std::string>, sweep_dtype, std::nullopt, "Axis: dtypes, e.g. fp32,fp16");
ABSL_FLAG(std::optional<std::string>, sweep_phase, std::nullopt,
          "Axis: phases, e.g. prefill,backward");
ABSL_FLAG(std::optional<std::string>, sweep_batch, std::nullopt, "Axis: batch sizes, e.g. 1,4");
ABSL_FLAG(std::optional<std::string>, sweep_seq_len, std::nullopt,
          "Axis: sequence lengths (S_q = S_kv), e.g. 512,1024");
ABSL_FLAG(std::optional<std::string>, sweep_seq_len_q, std::nullopt, "Axis: query lengths");
ABSL_FLAG(std::optional<std::string>, sweep_seq_len_kv, std::nullopt, "Axis: key/value lengths");
ABSL_FLAG(std::optional<std::string>, sweep_head_dim, std::nullopt, "Axis: head dims, e.g. 64,128");
ABSL_FLAG(std::optional<std::string>, sweep_kv_compression_heads, std::nullopt,
          "Axis: KV heads to compress to (--kv_compression_heads), e.g. 1,2,4");
ABSL_FLAG(bool, continue_on_error, false, "Keep sweeping after a point fails");
ABSL_FLAG(int32_t, fan_out, 0,
          "Split the grid along its first axis with several values into one Sweep per value and "
          "run up to N at once; round_robin spreads them over every server the target resolves "
          "to (dns:///headless-service:port, ipv4:a:p,b:p). 0: one Sweep call");

ABSL_FLAG(std::string, service, "",
          "Service to check (empty: the server as a whole; attnbench.v1.AttnBench: the API)");

namespace attnbench::client {
namespace {

const FlagGroup& ConnectionGroup() {
  static const auto* group =
      new FlagGroup{"Connection and output",
                    {"server", "format", "deadline_seconds", "tls", "tls_ca_file", "tls_cert_file",
                     "tls_key_file", "token", "token_file", "tenant"}};
  return *group;
}

constexpr absl::string_view kInputsGroup = "Type, phase, scope, KV cache, inputs";

// The workload flags run and sweep share.
std::vector<FlagGroup> WorkloadGroups() {
  return {
      {"Where", {"backend", "device_index"}},
      {"Shape", {"batch", "seq_len", "seq_len_q", "seq_len_kv", "head_dim", "head_dim_v"}},
      {"Head layout",
       {"layout", "heads", "query_heads", "kv_heads", "query_groups", "kv_groups", "head_map"}},
      {"Mask",
       {"mask", "window_left", "window_right", "block_q", "block_kv", "blocks", "block_causal",
        "prob_c", "prob_alpha", "mask_seed"}},
      {"Score modifiers",
       {"rope", "rope_theta", "rotary_dims", "alibi", "alibi_base_slope", "softcap", "scale"}},
      {"Expressions (docs/expressions.md)", {"score_mod", "mask_mod", "aux"}},
      {kInputsGroup,
       {"dtype", "fp8_scales", "query_scales", "key_scales", "value_scales", "phase", "scope",
        "d_model", "page_size", "cache_format", "saq", "seed", "input_scale", "kv_spectrum_decay",
        "kv_spectrum_rank"}},
      {"KV-head compression", {"kv_compression_heads"}},
      {"Measurement and checking",
       {"warmup", "min_iters", "max_iters", "max_seconds", "target_noise", "cache", "cuda_graph",
        "deterministic", "samples", "check", "check_rows", "backward_timing"}},
  };
}

std::vector<FlagGroup> MakeGroups(Subcommand subcommand) {
  if (subcommand == Subcommand::kHealth) {
    // No token: health is open. No --format: the output is the status name.
    return {{"Connection",
             {"server", "deadline_seconds", "tls", "tls_ca_file", "tls_cert_file", "tls_key_file"}},
            {"Check", {"service"}}};
  }
  std::vector<FlagGroup> groups = {ConnectionGroup()};
  if (subcommand == Subcommand::kCaps) return groups;
  if (subcommand == Subcommand::kRun) groups[0].names.emplace_back("output");
  for (FlagGroup& group : WorkloadGroups()) {
    // A client tensor (dO, X, a weight) fits one shape, so one run: a sweep's points generate
    // theirs.
    if (subcommand == Subcommand::kRun && group.title == kInputsGroup) {
      for (const char* name : {"grad_output", "x", "w_q", "w_k", "w_v", "w_o"}) {
        group.names.emplace_back(name);
      }
    }
    groups.push_back(std::move(group));
  }
  if (subcommand == Subcommand::kSweep) {
    groups.push_back({"Sweep axes (the grid's last axis varies fastest, in this order)",
                      {"sweep_backend", "sweep_layout", "sweep_mask", "sweep_dtype", "sweep_phase",
                       "sweep_batch", "sweep_seq_len", "sweep_seq_len_q", "sweep_seq_len_kv",
                       "sweep_head_dim", "sweep_kv_compression_heads", "continue_on_error"}});
    groups.push_back({"Fan-out over several servers", {"fan_out"}});
  }
  return groups;
}

bool Accepts(Subcommand subcommand, absl::string_view name) {
  for (const FlagGroup& group : FlagGroupsOf(subcommand)) {
    if (std::find(group.names.begin(), group.names.end(), name) != group.names.end()) return true;
  }
  return false;
}

// Flags whose repeated occurrences add up rather than replace each other.
bool Accumulates(absl::string_view name) { return name == "aux"; }

absl::Status UsageError(absl::string_view flag, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", message));
}

}  // namespace

absl::StatusOr<Subcommand> ParseSubcommand(absl::string_view name) {
  if (name == "run") return Subcommand::kRun;
  if (name == "sweep") return Subcommand::kSweep;
  if (name == "caps") return Subcommand::kCaps;
  if (name == "health") return Subcommand::kHealth;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown subcommand '", name, "' (expected run|sweep|caps|health)"));
}

absl::string_view SubcommandName(Subcommand subcommand) {
  switch (subcommand) {
    case Subcommand::kRun:
      return "run";
    case Subcommand::kSweep:
      return "sweep";
    case Subcommand::kCaps:
      return "caps";
    case Subcommand::kHealth:
      return "health";
  }
  return "?";
}

const std::vector<FlagGroup>& FlagGroupsOf(Subcommand subcommand) {
  static const auto* run = new std::vector<FlagGroup>(MakeGroups(Subcommand::kRun));
  static const auto* sweep = new std::vector<FlagGroup>(MakeGroups(Subcommand::kSweep));
  static const auto* caps = new std::vector<FlagGroup>(MakeGroups(Subcommand::kCaps));
  static const auto* health = new std::vector<FlagGroup>(MakeGroups(Subcommand::kHealth));
  switch (subcommand) {
    case Subcommand::kRun:
      return *run;
    case Subcommand::kSweep:
      return *sweep;
    case Subcommand::kHealth:
      return *health;
    case Subcommand::kCaps:
      break;
  }
  return *caps;
}

absl::Status ApplyArgs(Subcommand subcommand, const std::vector<std::string>& args) {
  std::set<std::string> seen;  // accumulating flags given so far by `args`
  for (size_t i = 0; i < args.size(); ++i) {
    absl::string_view arg = args[i];
    if (!absl::StartsWith(arg, "-") || arg == "-" || arg == "--") {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", arg, "'"));
    }
    arg.remove_prefix(absl::StartsWith(arg, "--") ? 2 : 1);
    size_t eq = arg.find('=');
    absl::string_view name = arg.substr(0, eq);
    std::optional<std::string> value;
    if (eq != absl::string_view::npos) value = std::string(arg.substr(eq + 1));

    absl::CommandLineFlag* flag = nullptr;
    if (Accepts(subcommand, name)) flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr && absl::StartsWith(name, "no") && !value.has_value() &&
        Accepts(subcommand, name.substr(2))) {
      // --noflag, for boolean flags only.
      absl::CommandLineFlag* negated = absl::FindCommandLineFlag(name.substr(2));
      if (negated != nullptr && negated->IsOfType<bool>()) {
        flag = negated;
        name = name.substr(2);
        value = "false";
      }
    }
    if (flag == nullptr) {
      return UsageError(
          name, absl::StrCat("not a flag of '", SubcommandName(subcommand), "' (see attnbench ",
                             SubcommandName(subcommand), " --help)"));
    }
    if (!value.has_value()) {
      if (flag->IsOfType<bool>()) {
        value = "true";
      } else if (i + 1 < args.size()) {
        value = args[++i];
      } else {
        return UsageError(name, "missing value");
      }
    }
    // absl reads "" as an unset optional: an expression flag given empty would vanish silently.
    if ((name == "score_mod" || name == "mask_mod") && absl::StripAsciiWhitespace(*value).empty()) {
      return UsageError(name, "empty expression");
    }
    if (Accumulates(name)) {
      if (value->empty()) return UsageError(name, "empty value");
      if (!seen.insert(std::string(name)).second) {
        value = absl::StrCat(flag->CurrentValue(), ",", *value);
      }
    }
    std::string error;
    if (!flag->ParseFrom(*value, &error)) return UsageError(name, error);
  }
  return absl::OkStatus();
}

void ResetFlags() {
  // Sweep takes a superset of run's flags except --output and the input files; health has one of
  // its own.
  for (Subcommand subcommand : {Subcommand::kSweep, Subcommand::kRun, Subcommand::kHealth}) {
    for (const FlagGroup& group : FlagGroupsOf(subcommand)) {
      for (absl::string_view name : group.names) {
        absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
        std::string error;
        if (flag != nullptr) flag->ParseFrom(flag->DefaultValue(), &error);
      }
    }
  }
}

}  // namespace attnbench::client
