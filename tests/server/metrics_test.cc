#include "server/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/exposer.h"
#include "server/expression_cache_metrics.h"
#include "tests/server/test_util.h"

namespace attnbench::server {
namespace {

using ::testing::HasSubstr;
using testing::MetricValue;

TEST(MetricsTest, CountsByLabels) {
  Metrics m;
  m.RecordRequest("Run", grpc::StatusCode::OK, 0.01);
  m.RecordRequest("Run", grpc::StatusCode::OK, 0.02);
  m.RecordRequest("Run", grpc::StatusCode::INVALID_ARGUMENT, 0.001);
  m.RecordRun("cpu_reference", "gqa", "bf16", 0.003, 1.5, 0.25);
  EXPECT_EQ(MetricValue(m, "attnbench_requests_total", {{"method", "Run"}, {"code", "OK"}}), 2);
  EXPECT_EQ(
      MetricValue(m, "attnbench_requests_total", {{"method", "Run"}, {"code", "INVALID_ARGUMENT"}}),
      1);
  EXPECT_EQ(MetricValue(m, "attnbench_request_duration_seconds", {{"method", "Run"}}), 3);
  const std::map<std::string, std::string> run{
      {"backend", "cpu_reference"}, {"layout", "gqa"}, {"dtype", "bf16"}};
  EXPECT_EQ(MetricValue(m, "attnbench_runs_total", run), 1);
  EXPECT_EQ(MetricValue(m, "attnbench_kernel_time_seconds", run), 1);
  EXPECT_EQ(MetricValue(m, "attnbench_achieved_tflops", {{"backend", "cpu_reference"}}), 1);
  EXPECT_EQ(MetricValue(m, "attnbench_peak_flops_fraction", {{"backend", "cpu_reference"}}), 1);
  EXPECT_EQ(
      MetricValue(m, "attnbench_build_info", {{"version", ATTNBENCH_VERSION}, {"cuda", "no"}}), 1);
  EXPECT_EQ(MetricValue(m, "attnbench_draining", {}), 0);
  m.SetDraining(true);
  EXPECT_EQ(MetricValue(m, "attnbench_draining", {}), 1);
  m.RecordRejection("queue_full");
  EXPECT_EQ(MetricValue(m, "attnbench_rejections_total", {{"reason", "queue_full"}}), 1);
}

// The expression cache's counters as families, read from the source at each scrape.
TEST(ExpressionCacheMetricsTest, ReadsTheCounters) {
  ExpressionCacheCounters counters;
  ExpressionCacheMetrics metrics([&counters] { return counters; });
  const auto value = [&metrics](const std::string& name) {
    for (const prometheus::MetricFamily& f : metrics.Collect()) {
      if (f.name != name) continue;
      EXPECT_EQ(f.metric.size(), 1u) << name;
      const bool counter = f.type == prometheus::MetricType::Counter;
      EXPECT_EQ(counter, name.size() > 6 && name.substr(name.size() - 6) == "_total") << name;
      return counter ? f.metric[0].counter.value : f.metric[0].gauge.value;
    }
    ADD_FAILURE() << name << " not collected";
    return -1.0;
  };
  EXPECT_EQ(value("attnbench_expression_cache_hits_total"), 0);
  counters.hits = 5;
  counters.misses = 3;
  counters.failures = 1;
  counters.evictions = 2;
  counters.compile_seconds = 0.75;
  counters.entries = 4;
  EXPECT_EQ(value("attnbench_expression_cache_hits_total"), 5);
  EXPECT_EQ(value("attnbench_expression_cache_misses_total"), 3);
  EXPECT_EQ(value("attnbench_expression_compile_failures_total"), 1);
  EXPECT_EQ(value("attnbench_expression_cache_evictions_total"), 2);
  EXPECT_EQ(value("attnbench_expression_compile_seconds_total"), 0.75);
  EXPECT_EQ(value("attnbench_expression_cache_entries"), 4);
  // The default source is the process's cache: nothing compiled in this binary.
  ExpressionCacheMetrics process;
  for (const prometheus::MetricFamily& f : process.Collect()) {
    ASSERT_EQ(f.metric.size(), 1u);
    EXPECT_EQ(f.metric[0].counter.value + f.metric[0].gauge.value, 0) << f.name;
  }
}

// Every family the server's own collectors export is in docs/metrics.md (the contract the
// dashboards and rules are checked against), as a `name` in a table.
TEST(MetricsTest, EveryFamilyIsDocumented) {
  std::ifstream in(ATTNBENCH_METRICS_DOC);
  ASSERT_TRUE(in.good()) << ATTNBENCH_METRICS_DOC;
  std::stringstream doc;
  doc << in.rdbuf();
  Metrics m;
  // A sample in every family that needs a label value before it has one.
  m.RecordRequest("Run", grpc::StatusCode::OK, 0.01);
  m.RecordRun("cpu_reference", "gqa", "bf16", 0.003, 1.5, 0.25);
  m.RecordRejection("queue_full");
  m.SetQueueDepth("cpu:0", 0);
  m.SetInFlight("cpu:0", 0);
  m.ObserveQueueWait("cpu:0", 0.1);
  m.ObserveHold("cpu:0", 0.1);
  m.SetDeviceUp("cpu:0", true);
  m.AddTenantLoad("t", 1);
  m.RecordTenantUsage("t", 1);
  std::vector<prometheus::MetricFamily> families = m.registry()->Collect();
  for (prometheus::MetricFamily& f : ExpressionCacheMetrics().Collect()) {
    families.push_back(std::move(f));
  }
  ASSERT_GE(families.size(), 20u);
  for (const prometheus::MetricFamily& f : families) {
    EXPECT_NE(doc.str().find("`" + f.name + "`"), std::string::npos)
        << f.name << " is not in docs/metrics.md";
  }
}

TEST(MetricsTest, UnknownCodesShareOneLabel) {
  EXPECT_STREQ(GrpcCodeName(static_cast<grpc::StatusCode>(77)), "UNKNOWN");
  EXPECT_STREQ(GrpcCodeName(grpc::StatusCode::RESOURCE_EXHAUSTED), "RESOURCE_EXHAUSTED");
}

// A plain HTTP/1.0 GET, so the test needs no HTTP client library.
std::string HttpGet(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "";
  }
  const std::string request = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  if (write(fd, request.data(), request.size()) < 0) {
    close(fd);
    return "";
  }
  std::string response;
  char buffer[4096];
  ssize_t n;
  while ((n = read(fd, buffer, sizeof(buffer))) > 0) response.append(buffer, n);
  close(fd);
  return response;
}

TEST(MetricsTest, ExposerServesTextFormat) {
  Metrics m;
  m.RecordRequest("GetCapabilities", grpc::StatusCode::OK, 0.001);
  prometheus::Exposer exposer("127.0.0.1:0");
  exposer.RegisterCollectable(m.registry());
  const std::vector<int> ports = exposer.GetListeningPorts();
  ASSERT_EQ(ports.size(), 1u);
  ASSERT_GT(ports[0], 0);
  const std::string body = HttpGet(ports[0], "/metrics");
  EXPECT_THAT(body, HasSubstr("200 OK"));
  EXPECT_THAT(body,
              HasSubstr("attnbench_build_info{cuda=\"no\",version=\"" ATTNBENCH_VERSION "\"} 1"));
  EXPECT_THAT(body,
              HasSubstr("attnbench_requests_total{code=\"OK\",method=\"GetCapabilities\"} 1"));
  EXPECT_THAT(body, HasSubstr("# TYPE attnbench_request_duration_seconds histogram"));
}

}  // namespace
}  // namespace attnbench::server
