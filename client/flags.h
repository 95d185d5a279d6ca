// The attnbench CLI's flags (absl flags; every workload flag is optional so that an unset flag
// leaves its proto field unset), which subcommand accepts which, and the argv walker that applies
// them with usage errors that name the offending flag. The walker replaces absl::ParseCommandLine,
// which exits with status 1 on a bad flag and knows nothing of subcommands.
#ifndef ATTNBENCH_CLIENT_FLAGS_H_
#define ATTNBENCH_CLIENT_FLAGS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

// Connection and output.
ABSL_DECLARE_FLAG(std::string, server);
ABSL_DECLARE_FLAG(std::string, format);
ABSL_DECLARE_FLAG(std::optional<double>, deadline_seconds);
// Security.
ABSL_DECLARE_FLAG(bool, tls);
ABSL_DECLARE_FLAG(std::optional<std::string>, tls_ca_file);
ABSL_DECLARE_FLAG(std::optional<std::string>, tls_cert_file);
ABSL_DECLARE_FLAG(std::optional<std::string>, tls_key_file);
ABSL_DECLARE_FLAG(std::optional<std::string>, token);
ABSL_DECLARE_FLAG(std::optional<std::string>, token_file);
ABSL_DECLARE_FLAG(std::optional<std::string>, tenant);
ABSL_DECLARE_FLAG(std::optional<std::string>, output);
// Where to run.
ABSL_DECLARE_FLAG(std::optional<std::string>, backend);
ABSL_DECLARE_FLAG(std::optional<int32_t>, device_index);
// Shape.
ABSL_DECLARE_FLAG(std::optional<int64_t>, batch);
ABSL_DECLARE_FLAG(std::optional<int64_t>, seq_len);
ABSL_DECLARE_FLAG(std::optional<int64_t>, seq_len_q);
ABSL_DECLARE_FLAG(std::optional<int64_t>, seq_len_kv);
ABSL_DECLARE_FLAG(std::optional<int32_t>, head_dim);
ABSL_DECLARE_FLAG(std::optional<int32_t>, head_dim_v);
// Head layout.
ABSL_DECLARE_FLAG(std::optional<std::string>, layout);
ABSL_DECLARE_FLAG(std::optional<int32_t>, heads);
ABSL_DECLARE_FLAG(std::optional<int32_t>, query_heads);
ABSL_DECLARE_FLAG(std::optional<int32_t>, kv_heads);
ABSL_DECLARE_FLAG(std::optional<int32_t>, query_groups);
ABSL_DECLARE_FLAG(std::optional<int32_t>, kv_groups);
ABSL_DECLARE_FLAG(std::optional<std::string>, head_map);
// Mask.
ABSL_DECLARE_FLAG(std::optional<std::string>, mask);
ABSL_DECLARE_FLAG(std::optional<int64_t>, window_left);
ABSL_DECLARE_FLAG(std::optional<int64_t>, window_right);
ABSL_DECLARE_FLAG(std::optional<int64_t>, block_q);
ABSL_DECLARE_FLAG(std::optional<int64_t>, block_kv);
ABSL_DECLARE_FLAG(std::optional<std::string>, blocks);
ABSL_DECLARE_FLAG(bool, block_causal);
ABSL_DECLARE_FLAG(std::optional<double>, prob_c);
ABSL_DECLARE_FLAG(std::optional<double>, prob_alpha);
ABSL_DECLARE_FLAG(std::optional<uint64_t>, mask_seed);
// Score modifiers.
ABSL_DECLARE_FLAG(bool, rope);
ABSL_DECLARE_FLAG(std::optional<double>, rope_theta);
ABSL_DECLARE_FLAG(std::optional<int32_t>, rotary_dims);
ABSL_DECLARE_FLAG(std::optional<std::string>, alibi);
ABSL_DECLARE_FLAG(std::optional<double>, alibi_base_slope);
ABSL_DECLARE_FLAG(std::optional<double>, softcap);
ABSL_DECLARE_FLAG(std::optional<double>, scale);
// Client-written expressions (docs/expressions.md).
ABSL_DECLARE_FLAG(std::optional<std::string>, score_mod);
ABSL_DECLARE_FLAG(std::optional<std::string>, mask_mod);
ABSL_DECLARE_FLAG(std::optional<std::string>, aux);
// Storage, phase, scope, cache.
ABSL_DECLARE_FLAG(std::optional<std::string>, dtype);
ABSL_DECLARE_FLAG(std::optional<std::string>, phase);
ABSL_DECLARE_FLAG(std::optional<std::string>, scope);
ABSL_DECLARE_FLAG(std::optional<int32_t>, d_model);
ABSL_DECLARE_FLAG(std::optional<int32_t>, page_size);
ABSL_DECLARE_FLAG(std::optional<std::string>, cache_format);
ABSL_DECLARE_FLAG(std::optional<std::string>, saq);
ABSL_DECLARE_FLAG(std::optional<uint64_t>, seed);
ABSL_DECLARE_FLAG(std::optional<double>, input_scale);
ABSL_DECLARE_FLAG(std::optional<std::string>, fp8_scales);
ABSL_DECLARE_FLAG(std::optional<std::string>, query_scales);
ABSL_DECLARE_FLAG(std::optional<std::string>, key_scales);
ABSL_DECLARE_FLAG(std::optional<std::string>, value_scales);
ABSL_DECLARE_FLAG(std::optional<double>, kv_spectrum_decay);
ABSL_DECLARE_FLAG(std::optional<int32_t>, kv_spectrum_rank);
ABSL_DECLARE_FLAG(std::optional<int32_t>, kv_compression_heads);
ABSL_DECLARE_FLAG(std::optional<std::string>, grad_output);
ABSL_DECLARE_FLAG(std::optional<std::string>, x);
ABSL_DECLARE_FLAG(std::optional<std::string>, w_q);
ABSL_DECLARE_FLAG(std::optional<std::string>, w_k);
ABSL_DECLARE_FLAG(std::optional<std::string>, w_v);
ABSL_DECLARE_FLAG(std::optional<std::string>, w_o);
// Measurement and checking.
ABSL_DECLARE_FLAG(std::optional<int32_t>, warmup);
ABSL_DECLARE_FLAG(std::optional<int32_t>, min_iters);
ABSL_DECLARE_FLAG(std::optional<int32_t>, max_iters);
ABSL_DECLARE_FLAG(std::optional<double>, max_seconds);
ABSL_DECLARE_FLAG(std::optional<double>, target_noise);
ABSL_DECLARE_FLAG(std::optional<std::string>, cache);
ABSL_DECLARE_FLAG(bool, cuda_graph);
ABSL_DECLARE_FLAG(bool, deterministic);
ABSL_DECLARE_FLAG(bool, samples);
ABSL_DECLARE_FLAG(std::optional<std::string>, check);
ABSL_DECLARE_FLAG(std::optional<int32_t>, check_rows);
ABSL_DECLARE_FLAG(std::optional<std::string>, backward_timing);
// Sweep axes.
ABSL_DECLARE_FLAG(std::optional<std::string>, sweep_backend);
ABSL_DECLARE_FLAG(std::optional<std::string>, sweep_layout);
ABSL_DECLARE_FLAG(std::optional<std::string>, sweep_mask);
ABSL_DECLARE_FLAG(std::optional<std::string>, sweep_dtype);
ABSL_DECLARE_FLAG(std::optional<std::string>, sweep_phase);
ABSL_DECLARE_FLAG(std::optional<std::string>, sweep_batch);
ABSL_DECLARE_FLAG(std::optional<std::string>, sweep_seq_len);
ABSL_DECLARE_FLAG(std::optional<std::string>, sweep_seq_len_q);
ABSL_DECLARE_FLAG(std::optional<std::string>, sweep_seq_len_kv);
ABSL_DECLARE_FLAG(std::optional<std::string>, sweep_head_dim);
ABSL_DECLARE_FLAG(std::optional<std::string>, sweep_kv_compression_heads);
ABSL_DECLARE_FLAG(bool, continue_on_error);
ABSL_DECLARE_FLAG(int32_t, fan_out);
// Health.
ABSL_DECLARE_FLAG(std::string, service);

