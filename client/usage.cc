#include "client/usage.h"

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/str_cat.h"

namespace attnbench::client {
namespace {

constexpr char kExamples[] = R"(Examples:
  attnbench caps --server=localhost:50051
  attnbench run --layout=gqa --heads=8 --kv_heads=2 --seq_len=512 --head_dim=64 --mask=causal
  attnbench run --layout=mha --heads=4 --seq_len_q=1 --seq_len_kv=2048 --head_dim=64 \
      --phase=decode --saq=512:native,1024:int8,rest:int4 --output=/tmp/o.bin
  attnbench run --layout=gqa --heads=8 --kv_heads=2 --seq_len=1024 --head_dim=64 --dtype=bf16 \
      --phase=backward --backward_timing=training_step --output=/tmp/o.bin   # + o.bin.dq/.dk/.dv
  attnbench run --scope=layer --d_model=512 --layout=gqa --heads=8 --kv_heads=2 --seq_len=256 \
      --head_dim=64 --phase=backward --output=/tmp/y.bin   # + y.bin.dx/.dw_q/.dw_k/.dw_v/.dw_o
  attnbench run --layout=mha --heads=8 --seq_len=4096 --head_dim=64 --mask=causal \
      --mask_mod='kv < 4 || q - kv < 1024' --score_mod='30 * tanh(s / 30)'  # docs/expressions.md
  attnbench run --layout=mha --heads=8 --seq_len=4096 --head_dim=64 --mask=causal \
      --score_mod='s - slopes[h] * (q - kv)' --aux=slopes=slopes.npy
  attnbench sweep --head_dim=64 --sweep_layout=mha:8,gqa:8/2,sqa:16/8/4,xsqa:16 \
      --sweep_mask=none,causal --sweep_seq_len=256,512 --format=csv
  attnbench sweep --server=dns:///attnbench.bench.svc:50051 --fan_out=4 --layout=mha \
      --heads=8 --head_dim=64 --dtype=bf16 --sweep_seq_len=1024,2048,4096,8192
  attnbench health --server=localhost:50051
)";

}  // namespace

std::string TopLevelUsage() {
  return absl::StrCat(
      "attnbench: client of the attnbench service (run and measure attention variants).\n\n"
      "Usage: attnbench <subcommand> [--flag=value ...]\n\n"
      "Subcommands:\n"
      "  run    run one workload and print its measurement\n"
      "  sweep  run a grid of workloads (one axis per --sweep_* flag), streaming progress\n"
      "  caps   list the server's backends, devices, features and limits\n"
      "  health check the server's grpc.health.v1 status (exit 0 only when SERVING)\n\n"
      "Run 'attnbench <subcommand> --help' for its flags. Unset workload flags take the\n"
      "server's defaults, which every result echoes. Exit status: 0 success, 1 an RPC or a\n"
      "sweep point failed (the status code and message go to stderr), 2 usage error.\n\n",
      kExamples);
}

std::string SubcommandUsage(Subcommand subcommand) {
  std::string out = absl::StrCat("Usage: attnbench ", SubcommandName(subcommand), " [flags]\n");
  for (const FlagGroup& group : FlagGroupsOf(subcommand)) {
    absl::StrAppend(&out, "\n", group.title, ":\n");
    for (absl::string_view name : group.names) {
      const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
      if (flag == nullptr) continue;
      std::string line = absl::StrCat("  --", name);
      if (line.size() < 22) line.resize(22, ' ');
      absl::StrAppend(&out, line, " ", flag->Help());
      const std::string default_value = flag->DefaultValue();
      if (!default_value.empty() && default_value != "false") {
        absl::StrAppend(&out, " (default: ", default_value, ")");
      }
      out += "\n";
    }
  }
  if (subcommand == Subcommand::kRun || subcommand == Subcommand::kSweep) {
    absl::StrAppend(&out, "\n", kExamples);
  }
  return out;
}

}  // namespace attnbench::client
