// attnbench-server: serves attnbench.v1.AttnBench on --listen_address and Prometheus metrics on
// --metrics_address. Prints one line with the actual ports once both listen (tests and scripts
// parse it), and drains in-flight requests on SIGTERM or SIGINT before exiting 0. The TLS flags
// and --tokens_file are checked before anything listens: a bad one exits non-zero, naming it.
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "kernels/registry.h"
#include "prometheus/exposer.h"
#include "server/auth.h"
#include "server/expression_cache_metrics.h"
#include "server/gpu_telemetry.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server/options.h"
#include "server/process_metrics.h"
#include "server/service.h"
#include "server/signal_waiter.h"
#include "server/tls.h"
#include "server/tokens.h"

ABSL_FLAG(std::string, listen_address, "0.0.0.0:50051",
          "host:port for gRPC; port 0 picks a free port (printed at start)");
ABSL_FLAG(std::string, metrics_address, "0.0.0.0:9464",
          "host:port for Prometheus /metrics; empty disables; port 0 picks a free port");
ABSL_FLAG(uint64_t, max_request_bytes, uint64_t{8} << 30,
          "largest device memory one request may use (backend's estimate)");
ABSL_FLAG(int32_t, max_message_bytes, 64 << 20, "largest gRPC message, received or sent");
ABSL_FLAG(uint64_t, max_inline_output_bytes, uint64_t{4} << 20,
          "largest output tensor Run returns inline; larger ones need StreamRun");
ABSL_FLAG(int32_t, stream_chunk_bytes, 1 << 20, "bytes per StreamRun tensor chunk");
ABSL_FLAG(int32_t, max_sweep_points, 10000, "largest sweep grid");
ABSL_FLAG(double, max_request_flops_cpu, attnbench::server::kDefaultMaxRequestFlopsCpu,
          "most FLOPs one run may ask of a CPU backend, or of the host for its float64 check "
          "(iterations x per-iteration work, each kept pair counted as 64 FLOPs more); 0: "
          "unlimited");
ABSL_FLAG(double, max_request_flops_gpu, attnbench::server::kDefaultMaxRequestFlopsGpu,
          "most FLOPs one run may ask of a GPU backend, counted as for --max_request_flops_cpu; "
          "0: unlimited");
ABSL_FLAG(int32_t, max_iterations, 100000, "largest warmup/min/max iteration count of a request");
ABSL_FLAG(double, max_duration_seconds, 600, "largest measurement.max_duration_seconds");
ABSL_FLAG(int32_t, cpu_threads, 0, "threads of the CPU reference backend; 0 uses all");
ABSL_FLAG(std::string, log_level, "info", "debug, info, warning or error");
ABSL_FLAG(double, shutdown_grace_seconds, 10,
          "on SIGTERM/SIGINT, how long in-flight requests may take to finish");
ABSL_FLAG(std::string, tls_cert_file, "",
          "PEM certificate chain of the server; with --tls_key_file, serves gRPC over TLS");
ABSL_FLAG(std::string, tls_key_file, "",
          "PEM private key (unencrypted) of --tls_cert_file; with it, serves gRPC over TLS");
ABSL_FLAG(std::string, tls_client_ca_file, "",
          "PEM CA certificates; with TLS, requires every client to present a certificate they "
          "signed (mutual TLS)");
ABSL_FLAG(std::string, tokens_file, "",
          "bearer-token auth: file of 'token tenant [weight]' lines; every AttnBench call then "
          "needs 'authorization: Bearer <token>' (health and reflection do not)");
ABSL_FLAG(std::string, server_name, "",
          "names this server in every RunResult.server (in Kubernetes, the pod name); empty: "
          "the host name");
ABSL_FLAG(std::string, tenant_weights, "",
          "without --tokens_file: weights of x-attnbench-tenant tenants, 'alice=2,bob=1' "
          "(default 1; 0 disables a tenant); these tenants also get their own metric labels");
ABSL_FLAG(int32_t, max_queued_per_tenant, 256,
          "requests one tenant may have queued or running; 0: unlimited");
ABSL_FLAG(int32_t, max_queued_total, 4096,
          "requests the server may have queued or running; 0: unlimited");
ABSL_FLAG(double, tenant_device_seconds_per_window, 0,
          "device-seconds one tenant may use per --tenant_window_seconds; 0: unlimited");
ABSL_FLAG(double, tenant_window_seconds, 60,
          "sliding window of --tenant_device_seconds_per_window");

