// The real attnbench-server binary: the startup line's format and ports, a call over TCP, the
// metrics endpoint, and a graceful SIGTERM shutdown that lets an in-flight request finish and
// exits 0.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <regex>
#include <string>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/test_util.h"

extern char** environ;

namespace attnbench::server {
namespace {

namespace pb = ::attnbench::v1;

using ::testing::HasSubstr;
using testing::SmallRequest;

class ServerProcess {
 public:
  explicit ServerProcess(std::vector<std::string> flags) {
    int out[2];
    EXPECT_EQ(pipe(out), 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, out[0]);
    std::vector<std::string> args = {ATTNBENCH_SERVER_BINARY};
    args.insert(args.end(), flags.begin(), flags.end());
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    EXPECT_EQ(posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ), 0);
    posix_spawn_file_actions_destroy(&actions);
    close(out[1]);
    stdout_ = fdopen(out[0], "r");
  }
  ~ServerProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (stdout_ != nullptr) fclose(stdout_);
  }
  std::string ReadLine() {
    char buffer[1024];
    if (fgets(buffer, sizeof(buffer), stdout_) == nullptr) return "";
    return buffer;
  }
  // Exit status after SIGTERM, or -1 if it did not exit within the timeout.
  int TerminateAndWait(std::chrono::seconds timeout) {
    kill(pid_, SIGTERM);
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < until) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return -1;
  }

 private:
  pid_t pid_ = -1;
  FILE* stdout_ = nullptr;
};

std::string HttpGet(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  std::string response;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string request = "GET " + path + " HTTP/1.0\r\n\r\n";
    if (write(fd, request.data(), request.size()) > 0) {
      char buffer[4096];
      ssize_t n;
      while ((n = read(fd, buffer, sizeof(buffer))) > 0) response.append(buffer, n);
    }
  }
  close(fd);
  return response;
}

TEST(BinaryTest, StartsServesAndDrainsOnSigterm) {
  ServerProcess server({"--listen_address=127.0.0.1:0", "--metrics_address=127.0.0.1:0",
                        "--cpu_threads=1", "--log_level=warning"});
  const std::string line = server.ReadLine();
  std::smatch match;
  const std::regex format(
      R"(^attnbench-server listening on 127\.0\.0\.1:(\d+) metrics on 127\.0\.0\.1:(\d+) )"
      R"(backends (\S+)\n$)");
  ASSERT_TRUE(std::regex_match(line, match, format)) << line;
  const int port = std::stoi(match[1]);
  const int metrics_port = std::stoi(match[2]);
  EXPECT_GT(port, 0);
  EXPECT_GT(metrics_port, 0);
  EXPECT_THAT(match[3].str(), HasSubstr("cpu_reference"));

  auto channel =
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials());
  auto stub = pb::AttnBench::NewStub(channel);
  {
    grpc::ClientContext context;
    pb::GetCapabilitiesResponse caps;
    ASSERT_TRUE(stub->GetCapabilities(&context, pb::GetCapabilitiesRequest(), &caps).ok());
    EXPECT_EQ(caps.limits().max_message_bytes(), 64 << 20);
  }
  EXPECT_THAT(HttpGet(metrics_port, "/metrics"),
              HasSubstr("attnbench_requests_total{code=\"OK\",method=\"GetCapabilities\"} 1"));

  // A request that measures for ~0.6 s is in flight when SIGTERM arrives; it must complete.
  pb::RunRequest request = SmallRequest(64, 2, 16);
  request.mutable_measurement()->set_min_iterations(1);
  request.mutable_measurement()->set_max_iterations(100000);
  request.mutable_measurement()->set_max_duration_seconds(0.6);
  grpc::Status in_flight;
  std::thread client([&] {
    grpc::ClientContext context;
    pb::RunResponse response;
    in_flight = stub->Run(&context, request, &response);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(server.TerminateAndWait(std::chrono::seconds(10)), 0);
  client.join();
  EXPECT_TRUE(in_flight.ok()) << in_flight.error_message();
}

TEST(BinaryTest, MetricsCanBeDisabledAndBadFlagsRefused) {
  {
    ServerProcess server({"--listen_address=127.0.0.1:0", "--metrics_address="});
    const std::string line = server.ReadLine();
    EXPECT_THAT(line, HasSubstr(" metrics on disabled backends "));
    EXPECT_EQ(server.TerminateAndWait(std::chrono::seconds(10)), 0);
  }
  for (const char* bad :
       {"--log_level=loud", "--max_request_flops_cpu=-1", "--max_request_flops_gpu=-5"}) {
    ServerProcess server({"--listen_address=127.0.0.1:0", bad});
    EXPECT_EQ(server.ReadLine(), "") << bad;
    EXPECT_EQ(server.TerminateAndWait(std::chrono::seconds(10)), 2) << bad;
  }
}

}  // namespace
}  // namespace attnbench::server