namespace attnbench::client {

enum class Subcommand { kRun, kSweep, kCaps, kHealth };

// "run", "sweep", "caps" or "health"; InvalidArgument otherwise.
absl::StatusOr<Subcommand> ParseSubcommand(absl::string_view name);
absl::string_view SubcommandName(Subcommand subcommand);

// A named group of flags, in the order --help lists them.
struct FlagGroup {
  absl::string_view title;
  std::vector<absl::string_view> names;
};

// The flags `subcommand` accepts, grouped for --help.
const std::vector<FlagGroup>& FlagGroupsOf(Subcommand subcommand);

// Applies `args` (the arguments after the subcommand) to the flags: "--name=value",
// "--name value", "--boolflag", "--noboolflag". A list flag that may repeat (--aux) collects
// every occurrence, as if its values were given comma-separated; any other flag given twice
// takes the last value. Returns InvalidArgument naming the flag for an
// unknown flag, a flag the subcommand does not take, a missing or malformed value, or a
// positional argument. Flags applied before an error keep their new values.
absl::Status ApplyArgs(Subcommand subcommand, const std::vector<std::string>& args);

// Sets every flag of every subcommand back to its default (for tests and repeated parsing).
void ResetFlags();

}  // namespace attnbench::client

#endif  // ATTNBENCH_CLIENT_FLAGS_H_
