// The server's limits and defaults, set from flags in main.cc and read by every request path, so
// tests can build a service with small limits without touching flags.
#ifndef ATTNBENCH_SERVER_OPTIONS_H_
#define ATTNBENCH_SERVER_OPTIONS_H_

#include <cstdint>
#include <string>

#include "absl/time/time.h"

namespace attnbench::server {

// Admission limits of the scheduler (server/scheduler.h).
struct SchedulerLimits {
  int max_queued_per_tenant = 0;  // requests queued or running for one tenant; 0: unlimited
  int max_queued_total = 0;       // for the whole server; 0: unlimited
  double tenant_device_seconds_per_window = 0;  // 0: unlimited
  absl::Duration tenant_window = absl::Seconds(60);
};

inline constexpr double kDefaultMaxRequestFlopsCpu = 5e12;
inline constexpr double kDefaultMaxRequestFlopsGpu = 1e18;

struct ServerOptions {
  uint64_t max_request_bytes = uint64_t{8} << 30;
  uint64_t max_inline_output_bytes = uint64_t{4} << 20;
  int max_sweep_points = 10000;
  int max_iterations = 100000;
  double max_duration_seconds = 600;
  int max_message_bytes = 64 << 20;
  // Most work one run may ask, in FLOPs as server/work_limit.h counts them; 0: unlimited.
  // CPU backends (and the float64 check of any run, which runs on the host): ~10 minutes of the
  // CPU backend on 2 cores. Other devices: far above any benchmark table's largest run.
  double max_request_flops_cpu = kDefaultMaxRequestFlopsCpu;
  double max_request_flops_gpu = kDefaultMaxRequestFlopsGpu;
  // Size of each TensorChunk's data in StreamRun; well under max_message_bytes.
  int stream_chunk_bytes = 1 << 20;
  // Names this server in every RunResult (RunResult.server).
  std::string server_name;
  SchedulerLimits scheduling;
};

}  // namespace attnbench::server

#endif  // ATTNBENCH_SERVER_OPTIONS_H_