namespace attnbench::server {
namespace {

constexpr char kServiceName[] = "attnbench.v1.AttnBench";

// "0.0.0.0:50051" -> "0.0.0.0"; "[::]:0" -> "[::]".
std::string HostOf(const std::string& address) {
  const size_t colon = address.rfind(':');
  return colon == std::string::npos ? address : address.substr(0, colon);
}

bool ReadOptions(ServerOptions* options) {
  options->max_request_bytes = absl::GetFlag(FLAGS_max_request_bytes);
  options->max_inline_output_bytes = absl::GetFlag(FLAGS_max_inline_output_bytes);
  options->max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  options->stream_chunk_bytes = absl::GetFlag(FLAGS_stream_chunk_bytes);
  options->max_sweep_points = absl::GetFlag(FLAGS_max_sweep_points);
  options->max_iterations = absl::GetFlag(FLAGS_max_iterations);
  options->max_duration_seconds = absl::GetFlag(FLAGS_max_duration_seconds);
  options->max_request_flops_cpu = absl::GetFlag(FLAGS_max_request_flops_cpu);
  options->max_request_flops_gpu = absl::GetFlag(FLAGS_max_request_flops_gpu);
  options->server_name = absl::GetFlag(FLAGS_server_name);
  if (options->server_name.empty()) {
    char host[256] = {};
    if (gethostname(host, sizeof(host) - 1) == 0) options->server_name = host;
  }
  SchedulerLimits& scheduling = options->scheduling;
  scheduling.max_queued_per_tenant = absl::GetFlag(FLAGS_max_queued_per_tenant);
  scheduling.max_queued_total = absl::GetFlag(FLAGS_max_queued_total);
  scheduling.tenant_device_seconds_per_window =
      absl::GetFlag(FLAGS_tenant_device_seconds_per_window);
  const double window = absl::GetFlag(FLAGS_tenant_window_seconds);
  bool ok = true;
  auto require = [&ok](bool condition, const char* what) {
    if (!condition) {
      ATTNBENCH_LOG(kError) << what;
      ok = false;
    }
  };
  require(options->max_message_bytes > 0, "--max_message_bytes must be positive");
  require(options->stream_chunk_bytes > 0 &&
              options->stream_chunk_bytes <= options->max_message_bytes / 2,
          "--stream_chunk_bytes must be positive and at most half of --max_message_bytes");
  // An inline output shares its message with the result, so it must leave room for it.
  require(options->max_inline_output_bytes < static_cast<uint64_t>(options->max_message_bytes),
          "--max_inline_output_bytes must be below --max_message_bytes");
  require(options->max_sweep_points > 0, "--max_sweep_points must be positive");
  require(options->max_iterations > 0, "--max_iterations must be positive");
  require(options->max_duration_seconds > 0, "--max_duration_seconds must be positive");
  require(options->max_request_flops_cpu >= 0, "--max_request_flops_cpu must be >= 0");
  require(options->max_request_flops_gpu >= 0, "--max_request_flops_gpu must be >= 0");
  require(absl::GetFlag(FLAGS_cpu_threads) >= 0, "--cpu_threads must be >= 0");
  require(absl::GetFlag(FLAGS_shutdown_grace_seconds) >= 0,
          "--shutdown_grace_seconds must be >= 0");
  require(scheduling.max_queued_per_tenant >= 0, "--max_queued_per_tenant must be >= 0");
  require(scheduling.max_queued_total >= 0, "--max_queued_total must be >= 0");
  require(scheduling.tenant_device_seconds_per_window >= 0,
          "--tenant_device_seconds_per_window must be >= 0");
  require(window > 0 && window <= 86400 * 7, "--tenant_window_seconds must be in (0, 604800]");
  if (ok) scheduling.tenant_window = absl::Seconds(window);
  return ok;
}

int Main() {
  // Before any thread exists (gRPC starts its own as soon as credentials are made), so every
  // thread inherits the blocked mask.
  BlockTerminationSignals();

  LogLevel level;
  if (!ParseLogLevel(absl::GetFlag(FLAGS_log_level), &level)) {
    ATTNBENCH_LOG(kError) << "--log_level must be debug, info, warning or error";
    return 2;
  }
  SetLogLevel(level);
  ServerOptions options;
  if (!ReadOptions(&options)) return 2;

  // Security first: a bad flag must stop the server before it could listen without it.
  absl::StatusOr<ServerTransport> transport = LoadServerTransport(
      TlsFiles{absl::GetFlag(FLAGS_tls_cert_file), absl::GetFlag(FLAGS_tls_key_file),
               absl::GetFlag(FLAGS_tls_client_ca_file)});
  if (!transport.ok()) {
    ATTNBENCH_LOG(kError) << transport.status().message();
    return 2;
  }
  absl::StatusOr<absl::flat_hash_map<std::string, double>> header_weights =
      ParseTenantWeights(absl::GetFlag(FLAGS_tenant_weights));
  if (!header_weights.ok()) {
    ATTNBENCH_LOG(kError) << header_weights.status().message();
    return 2;
  }
  auto authenticator = std::make_shared<const Authenticator>(*std::move(header_weights));
  const std::string tokens_file = absl::GetFlag(FLAGS_tokens_file);
  if (!tokens_file.empty()) {
    absl::StatusOr<TokenTable> tokens = LoadTokensFile(tokens_file);
    if (!tokens.ok()) {
      ATTNBENCH_LOG(kError) << "--tokens_file: " << tokens.status().message();
      return 2;
    }
    ATTNBENCH_LOG(kInfo) << "bearer-token auth: " << tokens->num_tokens() << " tokens, "
                         << tokens->num_tenants() << " tenants";
    if (transport->security == TransportSecurity::kPlaintext) {
      ATTNBENCH_LOG(kWarning) << "--tokens_file without TLS: bearer tokens cross the network in "
                                 "plaintext; add --tls_cert_file and --tls_key_file";
    }
    if (!absl::GetFlag(FLAGS_tenant_weights).empty()) {
      ATTNBENCH_LOG(kError) << "--tenant_weights is for header tenants; with --tokens_file the "
                               "weights come from the tokens file";
      return 2;
    }
    authenticator = std::make_shared<const Authenticator>(*std::move(tokens));
  }
  ATTNBENCH_LOG(kInfo) << "transport " << TransportSecurityName(transport->security);

  RegistryOptions registry_options;
  registry_options.cpu_threads = absl::GetFlag(FLAGS_cpu_threads);
  BackendList backends = CreateBackends(registry_options);
  std::vector<std::string> names;
  for (const auto& b : backends) names.push_back(b->Name());

#ifdef ATTNBENCH_HAVE_CUDA
  constexpr bool kCudaBuild = true;
#else
  constexpr bool kCudaBuild = false;
#endif
  auto metrics = std::make_shared<Metrics>(authenticator->KnownTenants(), kCudaBuild);
  for (const auto& b : backends) {
    for (const DeviceDescription& device : b->Devices()) {
      metrics->SetDeviceUp(DeviceKey(device), true);
      metrics->SetQueueDepth(DeviceKey(device), 0);
      metrics->SetInFlight(DeviceKey(device), 0);
    }
  }
  auto process_metrics = std::make_shared<ProcessMetrics>();
  auto expression_cache_metrics = std::make_shared<ExpressionCacheMetrics>();
  // NVRTC's log of a failed compile is the operator's: the client got INTERNAL without it.
  SetExpressionCompileFailureLog([](const absl::Status& status, const std::string& log) {
    ATTNBENCH_LOG(kWarning) << "expression compile failed: " << status.message() << "\n" << log;
  });
  std::shared_ptr<GpuTelemetry> gpu_telemetry = GpuTelemetry::Create();
  if (gpu_telemetry != nullptr) {
    ATTNBENCH_LOG(kInfo) << "NVML telemetry for " << gpu_telemetry->device_count() << " GPU(s)";
  }
  std::unique_ptr<prometheus::Exposer> exposer;
  std::string metrics_endpoint = "disabled";
  const std::string metrics_address = absl::GetFlag(FLAGS_metrics_address);
  if (!metrics_address.empty()) {
    // prometheus-cpp reports a failed bind by throwing; this is the one place that can catch it.
    try {
      exposer = std::make_unique<prometheus::Exposer>(metrics_address);
    } catch (const std::exception& e) {
      ATTNBENCH_LOG(kError) << "cannot serve metrics on " << metrics_address << ": " << e.what();
      return 1;
    }
    exposer->RegisterCollectable(metrics->registry());
    exposer->RegisterCollectable(process_metrics);
    exposer->RegisterCollectable(expression_cache_metrics);
    if (gpu_telemetry != nullptr) exposer->RegisterCollectable(gpu_telemetry);
    const std::vector<int> ports = exposer->GetListeningPorts();
    metrics_endpoint =
        absl::StrCat(HostOf(metrics_address), ":", ports.empty() ? 0 : ports.front());
  }

  AttnBenchService service(std::move(backends), options, metrics, std::move(authenticator));
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  const std::string listen_address = absl::GetFlag(FLAGS_listen_address);
  int port = 0;
  builder.AddListeningPort(listen_address, transport->credentials, &port);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    ATTNBENCH_LOG(kError) << "cannot listen on " << listen_address;
    return 1;
  }
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  if (health != nullptr) health->SetServingStatus(kServiceName, true);

