#include "server/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/exposer.h"
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