  std::printf("attnbench-server listening on %s:%d metrics on %s backends %s\n",
              HostOf(listen_address).c_str(), port, metrics_endpoint.c_str(),
              absl::StrJoin(names, ",").c_str());
  std::fflush(stdout);

  const double grace = absl::GetFlag(FLAGS_shutdown_grace_seconds);
  std::thread stopper([&server, health, grace, &metrics] {
    const int signal = WaitForTerminationSignal();
    metrics->SetDraining(true);
    ATTNBENCH_LOG(kInfo) << "signal " << signal << ": draining for up to " << grace << " s";
    // Health first, so load balancers stop sending work while in-flight requests drain.
    if (health != nullptr) health->SetServingStatus(false);
    server->Shutdown(std::chrono::system_clock::now() +
                     std::chrono::microseconds(static_cast<int64_t>(grace * 1e6)));
  });
  server->Wait();
  stopper.join();
  ATTNBENCH_LOG(kInfo) << "stopped";
  return 0;
}

}  // namespace
}  // namespace attnbench::server

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Serves attnbench.v1.AttnBench: runs and measures attention variants.\n"
      "Usage: attnbench-server [--listen_address=host:port] [--metrics_address=host:port] ...");
  absl::ParseCommandLine(argc, argv);
  return attnbench::server::Main();
}
